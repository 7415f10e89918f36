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
