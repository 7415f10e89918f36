"""The six losses of ncjax.losses against independent routes: cvxpy's solve of each convex
form (ncjax/reference.py, its own weights, Δ and τ log π) for the optimum of both methods;
weak duality for the certificate, at the optimum and at perturbed points; central finite
differences for gradients and Hessians; a BFGS maximisation for each conjugate; the
balance repair's r(V') = 0 in the domain; CE's numbers unchanged by ``loss=ce()``; float32
certified; bad parameters refused by name; a sweep over a parameter compiled once.

Shared K = 6 so that each (loss, method) is one batched solve (one compilation)."""

import functools

import jax
import jax.scipy.optimize
import jax.numpy as jnp
import numpy as np
import pytest

import ncjax
from ncjax import convex, dual, losses, model, problem, profiles, solver
from ncjax.dtypes import x64
from ncjax.reference import solve_convex
from ncjax.tolerances import GAP_RTOL
from ncjax.validate import InputError


def _configs():
    """12 settings (counts, λ, λ_b), K = 6: two clusters (ratio 10) and three steps (ratio
    16); λ from 0.1 sqrt(n_min)/N to 1.5 sqrt(n_max)/N, λ_b = 0 and 0.02 in turn."""
    out = []
    for n in (profiles.two_cluster(3, 500, 3, 50), profiles.steps([(2, 400), (2, 100), (2, 25)])):
        lo, hi = 0.1 * np.sqrt(n.min()) / n.sum(), 1.5 * np.sqrt(n.max()) / n.sum()
        for i, lam in enumerate(np.geomspace(lo, hi, 6)):
            out.append((n, lam, (0.0, 0.02)[i % 2]))
    return out


CONFIGS = _configs()
COUNTS = np.stack([c for c, _, _ in CONFIGS])
LAM = np.array([lam for _, lam, _ in CONFIGS])
LAM_B = np.array([lb for _, _, lb in CONFIGS])
WEIGHTS = np.sqrt(COUNTS.max(axis=1, keepdims=True) / COUNTS)  # (B, K): per configuration
TAUS = np.linspace(0.5, 1.5, len(CONFIGS))

# name -> (the Loss of the batch, the parameters per configuration for cvxpy)
LOSSES = {
    "ce": (losses.ce(), lambda i: {}),
    "label_smoothing": (losses.label_smoothing(0.1), lambda i: {"alpha": 0.1}),
    "weighted_ce": (losses.weighted_ce(WEIGHTS), lambda i: {"weights": WEIGHTS[i]}),
    "logit_adjusted": (losses.logit_adjusted(1.0), lambda i: {"tau": 1.0}),
    "vs": (losses.vs(0.3, 1.0), lambda i: {"gamma": 0.3, "tau": 1.0}),
    "mse": (losses.mse(), lambda i: {}),
}


@functools.cache
def _cvx(name, i, bias=True, **override):
    n, lam, lb = CONFIGS[i]
    params = {**LOSSES[name][1](i), **override}
    return solve_convex(n, lam, lb, loss=name, params=params, bias=bias)


def _solve(name, method, dtype="float64", rows=slice(None), **kw):
    loss = kw.pop("loss", LOSSES[name][0])
    return ncjax.solve(COUNTS[rows], LAM[rows], LAM[rows], LAM_B[rows], loss=loss,
                       method=method, dtype=dtype, max_steps=20000, **kw)


def _perturbed(r, cvx, rng):
    """cvxpy's (Z*, b*), and the solver's optimum moved by Gaussian noise of scales
    1e-8 … 1 in (Z, b), in b only and in Z only."""
    points = [(np.stack([Z for _, Z, _ in cvx]), np.stack([b for _, _, b in cvx]))]
    for eps in (1e-8, 1e-5, 1e-2, 1.0):
        dZ, db = rng.normal(size=r.Z.shape), rng.normal(size=r.b.shape)
        points += [(r.Z + eps * dZ, r.b + eps * db), (r.Z, r.b + eps * db),
                   (r.Z + eps * dZ, r.b)]
    return points


