"""Threshold grids: a spec's [thresholds] table turns its grid into a grid of certified
thresholds (ncjax.threshold_sweep), each cell against the closed form; a run stopped
before its last chunk resumes to the uninterrupted grid; show, plot and report read it;
every bad [thresholds] key is one error line naming it, before anything is written."""

import json
import shutil

import numpy as np
import pytest

from ncjax import phases, spec, sweep
from ncjax.threshold_sweep import decided
from ncjax.cli import main

K_A, K_B = 5, 5
RATIOS, LAMS = [2.5, 40.0], [0.001, 0.002, 0.004]
NB_SPEC = f"""
[problem]
profile = "two_cluster"
K_A = {K_A}
K_B = {K_B}
n_B = 1
[axes]
ratio = {RATIOS}
lam = {LAMS}
[thresholds]
along = "n_B"
bracket = [1.0, 1e4]
hold = "ratios"
which = ["collapse"]
[run]
chunk_size = 2
"""
# along λ (and c): the cells have no λ; 2 + 2 classes, n_A = 100, n_B the axis
LAM_SPEC = """
[problem]
profile = "two_cluster"
K_A = 2
K_B = 2
n_A = 100
lam_b = 0.02
[axes]
n_B = [10, 25]
[thresholds]
along = "{along}"
which = ["collapse", "zero"]
"""


@pytest.fixture(scope="module")
def nB_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("thr")
    (d / "nB.toml").write_text(NB_SPEC)
    g = sweep.run(d / "nB.toml", d / "run", quiet=True)
    return d, g


def test_every_cell_is_the_closed_form(nB_run):
    """n_B* = 1/(λ (K_A r + K_B))², where sqrt(n_B)/N = λ with N = n_B (K_A r + K_B), and
    the majority's sqrt(n_A)/N = λ at n_A = r n_B, r n_B*: each cell to 1e-6, certified."""
    _, g = nB_run
    r, lam = np.meshgrid(RATIOS, LAMS, indexing="ij")
    n_B = 1 / (lam * (K_A * r + K_B)) ** 2
    got = g["thresholds.collapse"]
    assert got.shape == (2, 3, 2) and (g.status == "converged").all()
    np.testing.assert_allclose(got[..., 1], n_B, rtol=1e-6)
    np.testing.assert_allclose(got[..., 0], r * n_B, rtol=1e-6)
    np.testing.assert_allclose(g["theory.collapse"], np.stack([r * n_B, n_B], -1), rtol=1e-12)
    lo, hi = np.moveaxis(g["thresholds.collapse_bracket"][..., 1, :], -1, 0)
    assert np.all(np.minimum(lo, hi) <= n_B) and np.all(n_B <= np.maximum(lo, hi))
    assert np.all(np.abs(np.log(hi / lo)) <= np.log1p(1e-6))
    assert np.all(g["thresholds.collapse_gap"] <= 1e-9)
    assert (g["thresholds.group"] == [0] * K_A + [1] * K_B).all()
    assert "thresholds.vanish" not in g.fields and "thresholds.zero" not in g.fields


def test_along_lam_and_c_the_group_rule(tmp_path):
    """Along λ (no λ in the cells) each group collapses at sqrt(n_g)/N and Z = 0 begins at
    sqrt(n_A)/N (the largest count shared, a penalised bias); along c the same times N."""
    n_B = np.array([10.0, 25.0])
    N = 2 * 100 + 2 * n_B
    want = np.stack([np.sqrt(100) / N, np.sqrt(n_B) / N], -1)
    for along, scale in (("lam", 1.0), ("c", N)):
        (tmp_path / f"{along}.toml").write_text(LAM_SPEC.format(along=along))
        g = sweep.run(tmp_path / f"{along}.toml", tmp_path / along, quiet=True)
        assert (g.status == "converged").all()
        np.testing.assert_allclose(g["thresholds.collapse"], want * np.c_[scale], rtol=1e-6)
        np.testing.assert_allclose(g["thresholds.zero"], want[:, 0] * scale, rtol=1e-6)
        np.testing.assert_allclose(g["theory.zero"], want[:, 0] * scale, rtol=1e-12)


def _fields(g) -> dict:
    return {**g.fields, "status": g.status}


def test_a_stopped_run_resumes_to_the_uninterrupted_grid(nB_run):
    """The run without its last chunk (as a SIGKILL before that chunk's commit leaves it,
    its index entry pending) resumes to the uninterrupted grid, bit for bit."""
    d, g = nB_run
    cut = d / "cut"
    shutil.copytree(d / "run", cut)
    last = max(int(p.stem) for p in (cut / "index").glob("*.json"))
    shutil.rmtree(cut / "chunks" / str(last))
    entry = json.loads((cut / "index" / f"{last}.json").read_text())
    (cut / "index" / f"{last}.json").write_text(json.dumps(
        {"step": last, "cells": entry["cells"], "rows": entry["rows"], "pending": True}))
    partial = sweep.load(cut)
    assert 0 < partial.done.sum() < partial.done.size
    assert (partial.status[~partial.done] == "missing").all()
    again = sweep.resume(cut, quiet=True)
    a, b = _fields(again), _fields(g)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k


