"""Sweep specs: the grid they expand to, and every refusal naming the file and the key."""

from pathlib import Path

import numpy as np
import pytest

from ncjax import spec as S

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"

BASE = """
[problem]
profile = "two_cluster"
K_A = 5
K_B = 5
n_A = 500
lam_W = 0.01
[axes]
n_B = [100, 50]
lam = {log = [1e-3, 1e-2, 3]}
seed = [0, 1]
"""


def test_quick_spec_expands_to_its_grid():
    sp = S.load(SWEEPS / "quick.toml")
    g = S.expand(sp)
    assert g.shape == (24, 24)
    assert 400 <= np.prod(g.shape) <= 600
    np.testing.assert_allclose(sp.axes["lam"], np.geomspace(1e-3, 8e-3, 24))
    counts = g.counts()
    assert counts.shape == (576, 10)
    # C order: the last axis (λ) varies fastest
    np.testing.assert_allclose(counts[:24, -1], 20.0)
    np.testing.assert_allclose(np.sqrt(g.params["lam_W"] * g.params["lam_H"]), g.params["lam"])
    np.testing.assert_allclose(g.params["lam"][:24], sp.axes["lam"])


def test_grid_values_and_derived_settings():
    g = S.expand(S.loads(BASE))
    assert g.shape == (2, 3, 2)
    np.testing.assert_array_equal(g.params["seed"][:4], [0, 1, 0, 1])
    np.testing.assert_array_equal(g.params["n_B"][::6], [100, 50])
    assert [len(b) for b in g.blocks()] == [12]


def test_c_ratio_and_paper_convention():
    text = """
[problem]
profile = "two_cluster"
K_A = 3
K_B = 7
n_B = 100
convention = "paper"
lam_W = 0.05
lam_b = 0.01
[axes]
ratio = [5, 10]
c = [2.0]
"""
    g = S.expand(S.loads(text))
    counts = g.counts()
    np.testing.assert_allclose(counts[:, 0], [500, 1000])
    N = counts.sum(1)
    np.testing.assert_allclose(g.params["lam"], 2.0 / N)  # c and lam are the convex λ
    np.testing.assert_allclose(g.params["lam_W"], 0.1)    # paper → half doubles λ_W, λ_b
    np.testing.assert_allclose(g.params["lam_b"], 0.02)


def test_K_axis_gives_one_block_per_K():
    text = """
[problem]
profile = "balanced"
n = 100
lam = 0.01
[axes]
K = [3, 5]
seed = [0, 1]
"""
    g = S.expand(S.loads(text))
    blocks = g.blocks()
    assert [b.tolist() for b in blocks] == [[0, 1], [2, 3]]
    assert g.counts(blocks[1]).shape == (2, 5)
    with pytest.raises(S.InputError, match="different K"):
        g.counts()


def _refused(text, *words):
    with pytest.raises(S.SpecError) as e:
        S.loads(text, "sweeps/x.toml")
    msg = str(e.value)
    assert msg.startswith("sweeps/x.toml: "), msg
    for w in words:
        assert w in msg, msg


@pytest.mark.parametrize("old, new, words", [
    ("K_A = 5\n", "K_A = 5\ncolour = 1\n", ["[problem].colour"]),
    ("[axes]\n", "[axes]\nbeta = [1]\n", ["[axes].beta"]),
    ("lam_W = 0.01\n", "lam_W = 0.01\n[plots]\nx = 1\n", ["plots", "tables"]),
    ("K_A = 5\n", 'K_A = "five"\n', ["[problem].K_A", "integer"]),
    ("K_A = 5\n", "K_A = 2.5\n", ["[problem].K_A", "integer"]),
    ("n_B = [100, 50]", "n_B = []", ["[axes].n_B", "non-empty"]),
    ("lam = {log = [1e-3, 1e-2, 3]}", "lam = {log = [1e-3, 1e-2, 0]}", ["[axes].lam.log", "num >= 1"]),
    ("lam = {log = [1e-3, 1e-2, 3]}", "lam = {log = [0, 1e-2, 3]}", ["[axes].lam.log", "> 0"]),
    ("lam = {log = [1e-3, 1e-2, 3]}", "lam = {geom = [1, 2, 3]}", ["[axes].lam", "lin"]),
    ("n_B = [100, 50]", "n_B = [100, 600]", ["[axes].n_B", "n_B <= n_A"]),
    ("n_B = [100, 50]", "n_B = [100, 100]", ["[axes].n_B", "distinct"]),
    ("lam = {log = [1e-3, 1e-2, 3]}", "lam = [0.01]\nc = [1.0]", ["one of lam or c"]),
    ("lam = {log = [1e-3, 1e-2, 3]}", "lam = [-0.01]", ["[axes].lam", "> 0"]),
    ("lam = {log = [1e-3, 1e-2, 3]}", "lam_b = [-1.0]\nlam_H=[1.0]", ["[axes].lam_b", ">= 0"]),
    ('profile = "two_cluster"', 'profile = "zipf"', ["[problem].profile"]),
    ("n_A = 500\n", "", ["two of n_A, n_B, ratio"]),
    ("K_A = 5\n", "K_A = 5\nK = 10\n", ["[problem].K", "two_cluster"]),
    ("K_A = 5\n", 'K_A = 5\nloss = "mse"\n', ["[problem].loss", "'ce'"]),
    ("seed = [0, 1]", "seed = [0, 1.5]", ["[axes].seed", "integer"]),
    ("seed = [0, 1]", "seed = [0, 1]\n[solver]\ndtype = 'float16'", ["[solver].dtype"]),
    ("seed = [0, 1]", "seed = [0, 1]\n[run]\nchunk_size = 0", ["[run].chunk_size"]),
    ("seed = [0, 1]", "seed = [0, 1]\n[solver]\nmethod = 'newton'", ["[solver].method", "'convex'"]),
    ("seed = [0, 1]", "seed = [0, 1]\n[solver]\ngap_tol = 0", ["[solver].gap_tol", "> 0"]),
    ("seed = [0, 1]", "seed = [0, 1]\n[solver]\npool = 0", ["[solver].pool", ">= 1"]),
    ("seed = [0, 1]", "seed = [0, 1]\n[solver]\npool = 2.5", ["[solver].pool", "integer"]),
    ("K_A = 5\n", "K_A = 5\n= broken\n", ["not valid TOML"]),
])
def test_refused_specs_name_the_key(old, new, words):
    assert old in BASE
    _refused(BASE.replace(old, new), *words)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(S.SpecError, match="cannot read the spec"):
        S.load(tmp_path / "nope.toml")
