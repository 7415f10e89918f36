"""benchmarks/step_probe.py (the Adam step taken apart): its factored step computes
optax.adam's iterates on F, with F and ‖∇F‖ as autodiff gives them (float64); the probe
runs in its tiny mode, the one-kernel step (``ncjax.fused``, tested in test_fused.py) in
Pallas's interpreter there."""

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ncjax import dtypes
from ncjax import solver

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))
import step_probe  # noqa: E402


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
    return jax.jit(jax.vmap(one))(x, n_k, lam_W, lam_H, lam_b, lr)


def _value_and_gnorm(x, n_k, lam_W, lam_H, lam_b):
    def one(x, *p):
        v, g = jax.value_and_grad(lambda x: solver.natural_objective(x, *p))(x)
        return v, optax.tree.norm(g)
    return jax.jit(jax.vmap(one))(x, n_k, lam_W, lam_H, lam_b)


def test_factored_step_is_adam_with_exact_F_and_gradient_norm():
    K, d, m = 4, 16, 8
    with dtypes.x64(True):
        x0, n_k, lam_W, lam_H, lam_b, lr = _problem(K, d, m, 3)
        fac = jax.jit(jax.vmap(step_probe._factors))
        rest = jax.jit(jax.vmap(step_probe._adam_from_factors,
                                in_axes=(0,) * 3 + (None,) + (0,) * 6))
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
    assert set(rows) >= {"solver", "bare", "copy6", "factored", "fused"}
    for r in rows.values():
        assert "error" not in r and r["config_steps_per_s"] > 0
        np.testing.assert_allclose(r["of_copy"], res["B"] * res["model_bytes"] / r["step_s"]
                                   / res["copy_bandwidth"], rtol=1e-9)
    agree = res["fused_vs_optax"]
    assert agree["finite"] and max(agree["V"], agree["U"], agree["b"]) < 1e-5
    assert "| fused |" in (tmp_path / "probe.md").read_text()