@pytest.mark.parametrize("name", list(LOSSES))
def test_both_methods_match_cvxpy_and_certify(name):
    """The convex method: P to 1e-7 of cvxpy's optimum, gap ≤ 1e-6·F and ≥ F − P_cvx, and
    at perturbed points the certificate ≥ the true suboptimality; the factored method: F to
    1e-6, certified, not finished by the convex route."""
    r = _solve(name, "convex")
    cvx = [_cvx(name, i) for i in range(len(CONFIGS))]
    P_cvx = np.array([P for P, _, _ in cvx])
    assert r.converged.all() and not r.finished.any(), r.status
    np.testing.assert_allclose(r.objective, P_cvx, rtol=1e-7)
    assert (r.gap <= 1e-6 * r.objective).all(), r.gap / r.objective
    assert (r.gap >= r.objective - P_cvx - 1e-9 * P_cvx).all()
    assert r.loss == name

    with x64(True):
        probs = problem.make(COUNTS, LAM, LAM, LAM_B, loss=LOSSES[name][0])[0]
        probs = jax.tree.map(jnp.asarray, probs)
        cert = jax.jit(jax.vmap(dual.gap))
        P_of = jax.jit(jax.vmap(model.convex_objective))
        points = _perturbed(r, cvx, np.random.default_rng(0))
        P_best = np.minimum(np.asarray(P_of(*points[0], probs)), r.objective)
        for j, (Z, b) in enumerate(points):
            g = np.asarray(cert(Z, b, probs))
            P = np.asarray(P_of(Z, b, probs))
            assert np.isfinite(g).all(), j
            assert (g >= P - P_best - 1e-12).all(), (j, np.min(g - (P - P_best)))

    r = _solve(name, "ufm")
    assert r.converged.all() and not r.finished.any(), r.status
    np.testing.assert_allclose(r.objective, P_cvx, rtol=1e-6)
    assert (r.gap >= r.objective - P_cvx - 1e-9 * P_cvx).all()
    assert (r.gap <= GAP_RTOL["float64"] * r.objective).all()


def test_a_sweep_over_tau_compiles_once_and_matches_cvxpy():
    """τ (B,) in one call: the values reach the solve (each configuration its own cvxpy
    optimum), a second batch of τ reuses the compiled program, and with a free bias the
    logit-adjusted optimum is CE's (b + τ log π is a free bias): theory.derived there."""
    rows = slice(0, 6)
    before = solver.convex_program._cache_size()
    r1 = _solve("logit_adjusted", "convex", rows=rows, loss=losses.logit_adjusted(TAUS[rows]))
    after = solver.convex_program._cache_size()
    r2 = _solve("logit_adjusted", "convex", rows=rows,
                loss=losses.logit_adjusted(2 * TAUS[rows]))
    assert solver.convex_program._cache_size() == after <= before + 1
    np.testing.assert_array_equal(r1.loss_params["tau"], TAUS[rows])
    for i in range(6):
        for r, tau in ((r1, TAUS[i]), (r2, 2 * TAUS[i])):
            P = _cvx("logit_adjusted", i, tau=float(tau))[0]
            np.testing.assert_allclose(r.objective[i], P, rtol=1e-7)
    free = LAM_B[rows] == 0
    P_ce = np.array([_cvx("ce", i)[0] for i in range(6)])
    np.testing.assert_allclose(r1.objective[free], P_ce[free], rtol=1e-7)
    assert list(r1.theory["derived"]) == list(free)
    assert np.isnan(r1.theory["lam_star"][~free]).all()


