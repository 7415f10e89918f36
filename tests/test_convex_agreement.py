"""ncjax.solve against an independent solution of the convex form (cvxpy + Clarabel).

min P = min F (DESIGN.md §1), so the objective of the factorised solve must equal cvxpy's
P*, and the class-mean logits Z = W H̄ᵀ must equal its Z*.
"""

import numpy as np
import pytest

import ncjax
from ncjax import profiles
from tests.conftest import convex_optimum


def _lam_star(n):
    return np.sqrt(n.min()) / n.sum()


def _configs():
    """≥ 12 settings, all K = 10 so each dtype is one batched solve: (counts, λ, λ_b)."""
    out = []
    for K_A in (5, 3):                                   # the paper's Figs. 5-6 setting
        n = profiles.two_cluster(K_A, 500, 10 - K_A, 100)
        for r in (0.95, 1.05):                           # ±5% around λ*
            for lam_b in (0.0, 0.01):
                out.append((n, r * _lam_star(n), lam_b))
    n = profiles.two_cluster(5, 1000, 5, 10)             # ratio 100
    out += [(n, 0.5 * _lam_star(n), 0.0), (n, 2.0 * _lam_star(n), 0.01)]
    n = profiles.two_cluster(5, 1000, 5, 100)            # ratio 10
    out += [(n, 0.95 * _lam_star(n), 0.001)]
    n = profiles.explicit([100] * 10)                    # balanced
    out += [(n, 0.005, 0.0), (n, 1.2 * _lam_star(n), 0.01)]  # the latter: Z = 0
    n = profiles.long_tail(10, 1000, 100)                # long tail, ratio 100
    out += [(n, 0.002, 0.0), (n, 0.002, 0.001)]
    return out


CONFIGS = _configs()


def _solve_all(dtype):
    counts = np.stack([c for c, _, _ in CONFIGS])
    lam = np.array([lam for _, lam, _ in CONFIGS])
    lam_b = np.array([lb for _, _, lb in CONFIGS])
    lam_W = 0.01                                         # λ_H chosen so sqrt(λ_W λ_H) = λ
    return ncjax.solve(counts, lam_W, lam**2 / lam_W, lam_b, seed=np.arange(len(CONFIGS)),
                       dtype=dtype)


# Measured worst certified gaps at the default stopping rule (relative): float64 ~1e-8,
# float32 ~1e-5 (its iterates are float32: the bound inherits their rounding).
GAP_AT_TOL = {"float64": 1e-7, "float32": 1e-4}


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-6), ("float32", 1e-4)])
def test_objective_and_Z_match_cvxpy(dtype, rtol):
    assert len(CONFIGS) >= 12
    r = _solve_all(dtype)
    assert r.converged.all(), r.status
    for i, (n, lam, lam_b) in enumerate(CONFIGS):
        P_star, Z_star, _ = convex_optimum(tuple(n), lam, lam_b)
        np.testing.assert_allclose(r.objective[i], P_star, rtol=rtol, err_msg=f"config {i}")
        scale = max(1.0, np.abs(Z_star).max())
        assert np.abs(r.Z[i] - Z_star).max() <= 1e-3 * scale, f"config {i}"
        # The convex objective of the solution's own (Z, b) is sandwiched: P* ≤ P ≤ F.
        P = r.metrics["convex_objective"][i]
        np.testing.assert_allclose(P, P_star, rtol=rtol)
        # Every solve's certificate bounds its own suboptimality (cvxpy's P* is within
        # its 1e-10 gap of the true optimum) and is small at the solver's tolerance.
        assert r.gap[i] >= r.objective[i] - P_star - 1e-9, f"config {i}"
        assert r.gap[i] <= GAP_AT_TOL[dtype] * max(1.0, abs(P_star)), f"config {i}: {r.gap[i]}"


def test_paper_convention_gives_the_same_optimum():
    """Authors' λ‖·‖²: λ_W = 5l, λ_H = l/20 means λ = 2 sqrt(λ_W λ_H) = l in the half form."""
    n = profiles.two_cluster(5, 500, 5, 100)
    l, lam_b_paper = 0.003, 0.005
    r = ncjax.solve(n, 5 * l, l / 20, lam_b_paper, convention="paper", dtype="float64")
    P_star, Z_star, _ = convex_optimum(tuple(n), l, 2 * lam_b_paper)
    np.testing.assert_allclose(r.objective, P_star, rtol=1e-6)
    np.testing.assert_allclose(r.lam_W, 10 * l)
    np.testing.assert_allclose(r.lam_b, 2 * lam_b_paper)


def test_convex_method_matches_cvxpy_and_is_certified():
    """solve(method="convex") on the same settings, d = 12, m = 3: P to 1e-7 of cvxpy, gap
    ≤ 1e-8, and its factorisation (W, H) reproduces Z with F = P and the collapse metrics."""
    counts = np.stack([c for c, _, _ in CONFIGS])
    lam = np.array([lam for _, lam, _ in CONFIGS])
    lam_b = np.array([lb for _, _, lb in CONFIGS])
    r = ncjax.solve(counts, 0.01, lam**2 / 0.01, lam_b, method="convex", dtype="float64",
                    d=12, m=3)
    assert r.converged.all() and np.isnan(r.grad_norm).all()
    assert r.W.shape == (len(CONFIGS), 10, 12) and r.H.shape == (len(CONFIGS), 10, 3, 12)
    for i, (n, lam_i, lam_b_i) in enumerate(CONFIGS):
        P_star = convex_optimum(tuple(n), lam_i, lam_b_i)[0]
        np.testing.assert_allclose(r.objective[i], P_star, rtol=1e-7, err_msg=f"config {i}")
        assert -1e-12 <= r.gap[i] <= 1e-8, (i, r.gap[i])
    np.testing.assert_allclose(np.einsum("bcd,bkd->bck", r.W, r.class_means), r.Z, atol=1e-10)
    np.testing.assert_allclose(r.metrics["convex_objective"], r.objective, rtol=1e-12)
    assert (r.metrics["nc1"] < 1e-12).all()
    near = np.abs(lam / np.array([_lam_star(n) for n, _, _ in CONFIGS]) - 1) < 0.02
    assert np.array_equal(r.metrics["minority_collapsed"][~near] == 1,
                          r.theory["minority_collapse"][~near] == 1)


def test_gap_tol_marks_uncertified_solutions():
    """A float32 solve cannot certify 1e-9: with gap_tol it says so instead of "converged"
    (its failed certificate is finished by the float64 convex route, whose point, cast back
    to float32, cannot certify 1e-9 either)."""
    n, lam, _ = CONFIGS[0]
    loose = ncjax.solve(n, 0.01, lam**2 / 0.01, gap_tol=1e-3)
    tight = ncjax.solve(n, 0.01, lam**2 / 0.01, gap_tol=1e-9)
    assert loose.status == "converged" and tight.status == "uncertified"
    assert not loose.finished and tight.finished
    assert tight.gap > 1e-9 * tight.objective
    # the same optimum, to float32 rounding: the finish moved the point, not the answer
    np.testing.assert_allclose(tight.objective, loose.objective, rtol=1e-6)
