""""converged" means right: at extreme but valid inputs the default solve reports
"converged" only with the float64 optimum's collapse decision and F − F* within its
tolerance, never with NaN; inputs no dtype can represent are refused; K = 2 with the
convex method reaches the balanced closed form."""

import numpy as np
import pytest

import ncjax
from ncjax import profiles
from ncjax.tolerances import GAP_RTOL


def _extreme():
    """Ratios 1e4, 1e5, 1e6 (5 × n_A + 5 × 10) and 1e6 with n_A = 1e9; λ at 0.5, 0.99,
    1.01, 2 λ*, 1e-8/N, 10 and 1e3 (λ_W = λ_H = λ): 28 configurations."""
    rows = []
    for n in (profiles.two_cluster(5, 1e5, 5, 10), profiles.two_cluster(5, 1e6, 5, 10),
              profiles.two_cluster(5, 1e7, 5, 10), profiles.two_cluster(5, 1e9, 5, 1e3)):
        N, ls = n.sum(), np.sqrt(n.min()) / n.sum()
        rows += [(n, lam) for lam in (0.5 * ls, 0.99 * ls, 1.01 * ls, 2 * ls, 1e-8 / N,
                                      10.0, 1e3)]
    return np.stack([r[0] for r in rows]), np.array([r[1] for r in rows])


def test_converged_means_right_at_extreme_inputs():
    counts, lam = _extreme()
    ref = ncjax.solve(counts, lam, lam, 0.0, dtype="float64", method="convex")
    r = ncjax.solve(counts, lam, lam, 0.0)  # the defaults: float32, L-BFGS
    assert r.converged.sum() >= 20, r.status
    F_star = ref.objective - ref.gap  # a lower bound on F* (weak duality)
    for i in np.flatnonzero(r.converged):
        assert np.isfinite(r.Z[i]).all() and np.isfinite(r.gap[i]), i
        assert ref.converged[i], i  # the reference decided this one too
        assert r.metrics["minority_collapsed"][i] == ref.metrics["minority_collapsed"][i], i
        assert r.objective[i] - F_star[i] <= GAP_RTOL["float32"] * r.objective[i], i
    # NaN never comes with "converged", whatever the status
    bad = ~np.all(np.isfinite(r.Z.reshape(len(r.Z), -1)), axis=1) | ~np.isfinite(r.gap)
    assert not (bad & r.converged).any()


@pytest.mark.parametrize("lam_W, lam_H", [(1e-300, 1e-300), (1e300, 1e300), (1e300, 1e-300)])
def test_unrepresentable_inputs_are_refused(lam_W, lam_H):
    with pytest.raises(ncjax.InputError, match="outside float64's range"):
        ncjax.solve([500.0, 500, 100, 100], lam_W, lam_H)


def test_float32_out_of_range_is_finished_in_float64():
    """λ_W = 1e20, λ_H = 1e-30: representable in float32 but the balance factor's ratio is
    not; and λ_W = λ_H = 1e-100, beyond float32: finished in float64, certified."""
    n = [500.0, 500, 100, 100, 100]
    r = ncjax.solve([n, n], [1e20, 1e-100], [1e-30, 1e-100])
    assert r.converged.all() and r.finished[1], r.status
    assert np.isfinite(r.Z).all()
    ref = ncjax.solve([n, n], [1e20, 1e-100], [1e-30, 1e-100], dtype="float64",
                      method="convex")
    # F of the second (2e-97) is below float32's range; its Z is not
    np.testing.assert_allclose(r.objective[0], ref.objective[0], rtol=1e-4)
    np.testing.assert_allclose(r.Z, ref.Z, rtol=1e-4, atol=1e-4 * np.abs(ref.Z).max())


@pytest.mark.parametrize("n, lam", [(100, 0.02), (1000, 1e-3), (5000, 1e-4)])
def test_convex_k2_reaches_the_balanced_closed_form(n, lam):
    """K = 2, free bias: Z = s(I − J/K), s = log(1/(λ√n) − (K − 1)). The trial step of the
    convex solver must reach the curvature bound 1/2, which is K = 2's curvature at Z = 0.
    (Z to 1e-9 needs the certificate near float64's rounding: gtol 1e-14.)"""
    K = 2
    r = ncjax.solve([n] * K, lam, lam, dtype="float64", method="convex", gtol=1e-14)
    assert r.converged
    s = np.log(1 / (lam * np.sqrt(n)) - (K - 1))
    np.testing.assert_allclose(r.Z, s * (np.eye(K) - 1 / K), atol=1e-9)
    default = ncjax.solve([n] * K, lam, lam, dtype="float64", method="convex")
    assert default.converged and default.gap <= 1e-9 * default.objective


def test_convex_k2_converges_where_z_is_sqrt_eps_conditioned():
    """n = 10, λ = 0.05: certified to rounding (gap ~4e-15) with Z within 2e-7 of the closed
    form, the accuracy a float64 certificate can vouch for here."""
    r = ncjax.solve([10.0, 10.0], 0.05, 0.05, dtype="float64", method="convex", gtol=1e-14)
    assert r.converged
    s = np.log(1 / (0.05 * np.sqrt(10)) - 1)
    np.testing.assert_allclose(r.Z, s * (np.eye(2) - 0.5), atol=2e-7)
