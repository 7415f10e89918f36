"""Sweep specs: the grid they expand to, and every refusal naming the file and the key."""

import itertools
from pathlib import Path

import numpy as np
import pytest

from ncjax import solvable
from ncjax import spec as S
from ncjax.grid import profile_counts, spec_error
from ncjax.problem import to_half
from ncjax.validate import MAX_CLASSES

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
    with pytest.raises(S.SpecError) as e:  # as a sweep refuses it: the spec, then the engine
        solvable.check(S.loads(text, "sweeps/x.toml"))
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
    ("K_A = 5\n", 'K_A = 5\nloss = "focal"\n', ["[problem].loss", "'ce'"]),
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


# The per-cell rule the grid replaced, kept as the reference: one dict of settings per cell.
def _reference_settings(sp, point):
    s = {**sp.problem, **point}
    prof = sp.problem["profile"]
    where = lambda k: f"[axes].{k}" if k in point else f"[problem].{k}"
    K, src = {"two_cluster": (s.get("K_A", 0) + s.get("K_B", 0), "K_A"),
              "steps": (sum(k for k, _ in s.get("groups", [])), "groups"),
              "explicit": (len(s.get("counts", [])), "counts")}.get(prof, (s.get("K"),
                                                                             "K"))
    if K > MAX_CLASSES:
        raise spec_error(sp.path, where(src), f"at most {MAX_CLASSES} classes, got K = {K}")
    try:
        n = profile_counts(prof, s)
    except S.InputError as e:
        raise S.SpecError(f"{sp.path}: {e} (at {point})") from None
    if prof == "two_cluster" and n[-1] > n[0]:
        raise spec_error(sp.path, where("n_B" if "n_B" in s else "ratio"), "n_B <= n_A: "
                           "group A is the majority of 'two_cluster'",
                           f"n_A={n[0]:g}, n_B={n[-1]:g}")
    for k in ("lam", "c", "lam_W", "lam_H", "lam_b"):
        if k in s and (s[k] < 0 or (k != "lam_b" and s[k] == 0)):
            raise spec_error(sp.path, where(k), f"{k} {'>= 0' if k == 'lam_b' else '> 0'}",
                             s[k])
    conv = sp.problem.get("convention", "half")
    lam_b, N = s.get("lam_b", 0.0), n.sum()
    if "lam_W" in s and "lam_H" in s:
        lam_W, lam_H, lam_b = map(np.float64, to_half(s["lam_W"], s["lam_H"], lam_b, conv))
    else:
        lam = np.float64(s["lam"] if "lam" in s else s["c"] / N)
        lam_W = np.float64(to_half(s["lam_W"], 0, 0, conv)[0]) if "lam_W" in s else lam
        lam_b = np.float64(to_half(0, 0, lam_b, conv)[2])
        lam_H = lam**2 / lam_W
    if not np.isfinite(N):
        raise spec_error(sp.path, "[problem]", f"a total count N within float64's range "
                           f"(at {point})")
    for k, v in (("lam_W", lam_W), ("lam_H", lam_H), ("lam_W * lam_H", lam_W * lam_H),
                 ("lam_H / lam_W", lam_H / lam_W), ("lam_b", lam_b if lam_b > 0 else 1.0)):
        if not np.finfo(float).tiny <= v <= np.finfo(float).max:
            raise S.SpecError(f"{k} out of range, got lam = {s.get('lam')!r}")
    return n, {"K": n.size, "N": float(N), "lam_W": float(lam_W), "lam_H": float(lam_H),
               "lam_b": float(lam_b), "lam": np.sqrt(lam_W * lam_H).item(),
               "seed": int(s.get("seed", 0)), "d": int(s.get("d", n.size))}


def _reference_expand(sp):
    names, rows, counts = list(sp.axes), [], []
    with np.errstate(all="ignore"):
        for combo in itertools.product(*(sp.axes[k] for k in names)):
            point = {k: v.item() for k, v in zip(names, combo)}
            n, s = _reference_settings(sp, point)
            rows.append({**point, **s})
            counts.append(n)
    return {k: np.asarray([r[k] for r in rows]) for k in rows[0]}, counts