@pytest.mark.parametrize("bias, lam_b", [(False, 0.0), (True, 0.0), (True, 0.02)])
def test_k3_every_loss_matches_cvxpy(bias, lam_b):
    """K = 3 (300, 60, 12), λ below and above the thresholds, without a bias, with a free
    and with a penalised one: the convex solver (float64) at cvxpy's optimum to 1e-7, its
    certificate valid (≥ the true gap)."""
    n = np.array([300.0, 60.0, 12.0])
    lam = np.array([0.1 * np.sqrt(12), 0.5 * np.sqrt(60), 1.5 * np.sqrt(300)]) / n.sum()
    params = {"ce": {}, "label_smoothing": {"alpha": 0.2}, "weighted_ce": {
        "weights": [1.0, 2.0, 5.0]}, "logit_adjusted": {"tau": 1.0},
        "vs": {"gamma": 0.5, "tau": 0.5}, "mse": {}}
    with x64(True):
        for name, par in params.items():
            p = problem.make(n, lam, lam, lam_b, loss=losses.get(name, **par), bias=bias)[0]
            r = jax.device_get(convex.solve_batch(p, gtol=1e-10))
            for i, lm in enumerate(lam):
                P, _, _ = solve_convex(n, lm, lam_b, bias=bias, loss=name, params=par)
                np.testing.assert_allclose(r.P[i], P, rtol=1e-7, err_msg=name)
                assert r.gap[i] >= r.P[i] - P - 1e-9 * P, name
            assert (r.status == 0).all() and (bias or np.all(r.b == 0)), name


def test_zero_threshold_of_a_loss_with_parameters():
    """theory.zero_threshold (‖G(V₀)‖_op, V₀ the VS loss's gradient at its zero point) is
    where the certified optimum turns Z = 0, free and penalised bias alike: not at 0.99 of
    it, at 1.01; theory.total_collapse says the same (the CE thresholds: not derived)."""
    n = profiles.explicit([500.0, 100.0, 100.0, 10.0])
    loss = losses.vs(0.3, 1.0)
    lam_b = np.array([0.0, 0.0, 0.02, 0.02])
    with x64(True):
        thr = np.array([float(ncjax.theory.zero_threshold(jax.tree.map(
            lambda a: a[0], problem.make(n, 1.0, 1.0, lb, loss=loss)[0]))) for lb in lam_b])
    lam = thr * np.array([0.99, 1.01, 0.99, 1.01])
    r = ncjax.solve(np.tile(n, (4, 1)), lam, lam, lam_b, loss=loss, dtype="float64",
                    method="convex")
    assert r.converged.all()
    np.testing.assert_allclose(r.theory["zero_threshold"], thr, rtol=1e-10)
    assert list(r.metrics["zero_solution"]) == [False, True, False, True]
    assert list(r.theory["total_collapse"]) == [False, True, False, True]
    assert not r.theory["derived"].any() and np.isnan(r.theory["group_threshold"]).all()


def test_ce_is_bit_for_bit_the_default():
    for method in ("ufm", "convex"):
        a = _solve("ce", method, dtype="float32", rows=slice(0, 4), loss=None)
        b = _solve("ce", method, dtype="float32", rows=slice(0, 4), loss=losses.ce())
        for f in ("objective", "gap", "steps", "status", "W", "H", "b", "Z"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=(method, f))
        assert a.loss_params == {} == b.loss_params


@pytest.mark.parametrize("name", [n for n in LOSSES if n != "ce"])
def test_float32_solves_are_certified(name):
    rows = [3, 4, 9, 10]
    loss = losses.weighted_ce(WEIGHTS[rows]) if name == "weighted_ce" else LOSSES[name][0]
    r = _solve(name, "ufm", dtype="float32", rows=rows, loss=loss)
    assert r.converged.all(), r.status
    # MSE's float32 factored stop (F flat to 1e-7 at F ≈ 0.2) leaves gaps of 1e-5 … 1e-4·F,
    # at the float32 certificate's tolerance: some are finished by the float64 convex route
    assert name == "mse" or not r.finished.any(), r.finished
    assert (r.gap <= GAP_RTOL["float32"] * r.objective).all()


# ---- the functions of each loss, one configuration, float64 -------------------------

N4 = np.array([50.0, 20.0, 20.0, 5.0])
FUNCTION_LOSSES = [losses.ce(), losses.label_smoothing(0.3), losses.weighted_ce([1, 3, 0.5, 2]),
                   losses.logit_adjusted(1.5), losses.vs(0.6, -0.8), losses.mse()]
IDS = [l.name for l in FUNCTION_LOSSES]


def _th(loss):
    return problem.Problem(jnp.asarray(N4), 1.0, 1.0, 0.0, loss).loss_args


def _domain_point(loss, th, k, rng):
    """A v in dom ℓ*(·, k): ∇ℓ(u, k) at a random u (for the CE family ω_k Δ (q − y_k) with
    q = softmax(w) in the simplex's interior)."""
    return loss.grad(jnp.asarray(rng.normal(size=4) * 2), k, th)


