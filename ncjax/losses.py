"""Per-sample losses ℓ(u, k) of a logit vector u (K,) and a label k, as values of pure
functions: everything the factored objective, the convex solver and the certificate need.

For a loss convex in u, the UFM with d ≥ K − 1 has the convex form (DESIGN.md §1b)

    P(Z, b) = Σ_k π_k ℓ(z_k + b, k) + λ ‖Z D^{1/2}‖_* + (λ_b/2)‖b‖²,

and, writing ℓ(u, k) = max_v ⟨v, u⟩ − ℓ*(v, k), its Fenchel dual

    D(V) = −Σ_k π_k ℓ*(v_k, k) − ‖r(V)‖²/(2λ_b),   r(V) = Σ_k π_k v_k,
    s.t. ‖[(sqrt(n_k)/N) v_k]_k‖_op ≤ λ,  v_k ∈ dom ℓ*(·, k),

(r(V) = 0 a constraint for a free bias, λ_b = 0; no r-term at all without a bias). At the
optimum v_k = ∇ℓ(z_k + b, k). A ``Loss`` carries:

    name        its name (``LOSSES`` lists the names the engine serves)
    value       ℓ(u, k): u (..., K), k (...) integer labels broadcast against u's leading
                axes → (...)
    grad        ∇_u ℓ(u, k): u (K,), k → (K,); the dual point v of u
    hess        ∇²_u ℓ(u, k): (K,), k → (K, K)
    dual_value  −ℓ*(v, k) for v ∈ dom ℓ*(·, k): (K,), k → ()
    balance     the free-bias repair: V (K, K) with column k = v_k ∈ dom ℓ*(·, k), π (K,)
                → V' in the domain with r(V') = Σ_k π_k v'_k = 0, V' = V where r(V) = 0
    bregman     ℓ(u + δ, k) − ℓ(u, k) − ⟨∇ℓ(u, k), δ⟩ computed without cancellation:
                (K,), (K,), k → ()
    curvature   a bound on the largest eigenvalue of ∇²ℓ over all u
    bias_start  π (K,) → the bias from which the bias of the zero point Z = 0 is sought
    shift_invariant  whether ℓ(u + c·1, k) = ℓ(u, k) for every c (then only b's part
                orthogonal to 1 matters, and the bias is kept centred)
    convex      whether ℓ is convex in u (no certificate otherwise)

Scaling V toward 0 keeps it in the domain (0 ∈ dom ℓ* for a loss bounded below), which is
how the certificate meets the operator-norm constraint (``ncjax.dual``).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

from ncjax.validate import InputError


class Loss(NamedTuple):
    """A per-sample loss and what the solvers and the certificate need of it (module
    docstring)."""

    name: str
    value: Callable
    grad: Callable
    hess: Callable
    dual_value: Callable
    balance: Callable
    bregman: Callable
    curvature: float
    bias_start: Callable
    shift_invariant: bool
    convex: bool = True


def _one_hot(k, K, dtype):
    return (jnp.arange(K) == k).astype(dtype)


def cross_entropy(u: jax.Array, k: jax.Array) -> jax.Array:
    """CE(u, k) = logsumexp(u) − u_k over the last axis, computed stably: u (..., K), k
    integer labels broadcastable to u.shape[:-1] → (...)."""
    # u_k picked by a mask, not a gather: its gradient is then a select that fuses with
    # the softmax's, where a gather's is a scatter-add (one more pass on a GPU)
    hot = jnp.asarray(k)[..., None] == jnp.arange(u.shape[-1])
    return jax.nn.logsumexp(u, axis=-1) - jnp.sum(jnp.where(hot, u, 0.0), axis=-1)


def entropy(q: jax.Array) -> jax.Array:
    """Ent(q) = −Σ_j q_j log q_j over the last axis (0 log 0 = 0)."""
    return -jnp.sum(xlogy(q, q), axis=-1)


def _ce_grad(u, k):
    return jax.nn.softmax(u) - _one_hot(k, u.shape[-1], u.dtype)


def _ce_hess(u, k):
    p = jax.nn.softmax(u)
    return jnp.diag(p) - jnp.outer(p, p)


def _ce_dual_value(v, k):
    """−CE*(v, k) = Ent(v + e_k): the dual variable of CE is q − e_k with q ∈ Δ."""
    return entropy(v + _one_hot(k, v.shape[-1], v.dtype))


def _ce_balance(V, pi):
    """With q_k = v_k + e_k ∈ Δ: q_k' = (1 − s) q_k + s w for one distribution w and the
    smallest s ∈ [0, 1] making Σ_k π_k q_k' = π, i.e. w = (π − (1 − s) q̄)/s ≥ 0 with
    q̄ = Σ_k π_k q_k: s = max(0, 1 − min_j π_j/q̄_j). Then r(V') = Σ_k π_k (q_k' − e_k) = 0."""
    E = jnp.eye(V.shape[0], dtype=V.dtype)
    q = V + E
    qbar = q @ pi
    s = jnp.clip(1 - jnp.min(pi / qbar), 0.0, 1.0)
    s_safe = jnp.where(s > 0, s, 1.0)
    w = jnp.where(s > 0, jnp.maximum(pi - (1 - s) * qbar, 0.0) / s_safe, pi)
    return (1 - s) * q + s * w[:, None] - E


def _ce_bregman(u, du, k):
    """log(1 + Σ_j p_j (expm1(w_j) − w_j)), w = δ − ⟨p, δ⟩, p = softmax(u) (Σ_j p_j w_j = 0):
    no O(1) terms cancel, where the direct difference is pure rounding once
    ‖δ‖² < eps·|ℓ|."""
    p = jax.nn.softmax(u)
    w = du - jnp.sum(p * du)
    return jnp.log1p(jnp.sum(p * (jnp.expm1(w) - w)))


@functools.cache
def ce() -> Loss:
    """Cross-entropy CE(u, k) = logsumexp(u) − u_k (Hong & Ling's model). Its Hessian
    diag(p) − p pᵀ is ≼ ½ I."""
    return Loss("ce", cross_entropy, _ce_grad, _ce_hess, _ce_dual_value, _ce_balance,
                _ce_bregman, 0.5, jnp.log, True)


# name -> factory; the one list of losses that validation, specs and the CLI read
LOSSES = {"ce": ce}


def get(loss) -> Loss:
    """A ``Loss`` from a loss or its name (``LOSSES``); None is cross-entropy."""
    if loss is None:
        return ce()
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and loss in LOSSES:
        return LOSSES[loss]()
    raise InputError(f"loss must be a ncjax.losses.Loss or one of {sorted(LOSSES)}, "
                     f"got {loss!r}")
