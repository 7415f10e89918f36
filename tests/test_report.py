"""`ncjax report`: the markdown's numbers against ones recomputed here with plain numpy."""

import re

import numpy as np
import pytest

from ncjax import sweep
from ncjax.cli import main
from tests.conftest import run_spec
from ncjax.tolerances import COLLAPSE_TOL

LAM_SPEC = """
[problem]
profile = "two_cluster"
K_A = 2
n_A = 100
K_B = 2
lam_W = 0.01
d = 4

[axes]
n_B = [10, 40]
lam = { log = [0.01, 0.08, 12] }

[solver]
method = "convex"
dtype = "float64"
"""

NA_SPEC = """
[problem]
profile = "two_cluster"
K_A = 2
K_B = 2
n_B = 20
lam = 0.02
lam_W = 0.01
d = 4

[axes]
n_A = { lin = [30, 300, 10] }
lam_b = [0.0, 0.01]

[solver]
method = "convex"
dtype = "float64"
"""

HEADINGS = ["# ncjax report:", "## Agreement with the theory",
            "## Measured boundary against lam*", "## Cells that did not converge",
            "## Certified gap", "## Asymptotic cosines"]


@pytest.fixture(scope="module")
def lam_run(tmp_path_factory):
    return run_spec(tmp_path_factory, LAM_SPEC, "lam")


@pytest.fixture(scope="module")
def na_run(tmp_path_factory):
    return run_spec(tmp_path_factory, NA_SPEC, "na")


def _number(text, pattern):
    m = re.search(pattern, text)
    assert m, pattern
    return m.groups()


def _crossing(x, s, tol):
    """Own route: the last grid point with spread > tol and the next, interpolated in log x."""
    i = np.flatnonzero(s > tol)[-1]
    t = (s[i] - tol) / (s[i] - s[i + 1])
    return np.exp(np.log(x[i]) + t * np.log(x[i + 1] / x[i]))


def _check_common(text, g):
    for h in HEADINGS:
        assert h in text
    m, t = g["metrics.minority_collapsed"], g["theory.minority_collapse"]
    agree, solved = _number(text, r"all solved cells: (\d+) of (\d+) agree")
    assert int(solved) == g.status.size == np.isfinite(m).sum()
    assert int(agree) == np.sum(m == t)
    frac, = _number(text, r"agree, fraction ([\d.]+)")
    assert float(frac) == pytest.approx(np.mean(m == t), abs=1e-6)
    gap, = _number(text, r"max absolute gap F - F\*: ([\d.e+-]+)")
    assert float(gap) == pytest.approx(g["gap"].max(), rel=1e-6)
    assert float(gap) < 1e-6
    rel, = _number(text, r"max relative gap \(gap / max\(1, \|F\|\)\): ([\d.e+-]+)")
    assert float(rel) == pytest.approx(
        np.max(g["gap"] / np.maximum(1, np.abs(g["objective"]))), rel=1e-6)
    conv, total = _number(text, r"converged: (\d+) of (\d+)")
    assert int(conv) == np.sum(g.status == "converged") and int(total) == g.status.size


def test_report_lam_axis(lam_run, capsys):
    assert main(["report", str(lam_run)]) == 0
    printed = capsys.readouterr().out
    out = lam_run / "report.md"
    assert f"wrote {out}" in printed and "minority collapse matches the theory" in printed
    text = out.read_text(encoding="utf-8")
    g = sweep.load(lam_run)
    _check_common(text, g)

    # far from λ*: λ* = sqrt(n_B)/N from the spec directly
    n_B, lam = g.axes["n_B"], g.axes["lam"]
    lam_star = np.sqrt(n_B) / (2 * 100 + 2 * n_B)  # axes order (n_B, lam)
    far = np.abs(lam[None, :] / lam_star[:, None] - 1) > 0.02
    m = g["metrics.minority_collapsed"] == 1
    pred = lam[None, :] >= lam_star[:, None]
    agree, n_far = _number(text, r"with \|lam/lam\* - 1\| > 0.02: (\d+) of (\d+) agree")
    assert int(n_far) == far.sum() and int(agree) == np.sum((m == pred) & far)

    # the boundary: per n_B, the crossing of the spread through the tolerance vs λ*
    s = g["metrics.minority_spread_Z"]
    devs = [abs(_crossing(lam, s[j], COLLAPSE_TOL) / lam_star[j] - 1) for j in range(n_B.size)]
    mx, = _number(text, r"max relative deviation \|measured/predicted - 1\|: ([\d.e+-]+)")
    md, = _number(text, r"median relative deviation: ([\d.e+-]+)")
    assert float(mx) == pytest.approx(max(devs), rel=1e-5)
    assert float(md) == pytest.approx(np.median(devs), rel=1e-5)
    assert max(devs) < 0.25  # coarse grid: a factor 1.21 between neighbouring points
    assert "at the smallest and largest `n_B`" in text  # n_B is a sample-size axis too