@pytest.mark.parametrize("loss", FUNCTION_LOSSES, ids=IDS)
def test_gradient_and_hessian_against_finite_differences(loss, x64):
    """grad by central differences of value; ``hess`` (the weighted sum of the columns'
    Hessians) by central differences of grad, column by column (a one-hot weight) and
    with random weights; the curvature bound; the Bregman term."""
    th, rng, h = _th(loss), np.random.default_rng(3), 1e-5
    E = np.eye(4)
    U = jnp.asarray(rng.normal(size=(4, 4)) * 3)
    fd2s = []
    for k in range(4):
        u = U[:, k]
        fd = [(loss.value(u + h * E[j], k, th) - loss.value(u - h * E[j], k, th)) / (2 * h)
              for j in range(4)]
        np.testing.assert_allclose(loss.grad(u, k, th), fd, rtol=1e-7, atol=1e-9)
        fd2 = np.stack([(loss.grad(u + h * E[j], k, th) - loss.grad(u - h * E[j], k, th))
                        / (2 * h) for j in range(4)])
        fd2s.append(fd2)
        H_k = loss.hess(U, jnp.asarray(E[k]), th)
        np.testing.assert_allclose(H_k, fd2, rtol=1e-6, atol=1e-9)
        # the curvature bound holds, and the Bregman term is the direct difference
        assert np.linalg.eigvalsh(np.asarray(H_k))[-1] <= loss.curvature(th)
        du = jnp.asarray(rng.normal(size=4) * 0.5)
        direct = (loss.value(u + du, k, th) - loss.value(u, k, th)
                  - jnp.vdot(loss.grad(u, k, th), du))
        np.testing.assert_allclose(loss.bregman(u, du, k, th), direct, rtol=1e-9)
    w = rng.uniform(0.1, 1.0, size=4)
    np.testing.assert_allclose(loss.hess(U, jnp.asarray(w), th),
                               np.einsum("k,kij->ij", w, np.stack(fd2s)), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("loss", FUNCTION_LOSSES, ids=IDS)
def test_conjugate_against_numerical_maximisation(loss, x64):
    """−ℓ*(v, k) = min_u ℓ(u, k) − ⟨v, u⟩ found by BFGS from 0, for random v in the domain,
    and the values of the batched ``value`` agree with the per-sample one."""
    th, rng = _th(loss), np.random.default_rng(4)
    ks = jnp.arange(4)
    V = jnp.stack([_domain_point(loss, th, k, rng) for k in range(4)])

    @jax.jit
    @jax.vmap
    def sup(v, k):
        return jax.scipy.optimize.minimize(lambda u: loss.value(u, k, th) - jnp.vdot(v, u),
                                           jnp.zeros(4), method="BFGS", tol=1e-12).fun

    got = jax.vmap(loss.dual_value, in_axes=(0, 0, None))(V, ks, th)
    np.testing.assert_allclose(got, sup(V, ks), rtol=1e-8, atol=1e-10)
    U = jnp.asarray(rng.normal(size=(3, 4)))
    np.testing.assert_allclose(loss.value(U, jnp.arange(3), th),
                               [loss.value(U[i], i, th) for i in range(3)], rtol=1e-14)


def _in_domain(loss, th, V):
    """Every column v_k in dom ℓ*(·, k): q_k = y_k + v_k/(ω_k Δ) in the simplex (CE
    family; MSE: all of R^K)."""
    if loss.name == "mse":
        return True
    if loss.name == "ce":
        Q = V + np.eye(4)
    else:
        Y = (1 - th["alpha"]) * np.eye(4) + th["alpha"] / 4
        Q = Y + V / (np.asarray(th["Delta"])[:, None] * np.asarray(th["omega"])[None, :])
    return (Q >= -1e-15).all() and np.allclose(Q.sum(axis=0), 1, rtol=0, atol=1e-14)


@pytest.mark.parametrize("loss", FUNCTION_LOSSES, ids=IDS)
def test_balance_repair_and_the_zero_point(loss, x64):
    """balance: r(V') = 0, V' in the domain, V' = V when r(V) = 0; bias_start minimises
    Σ_k π_k ℓ(b, k) (its gradient 0); the invariant direction leaves ℓ unchanged."""
    th, rng = _th(loss), np.random.default_rng(5)
    pi = jnp.asarray(N4 / N4.sum())
    for _ in range(5):
        V = jnp.stack([_domain_point(loss, th, k, rng) for k in range(4)], axis=1)
        V1 = loss.balance(V, pi, th)
        assert np.abs(np.asarray(V1 @ pi)).max() <= 1e-15
        assert _in_domain(loss, th, np.asarray(V1))
        np.testing.assert_allclose(loss.balance(V1, pi, th), V1, rtol=0, atol=1e-15)
    b0 = loss.bias_start(pi, th)
    g = sum(pi[k] * loss.grad(b0, k, th) for k in range(4))
    np.testing.assert_allclose(g, 0.0, atol=1e-14)
    u = jnp.asarray(rng.normal(size=4))
    e = (jnp.ones(4) if loss.shift_invariant else
         None if loss.null_direction is None else loss.null_direction(th))
    if e is not None:
        np.testing.assert_allclose(loss.value(u + 2.5 * e, 1, th), loss.value(u, 1, th),
                                   rtol=1e-13)
    else:  # MSE, and a VS loss with γ ≠ 0 is not invariant along 1
        assert abs(loss.value(u + 2.5, 1, th) - loss.value(u, 1, th)) > 1e-3
    if loss.name == "vs":
        assert abs(loss.value(u + 2.5, 1, th) - loss.value(u, 1, th)) > 1e-3


@pytest.mark.parametrize("make, match", [
    (lambda: losses.label_smoothing(1.0), "alpha"),
    (lambda: losses.label_smoothing(-0.1), "alpha"),
    (lambda: losses.label_smoothing(float("nan")), "alpha"),
    (lambda: losses.label_smoothing("a"), "alpha"),
    (lambda: losses.weighted_ce([1.0, 0.0, 2.0]), "weights"),
    (lambda: losses.weighted_ce([1.0, -1.0]), "weights"),
    (lambda: losses.weighted_ce([1.0, np.inf]), "weights"),
    (lambda: losses.weighted_ce(2.0), "weights"),
    (lambda: losses.logit_adjusted(np.inf), "tau"),
    (lambda: losses.vs(np.nan, 1.0), "gamma"),
    (lambda: losses.vs(0.5, [[1.0]]), "tau"),
    (lambda: losses.get("focal"), "focal"),
    (lambda: losses.get("vs", gamma=0.5), "tau"),
    (lambda: losses.get("vs", gamma=0.5, tau=1.0, beta=2.0), "beta"),
    (lambda: losses.get("ce", alpha=0.1), "alpha"),
    (lambda: losses.get(losses.ce(), alpha=0.1), "alpha"),
    (lambda: ncjax.solve([10, 5, 2], 0.1, 0.1, loss=losses.weighted_ce([1.0, 2.0])),
     "weights"),
    (lambda: ncjax.solve([[10, 5, 2]] * 2, 0.1, 0.1, loss=losses.logit_adjusted([1, 2, 3])),
     "tau"),
    (lambda: ncjax.solve([10, 5, 2], 0.1, 0.1, method="convex",
                         loss=losses.mse()._replace(convex=False)), "convex"),
])
def test_bad_parameters_are_named(make, match):
    with pytest.raises(InputError, match=match):
        make()


def test_get_builds_from_a_name_and_labels():
    vs = losses.get("vs", gamma=0.5, tau=1.0)
    assert vs == losses.vs(0.5, 1.0) and vs.label == "vs(gamma=0.5, tau=1.0)"
    assert losses.get("mse") is losses.mse() and losses.get() is losses.ce()
    assert losses.parameters("weighted_ce") == ("weights",)
    # the static part holds no values: two τ give one static loss
    assert losses.vs(0.5, 1.0).stripped() == losses.vs(0.2, 3.0).stripped()
    assert hash(losses.vs(0.5, 1.0).stripped()) == hash(losses.vs(0.2, 3.0).stripped())
