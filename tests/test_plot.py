"""`ncjax plot` of two-axis runs (spread + per-cell decision), Z heatmaps of chosen cells and
traces; the per-cell decision and the zero rule checked against numpy recomputations from
the loaded grid and the theory's closed forms (λ* = sqrt(n_B)/N, Z = 0 from sqrt(n_A)/N)."""

import re

import jax
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from ncjax import analysis, diagram, draw, metrics, plot, problem, spec, sweep
from ncjax.cli import main
from tests.conftest import run_spec
from ncjax.tolerances import COLLAPSE_TOL
from ncjax.dtypes import x64

PNG = b"\x89PNG\r\n\x1a\n"

# (n_B, λ) with two seeds: L-BFGS float64, 4 classes (the shapes of tests/test_sweep.py).
NB_LAM = """
[problem]
profile = "two_cluster"
K_A = 2
n_A = 100
K_B = 2
lam_W = 0.01
[axes]
n_B = { lin = [10, 60, 6] }
lam = { log = [0.01, 0.08, 8] }
seed = [0, 1]
[solver]
dtype = "float64"
[run]
chunk_size = 24
"""

# (ratio, n_B) at λ = c/N: minority collapse iff n_B ≤ c² = 16, Z = 0 iff ratio·n_B ≤ 16.
RATIO_NB = """
[problem]
profile = "two_cluster"
K_A = 2
K_B = 2
c = 4.0
lam_W = 0.01
[axes]
ratio = { log = [1.5, 6, 5] }
n_B = { log = [4, 64, 17] }
[solver]
method = "convex"
dtype = "float64"
"""


@pytest.fixture(scope="module")
def nb_lam(tmp_path_factory):
    return run_spec(tmp_path_factory, NB_LAM, "nb_lam")


@pytest.fixture(scope="module")
def ratio_nb(tmp_path_factory):
    return run_spec(tmp_path_factory, RATIO_NB, "ratio_nb")


def test_decision_categories_by_hand():
    frac = np.array([1.0, 0.0, 1.0, 0.0, 2 / 3, 0.5, np.nan, 1.0])
    pred = np.array([True, False, False, True, True, True, True, False])
    near = np.array([False, False, False, False, False, False, False, True])
    want = [diagram.AGREE_COLLAPSED, diagram.AGREE_NOT, diagram.FALSE_COLLAPSE,
            diagram.MISSED_COLLAPSE, diagram.AGREE_COLLAPSED,
            diagram.MISSED_COLLAPSE,  # a tie is not a majority
            diagram.UNSOLVED, diagram.NEAR]
    np.testing.assert_array_equal(diagram.decision_categories(frac, pred, near), want)


def test_spread_root_is_exact_for_a_quadratic_in_log_lambda():
    """A spread A u + B u², u = log(λ*/λ), vanishing from λ*: on a grid 4% apart the
    root is λ* (to rounding) while the tolerance crossing is up to a step away."""
    lam_star = 0.0125
    lam = 0.008 * 1.04 ** np.arange(20)
    u = np.log(lam_star / lam)
    s = np.where(u > 0, 9.0 * u - 20.0 * u**2, 1e-6)
    assert analysis.spread_root(lam, s, COLLAPSE_TOL) == pytest.approx(lam_star, rel=1e-9)
    cross = analysis.collapse_threshold(lam, s, COLLAPSE_TOL)[0]
    assert abs(cross / lam_star - 1) > 1e-3
    # a root beyond the first collapsed point (a line through 0.30, 0.21, 0.12 would reach
    # 0 a third of a step after it) is moved back into the bracket the data allow
    lam4 = 1.05 ** np.arange(4)
    assert analysis.spread_root(lam4, [0.30, 0.21, 0.12, 0.0], COLLAPSE_TOL) == pytest.approx(
        lam4[3], rel=1e-12)
    # a concave spread (sqrt): still inside its bracket, within a step of λ*
    s = np.where(u > 0, np.sqrt(np.maximum(u, 0)), 0.0)
    i = np.flatnonzero(s > COLLAPSE_TOL)[-1]
    r = analysis.spread_root(lam, s, COLLAPSE_TOL)
    assert lam[i] <= r <= lam[i + 1] and abs(r / lam_star - 1) < 0.04
    assert np.isnan(analysis.spread_root(lam, np.ones(20), COLLAPSE_TOL))  # no bracket


