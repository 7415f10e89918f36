"""The model without a bias (``bias=False``): both methods against an independent cvxpy
solution of the bias-free convex form, with a valid certificate, and the SELI limit
(Thrampoulidis et al. 2022): as λ → 0 the normalised class-mean logits tend to the
simplex-encoded labels I − J/K without a bias, and not with a free one."""

import numpy as np
import pytest

import ncjax
from ncjax import profiles
from ncjax.reference import solve_convex
from ncjax.tolerances import GAP_RTOL

# (counts, λ/λ*) with λ* = sqrt(n_min)/N: two clusters, steps, K = 3; ratios up to 100;
# λ from 0.01 to 1.3 of the minority threshold
CASES = [
    (profiles.two_cluster(2, 200, 3, 20), 0.01),
    (profiles.two_cluster(2, 200, 3, 20), 0.5),
    (profiles.two_cluster(2, 200, 3, 20), 1.3),
    (profiles.two_cluster(3, 1000, 2, 10), 0.9),
    (profiles.two_cluster(3, 1000, 2, 10), 1.1),
    (profiles.steps([(2, 500), (2, 100), (2, 20)]), 0.7),
    (profiles.explicit([300.0, 100.0, 30.0]), 0.2),
    (profiles.explicit([100.0, 10.0, 10.0]), 1.3),
    (profiles.two_cluster(1, 100, 2, 1), 1.0),
]


def _lam(counts, frac):
    return frac * np.sqrt(counts.min()) / counts.sum()


@pytest.fixture(scope="module")
def references():
    return [solve_convex(n, _lam(n, f), 0.0, bias=False) for n, f in CASES]


@pytest.mark.parametrize("method", ["convex", "ufm"])
def test_objective_matches_cvxpy_without_bias(references, method):
    K = max(n.size for n, _ in CASES)
    for (n, frac), (P_ref, Z_ref, _) in zip(CASES, references):
        lam = _lam(n, frac)
        lam_W = 0.05
        r = ncjax.solve(n, lam_W, lam**2 / lam_W, 0.0, bias=False, dtype="float64",
                        method=method, max_steps=20000, d=K)
        assert r.converged and not r.finished, (n, frac, r.status)
        np.testing.assert_allclose(r.objective, P_ref, rtol=1e-7)
        assert np.all(r.b == 0)
        # the certificate bounds the distance to the independent optimum, and is small
        assert r.gap >= r.objective - P_ref - 1e-9 * P_ref
        assert r.gap <= GAP_RTOL["float64"] * r.objective
        np.testing.assert_allclose(r.Z, Z_ref, atol=1e-3 * np.abs(Z_ref).max())


def test_a_bias_changes_the_optimum():
    """The bias-free optimum is not the free-bias one (the certificate of each rejects the
    other's objective as the optimum)."""
    n, frac = CASES[3]
    lam = _lam(n, frac)
    free = ncjax.solve(n, lam, lam, 0.0, dtype="float64", method="convex")
    none = ncjax.solve(n, lam, lam, 0.0, bias=False, dtype="float64", method="convex")
    assert none.objective > free.objective + 1e3 * (free.gap + none.gap)


def test_seli_limit():
    """Two clusters, ratio 100: over λ√N = 1e-1 … 1e-5 the distance of Z/‖Z‖ to the SEL
    matrix (I − J/K)/‖I − J/K‖ falls monotonically without a bias (below 0.2 at 1e-5),
    while with a free bias it stays above 0.5."""
    n = profiles.two_cluster(2, 1000, 3, 10)
    K = n.size
    sel = (np.eye(K) - 1 / K) / np.linalg.norm(np.eye(K) - 1 / K)
    lams = np.array([1e-1, 1e-2, 1e-3, 1e-4, 1e-5]) / np.sqrt(n.sum())
    dist = {}
    for bias in (False, True):
        r = ncjax.solve(np.tile(n, (lams.size, 1)), lams, lams, 0.0, bias=bias,
                        dtype="float64", method="convex", max_steps=200000)
        assert r.converged.all()
        dist[bias] = np.array([np.linalg.norm(Z / np.linalg.norm(Z) - sel) for Z in r.Z])
    assert np.all(np.diff(dist[False]) < 0), dist[False]
    assert dist[False][-1] < 0.2
    assert np.all(dist[True] > 0.5), dist[True]


def test_a_sweep_without_bias(tmp_path_factory):
    """``[problem] bias = false`` reaches the solve: a stored cell equals ``ncjax.solve``'s
    bias-free optimum, with b = 0; a non-boolean bias is refused with its key."""
    from ncjax import spec
    from tests.conftest import run_spec

    text = """
[problem]
profile = "two_cluster"
K_A = 2
K_B = 3
n_A = 200
n_B = 20
lam_W = 0.01
bias = false
[axes]
lam = [0.002, 0.02]
[solver]
method = "convex"
dtype = "float64"
"""
    g = ncjax.load(run_spec(tmp_path_factory, text, "nobias"))
    assert (g.status == "converged").all() and np.all(g["b"] == 0)
    n = profiles.two_cluster(2, 200, 3, 20)
    for i, lam in enumerate([0.002, 0.02]):
        r = ncjax.solve(n, 0.01, lam**2 / 0.01, bias=False, dtype="float64", method="convex")
        np.testing.assert_allclose(g["objective"][i], r.objective, rtol=1e-12)
    with pytest.raises(spec.SpecError, match=r"\[problem\].bias"):
        spec.loads(text.replace("bias = false", 'bias = "no"'))


def test_zero_threshold_without_bias():
    """theory.zero_threshold (‖G(V₀)‖_op, V₀ = softmax(0) − e_k without a bias) is where the
    certified optimum turns Z = 0: not at 0.99 of it, at 1.01. With one largest class it
    differs from the free-bias threshold (‖G(π − e_k)‖_op)."""
    from ncjax import problem, theory
    from ncjax.dtypes import x64

    n = profiles.explicit([500.0, 100.0, 100.0, 10.0])
    with x64(True):
        thr = float(theory.zero_threshold(problem.from_lam(n, 1.0, bias=False)))
        free = float(theory.zero_threshold(problem.from_lam(n, 1.0)))
    assert thr > 1.2 * free
    lam = thr * np.array([0.99, 1.01])
    r = ncjax.solve(np.tile(n, (2, 1)), lam, lam, bias=False, dtype="float64", method="convex")
    assert r.converged.all()
    assert list(r.metrics["zero_solution"]) == [False, True]
    assert list(r.theory["total_collapse"]) == [False, True]
