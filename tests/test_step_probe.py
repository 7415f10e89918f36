"""benchmarks/experiments/step_probe.py (the Adam step taken apart): its factored step
computes optax.adam's iterates on F, with F and ‖∇F‖ as autodiff gives them (float64);
the probe runs in its tiny mode, the one-kernel step (``benchmarks.experiments.fused``,
tested in test_fused.py) in Pallas's interpreter there."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.experiments import step_probe
from ncjax import dtypes, natural
from ncjax.problem import Problem


def _problem(K, d, m, B, seed=0):
    rng = np.random.default_rng(seed)
    problems = Problem(jnp.asarray(rng.integers(50, 500, size=(B, K)).astype(np.float64)),
                       jnp.full(B, 0.01), jnp.asarray(rng.uniform(1e-4, 1e-2, B)),
                       jnp.asarray([0.0, 0.01, 0.1][:B]))
    lr = jnp.asarray([1e-2, 3e-2, 1e-1][:B])
    keys = jax.vmap(natural.start_key)(jnp.arange(B, dtype=jnp.uint32),
                                       jnp.zeros(B, jnp.uint32))
    x0 = jax.vmap(lambda k, p: natural.init(k, p, d=d, m=m, dtype=jnp.float64))(
        keys, problems)
    # start away from b = 0 so that ∇_b and the bias's logits are exercised
    x0 = x0._replace(b=jnp.asarray(rng.normal(size=(B, K))))
    return x0, problems, lr


def _optax_adam(x, problems, lr, steps):
    """``steps`` steps of optax.adam on F (natural coordinates), each configuration alone."""
    def one(x, problem, lr):
        f = lambda x: natural.objective(x, problem)
        opt = optax.adam(lr)
        s = opt.init(x)
        for _ in range(steps):
            u, s = opt.update(jax.grad(f)(x), s, x)
            x = optax.apply_updates(x, u)
        return x
    return jax.jit(jax.vmap(one))(x, problems, lr)


def _value_and_gnorm(x, problems):
    def one(x, p):
        v, g = jax.value_and_grad(natural.objective)(x, p)
        return v, optax.tree.norm(g)
    return jax.jit(jax.vmap(one))(x, problems)


def test_factored_step_is_adam_with_exact_F_and_gradient_norm():
    K, d, m = 4, 16, 8
    with dtypes.x64(True):
        x0, problems, lr = _problem(K, d, m, 3)
        fac = jax.jit(jax.vmap(step_probe.factors))
        rest = jax.jit(jax.vmap(step_probe.adam_from_factors,
                                in_axes=(0,) * 3 + (None,) + (0,) * 5))
        zero = jax.tree.map(jnp.zeros_like, x0)
        x, mu, nu = x0, zero, zero
        R, gV, gb, _, _ = fac(x, problems)
        for t in range(1, 5):
            x, mu, nu = rest(x, mu, nu, jnp.asarray(t), R, gV, gb, problems.lam, lr)
            R, gV, gb, F, g2 = fac(x, problems)
        want = _optax_adam(x0, problems, lr, 4)
        for a, b in zip(x, want):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
        value, gnorm = _value_and_gnorm(x, problems)
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
