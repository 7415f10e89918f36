"""ncjax.convex and ncjax.dual against independent routes: cvxpy + Clarabel
(ncjax/reference.py) for the optimum, weak duality for the certificate,
model.ufm_objective for the factorisation.

All K = 10 so every solve is one batched call (and one compilation).
"""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from ncjax import convex, dual, model, profiles, stopping
from ncjax.dtypes import x64
from ncjax.problem import Problem, from_lam
from tests.conftest import convex_optimum


def _lam_star(n):
    return np.sqrt(n.min()) / n.sum()


def _configs():
    """22 settings (counts, λ, λ_b), half convention."""
    out = []
    for K_A in (5, 3):                                       # ratio 10, around λ*
        n = profiles.two_cluster(K_A, 500, 10 - K_A, 50)
        lbs = (0.0, 0.01) if K_A == 5 else (0.01, 0.0)
        for i, r in enumerate((0.95, 0.99, 1.01, 1.05)):
            out.append((n, r * _lam_star(n), lbs[i % 2]))
    for K_A in (5, 3):                                       # ratio 100
        n = profiles.two_cluster(K_A, 1000, 10 - K_A, 10)
        out += [(n, 0.5 * _lam_star(n), 0.0), (n, 1.01 * _lam_star(n), 0.01)]
    for K_A in (5, 3):                                       # ratio 1000
        n = profiles.two_cluster(K_A, 1000, 10 - K_A, 1)
        out += [(n, 0.3 * _lam_star(n), 0.0), (n, 0.99 * _lam_star(n), 0.01)]
    n = profiles.explicit([100.0] * 10)                      # balanced
    for lb in (0.0, 0.01):
        out += [(n, 0.5 * _lam_star(n), lb), (n, 1.2 * _lam_star(n), lb)]  # 1.2: Z = 0
    n = profiles.long_tail(10, 1000, 100)                    # long tail, ratio 100
    out += [(n, 0.002, 0.0), (n, 0.002, 0.01)]
    return out


CONFIGS = _configs()
COUNTS = np.stack([c for c, _, _ in CONFIGS])
LAM = np.array([lam for _, lam, _ in CONFIGS])
LAM_B = np.array([lb for _, _, lb in CONFIGS])
PROBLEMS = from_lam(COUNTS, LAM, LAM_B)  # the convex form sees only λ = sqrt(λ_W λ_H)
EYE = np.eye(10)
Z_ZERO = [i for i, (n, lam, _) in enumerate(CONFIGS) if lam >= np.sqrt(n.max()) / n.sum()
          and (n == n.max()).sum() >= 2]


@pytest.fixture(scope="module")
def solved():
    """The convex solver on all CONFIGS (float64) and cvxpy's optima, as numpy."""
    with x64(True):
        r = jax.device_get(convex.solve_batch(PROBLEMS, gtol=1e-9))
    cvx = [convex_optimum(tuple(n), lam, lb) for n, lam, lb in CONFIGS]
    return r, cvx


def _P(Z, b):
    """P at a batch of points, one per configuration (vmapped model.convex_objective)."""
    return _batched_P(Z, b, PROBLEMS)


_batched_P = jax.jit(jax.vmap(model.convex_objective))
_dual_point = jax.jit(jax.vmap(dual.dual_point))
_dual_G = jax.jit(jax.vmap(dual.dual_G))
_dual_r = jax.jit(jax.vmap(dual.dual_r))


def test_solver_matches_cvxpy(solved, x64):
    assert len(CONFIGS) >= 20 and Z_ZERO
    r, cvx = solved
    assert (r.status == stopping.CONVERGED).all(), r.status
    P_star = np.array([P for P, _, _ in cvx])
    np.testing.assert_allclose(r.P, P_star, rtol=1e-7)
    np.testing.assert_allclose(r.P, _P(r.Z, r.b), rtol=0, atol=1e-14)
    for i in Z_ZERO:                                          # total collapse: Z = 0
        assert np.abs(r.Z[i]).max() <= 1e-12, i


