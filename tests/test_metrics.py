"""Metrics on hand-built solutions whose values are known in closed form, and NC1
against a direct numpy evaluation of its definition."""

import jax
import numpy as np
import pytest

from ncjax import metrics
from ncjax.problem import from_lam

# as the solver runs it: one compiled program (eagerly, each operation compiles apart)
compute = jax.jit(metrics.compute)


def _etf(K):
    """Rows of a simplex ETF in R^K: unit vectors with pairwise cosine −1/(K−1)."""
    M = np.eye(K) - np.ones((K, K)) / K
    return M / np.linalg.norm(M, axis=1, keepdims=True)


def test_etf_cosines_and_spreads(x64):
    K, m = 5, 3
    n = np.array([500.0, 500, 100, 100, 100])
    Hbar = _etf(K)
    H = np.repeat(Hbar[:, None, :], m, axis=1)  # collapsed within classes
    W = 2.0 * Hbar
    out = compute(W, H, np.zeros(K), from_lam(n, 0.01, 0.0))
    for key in ("Z", "H", "W"):
        for pair in ("AA", "BB", "AB"):
            assert float(out[f"cos_{key}_{pair}"]) == pytest.approx(-1 / (K - 1))
    # every pair of ETF vectors is sqrt(2 + 2/(K-1)) apart; spreads are relative to max norm
    d = np.sqrt(2 + 2 / (K - 1))
    assert float(out["minority_spread_H"]) == pytest.approx(d)
    assert float(out["nc1"]) == pytest.approx(0.0, abs=1e-20)
    assert float(out["within_spread"]) == pytest.approx(0.0, abs=1e-12)
    assert not bool(out["minority_collapsed"])
    assert int(out["phase"]) == metrics.NONE
    np.testing.assert_array_equal(out["group_phase"], [metrics.NONE] * K)


def test_collapsed_minority_and_group_values(x64):
    K = 5
    n = np.array([300.0, 300, 50, 50, 50])
    Z = np.array([[3.0, -1, -1, -1, -1],
                  [-1, 3.0, -1, -1, -1],
                  [-1, -1, 0.5, 0.5, 0.5001],
                  [-1, -1, 0.5, 0.5, 0.5],
                  [-1, -1, 0.5, 0.5, 0.5]])
    # a factorisation W H̄ᵀ = Z with d = K: W = I, h̄_k = z_k (column k)
    W, H = np.eye(K), Z.T[:, None, :]
    out = compute(W, H, np.zeros(K), from_lam(n, 0.01, 0.0))
    zmax = np.linalg.norm(Z, axis=0).max()
    assert float(out["minority_spread_Z"]) == pytest.approx(1e-4 / zmax)
    assert bool(out["minority_collapsed"])
    np.testing.assert_array_equal(out["group_collapsed"], [False, False, True, True, True])
    assert int(out["phase"]) == metrics.COLLAPSED
    np.testing.assert_array_equal(out["group_phase"], [metrics.NONE] * 2 + [metrics.COLLAPSED] * 3)
    np.testing.assert_allclose(out["spread_Z_group"][:2], np.sqrt(32) / zmax)
    c = Z[:, 0] @ Z[:, 1] / (np.linalg.norm(Z[:, 0]) * np.linalg.norm(Z[:, 1]))
    assert float(out["cos_Z_AA"]) == pytest.approx(c)
    np.testing.assert_allclose(out["cos_Z_group"][:2], c)


def test_zero_solution_reports_absolute_spreads(x64):
    K = 4
    n = np.array([100.0, 100, 10, 10])
    W = np.zeros((K, K))
    H = np.zeros((K, 1, K))
    H[2, 0, 0] = 1e-7
    out = compute(W, H, np.zeros(K), from_lam(n, 0.01, 0.0))
    assert bool(out["zero_solution"])
    assert float(out["minority_spread_H"]) == pytest.approx(1e-7)
    assert int(out["phase"]) == metrics.ZERO
    np.testing.assert_array_equal(out["group_phase"], [metrics.ZERO] * K)


@pytest.mark.parametrize("n, zB, phase", [
    ([300.0, 300, 50, 50, 50], 0.0, metrics.VANISHED),      # z_k = 0 for the minority
    ([300.0, 300, 50, 50, 50], 1e-9, metrics.VANISHED),     # 0 to float64's rounding
    ([300.0, 300, 50, 50, 50], 1e-3, metrics.COLLAPSED),    # equal, not 0
    ([300.0, 300, 80, 50, 50], 0.0, metrics.VANISHED)])     # the class of 80 alone: 0 too
def test_the_phase_of_hand_built_solutions(x64, n, zB, phase):
    """The majority's mean logits those of a 2-class ETF (z_1 = −z_0), the minority's all
    equal to zB·(1, …, 1): vanished where zB is 0 to rounding (‖z_k‖ ≤ sqrt(eps)·max_j
    ‖z_j‖), else collapsed; the majority in no phase (its two z_k differ); a group of one
    class whose z_k is 0 vanished, never collapsed."""
    K = 5
    n = np.array(n)
    Z = np.zeros((K, K))
    Z[:, 0] = [1.0, -1.0, 0, 0, 0]
    Z[:, 1] = -Z[:, 0]
    Z[:, 2:] = zB
    W, H = np.eye(K), Z.T[:, None, :]
    out = compute(W, H, np.zeros(K), from_lam(n, 0.01, 0.0))
    assert int(out["phase"]) == phase
    assert metrics.PHASES[int(out["phase"])] == ("minority vanished" if phase == metrics.VANISHED
                                                 else "minority collapsed")
    single = n[2] != n[3]
    want = [metrics.NONE] * 2 + [metrics.VANISHED if single else phase] + [phase] * 2
    np.testing.assert_array_equal(out["group_phase"], want)
    np.testing.assert_array_equal(out["group_collapsed"], [False] * 2 + [not single, True, True])
    assert bool(out["minority_collapsed"]) and not bool(out["zero_solution"])
    assert bool(out["minority_vanished"]) == (phase == metrics.VANISHED)


def test_nc1_matches_its_definition(x64):
    rng = np.random.default_rng(0)
    K, m, d = 4, 6, 7
    H = rng.normal(size=(K, m, d)) + 3 * rng.normal(size=(K, 1, d))
    n = np.array([400.0, 100, 50, 10])
    N = n.sum()
    Hbar = H.mean(1)
    Sw = sum(n[k] / m / N * np.outer(H[k, i] - Hbar[k], H[k, i] - Hbar[k])
             for k in range(K) for i in range(m))
    G = Hbar.mean(0)
    Sb = sum(np.outer(Hbar[k] - G, Hbar[k] - G) for k in range(K)) / K
    want = np.trace(Sw @ np.linalg.pinv(Sb, rcond=1e-8)) / K
    assert float(metrics.nc1(H, n)) == pytest.approx(want, rel=1e-8)


def test_nc1_of_one_feature_a_class_is_zero_or_nan(x64):
    """m = 1: every deviation from the class mean is exactly 0, so Σ_W = 0 and NC1 = 0 by
    the definition, NaN if H is not finite."""
    rng = np.random.default_rng(1)
    H = rng.normal(size=(4, 1, 5))
    n = np.array([400.0, 100, 50, 10])
    assert float(metrics.nc1(H, n)) == 0.0
    H[2, 0, 1] = np.nan
    assert np.isnan(float(metrics.nc1(H, n)))