EXTRA = {
    "long_tail_K_axis": """
[problem]
profile = "long_tail"
n = 1000
lam = 0.003
[axes]
K = [3, 4, 7]
ratio = {log = [1, 100, 5]}
seed = [3, 9]
""",
    "paper_lam_W_lam_H": """
[problem]
profile = "balanced"
K = 4
convention = "paper"
[axes]
n = {lin = [10, 90, 3]}
lam_W = {log = [1e-4, 1e-1, 7]}
lam_H = {log = [1e-3, 1, 6]}
lam_b = [0.0, 0.5]
""",
    "c_with_n_A_and_lam_W": """
[problem]
profile = "two_cluster"
K_A = 2
n_B = 10
d = 12
[axes]
K_B = [1, 3]
n_A = {log = [10, 1e5, 17]}
c = {log = [1e-2, 10, 13]}
lam_W = [1e-3, 0.5]
""",
    "explicit": """
[problem]
profile = "explicit"
counts = [5, 3.5, 1]
lam = 0.02
[axes]
lam_b = {lin = [0, 1, 4]}
""",
}


def _all_specs():
    specs = [S.load(p) for p in sorted(SWEEPS.glob("*.toml"))]
    texts = [BASE, BASE.replace("n_A = 500\n", "").replace("n_B = [100, 50]", "ratio = [5, 2]")
             + "n_B = [10, 20, 30]\n", *EXTRA.values()]
    return specs + [S.loads(t, f"spec{i}") for i, t in enumerate(texts)]


@pytest.mark.parametrize("sp", _all_specs(), ids=lambda sp: Path(sp.path).stem)
def test_grid_matches_the_per_cell_rule_bit_for_bit(sp):
    g = S.expand(sp)
    want, counts = _reference_expand(sp)
    assert list(g.params) == list(want)
    for k, v in want.items():
        assert g.params[k].dtype == v.dtype, k
        np.testing.assert_array_equal(g.params[k], v, err_msg=k, strict=True)
    for b in g.blocks():
        np.testing.assert_array_equal(g.counts(b), np.stack([counts[i] for i in b]), strict=True)
        sel = b[::7]
        at = g.params_at(sel)
        for k, v in want.items():
            np.testing.assert_array_equal(at[k], v[sel], err_msg=k, strict=True)
    Ks = want["K"]
    assert [b.tolist() for b in g.blocks()] == [np.flatnonzero(Ks == k).tolist()
                                                for k in np.unique(Ks)]


@pytest.mark.parametrize("problem, axes, word", [
    ({}, {"n_B": [100.0, 50.0, 600.0, 700.0]}, "n_B <= n_A"),
    ({}, {"lam": [1e-3, 1e300, -1.0]}, "[axes].lam"),
    ({"lam_W": 1e-300}, {"lam": [1e-3, 1e-200]}, "float64"),
    ({}, {"seed": [0, 1], "n_B": [100.0, 1e308]}, "[axes].n_B"),
    ({}, {"n_B": [100.0, 50.0], "lam": [1e-3, 0.0]}, "[axes].lam"),
])
def test_refusals_name_the_first_cell_the_per_cell_rule_refused(problem, axes, word):
    sp = S.loads(BASE)
    bad = sp._replace(problem={**sp.problem, **problem},
                      axes={**sp.axes, **{k: np.asarray(v) for k, v in axes.items()}})
    with pytest.raises(S.SpecError) as ref:
        _reference_expand(bad)
    with pytest.raises(S.SpecError) as got:
        S.expand(bad)
    assert word in str(got.value), got.value
    # the same first cell: the reference names it by its point in the messages it shares
    if "out of range" not in str(ref.value):
        assert str(got.value) == str(ref.value)
    else:  # the same derived λ of the same cell
        k, _, lam = str(ref.value).partition(" out of range, got ")
        assert f"{k} within float64's range" in str(got.value) and lam in str(got.value)


def test_a_large_grid_is_described_not_expanded():
    text = BASE.replace("n_B = [100, 50]", "n_B = {lin = [10, 400, 2000]}").replace(
        "lam = {log = [1e-3, 1e-2, 3]}", "lam = {log = [1e-3, 1e-2, 2500]}")
    g = S.expand(S.loads(text))
    assert g.size == 2000 * 2500 * 2
    # each setting is held over the axes it depends on: λ_H over λ, the counts over n_B
    assert g.fields["lam_H"].shape == (1, 2500, 1) and g.fields["N"].shape == (2000, 1, 1)
    at = g.params_at([0, g.size - 1])
    assert at["n_B"].tolist() == [10.0, 400.0] and at["seed"].tolist() == [0, 1]
    assert g.counts([g.size - 1])[0].tolist() == [500.0] * 5 + [400.0] * 5
    assert [b.size for b in g.blocks()] == [g.size]


def test_too_many_cells_are_refused_with_the_limit():
    text = BASE.replace("n_B = [100, 50]", "n_B = {lin = [10, 400, 6000]}").replace(
        "lam = {log = [1e-3, 1e-2, 3]}", "lam = {log = [1e-3, 1e-2, 5000]}")
    _refused(text, "[axes]", f"at most {S.MAX_CELLS} cells", "60000000")