def test_certificate_vanishes_at_the_optimum(solved, x64):
    r, _ = solved
    assert (r.gap <= 1e-9 * np.abs(r.P)).all()  # the stopping rule: gap ≤ gtol·|P|
    g = jax.jit(jax.vmap(dual.gap))(r.Z, r.b, PROBLEMS)  # public route, from (Z, b)
    assert (np.asarray(g) <= 1e-8).all(), g
    assert (np.asarray(g) >= -1e-13).all(), g


def _perturbed(r, cvx, rng):
    """Points per configuration: cvxpy's (Z*, b*), and the solver's optimum moved by
    Gaussian noise of scales 1e-8 … 1 in (Z, b), in b only and in Z only."""
    points = [(np.stack([Z for _, Z, _ in cvx]), np.stack([b for _, _, b in cvx]))]
    for eps in (1e-8, 1e-6, 1e-4, 1e-2, 1.0):
        dZ, db = rng.normal(size=r.Z.shape), rng.normal(size=r.b.shape)
        points += [(r.Z + eps * dZ, r.b + eps * db), (r.Z, r.b + eps * db),
                   (r.Z + eps * dZ, r.b)]
    return points


def test_certificate_bounds_the_true_gap(solved, x64):
    """gap(point) ≥ P(point) − P* ≥ P(point) − P*_best, P*_best = the lower of P at
    cvxpy's point and at the solver's: both are values of P, hence ≥ P*."""
    r, cvx = solved
    points = _perturbed(r, cvx, np.random.default_rng(0))
    P_best = np.minimum(np.asarray(_P(*points[0])), r.P)
    cert = jax.jit(jax.vmap(dual.gap))
    for j, (Z, b) in enumerate(points):
        g = np.asarray(cert(Z, b, PROBLEMS))
        P = np.asarray(_P(Z, b))
        assert np.isfinite(g).all(), j
        assert (g >= P - P_best - 1e-12).all(), (j, np.min(g - (P - P_best)))
    # cvxpy's optimum is certified to its accuracy: Z* is good to ~1e-5 and the
    # certificate is first order in the distance to the optimum
    g_cvx = np.asarray(cert(*points[0], PROBLEMS))
    assert (g_cvx <= 1e-4).all(), g_cvx


def test_dual_point_is_feasible(solved, x64):
    """V = q − I with q_k ∈ Δ, ‖G(V)‖_op ≤ λ(1 + 1e-12), r(V) = 0 when λ_b = 0, at every
    test point; the repairs are exercised (‖G(p − I)‖_op > λ and r(p − I) ≠ 0 at the raw
    softmax p somewhere)."""
    r, cvx = solved
    pull_needed = bal_needed = False
    for Z, b in _perturbed(r, cvx, np.random.default_rng(1)):
        V = np.asarray(_dual_point(Z, b, PROBLEMS))
        q = V + EYE  # column k: q_k = v_k + e_k
        assert (q >= 0).all()
        np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=0, atol=1e-14)
        G = _dual_G(jnp.asarray(V), PROBLEMS)
        assert (np.linalg.norm(np.asarray(G), ord=2, axis=(1, 2)) <= LAM * (1 + 1e-12)).all()
        rq = np.asarray(_dual_r(jnp.asarray(V), PROBLEMS))
        assert np.abs(rq[LAM_B == 0]).max() <= 1e-15
        p = jax.nn.softmax(jnp.asarray(Z) + jnp.asarray(b)[:, :, None], axis=1)
        Gp = np.linalg.norm(np.asarray(_dual_G(p - EYE, PROBLEMS)), ord=2, axis=(1, 2))
        pull_needed |= bool((Gp > LAM * (1 + 1e-6)).any())
        rp = np.asarray(_dual_r(p - EYE, PROBLEMS))
        bal_needed |= bool((np.abs(rp[LAM_B == 0]).max(axis=1) > 1e-6).any())
    assert pull_needed and bal_needed


