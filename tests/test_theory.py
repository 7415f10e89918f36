"""Theory functions against the closed forms of DESIGN.md §1 and the paper's numbers."""

import numpy as np
import pytest

from ncjax import profiles, theory
from ncjax.problem import Problem, from_lam


def test_paper_thresholds():
    """K = 10, n_A = 500, n_B = 100: λ* = 10/3000 (K_A = 5) and 10/2200 (K_A = 3)."""
    assert theory.lam_star_two_cluster(5, 500, 5, 100) == pytest.approx(0.0033333, rel=1e-4)
    assert theory.lam_star_two_cluster(3, 500, 7, 100) == pytest.approx(0.0045454, rel=1e-4)
    for K_A in (3, 5):
        n = profiles.two_cluster(K_A, 500, 10 - K_A, 100)
        assert float(theory.lam_star(n)) == pytest.approx(
            float(theory.lam_star_two_cluster(K_A, 500, 10 - K_A, 100)))


def test_group_thresholds_and_predictions():
    n = profiles.steps([(3, 1000), (3, 300), (1, 120), (4, 50)])
    N = n.sum()
    thr = np.asarray(theory.group_threshold(n))
    np.testing.assert_allclose(thr[:6], np.sqrt(n[:6]) / N)
    assert np.isinf(thr[6])  # a single class has nothing to collapse with
    np.testing.assert_allclose(thr[7:], np.sqrt(50) / N)
    lam = 0.5 * (np.sqrt(300) + np.sqrt(1000)) / N  # between the 300- and 1000-thresholds
    p = theory.predict(from_lam(n, lam))
    np.testing.assert_array_equal(p["group_collapse"], [0, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1])
    assert bool(p["minority_collapse"]) and not bool(p["total_collapse"])
    assert bool(theory.predict(from_lam(n, 1.01 * np.sqrt(1000) / N))["total_collapse"])
    assert float(p["c_star"]) == pytest.approx(np.sqrt(50))


def test_single_minority_class_never_collapses():
    n = profiles.explicit([500, 500, 100])
    assert np.isinf(theory.lam_star(n))
    assert not bool(theory.predict(from_lam(n, 10.0))["minority_collapse"])


def test_conventions_round_trip_and_effective_lambda():
    lw, lh, lb = theory.to_half(5 * 0.003, 0.003 / 20, 0.01, "paper")
    assert (lw, lh, lb) == pytest.approx((0.03, 0.0003, 0.02))
    lam = Problem(np.ones(2), lw, lh, lb).lam  # λ = sqrt(λ_W λ_H)
    assert float(lam) == pytest.approx(0.003)  # the authors' l
    assert theory.from_half(lw, lh, lb, "paper") == pytest.approx((0.015, 0.00015, 0.01))
    with pytest.raises(ValueError, match="convention"):
        theory.to_half(1, 1, 1, "quarter")


def test_per_sample_scaling_and_etf():
    n = profiles.two_cluster(5, 500, 5, 100)
    assert float(theory.lam_from_c(2.0, n)) == pytest.approx(2 / 3000)
    assert float(theory.c_from_lam(theory.lam_from_c(2.0, n), n)) == pytest.approx(2.0)
    assert theory.etf_cosine(10) == pytest.approx(-1 / 9)
