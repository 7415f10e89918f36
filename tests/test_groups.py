"""The group-threshold study (sweeps/groups*.toml): `ncjax plot` of a "steps" run over λ
measures each group's collapse threshold; checked against the same threshold recomputed
from the raw Z of the loaded grid, and against the proved two-cluster threshold."""

import re

import numpy as np
import pytest

from ncjax import analysis, groups, sweep
from ncjax.cli import main
from ncjax.tolerances import COLLAPSE_TOL, GAP_TOL, ZERO_ATOL

# Two clusters written as steps: 5 classes of 500 and 5 of 100, N = 3000. Proved
# (DESIGN.md §1): the minority collapses iff λ ≥ sqrt(100)/N = 1/300, and, the largest
# count being shared, Z = 0 iff λ ≥ sqrt(500)/N.
SPEC = """
[problem]
profile = "steps"
groups = [[5, 500], [5, 100]]
[axes]
lam = {log = [0.002, 0.01, 36]}
[solver]
method = "convex"
dtype = "float64"
gap_tol = 1e-8
"""
N = 3000.0
LINE = re.compile(r"n_g=(\S+) K_g=(\d+) predicted=(\S+) measured=(\S+) deviation=(\S+)%"
                  r" bracket=\[(\S+), (\S+)\]")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("groups")
    (d / "steps.toml").write_text(SPEC)
    g = sweep.run(d / "steps.toml", d / "run", quiet=True)
    return d / "run", g


def _threshold_from_Z(lam, Z, members, tol):
    """Independent of ncjax.metrics and ncjax.plot: the group's spread from the columns of
    Z, then the last grid point above tol and the straight line (in log λ) to the next."""
    z = Z[:, :, members]  # (L, K, |g|), column j = z_j
    d = np.linalg.norm(z[:, :, :, None] - z[:, :, None, :], axis=1).max(axis=(1, 2))
    scale = np.linalg.norm(Z, axis=1).max(axis=1)
    s = np.where(scale > ZERO_ATOL, d / np.where(scale > 0, scale, 1.0), d)
    i = np.nonzero(s > tol)[0].max()
    assert (s[i + 1:] <= tol).all()
    t = (s[i] - tol) / (s[i] - s[i + 1])
    return lam[i] * (lam[i + 1] / lam[i]) ** t, lam[i], lam[i + 1]


def test_plot_measures_group_thresholds(run, tmp_path, capsys):
    out, g = run
    assert (g.status == "converged").all() and (g["gap"] <= GAP_TOL).all()
    png = tmp_path / "groups.png"
    assert main(["plot", str(out), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    rows = {float(m[1]): m for m in LINE.finditer(text)}
    assert sorted(rows) == [100.0, 500.0], text
    assert "36 of 36 cells certified" in text

    lam = g.axes["lam"]
    counts = np.array([500.0] * 5 + [100.0] * 5)
    for n_g, m in rows.items():
        members = np.flatnonzero(counts == n_g)
        assert int(m[2]) == members.size
        assert float(m[3]) == pytest.approx(np.sqrt(n_g) / N, rel=1e-5)
        want, lo, hi = _threshold_from_Z(lam, g["Z"], members, COLLAPSE_TOL)
        assert float(m[4]) == pytest.approx(want, rel=1e-5)
        assert (float(m[6]), float(m[7])) == pytest.approx((lo, hi), rel=1e-5)
        assert float(m[5]) == pytest.approx(100 * (want / (np.sqrt(n_g) / N) - 1), abs=0.006)

    # The proved thresholds lie in the measured brackets: the measurement is exact up to
    # the grid spacing (here 4.7% a step).
    step = lam[1] / lam[0]
    for n_g in (100.0, 500.0):
        m = rows[n_g]
        lo, hi, pred = float(m[6]), float(m[7]), np.sqrt(n_g) / N
        assert lo < pred <= hi * (1 + 1e-9) and hi / lo == pytest.approx(step, rel=1e-4)
        assert abs(np.log(float(m[4]) / pred)) <= np.log(step)
    # the minority's spread falls about linearly to 0: extrapolated, it lands on sqrt(100)/N
    # far closer than a grid step (0.6% here, with 4.7% steps)
    z0 = float(re.search(r"n_g=100 .* spread->0 at (\S+)", text)[1])
    assert z0 == pytest.approx(np.sqrt(100) / N, rel=1e-2)
    # Z = 0 from sqrt(500)/N, the exact condition ||G(pi)||_op <= λ saying the same
    zline = re.search(r"Z = 0 measured from lam in \[(\S+), (\S+)\], max_k \|\|z_k\|\| -> 0 "
                      r"at (\S+); sqrt\(n_max\)/N = (\S+) .*\|\|N G\(pi\)\|\|_op/N = (\S+)", text)
    assert zline, text
    lo, hi, z0, shared, exact = map(float, zline.groups())
    assert lo < np.sqrt(500) / N <= hi
    assert shared == pytest.approx(np.sqrt(500) / N, rel=1e-5)
    assert exact == pytest.approx(np.sqrt(500) / N, rel=1e-5)
    assert z0 == pytest.approx(np.sqrt(500) / N, rel=1e-2)
    assert "merge n_g=500 and n_g=100: apart wherever Z != 0" in text


def test_collapse_threshold_edges():
    lam = np.array([1.0, 2.0, 4.0, 8.0])
    # crossing between 2 and 4: spread 0.5 -> 0 with tol 0.25 is halfway in log λ
    est, lo, hi = analysis.collapse_threshold(lam, [1.0, 0.5, 0.0, 0.0], 0.25)
    assert (est, lo, hi) == pytest.approx((np.sqrt(8.0), 2.0, 4.0))
    # a point that dips below tol and rises again does not count; unknown points are skipped
    est, lo, hi = analysis.collapse_threshold(lam, [0.0, 0.5, np.nan, 0.0], 0.25)
    assert (lo, hi) == (2.0, 8.0) and est == pytest.approx(4.0)
    assert np.isnan(analysis.collapse_threshold(lam, [0.0] * 4, 0.25)[:2]).all()
    assert analysis.collapse_threshold(lam, [1.0] * 4, 0.25)[1] == 8.0
    # a straight line s = 4 - λ reaches 0 at λ = 4 exactly; a jump has no zero crossing
    assert analysis.spread_zero([1.0, 2.0, 3.0, 4.5], [3.0, 2.0, 1.0, 0.0]) == pytest.approx(4.0)
    assert np.isnan(analysis.spread_zero([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 0.0]))


def test_zero_condition_against_numpy():
    """‖G(π)‖_op (``groups.zero_condition``, through the dual's G) against G(π) written out
    in numpy, and against the proved threshold sqrt(n_max)/N where n_max is shared."""
    for n in ([500.0] * 5 + [100.0] * 5, [900.0, 400.0, 400.0, 400.0, 100.0, 100.0]):
        n = np.array(n)
        N = n.sum()
        q = np.outer(n / N, np.ones(n.size))  # column k: q_k = π
        G = (q - np.eye(n.size)) * (np.sqrt(n) / N)[None, :]
        assert groups.zero_condition(n) == pytest.approx(np.linalg.norm(G, 2), rel=1e-12)
    assert groups.zero_condition(np.array([500.0] * 5 + [100.0] * 5)) == pytest.approx(
        np.sqrt(500) / 3000, rel=1e-12)