def test_show_plot_and_report(nB_run, capsys):
    d, g = nB_run
    run = d / "run"
    assert main(["show", str(run)]) == 0
    out = capsys.readouterr().out
    assert "status converged 6" in out and "collapse along n_B" in out
    err = np.nanmax(np.abs(g["thresholds.collapse"] / g["theory.collapse"] - 1), axis=(0, 1))
    assert f"collapse of group 1: found in 6 cells; against the theory in 6, max " \
           f"|measured/theory - 1| {err[1]:.2e}" in out
    assert main(["plot", str(run)]) == 0
    assert "collapse of the minority (5 classes): found in 6 of 6 cells" in capsys.readouterr().out
    assert (run / "thresholds.png").stat().st_size > 10_000
    assert main(["report", str(run)]) == 0
    text = (run / "report.md").read_text()
    assert "| collapse of the minority (5 classes) | 6 of 6 | 6 | 6 |" in text
    assert f"{err[1]:.3e}" in text
    assert main(["plot", str(run), "--cell", "0"]) == 2
    assert "a threshold grid holds thresholds" in capsys.readouterr().err


BAD = [
    ('along = "n_A"', "[thresholds].along"),
    ('along = "n_B"\nbracket = [10, 1]', "[thresholds].bracket"),
    ('along = "n_B"', "[thresholds].bracket"),
    ('along = "n_B"\nbracket = [1, 10]\nrtol = 2.0', "[thresholds].rtol"),
    ('along = "n_B"\nbracket = [1, 10]\nhold = "all"', "[thresholds].hold"),
    ('along = "ratio"\nbracket = [1, 10]\nhold = "ratios"', "[thresholds].hold"),
    ('along = "n_B"\nbracket = [1, 10]\nwhich = ["spread"]', "[thresholds].which"),
    ('along = "n_B"\nbracket = [1, 10]\nwhich = []', "[thresholds].which"),
    ('along = "n_B"\nbracket = [1, 10]\nlam_min = 1e-3', "[thresholds].lam_min"),
    ('along = "n_B"\nbracket = [1, 10]\nmax_steps = 0', "[thresholds].max_steps"),
    ('along = "n_B"\nbracket = [1, 10]\ntol = 1', "[thresholds].tol"),
    ('along = "lam"', "[axes].lam"),
    ('along = "ratio"\nbracket = [1, 10]', "[axes].ratio"),
]


@pytest.mark.parametrize("table, key", BAD)
def test_bad_thresholds_keys_are_one_line(tmp_path, capsys, table, key):
    p = tmp_path / "bad.toml"
    p.write_text(NB_SPEC.split("[thresholds]")[0] + "[thresholds]\n" + table + "\n")
    assert main(["sweep", str(p), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ncjax: error:") and key in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_one_groups_pattern_a_K_block_and_no_solver_table(tmp_path):
    """Cells of one K that differ in their groups (ratio 1 merges the two) are refused
    before anything is written, and so is a [solver] table."""
    text = NB_SPEC.replace("ratio = [2.5, 40.0]", "ratio = [1.0, 40.0]")
    (tmp_path / "g.toml").write_text(text)
    with pytest.raises(spec.SpecError, match=r"\[thresholds\]: expected cells of one K"):
        sweep.run(tmp_path / "g.toml", tmp_path / "g", quiet=True)
    assert not (tmp_path / "g").exists()
    with pytest.raises(spec.SpecError, match=r"\[solver\]: expected no \[solver\] table"):
        spec.loads(NB_SPEC + '[solver]\ndtype = "float64"\n')


def test_a_cell_is_uncertified_where_a_deciding_solve_was_not():
    """``decided``: a found threshold, no search (a group of one class), and no onset with
    both ends certified are decided; NaN gaps (a solve not certified) are not, nor a Z = 0
    check that ran without finding its onset."""
    nan = np.nan
    brk = np.array([[[1.0, 2.0], [nan, nan]], [[1.0, 9.0], [1.0, 9.0]]])
    gap = np.array([[[1e-16, 1e-16], [nan, nan]], [[1e-16, 1e-16], [nan, nan]]])
    t = phases.Thresholds(((0, 1), (2,)), np.array([[1.5, nan], [nan, nan]]),
                          np.full((2, 2), nan), np.array([3.0, nan]), brk, brk,
                          np.array([[2.9, 3.1], [2.9, 3.1]]), gap, gap,
                          np.full((2, 2), 1e-16), "lam")
    np.testing.assert_array_equal(decided(t, "collapse"), [[True, True], [True, False]])
    np.testing.assert_array_equal(decided(t, "zero"), [True, False])