def test_dual_point_is_no_worse_than_the_plain_construction(solved, x64):
    """dual_point keeps the better of the bias given and its Newton refinement: never below
    the plain construction at b, and far above it for a bias off by 1e-6 at ratio 1000."""
    r, _ = solved
    b = r.b + 1e-6 * np.random.default_rng(2).normal(size=r.b.shape)
    D = jax.vmap(dual.dual_objective)
    best = np.asarray(D(_dual_point(r.Z, b, PROBLEMS), PROBLEMS))
    plain = np.asarray(D(jax.vmap(dual.from_bias)(r.Z, b, PROBLEMS), PROBLEMS))
    assert (best >= plain).all()
    ratio_1000 = (COUNTS.max(axis=1) / COUNTS.min(axis=1) == 1000) & (LAM_B == 0)
    assert (best - plain)[ratio_1000].min() > 1e-8


def test_degenerate_dual_point(x64):
    """Saturated softmax (p_k = e_k exactly): G = 0, no pull, D = 0, q = I (V = q − I = 0)."""
    K = 10
    prob = from_lam(jnp.asarray(profiles.two_cluster(5, 500, 5, 50)), 1e-3, 0.0)
    Z = 2000.0 * (jnp.eye(K) - 0.5)
    V = jax.jit(dual.dual_point)(Z, jnp.zeros(K), prob)
    np.testing.assert_array_equal(np.asarray(V) + np.eye(K), np.eye(K))
    np.testing.assert_array_equal(np.asarray(V), np.zeros((K, K)))
    assert float(dual.dual_objective(V, prob)) == 0.0


@pytest.mark.parametrize("d, m", [(10, 1), (12, 3), (9, 2)])
def test_factorization_reproduces_P(solved, x64, d, m):
    """F(W, H, b) = P(Z, b) and W H̄ᵀ = Z; d = 9 = K − 1 works since rank Z ≤ K − 1."""
    r, _ = solved
    lam_W = np.geomspace(1e-4, 1.0, len(CONFIGS))
    lam_H = LAM**2 / lam_W
    problems = Problem(COUNTS, lam_W, lam_H, LAM_B)
    fac = jax.vmap(lambda Z, b, p: convex.factorize(Z, b, p, d=d, m=m))
    params = fac(r.Z, r.b, problems)
    assert params.W.shape == (len(CONFIGS), 10, d) and params.H.shape == (len(CONFIGS), 10, m, d)
    F = np.asarray(jax.vmap(model.ufm_objective)(params, problems))
    np.testing.assert_allclose(F, r.P, rtol=0, atol=1e-12)
    Zf = np.asarray(jax.vmap(model.mean_logits)(params.W, params.H))
    np.testing.assert_allclose(Zf, r.Z, rtol=0, atol=1e-9 * max(1, np.abs(r.Z).max()))


def test_pool_gives_the_same_results(solved, x64):
    r, _ = solved
    p = jax.device_get(convex.solve_batch(PROBLEMS, gtol=1e-9, pool=4))
    np.testing.assert_array_equal(p.status, r.status)
    np.testing.assert_allclose(p.P, r.P, rtol=0, atol=1e-13)
    assert np.abs(p.steps - r.steps).max() <= 10
    assert (p.gap <= 1e-9 * np.abs(p.P)).all()


def test_float32_runs_and_agrees(solved):
    r64, _ = solved
    r = jax.device_get(convex.solve_batch(PROBLEMS, dtype="float32"))
    assert r.P.dtype == np.float32
    assert (r.status == stopping.CONVERGED).all(), r.status
    assert (r.gap <= convex.GTOL["float32"] * np.abs(r.P)).all()
    np.testing.assert_allclose(r.P, r64.P, rtol=2e-5)