def _own_decision(g, lam_over_star):
    """Numpy route: majority over the last (seed) axis of converged cells, then the codes
    written out with λ/λ* from the closed form."""
    conv = g.status == "converged"
    m = np.where(conv, g["metrics.minority_collapsed"], np.nan)
    frac = np.nanmean(m, axis=-1) if m.ndim == 3 else m
    pred = lam_over_star >= 1
    near = np.abs(lam_over_star - 1) <= 0.02
    maj = frac > 0.5
    code = np.full(frac.shape, -1)
    code[maj & pred] = diagram.AGREE_COLLAPSED
    code[~maj & ~pred] = diagram.AGREE_NOT
    code[maj & ~pred] = diagram.FALSE_COLLAPSE
    code[~maj & pred] = diagram.MISSED_COLLAPSE
    code[near] = diagram.NEAR
    return frac, code


def test_phase_map_of_n_B_lam_against_numpy(nb_lam):
    g = sweep.load(nb_lam)
    ph = diagram.phase_map(g)
    assert (ph["x"], ph["y"], ph["seeds"]) == ("n_B", "lam", 2)
    n_B, lam = g.axes["n_B"], g.axes["lam"]
    star = np.sqrt(n_B) / (2 * 100 + 2 * n_B)  # λ* from the spec, by hand
    ratio = lam[None, :] / star[:, None]  # (n_B, lam)
    frac, code = _own_decision(g, ratio)
    np.testing.assert_allclose(ph["frac"], frac.T)
    np.testing.assert_array_equal(ph["category"], code.T)
    np.testing.assert_allclose(ph["y_star"], star, rtol=1e-12)
    np.testing.assert_allclose(ph["y_zero"], np.sqrt(100) / (200 + 2 * n_B), rtol=1e-12)
    assert ph["scored"] == int(np.sum(code <= diagram.MISSED_COLLAPSE))
    assert ph["agree"] == ph["scored"]  # every cell farther than 2% from λ* agrees
    assert 0 < np.sum(code == diagram.AGREE_COLLAPSED) < code.size  # both phases present
    # spread panel: the first seed's spread
    np.testing.assert_array_equal(ph["spread"], g["metrics.minority_spread_Z"][:, :, 0].T)


