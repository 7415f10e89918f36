"""Natural coordinates (V, U, b) of the factored UFM: an exact change of variables that
removes its two bad scalings (DESIGN.md §1).

    W = a V,    h_{k,i} = u_{k,i} / (a sqrt(w_k)),    a = (λ_H/λ_W)^{1/4},  w_k = n_k/m,

so that (λ_W/2)‖W‖² = (λ/2)‖V‖², (λ_H/2) w_k ‖h_{k,i}‖² = (λ/2)‖u_{k,i}‖² and
W h_{k,i} = V u_{k,i}/sqrt(w_k), with λ = sqrt(λ_W λ_H). The Hessian of the feature block
is then Vᵀ S V / N for every class, whatever n_k: minority features no longer see
gradients n_k/(mN) times smaller, and the ratio λ_W/λ_H drops out. The objective is still
exactly F (``objective``: equal to ``model.ufm_objective`` composed with ``to_params``),
so the optimum is the same. Shapes: V (K, d), U (K, m, d), b (K,) for one problem.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ncjax import model
from ncjax.problem import Problem


class Natural(NamedTuple):
    """Optimisation variables: V (K, d), U (K, m, d), b (K,); see the module docstring."""

    V: jax.Array
    U: jax.Array
    b: jax.Array


def to_params(x: Natural, problem: Problem) -> model.Params:
    """Map natural coordinates to the UFM variables (W, H, b)."""
    a = problem.balance
    w_k = problem.counts / x.U.shape[1]
    return model.Params(a * x.V, x.U / (a * jnp.sqrt(w_k))[:, None, None], x.b)


def from_params(params: model.Params, problem: Problem) -> Natural:
    """The inverse of ``to_params``."""
    a = problem.balance
    w_k = problem.counts / params.H.shape[1]
    return Natural(params.W / a, params.H * (a * jnp.sqrt(w_k))[:, None, None], params.b)


def objective(x: Natural, problem: Problem) -> jax.Array:
    """F(W, H, b) at (W, H, b) = ``to_params(x, problem)``, written in the natural
    coordinates:

        F = (1/N) Σ_k w_k Σ_i ℓ(V u_{k,i}/sqrt(w_k) + b, k)
            + (λ/2)(‖V‖² + ‖U‖²) + (λ_b/2)‖b‖²,    λ = sqrt(λ_W λ_H), w_k = n_k/m.

    The same number as the composition, but the scaling by a sqrt(w_k) acts on the
    (K, m, K) logits instead of the (K, m, d) features: the step's gradient makes one pass
    over U fewer each way. A scalar.
    """
    V, U, b = x
    w_k = problem.counts / U.shape[1]
    logits = (jnp.einsum("kid,cd->kic", U, V) * jax.lax.rsqrt(w_k)[:, None, None]
              + model.bias_of(b, problem))
    return (model.data_loss(logits, problem)
            + 0.5 * problem.lam * (jnp.sum(V**2) + jnp.sum(U**2))
            + model.bias_penalty(b, problem))


def init(key, problem: Problem, *, d: int, m: int, dtype) -> Natural:
    """Random initial point with class-mean logits of unit scale and balanced blocks.

    V ~ N(0, σ_V²), u_{k,i} ~ sqrt(w_k) N(0, σ²), σ_V = σ sqrt(N/K), σ² = 1/sqrt(N d/K):
    then ‖V‖² ≈ ‖U‖² and the logits V u/sqrt(w_k) have standard deviation ≈ 1. Equivalently
    every h_{k,i} and every row of W is i.i.d. Gaussian, independent across features.
    b starts at 0 (and stays there without a bias: F does not depend on it).
    """
    n_k = problem.counts
    K = n_k.shape[0]
    N = jnp.sum(n_k)
    sigma = (N * d / K) ** -0.25
    kV, kU = jax.random.split(key)
    V = sigma * jnp.sqrt(N / K) * jax.random.normal(kV, (K, d), dtype)
    U = sigma * jnp.sqrt(n_k / m)[:, None, None] * jax.random.normal(kU, (K, m, d), dtype)
    return Natural(V, U, jnp.zeros((K,), dtype))


def start_key(seed, key_index):
    """The key of a configuration's random start: fold_in(key(seed), key_index). A sweep
    passes each cell's flat grid index as key_index, so a start never depends on the batch
    around it. Scalars; vmap it for arrays."""
    return jax.random.fold_in(jax.random.key(seed), key_index)
