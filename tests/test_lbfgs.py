"""``ncjax.lbfgs`` against independent routes: its compact-form direction against the BFGS
inverse-Hessian update written out densely; its state machine on quadratics with a known
minimiser, at a wall where F is not finite, and under a gradient that makes every trial
fail (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncjax import lbfgs
from ncjax.dtypes import x64


def _dense_inverse_hessian(S, Y, gamma):
    """H of BFGS from H₀ = γ I through the pairs (s, y), oldest first:
    H ← (I − ρ s yᵀ) H (I − ρ y sᵀ) + ρ s sᵀ, ρ = 1/(s·y) (Nocedal and Wright, eq. 6.17)."""
    n = S.shape[1]
    H = gamma * np.eye(n)
    for s, y in zip(S, Y):
        rho = 1 / (s @ y)
        V = np.eye(n) - rho * np.outer(y, s)
        H = V.T @ H @ V + rho * np.outer(s, s)
    return H


@pytest.mark.parametrize("pairs", [0, 1, 3, 7])
def test_direction_is_the_bfgs_inverse_hessian_times_the_gradient(pairs):
    rng = np.random.default_rng(pairs)
    n, M = 12, 7
    A = rng.normal(size=(n, n))
    A = A @ A.T + 0.5 * np.eye(n)
    S = rng.normal(size=(pairs, n))
    Y = S @ A + 0.05 * rng.normal(size=(pairs, n))  # s·y > 0 for these
    assert np.all(np.einsum("ij,ij->i", S, Y) > 0)
    g = rng.normal(size=n)
    gamma = S[-1] @ Y[-1] / (Y[-1] @ Y[-1]) if pairs else 1.0
    expected = -_dense_inverse_hessian(S, Y, gamma) @ g
    # the memory: empty slots first (zero rows, s·y = 0), the newest pair last
    pad = np.zeros((M - pairs, n))
    with x64(True):
        p = lbfgs.direction(jnp.asarray(g), jnp.asarray(np.concatenate([pad, S])),
                            jnp.asarray(np.concatenate([pad, Y])),
                            jnp.asarray(np.concatenate([np.zeros(M - pairs),
                                                        np.einsum("ij,ij->i", S, Y)])))
        np.testing.assert_allclose(np.asarray(p), expected, rtol=1e-10, atol=1e-12)


def _run(value_and_grad, x, evaluations, memory_size=None, state=None):
    """The state machine from x (from ``state``, or the first search with an empty memory
    of ``memory_size``) for a number of evaluations: (x, F, state) at the start and after
    each, as numpy arrays (to compare outside the float64 context)."""
    value, grad = value_and_grad(x)
    state = lbfgs.init(grad, memory_size) if state is None else state
    step = jax.jit(lambda x, v, g, s: lbfgs.step(value_and_grad, x, v, g, s))
    path = [(x, value, state)]
    for _ in range(evaluations):
        x, state, value, grad = step(x, value, grad, state)
        path.append((x, value, state))
    return jax.tree.map(np.asarray, path)


def test_quadratic_reaches_its_minimiser_with_sufficient_decrease_at_every_move():
    """F(x) = ½ xᵀA x − cᵀx over a pytree x = {"a": (5,), "b": (3,)}, A with condition
    number 100, memory 4 < n = 8: the iterate reaches A⁻¹c, and every move it makes is its
    search's trial and satisfies Armijo's condition (or, at F's rounding floor, the
    approximate one), checked with ∇F = A x − c."""
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    A = Q @ np.diag(np.geomspace(1, 100, 8)) @ Q.T
    c = rng.normal(size=8)
    with x64(True):
        def F(x):
            v = jnp.concatenate([x["a"], x["b"]])
            return 0.5 * v @ jnp.asarray(A) @ v - jnp.asarray(c) @ v

        x0 = {"a": jnp.zeros(5), "b": jnp.zeros(3)}
        path = _run(jax.value_and_grad(F), x0, 160, memory_size=4)
    flat = lambda x: np.concatenate([x["a"], x["b"]])
    armijo_moves = 0
    for (x, v, s), (x1, v1, _) in zip(path, path[1:]):
        if np.array_equal(flat(x1), flat(x)):
            continue
        # the move is the trial t p of that search
        np.testing.assert_allclose(flat(x1) - flat(x), s.t * s.p, rtol=1e-9, atol=1e-14)
        armijo = v1 <= v + lbfgs.C1 * s.t * s.slope
        # or, at F's rounding floor, F within 10 eps |F| and the slope at x1 (∇F = A x − c)
        # below (2 c₁ − 1) times the slope at x, up to the rounding of ∇F·p itself
        # (eps (‖A‖‖x₁‖ + ‖c‖)‖p‖: there both slopes are ~1e-31, and XLA's and numpy's
        # rounding of ∇F differ by that much)
        eps = np.finfo(float).eps
        rounding = 8 * eps * (np.linalg.norm(A, 2) * np.linalg.norm(flat(x1))
                              + np.linalg.norm(c)) * np.linalg.norm(s.p)
        approx = (v1 <= v + lbfgs.APPROX_ULPS * eps * abs(v)
                  and (A @ flat(x1) - c) @ s.p <= (2 * lbfgs.C1 - 1) * s.slope + rounding)
        assert armijo or approx
        armijo_moves += armijo
    np.testing.assert_allclose(flat(path[-1][0]), np.linalg.solve(A, c), rtol=1e-12,
                               atol=1e-13)
    assert armijo_moves > 10


def test_a_non_finite_trial_is_never_accepted_and_the_search_backs_off():
    """F(x) = 10 ‖x − x*‖² where ‖x‖² < 0.9 and +inf beyond, ‖x*‖ = 0.85, from 0: the
    first trial has length 1 (t = 1/‖∇F‖), beyond the wall, so the next is t/10 from the
    same x; the solve still ends at x*."""
    x_star = np.array([0.6, -0.6])  # ‖x*‖ = 0.85
    with x64(True):
        def F(x):
            inside = jnp.sum(x**2) < 0.9
            return jnp.where(inside, 10 * jnp.sum((x - x_star) ** 2), jnp.inf)

        path = _run(jax.value_and_grad(F), jnp.zeros(2), 40, memory_size=3)
    (x0, v0, s0), (x1, v1, s1) = path[:2]
    assert not np.isfinite(F(x0 + s0.t * s0.p))
    np.testing.assert_array_equal(x1, x0)
    assert v1 == v0 and int(s1.trials) == 1 and float(s1.t) == pytest.approx(s0.t / 10)
    assert all(np.isfinite(v) for _, v, _ in path)
    np.testing.assert_allclose(path[-1][0], x_star, atol=1e-10)


def test_a_search_that_cannot_succeed_restarts_along_minus_the_gradient():
    """A gradient of the wrong sign (F = ½‖x‖², reported ∇F = −x) makes every trial along
    −H∇F an ascent: from a memory of three pairs, after MAX_TRIALS failed trials the
    iterate has not moved, the memory is empty and the next search starts along −∇F from
    t = min(1, 1/‖∇F‖)."""
    rng = np.random.default_rng(1)
    S = rng.normal(size=(3, 4))
    Y = S * rng.uniform(1, 2, size=(1, 4))  # y = D s, D diagonal positive: s·y > 0
    x0 = np.array([0.3, -0.1, 0.2, 0.25])
    with x64(True):
        def value_and_grad(x):
            return 0.5 * jnp.sum(x**2), -x

        sy = jnp.einsum("ij,ij->i", S, Y)
        p = lbfgs.direction(jnp.asarray(-x0), jnp.asarray(S), jnp.asarray(Y), sy)
        state = lbfgs.State(p, jnp.asarray(1.0), p @ -x0, jnp.asarray(0), jnp.asarray(S),
                            jnp.asarray(Y), sy)
        path = _run(value_and_grad, jnp.asarray(x0), lbfgs.MAX_TRIALS, state=state)
    assert path[0][2].slope < 0  # a descent direction for the reported gradient
    for i, (x, v, s) in enumerate(path[:-1]):
        np.testing.assert_array_equal(x, x0)
        assert int(s.trials) == i and np.all(s.sy > 0)
    x, v, s = path[-1]
    np.testing.assert_array_equal(x, x0)
    assert int(s.trials) == 0 and not np.any(s.S) and not np.any(s.Y) and not np.any(s.sy)
    np.testing.assert_allclose(s.p, x0)  # −∇F as reported
    assert float(s.t) == 1.0  # ‖∇F‖ < 1