def test_plot_of_n_B_lam_draws_two_panels_and_prints_the_agreement(nb_lam, tmp_path, capsys):
    g = sweep.load(nb_lam)
    png = tmp_path / "p.png"
    assert main(["plot", str(nb_lam), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == PNG
    captured = capsys.readouterr()
    assert "plotting the slice {'seed': 0}" in captured.err
    n_B, lam = g.axes["n_B"], g.axes["lam"]
    ratio = lam[None, :] / (np.sqrt(n_B) / (200 + 2 * n_B))[:, None]
    _, code = _own_decision(g, ratio)
    scored = int(np.sum(code <= diagram.MISSED_COLLAPSE))
    assert (f"agrees with lam* = sqrt(n_B)/N in 100.0% of the {scored} solved cells farther "
            "than 2% from it (majority of 2 seeds") in captured.out
    pdf = tmp_path / "p.pdf"
    assert main(["plot", str(nb_lam), "--out", str(pdf)]) == 0
    assert pdf.read_bytes()[:5] == b"%PDF-"


def _own_root(x, s, tol):
    """Numpy route to the spread's zero: quadratic through the last 3 points above tol in
    log x, its root nearest the bracket moved into it."""
    i = np.flatnonzero(s > tol)[-1]
    a, b = np.log(x[i]), np.log(x[i + 1])
    for deg in (2, 1):  # the straight line where the quadratic has no root near
        if i < deg:
            continue
        r = np.roots(np.polyfit(np.log(x[i - deg:i + 1]), s[i - deg:i + 1], deg))
        r = r[np.isreal(r)].real
        if r.size:
            near = r[np.argmin(np.abs(r - np.clip(r, a, b)))]
            if abs(near - np.clip(near, a, b)) <= b - a:
                return np.exp(np.clip(near, a, b))
    return np.nan


def test_report_of_n_B_lam_against_numpy(nb_lam, tmp_path):
    md = tmp_path / "nb.md"
    assert main(["report", str(nb_lam), "--out", str(md)]) == 0
    text = md.read_text(encoding="utf-8")
    g = sweep.load(nb_lam)
    n_B, lam = g.axes["n_B"], g.axes["lam"]
    star = np.sqrt(n_B) / (200 + 2 * n_B)
    _, code = _own_decision(g, lam[None, :] / star[:, None])
    assert "## Per-cell decision over (n_B, lam)" in text and "2 seed(s) per cell" in text
    for c, name in enumerate(diagram.DECISION_NAMES):
        assert f"- {name}: {int(np.sum(code == c))}\n" in text
    s = g["metrics.minority_spread_Z"]  # (n_B, lam, seed)
    devs = [abs(_own_root(lam, s[j, :, k], COLLAPSE_TOL) / star[j] - 1)
            for j in range(n_B.size) for k in range(2)]
    devs = [d for d in devs if np.isfinite(d)]
    got = re.search(r"found on (\d+) lines: max relative deviation ([\d.e+-]+), median "
                    r"([\d.e+-]+)", text)
    assert int(got.group(1)) == len(devs)
    assert float(got.group(2)) == pytest.approx(max(devs), rel=1e-6)
    assert float(got.group(3)) == pytest.approx(np.median(devs), rel=1e-6)
    assert len(devs) >= 6 and max(devs) < 0.2  # on a grid 35% apart in λ


def test_ratio_n_B_run_phase_map_report_and_plot(ratio_nb, tmp_path, capsys):
    g = sweep.load(ratio_nb)
    assert (g.status == "converged").all()
    ph = diagram.phase_map(g)
    assert (ph["x"], ph["y"], ph["seeds"]) == ("ratio", "n_B", 1)
    n_B = g.axes["n_B"]
    ratio = np.broadcast_to(4.0 / np.sqrt(n_B)[None, :], g.shape)  # λ/λ* = c/sqrt(n_B)
    _, code = _own_decision(g, ratio)
    np.testing.assert_array_equal(ph["category"], code.T)
    assert ph["agree"] == ph["scored"] > 0
    assert ph["y_star"] is None and ph["zero"] is not None  # boundaries come as contours
    # the zero field: log(λ/λ_0) = log(c / sqrt(ratio n_B)) by hand
    want = np.log(4.0 / np.sqrt(g.axes["ratio"][None, :] * n_B[:, None]))
    np.testing.assert_allclose(ph["zero"], want, rtol=1e-9, atol=1e-12)

    png = tmp_path / "r.png"
    assert main(["plot", str(ratio_nb), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == PNG
    assert "sqrt(n_B)/N = 4/N in 100.0%" in capsys.readouterr().out

    md = tmp_path / "r.md"
    assert main(["report", str(ratio_nb), "--out", str(md)]) == 0
    text = md.read_text(encoding="utf-8")
    assert "Along `n_B`" in text  # the axis that crosses the boundary, not ratio
    assert "## Per-cell decision over (ratio, n_B)" in text
    scored = int(np.sum(code <= diagram.MISSED_COLLAPSE))
    assert f"{scored} of {scored} agree, fraction 1.000000" in text
    assert f"- near the boundary (not scored): {int(np.sum(code == diagram.NEAR))}" in text
    # the measured crossing along n_B per ratio, recomputed: last point above the
    # tolerance as n_B falls, interpolated in log n_B; predicted n_B = c² = 16
    s = g["metrics.minority_spread_Z"]  # (ratio, n_B)
    devs = []
    for row in s:
        x, f = 1 / n_B[::-1], row[::-1]  # collapse as 1/n_B rises
        i = np.flatnonzero(f > COLLAPSE_TOL)[-1]
        t = (f[i] - COLLAPSE_TOL) / (f[i] - f[i + 1])
        est = 1 / np.exp(np.log(x[i]) + t * np.log(x[i + 1] / x[i]))
        devs.append(abs(est / 16 - 1))
    mx = float(re.search(r"max relative deviation \|measured/predicted - 1\|: ([\d.e+-]+)",
                         text).group(1))
    # predicted is the linear interpolation of c/sqrt(n_B) - 1 between grid points
    assert mx == pytest.approx(max(devs), abs=2e-3)
    assert mx < 0.05


def test_heatmaps_of_chosen_cells(nb_lam, tmp_path, capsys):
    g = sweep.load(nb_lam)
    png = tmp_path / "cells.png"
    assert main(["plot", str(nb_lam), "--cell", "n_B=31,lam=0.079", "--cells", "0,5",
                 "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == PNG
    out = capsys.readouterr().out
    # nearest grid cell by hand: n_B = 30 (index 2), lam = 0.08 (index 7), seed 0
    i = (2 * 8 + 7) * 2 + 0
    assert f"cell {i}: n_B=30, lam=0.08, seed=0" in out
    assert "cell 0: n_B=10, lam=0.01, seed=0" in out and "cell 5:" in out
    # λ = 0.08 > λ*(30) = sqrt(30)/260 = 0.021 and > sqrt(100)/260 = 0.038: Z = 0
    assert f"cell {i}: n_B=30, lam=0.08, seed=0 | N=260, lam/lam*={0.08 * 260 / np.sqrt(30):.3g}; " \
           "measured collapsed (Z = 0), theory collapsed (Z = 0)" in out
    assert "measured not collapsed, theory not collapsed" in out  # λ = 0.01 < λ*(10)
    assert main(["plot", str(nb_lam), "--cell", "n_X=3"]) == 2
    assert "no axis ['n_X']" in capsys.readouterr().err
    assert main(["plot", str(nb_lam), "--cells", "96"]) == 2


def test_cell_titles_clear_the_colour_bars(nb_lam):
    """The three-panel heatmap of ``ncjax plot --cell``, with its longest titles (a Z = 0
    cell: "collapsed (Z = 0)" twice): no title overlaps another panel or colour bar, and
    every title lies inside the figure (drawn, then measured in display coordinates)."""
    g = sweep.load(nb_lam)
    cells = [0, (2 * 8 + 7) * 2, 5]  # the middle one: n_B = 30, λ = 0.08, Z = 0
    counts = spec.expand(g.spec).counts(cells)
    titles = [plot.cell_title(c) for c in analysis.cells(g, cells)]
    assert titles[1].count("(Z = 0)") == 2
    Zs = np.stack([g["Z"][np.unravel_index(i, g.shape)] for i in cells])
    fig = draw.z_heatmaps(Zs, counts, titles)
    canvas = FigureCanvasAgg(fig)  # a Figure has no renderer of its own: draw it with Agg
    canvas.draw()
    r = canvas.get_renderer()
    page = fig.bbox
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 3
    for ax in panels:
        box = ax.title.get_window_extent(r)
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and box.y1 <= page.y1
        for other in fig.axes:
            if other is not ax:
                assert not box.overlaps(other.get_window_extent(r)), ax.get_title()


def test_trace_of_a_cell(nb_lam, tmp_path, capsys):
    png = tmp_path / "trace.png"
    assert main(["plot", str(nb_lam), "--cells", "3", "--trace", "12", "--m", "2", "--out",
                 str(png)]) == 0
    assert png.read_bytes()[:8] == PNG
    out = capsys.readouterr().out
    m = re.search(r"F ([\d.]+) -> ([\d.]+) after 12 steps \(stored objective ([\d.]+)", out)
    F0, F12, stored = map(float, m.groups())
    g = sweep.load(nb_lam)
    assert stored == pytest.approx(g["objective"].reshape(-1)[3], rel=1e-9)
    assert stored <= F12 + 1e-9 < F0  # a converged solve is at least as low
    nc1_start, nc1_end = map(float, re.search(r"NC1 ([\d.e+-]+) -> ([\d.e+-]+)", out).groups())
    assert nc1_end < 1e-3 * nc1_start
    assert main(["plot", str(nb_lam), "--trace", "5"]) == 2


def _P(Z, b, n, lam):
    """The convex objective P(Z, b) (DESIGN.md §1, λ_b = 0) in float64 numpy."""
    U = Z.T + b
    mx = U.max(1, keepdims=True)
    ce = np.log(np.exp(U - mx).sum(1)) + mx[:, 0] - np.diag(U)
    return (n / n.sum()) @ ce + lam * np.linalg.svd(Z * np.sqrt(n)[None, :],
                                                    compute_uv=False).sum()


def test_float32_rounding_near_zero_counts_as_zero():
    """The sweeps/phase_nB_lam.toml exception, rebuilt: 5×500 + 5×280, λ 0.2% above
    sqrt(n_A)/N, where the theory says Z* = 0 (the largest count is shared) and the
    minority collapses. A float32 solve there stops with ‖z_k‖ ~ 1e-4 along the flat
    within-majority direction plus rounding-size minority columns, whose relative spread
    (> COLLAPSE_TOL) measures rounding. Its P is within the float32 rounding of Ent(π),
    the zero point's value: it counts as Z = 0. Scaled up 100×, or in float64, it does not."""
    n = np.array([500.0] * 5 + [280.0] * 5)
    pi = n / n.sum()
    lam = 1.002 * np.sqrt(500) / n.sum()
    Z = np.zeros((10, 10))
    Z[:5, :5] = 1e-4 * (np.eye(5) - 0.2)  # ⟨G(π), Y⟩ = −λ_0‖Y‖_*: first order (λ − λ_0)‖Y‖_*
    Z[:, 5:] = 5e-7 * np.random.default_rng(0).normal(size=(10, 5))
    b0 = np.log(pi) - np.log(pi).mean()  # the zero point's bias (λ_b = 0)
    ent = -(pi * np.log(pi)).sum()
    zB = Z[:, 5:]
    rel = (np.linalg.norm(zB[:, :, None] - zB[:, None, :], axis=0).max()
           / np.linalg.norm(Z, axis=0).max())
    assert rel > 2 * COLLAPSE_TOL  # the old rule: relative spread, "not collapsed"
    tol32 = 10 * np.finfo(np.float32).eps * ent  # K eps max(1, |P0|)
    assert 0 < _P(Z, b0, n, lam) - ent < tol32 / 4
    assert _P(100 * Z, b0, n, lam) - ent > 10 * tol32

    compute = jax.jit(metrics.compute)

    def measure(Z, dtype):
        with x64(dtype == np.float64):
            prob = problem.from_lam(n.astype(dtype), dtype(lam), dtype(0))
            out = compute(np.eye(10, dtype=dtype), Z.T[:, None, :].astype(dtype),
                          b0.astype(dtype), prob)
            return bool(out["zero_solution"]), bool(out["minority_collapsed"])

    assert measure(Z, np.float32) == (True, True)  # = the theory: Z* = 0, collapsed
    assert measure(100 * Z, np.float32) == (False, False)
    assert measure(Z, np.float64) == (False, False)  # float64 resolves 1e-15: strict


# --- plotting as a library: a notebook's backend kept, presets, zero drawn as zero --------

F32_FLOOR = float(np.sqrt(np.finfo(np.float32).eps))  # metrics.vanished's sqrt(eps), by hand
F64_FLOOR = float(np.sqrt(np.finfo(np.float64).eps))

# A notebook's inline backend is a "module://" backend that IPython selects before any
# figure is made; this stand-in is one (pyplot would import it, if anything called pyplot).
INLINE = """
from matplotlib.backend_bases import FigureManagerBase
from matplotlib.backends.backend_agg import FigureCanvasAgg as FigureCanvas
FigureManager = FigureManagerBase
def show(*args, **kwargs):
    pass
"""

NOTEBOOK = r"""
import json, sys
import matplotlib
import numpy as np
matplotlib.use("module://nbinline")
before, rc = matplotlib.get_backend(), dict(matplotlib.rcParams)
import ncjax
from ncjax import draw, draw_phase, draw_remedies, plot
after_import = matplotlib.get_backend()
from matplotlib.figure import Figure
g, r = ncjax.load(sys.argv[1]), ncjax.load(sys.argv[2])
x, S = np.arange(1.0, 4.0), np.array([[1e-9, 0.3, 1.0]] * 2)
panel = {"title": "t", "xlabel": "x", "log_x": False, "x": x, "ratios": np.array([10.0]),
         "predicted": x[None], "measured": x[None], "lo": x[None], "hi": x[None],
         "v_lo": x[None], "v_hi": x[None], "zero": x[None], "cos": -x[None] / 9,
         "lam_cos": {10.0: 0.1}}
figs = {
    "plot.phase": plot.phase(g), "plot.cells": plot.cells(g, [0, 5]),
    "plot.curves spread": plot.curves(g.sel(n_B=10, seed=0)),
    "plot.curves angles": plot.curves(r.sel(ratio=1.5)),
    "plot.trace": plot.trace(plot.retrace(g, [3], 12, m=2)),
    "draw.group_spreads": draw.group_spreads(x, S, [5.0, 2.0], [2, 2], [1.5, 2.5], tol=0.01),
    "draw.cosines": draw.cosines(x, {k: S for k in ("AA", "BB", "AB")}, -0.25,
                                 line_labels=["a", "b"]),
    "draw.spread_curve": draw.spread_curve(x, S, [2.0, np.nan], line_labels=["a", "b"],
                                           tol=0.01, xlabel="x"),
    "draw.z_heatmaps": draw.z_heatmaps(np.eye(3)[None], [[2.0, 1.0, 1.0]], ["t"]),
    "draw.traces": draw.traces(x, S, S, S, ["a", "b"]),
    "draw_phase.phase_diagram": draw_phase.phase_diagram(x, x, np.outer(x, x)),
    "draw_remedies.remedies": draw_remedies.remedies([panel, panel]),
}
print(json.dumps({"before": before, "after_import": after_import,
                  "after_calls": matplotlib.get_backend(),
                  "rc_kept": dict(matplotlib.rcParams) == rc,
                  "pyplot": "matplotlib.pyplot" in sys.modules,
                  "figures": {k: isinstance(f, Figure) for k, f in figs.items()},
                  # what IPython shows inline: a PNG, with nothing that pyplot registered
                  "png": {k: f._repr_png_().startswith(b"\x89PNG\r\n\x1a\n")
                          for k, f in figs.items()},
                  "pyplot_after_png": "matplotlib.pyplot" in sys.modules}))
"""


def test_every_plotting_function_returns_a_figure_and_keeps_a_notebooks_backend(
        nb_lam, ratio_nb, tmp_path):
    """In a fresh interpreter whose backend is an inline-style "module://" one (as in a
    notebook): importing ncjax.plot and calling every figure function (ncjax.plot on loaded
    grids, the drawing modules on arrays) returns Figures that render themselves as PNG
    for IPython (a notebook that never imported pyplot has no figure formatter), and
    leaves the backend, every rcParam and pyplot (never imported) as they were."""
    import json
    import os
    import subprocess
    import sys
    (tmp_path / "nbinline.py").write_text(INLINE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    env.pop("MPLBACKEND", None)
    out = subprocess.run([sys.executable, "-c", NOTEBOOK, str(nb_lam), str(ratio_nb)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["before"] == got["after_import"] == got["after_calls"] == "module://nbinline"
    assert got["rc_kept"] and not got["pyplot"]
    assert len(got["figures"]) == 12 and all(got["figures"].values()), got["figures"]
    assert all(got["png"].values()) and not got["pyplot_after_png"], got["png"]


def _drawn(fig):
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas


def test_noise_cells_are_drawn_as_zero_by_the_dtypes_floor():
    """A hand-built (3 x 4) spread: the cells at most sqrt(eps) of the dtype (float32:
    3.45e-4; float64: 1.49e-8, computed here from finfo) take the flat zero colour, every
    other finite cell a colour of the data's scale, a Z = 0 cell the Z = 0 colour on top."""
    from matplotlib.colors import to_rgba
    from ncjax import draw_phase, style
    spread = np.array([[1e-12, 1e-7, 3.4e-4, 3.5e-4],
                       [1e-3, 0.01, 0.5, 1.4],
                       [2e-8, 1e-9, np.nan, 0.2]])
    zero = np.zeros(spread.shape, bool)
    zero[2, 1] = True
    x, y = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.1, 0.2, 0.3])
    for dtype, floor, cells in (("float32", F32_FLOOR, 5), ("float64", F64_FLOOR, 2)):
        fig = draw_phase.phase_diagram(x, y, spread, zero_shown=zero, dtype=dtype,
                                       log_y=False)
        _drawn(fig)
        ax = fig.axes[0]
        data, z0 = ax.collections[0], ax.collections[1]
        colours = data.get_facecolors().reshape(3, 4, 4)
        flat = np.all(np.isclose(colours, to_rgba(style.ZERO_COLOR)), axis=-1)
        want = np.isfinite(spread) & (spread <= floor)
        assert want.sum() == cells  # 3.4e-4 is noise in float32, 2e-8 data in float64
        np.testing.assert_array_equal(flat, want)
        assert data.norm.vmin == pytest.approx(floor, rel=1e-6)
        np.testing.assert_array_equal(~np.ma.getmaskarray(z0.get_array()).reshape(3, 4), zero)
        assert np.allclose(z0.get_facecolors().reshape(3, 4, 4)[2, 1], to_rgba(style.Z0_COLOR))
        labels = [t.get_text() for t in fig.legends[0].get_texts()]
        assert f"0 to {dtype} rounding" in " ".join(labels) and "$Z=0$ (measured)" in labels


def test_out_by_extension_and_an_unknown_one_refused_before_any_work(nb_lam, tmp_path,
                                                                     monkeypatch):
    from ncjax.validate import InputError
    g = sweep.load(nb_lam)
    for name, magic in (("f.png", PNG), ("f.pdf", b"%PDF-"), ("f.SVG", b"<?xml")):
        fig = plot.phase(g, out=tmp_path / name)
        assert (tmp_path / name).read_bytes()[:len(magic)] == magic and fig.axes
    assert b"<svg" in (tmp_path / "f.SVG").read_bytes()

    def no_work(*args, **kwargs):
        raise AssertionError("worked before refusing the file name")

    monkeypatch.setattr(diagram, "phase_map", no_work)
    monkeypatch.setattr(analysis, "curves", no_work)
    monkeypatch.setattr(analysis, "cells", no_work)
    for call in (lambda o: plot.phase(g, out=o), lambda o: plot.curves(g, out=o),
                 lambda o: plot.cells(g, [0], out=o),
                 lambda o: draw.spread_curve([1, 2], [[1, 1]], [1], line_labels=["a"],
                                             tol=0.01, xlabel="x", out=o)):
        with pytest.raises(InputError, match=r"f\.xyz.*expected a file ending in one of"):
            call(tmp_path / "f.xyz")
    with pytest.raises(InputError, match="size: expected one of column, full, slide"):
        plot.phase(g, size="poster")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.SVG", "f.pdf", "f.png"]


def test_phase_figure_of_a_loaded_grid(nb_lam):
    """plot.phase on the (n_B, λ) run at each preset: its width, its type sizes (the
    caller's rcParams untouched), the title stating the problem (N = 200 + 2 n_B from 220
    to 320, the loss, the solver; not the run's folder), the cells drawn as zero where the
    first seed's spread is at most float64's sqrt(eps) or its Z counts as 0 (numpy from
    the grid), and the measured boundary drawn above the theory's."""
    import matplotlib
    from matplotlib.colors import to_rgba
    from ncjax import style
    g = sweep.load(nb_lam)
    rc = dict(matplotlib.rcParams)
    s = g["metrics.minority_spread_Z"][:, :, 0].T  # (lam, n_B), seed 0
    conv = (g.status == "converged")[:, :, 0].T
    z0 = conv & (g["metrics.zero_solution"][:, :, 0].T == 1)
    for size, width, font in (("column", 3.4, 7.0), ("full", 7.0, 8.5), ("slide", 11.0, 14.0)):
        fig = plot.phase(g, size=size)
        _drawn(fig)
        assert fig.get_size_inches()[0] == pytest.approx(width)
        ax = fig.axes[0]
        assert ax.xaxis.label.get_fontsize() == pytest.approx(font)
        assert ax.get_xticklabels()[0].get_fontsize() == pytest.approx(0.9 * font, abs=0.05)
        assert dict(matplotlib.rcParams) == rc
    title = fig.get_suptitle()
    for part in ("two clusters 2 $\\times$ 100 + 2 $\\times$ $n_B$", "N = 220 … 320",
                 "cross-entropy", "float64 L-BFGS", "8 $\\times$ 6 cells $\\times$ 2 seeds"):
        assert part in title, title
    assert "nb_lam" not in title and "run" not in title
    flat = np.all(np.isclose(ax.collections[0].get_facecolors().reshape(8, 6, 4),
                             to_rgba(style.ZERO_COLOR)), axis=-1)
    np.testing.assert_array_equal(flat, conv & (s <= F64_FLOOR))
    assert 0 < flat.sum() and z0.any()
    np.testing.assert_array_equal(~np.ma.getmaskarray(ax.collections[1].get_array())
                                  .reshape(8, 6), z0)
    theory = [a for a in ax.get_lines() if a.get_label().startswith("theory")]
    measured = [c for c in ax.collections[2:] if np.allclose(c.get_edgecolor()[0][:3], 0)]
    assert theory and measured
    assert min(c.get_zorder() for c in measured) > max(a.get_zorder() for a in theory)


def test_zero_band_of_the_curves_and_one_scale_for_the_heatmaps():
    """Curves: a value at most the floor is drawn inside the zero band [floor/30, floor]
    (each line at its own height there), every other value where it is. Heatmaps: every
    panel on one scale ±max|Z| (the vanished columns left out), vanished columns in the
    zero colour."""
    from ncjax import style
    lam = np.array([1.0, 2.0, 3.0, 4.0])
    s = np.array([[1.0, 0.1, 1e-9, 1e-15], [0.5, 1e-3, 2e-8, 0.0]])
    fig = draw.group_spreads(lam, s, [9.0, 4.0], [2, 3], [2.5, 3.5], tol=0.01)
    curves = [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("$n_g")]
    assert len(curves) == 2
    heights = []
    for ln, row in zip(curves, s):
        y = ln.get_ydata()
        low = row <= F64_FLOOR
        np.testing.assert_array_equal(y[~low], row[~low])
        assert np.all((F64_FLOOR / 30 < y[low]) & (y[low] < F64_FLOOR))
        heights.append(set(y[low]))
    assert len(heights[0]) == len(heights[1]) == 1 and heights[0] != heights[1]
    f32 = draw.spread_curve(lam, s, [np.nan, np.nan], line_labels=["a", "b"], tol=0.01,
                            xlabel="x", dtype="float32")
    y = f32.axes[0].get_lines()[1].get_ydata()  # 2e-8: data in float64, zero in float32
    np.testing.assert_array_equal(y[:2], [0.5, 1e-3])
    assert np.all((F32_FLOOR / 30 < y[2:]) & (y[2:] < F32_FLOOR))

    Zs = np.stack([np.diag([4.0, -1.0, 1e-12]), 0.01 * np.eye(3)])
    gone = np.array([[False, False, True], [False, False, False]])
    fig = draw.z_heatmaps(Zs, [[2.0, 1.0, 1.0]] * 2, ["a", "b"], vanished=gone)
    images = [im for ax in fig.axes for im in ax.get_images()]
    data = [im for im in images if im.get_cmap().name == "RdBu_r"]
    assert len(data) == 2 and all(im.norm is data[0].norm for im in data)
    assert (data[0].norm.vmin, data[0].norm.vmax) == (-4.0, 4.0)
    (overlay,) = [im for im in images if im not in data]
    np.testing.assert_array_equal(~np.ma.getmaskarray(overlay.get_array()),
                                  np.broadcast_to(gone[0], (3, 3)))
    assert overlay.get_cmap().colors == [style.ZERO_COLOR]


def test_report_flags_cosines_of_vectors_at_the_floor(nb_lam):
    """A cosine between vectors of which one has ||z_k|| <= 1e-5 (ZERO_ATOL) is marked †,
    in ``ncjax solve``'s lines and in the report's table; others are not."""
    from types import SimpleNamespace
    from ncjax import report
    counts = np.array([100.0, 100.0, 20.0, 20.0])
    assert analysis.at_floor([1.0, 1.0, 4e-6, 1.0], counts) == {
        "AA": False, "BB": True, "AB": True}
    assert analysis.at_floor([1e-5, 1.0, 2e-5, 1.0], counts) == {
        "AA": True, "BB": False, "AB": True}
    assert analysis.at_floor([1.0, 1.0, 4e-6, 1.0]) == {  # counts unknown: every pair
        "AA": True, "BB": True, "AB": True}
    m = {"cos_Z_AA": -0.5, "cos_Z_BB": 0.3, "cos_Z_AB": np.nan, "norm_z": [1, 1, 4e-6, 1],
         "nc1": 0.0, "within_spread": 0.0, "convex_objective": 1.0, "minority_collapsed": 0,
         **{f"minority_spread_{k}": 1.0 for k in "ZWH"}}
    t = {"lam": 0.01, "c": 2.4, "minority_collapse": 0, "lam_star": 0.02, "etf_cosine": -1 / 3}
    r = SimpleNamespace(metrics=m, theory=t, counts=counts, lam_W=0.01, lam_H=0.01, lam_b=0.0,
                        status="converged", steps=3, grad_norm=0.0, objective=1.0, gap=0.0,
                        Z=np.zeros((4, 4)))
    line = next(ln for ln in report.solution(r).splitlines() if ln.startswith("cosines"))
    assert "within A -0.5000  within B +0.3000 †  A-B —" in line
    assert report.FLOOR_NOTE in report.solution(r)
    m["norm_z"] = [1, 1, 1, 1]
    assert "†" not in report.solution(r)

    g = sweep.load(nb_lam)
    g.fields["metrics.norm_z"][0, 0, 1, 2:] = 3e-6  # n_B = 10, λ = 0.01, seed 1: minority
    text = report.render(g)
    cos = lambda k: g[f"metrics.cos_Z_{k}"][0, 0, 1]
    assert (f"| lam=0.01, seed=1 | 10 | {cos('AA'):+.6f} | {cos('BB'):+.6f} † | "
            f"{cos('AB'):+.6f} † |") in text
    assert text.count("†") == 2 + 1  # the two cosines and the note