def test_report_sample_axis(na_run, tmp_path, capsys):
    dest = tmp_path / "r.md"
    assert main(["report", str(na_run), "--out", str(dest)]) == 0
    assert f"wrote {dest}" in capsys.readouterr().out
    text = dest.read_text(encoding="utf-8")
    g = sweep.load(na_run)
    _check_common(text, g)
    assert "Along `n_A`" in text

    # predicted n_A*: λ = sqrt(n_B)/(K_A n_A + K_B n_B) solved for n_A
    n_A = g.axes["n_A"]
    n_star = (np.sqrt(20) / 0.02 - 2 * 20) / 2
    s = g["metrics.minority_spread_Z"]  # axes (n_A, lam_b)
    devs = [abs(_crossing(n_A, s[:, j], COLLAPSE_TOL) / n_star - 1) for j in range(2)]
    mx, = _number(text, r"max relative deviation \|measured/predicted - 1\|: ([\d.e+-]+)")
    assert float(mx) == pytest.approx(max(devs), rel=1e-5)
    assert max(devs) < 0.3

    # cosine table: rows at the smallest and largest n_A per lam_b, ETF = -1/3; a cosine
    # with no direction to measure (a vanished vector: NaN) is written "—"
    def cos(pair, i, j):
        v = g[f"metrics.cos_Z_{pair}"][i, j]
        return f"{v:+.6f}" if np.isfinite(v) else "—"

    for j, lb in enumerate(g.axes["lam_b"]):
        for i in (0, -1):
            row = (f"| lam_b={lb:g} | {n_A[i]:g} | {cos('AA', i, j)} | {cos('BB', i, j)} "
                   f"| {cos('AB', i, j)} | {-1 / 3:+.6f} |")
            assert row in text


PNG = b"\x89PNG\r\n\x1a\n"


def test_plot_of_a_sample_size_run(na_run, tmp_path, capsys):
    """`ncjax plot` on a one-axis n_A run: the minority spread along n_A, and the printed
    crossing is the exact n_A* = (sqrt(n_B)/λ − K_B n_B)/K_A."""
    png = tmp_path / "s.png"
    assert main(["plot", str(na_run), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == PNG
    out = capsys.readouterr().out
    for theory in re.findall(r"theory n_A ([\d.]+)", out):
        assert float(theory) == pytest.approx((np.sqrt(20) / 0.02 - 2 * 20) / 2, rel=1e-5)
    assert len(re.findall(r"measured n_A", out)) == 2


def test_plot_of_an_angle_run(tmp_path, capsys):
    """Under λ = c/N with an n_A axis: the cosine figure, and its printed cosines are the
    grid's at the smallest and largest n_A."""
    spec = tmp_path / "angles.toml"
    spec.write_text(NA_SPEC.replace("lam = 0.02", "c = 0.1"))
    g = sweep.run(spec, tmp_path / "run", quiet=True)
    pdf = tmp_path / "a.pdf"
    assert main(["plot", str(tmp_path / "run"), "--out", str(pdf)]) == 0
    assert pdf.read_bytes()[:5] == b"%PDF-"
    out = capsys.readouterr().out
    j = 0  # first lam_b line
    want = f"cos AA {g['metrics.cos_Z_AA'][0, j]:+.5f} -> {g['metrics.cos_Z_AA'][-1, j]:+.5f}"
    assert want in out and "(ETF -0.33333)" in out
