"""ncjax.fused (Pallas Adam kernel, interpret mode on the CPU) against the XLA loop
``solver._solve_one`` with optax.adam: same iterates and the same stopping step."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ncjax import fused, solver


def test_fused_adam_equals_optax_loop(x64):
    B, K, m, d = 3, 4, 4, 8
    n_k = jnp.asarray([[50., 50, 10, 10], [40, 20, 20, 5], [30, 30, 30, 30]])
    lam_W = jnp.full(B, 0.01)
    lam_H = jnp.asarray([0.004, 0.01, 0.02]) ** 2 / 0.01
    lam_b, lr = jnp.asarray([0.0, 0.01, 0.0]), jnp.full(B, 1e-2)
    gtol, ftol = jnp.asarray([1e-2, 3e-2, 0.0]), jnp.zeros(B)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(B))
    one = functools.partial(solver._solve_one, d=d, m=m, optimizer="adam", max_steps=400,
                            memory_size=10, dtype=jnp.float64)
    x, value, gnorm, steps, status = jax.vmap(one)(keys, n_k, lam_W, lam_H, lam_b, lr, gtol,
                                                   ftol)
    x0 = jax.vmap(lambda k, n: solver.init_natural(k, n, d=d, m=m, dtype=jnp.float64))(
        keys, n_k)
    (V, U, c), value2, gnorm2, steps2, status2 = fused.adam_loop(
        x0.V, x0.U, x0.b, n_k, jnp.sqrt(lam_W * lam_H), lam_b, lr, gtol, ftol, 400,
        window=solver.WINDOW, interpret=True)
    np.testing.assert_array_equal(steps2, steps)
    np.testing.assert_array_equal(status2, status)
    assert list(status) == [1, 0, 1] and steps[1] < 400  # one stops on gtol
    np.testing.assert_allclose(U, x.U, atol=1e-12)
    np.testing.assert_allclose(V, x.V, atol=1e-12)
    np.testing.assert_allclose(c, x.b, atol=1e-12)
    np.testing.assert_allclose(value2, value, rtol=1e-12)
    np.testing.assert_allclose(gnorm2, gnorm, rtol=1e-10)
