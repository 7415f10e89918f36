"""Collapse is measured, not built in: NC1 emerges from random starts, and minority
collapse appears exactly where the theory's threshold λ* = sqrt(n_B)/N says."""

import itertools

import jax
import numpy as np

import ncjax
from ncjax import metrics, natural, profiles, tolerances
from ncjax.problem import Problem


def test_nc1_emerges_from_random_initialisation(x64):
    counts = np.stack([profiles.two_cluster(5, 500, 5, 100),
                       profiles.two_cluster(3, 1000, 7, 50),
                       profiles.long_tail(10, 1000, 50)])
    lam = np.array([0.002, 0.001, 0.001])  # below every minority threshold
    m = 4
    r = ncjax.solve(counts, 0.01, lam**2 / 0.01, 0.005, m=m, seed=[0, 1, 2], dtype="float64")
    assert r.converged.all(), r.status
    assert (r.metrics["nc1"] < 1e-6).all(), r.metrics["nc1"]
    assert (r.metrics["within_spread"] < 1e-6).all(), r.metrics["within_spread"]
    # ... from a start where the m features of a class are far apart.
    for i, n in enumerate(counts):
        prob = Problem(n, 0.01, lam[i] ** 2 / 0.01, 0.005)
        x0 = natural.init(jax.random.key(i), prob, d=10, m=m, dtype=np.float64)
        W, H, _ = natural.to_params(x0, prob)
        assert float(metrics.nc1(H, n)) > 1e-2


def test_minority_collapse_agrees_with_theory_both_directions():
    """Every configuration with |λ/λ* − 1| ≥ 5%: measured collapse == (λ ≥ λ*)."""
    ratios = [0.3, 0.8, 0.95, 1.05, 1.25, 3.0]
    counts, lams, lam_bs = [], [], []
    for K_A, n_A, n_B, r, lam_b in itertools.product((3, 5), (500, 1000), (50, 100),
                                                     ratios, (0.0, 0.01)):
        n = profiles.two_cluster(K_A, n_A, 10 - K_A, n_B)
        counts.append(n)
        lams.append(r * np.sqrt(n_B) / n.sum())
        lam_bs.append(lam_b)
    lams = np.array(lams)
    res = ncjax.solve(np.stack(counts), 0.01, lams**2 / 0.01, np.array(lam_bs),
                      seed=np.arange(len(lams)))
    assert res.converged.all(), res.status
    predicted = res.theory["minority_collapse"]
    np.testing.assert_allclose(res.theory["lam_star"],
                               [np.sqrt(n.min()) / n.sum() for n in counts])
    assert predicted.sum() == len(lams) // 2  # both directions are tested, equally
    np.testing.assert_array_equal(res.metrics["minority_collapsed"], predicted)
    # and decisively so: the spread is far from the decision tolerance on both sides
    s = res.metrics["minority_spread_Z"]
    assert s[predicted].max() < tolerances.COLLAPSE_TOL / 10
    assert s[~predicted].min() > 5 * tolerances.COLLAPSE_TOL


def test_everything_collapses_when_the_largest_count_is_shared():
    """λ ≥ sqrt(n_max)/N with n_max shared ⇒ Z = 0 (the solution is the zero solution)."""
    n = profiles.two_cluster(2, 300, 3, 100)
    thr = np.sqrt(300) / n.sum()
    lam = np.array([0.9 * thr, 1.1 * thr])
    r = ncjax.solve(np.stack([n, n]), 0.01, lam**2 / 0.01, 0.0, dtype="float64")
    np.testing.assert_array_equal(r.theory["total_collapse"], [False, True])
    np.testing.assert_array_equal(r.metrics["zero_solution"], [False, True])
    assert np.abs(r.Z[1]).max() < 1e-6 and np.abs(r.Z[0]).max() > 0.1
