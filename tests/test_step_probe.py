"""benchmarks/two_pass.py and benchmarks/step_probe.py (the Adam-step experiments): the
two-kernel step (Pallas, interpret mode here) and the factored step compute optax.adam's
iterates on F, with F and ‖∇F‖ as autodiff gives them (float64); a stopped configuration
is left as it is; the probe runs in its tiny mode."""

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ncjax import solver

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))
import step_probe  # noqa: E402
import two_pass  # noqa: E402


def _problem(K, d, m, B, seed=0):
    rng = np.random.default_rng(seed)
    n_k = jnp.asarray(rng.integers(50, 500, size=(B, K)).astype(np.float64))
    lam_W = jnp.full(B, 0.01)
    lam_H = jnp.asarray(rng.uniform(1e-4, 1e-2, B))
    lam_b = jnp.asarray([0.0, 0.01, 0.1][:B])
    lr = jnp.asarray([1e-2, 3e-2, 1e-1][:B])
    keys = jax.vmap(solver.start_key)(jnp.arange(B, dtype=jnp.uint32),
                                      jnp.zeros(B, jnp.uint32))
    x0 = jax.vmap(lambda k, n: solver.init_natural(k, n, d=d, m=m, dtype=jnp.float64))(
        keys, n_k)
    # start away from b = 0 so that ∇_b and the bias's logits are exercised
    x0 = x0._replace(b=jnp.asarray(rng.normal(size=(B, K))))
    return x0, n_k, lam_W, lam_H, lam_b, lr


def _optax_adam(x, n_k, lam_W, lam_H, lam_b, lr, steps):
    """``steps`` steps of optax.adam on F (natural coordinates), each configuration alone."""
    def one(x, n_k, lam_W, lam_H, lam_b, lr):
        f = lambda x: solver.natural_objective(x, n_k, lam_W, lam_H, lam_b)
        opt = optax.adam(lr)
        s = opt.init(x)
        for _ in range(steps):
            u, s = opt.update(jax.grad(f)(x), s, x)
            x = optax.apply_updates(x, u)
        return x
    return jax.vmap(one)(x, n_k, lam_W, lam_H, lam_b, lr)


def _value_and_gnorm(x, n_k, lam_W, lam_H, lam_b):
    def one(x, *p):
        v, g = jax.value_and_grad(lambda x: solver.natural_objective(x, *p))(x)
        return v, optax.tree.norm(g)
    return jax.vmap(one)(x, n_k, lam_W, lam_H, lam_b)


@pytest.mark.parametrize("K, d, m, a, b", [
    (4, 16, 8, None, None),  # kernel A: one program per configuration; B: a block each
    # A over 4 programs a configuration (partials added); B loops over 2 blocks a program
    (4, 16, 8, {"rows": 8, "per": 1}, {"rows": 8, "per": 2})])
def test_two_pass_step_is_adam_with_exact_F_and_gradient_norm(K, d, m, a, b):
    with solver._x64(True):
        x0, n_k, lam_W, lam_H, lam_b, lr = _problem(K, d, m, 3)
        B = 3
        U = x0.U.reshape(B, K * m, d)
        z = jnp.zeros_like
        c = (x0.V, U, x0.b, z(x0.V), z(U), z(x0.b), z(x0.V), z(U), z(x0.b),
             jnp.zeros(B, jnp.int32), jnp.zeros(B), jnp.zeros(B), jnp.ones(B, bool))
        # configuration 2 stops at once (its gradient is below an absurd tolerance)
        gtol_abs = jnp.asarray([0.0, 0.0, 1e9])
        step = jax.jit(lambda c: two_pass.step(c, n_k, lam_W, lam_H, lam_b, lr, gtol_abs,
                                               interpret=True, a=a, b=b))
        for _ in range(4):
            c = step(c)
        want = _optax_adam(x0, n_k, lam_W, lam_H, lam_b, lr, 4)
        got = (c[0], c[1].reshape(x0.U.shape), c[2])
        for i in (0, 1):
            for a, b in zip(got, want):
                np.testing.assert_allclose(a[i], b[i], rtol=1e-12, atol=1e-14)
        # the stopped one never moved; its t stayed 0, the others counted 4 updates
        for a, b in zip(got, x0):
            np.testing.assert_array_equal(a[2], b[2])
        assert list(c[9]) == [4, 4, 0] and list(c[12]) == [True, True, False]
        # the next step's F and ‖∇F‖² are those at the current iterate (autodiff)
        c = step(c)
        value, gnorm = _value_and_gnorm(solver.Natural(*got), n_k, lam_W, lam_H, lam_b)
        np.testing.assert_allclose(c[10], value, rtol=1e-13)
        np.testing.assert_allclose(np.sqrt(c[11]), gnorm, rtol=1e-11)


def test_factored_step_is_adam_with_exact_F_and_gradient_norm():
    K, d, m = 4, 16, 8
    with solver._x64(True):
        x0, n_k, lam_W, lam_H, lam_b, lr = _problem(K, d, m, 3)
        fac = jax.vmap(step_probe._factors)
        rest = jax.vmap(step_probe._adam_from_factors, in_axes=(0,) * 3 + (None,) + (0,) * 6)
        zero = jax.tree.map(jnp.zeros_like, x0)
        x, mu, nu = x0, zero, zero
        R, gV, gb, _, _ = fac(x, n_k, lam_W, lam_H, lam_b)
        for t in range(1, 5):
            x, mu, nu = rest(x, mu, nu, jnp.asarray(t), R, gV, gb, lam_W, lam_H, lr)
            R, gV, gb, F, g2 = fac(x, n_k, lam_W, lam_H, lam_b)
        want = _optax_adam(x0, n_k, lam_W, lam_H, lam_b, lr, 4)
        for a, b in zip(x, want):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
        value, gnorm = _value_and_gnorm(x, n_k, lam_W, lam_H, lam_b)
        np.testing.assert_allclose(F, value, rtol=1e-13)
        np.testing.assert_allclose(np.sqrt(g2), gnorm, rtol=1e-11)


def test_probe_tiny_mode(tmp_path):
    assert step_probe.main(["--tiny", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "probe.json").read_text())
    rows = {r["variant"]: r for r in res["rows"]}
    assert set(rows) >= {"solver", "bare", "copy6", "factored", "two_pass"}
    for r in rows.values():
        assert "error" not in r and r["config_steps_per_s"] > 0
        np.testing.assert_allclose(r["of_copy"], res["B"] * res["model_bytes"] / r["step_s"]
                                   / res["copy_bandwidth"], rtol=1e-9)
    agree = res["two_pass_vs_optax"]
    assert agree["finite"] and max(agree["V"], agree["U"], agree["b"]) < 1e-5
    assert "| two_pass |" in (tmp_path / "probe.md").read_text()
