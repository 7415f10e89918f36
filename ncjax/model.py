"""The Unconstrained Feature Model under cross-entropy: pure objectives.

Everything here is in the *half* convention of DESIGN.md §1,

    F(W, H, b) = (1/N) Σ_k (n_k/m) Σ_{i<m} CE(W h_{k,i} + b, k)
                 + (λ_W/2)‖W‖²_F + (λ_H/2) Σ_k (n_k/m) Σ_i ‖h_{k,i}‖² + (λ_b/2)‖b‖²,

with K classes, class counts n_k > 0 (any positive reals), N = Σ_k n_k and m free
features per class, each carrying weight n_k/m (m = n_k is the full UFM). Shapes:

    W: (K, d)    H: (K, m, d)    b: (K,)    n_k: (K,)

and the class-mean logits Z (K, K) have column k equal to z_k = W h̄_k.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Params(NamedTuple):
    """UFM variables: classifier ``W`` (K, d), features ``H`` (K, m, d), bias ``b`` (K,)."""

    W: jax.Array
    H: jax.Array
    b: jax.Array


def cross_entropy(logits: jax.Array, label: jax.Array) -> jax.Array:
    """CE(u, k) = logsumexp(u) − u_k over the last axis, computed stably.

    Args:
      logits: (..., K).
      label: integer array broadcastable to ``logits.shape[:-1]``.
    Returns:
      (...,) cross-entropy values.
    """
    # u_k picked by a mask, not a gather: its gradient is then a select that fuses with
    # the softmax's, where a gather's is a scatter-add (one more pass on a GPU)
    hot = jnp.asarray(label)[..., None] == jnp.arange(logits.shape[-1])
    true = jnp.sum(jnp.where(hot, logits, 0.0), axis=-1)
    return jax.nn.logsumexp(logits, axis=-1) - true


def class_means(H: jax.Array) -> jax.Array:
    """h̄_k = (1/m) Σ_i h_{k,i}: (K, m, d) -> (K, d).

    All m features of class k carry the same weight n_k/m, so the weighted class mean is
    the plain mean over the m features.
    """
    return jnp.mean(H, axis=1)


def mean_logits(W: jax.Array, H: jax.Array) -> jax.Array:
    """Z = W H̄ᵀ with column k equal to z_k = W h̄_k: (K, d), (K, m, d) -> (K, K)."""
    return W @ class_means(H).T


def data_loss(logits: jax.Array, n_k: jax.Array) -> jax.Array:
    """The cross-entropy term of F, (1/N) Σ_k (n_k/m) Σ_{i<m} CE(logits[k, i], k), from the
    logits (K, m, K) of the m free features of each class; a scalar."""
    K, m, _ = logits.shape
    ce = cross_entropy(logits, jnp.arange(K)[:, None])  # (K, m)
    return jnp.sum((n_k / m) * jnp.sum(ce, axis=1)) / jnp.sum(n_k)


def ufm_objective(
    params: Params,
    n_k: jax.Array,
    lam_W: jax.Array,
    lam_H: jax.Array,
    lam_b: jax.Array,
) -> jax.Array:
    """F(W, H, b) of the module docstring (half convention); a scalar."""
    W, H, b = params
    w_k = n_k / H.shape[1]  # weight of each free feature of class k
    logits = jnp.einsum("kid,cd->kic", H, W) + b  # (K, m, K): logits of feature (k, i)
    loss = data_loss(logits, n_k)
    reg = (
        0.5 * lam_W * jnp.sum(W**2)
        + 0.5 * lam_H * jnp.sum(w_k * jnp.sum(H**2, axis=(1, 2)))
        + 0.5 * lam_b * jnp.sum(b**2)
    )
    return loss + reg


def nuclear_norm(A: jax.Array) -> jax.Array:
    """‖A‖_* = Σ singular values of a matrix (last two axes)."""
    return jnp.sum(jnp.linalg.svd(A, compute_uv=False), axis=-1)


def convex_objective(
    Z: jax.Array, b: jax.Array, n_k: jax.Array, lam: jax.Array, lam_b: jax.Array
) -> jax.Array:
    """The convex form P(Z, b) of DESIGN.md §1 (half convention):

        P(Z, b) = (1/N) Σ_k n_k CE(z_k + b, k) + λ ‖Z D^{1/2}‖_* + (λ_b/2)‖b‖²,

    with D = diag(n_k), λ = sqrt(λ_W λ_H), Z (K, K) whose column k is z_k.
    min P = min F for d ≥ K − 1, and P(W H̄ᵀ, b) ≤ F(W, H, b) for every (W, H, b).
    """
    K = Z.shape[0]
    ce = cross_entropy(Z.T + b, jnp.arange(K))  # row k of Z.T is z_k
    loss = jnp.sum(n_k * ce) / jnp.sum(n_k)
    return loss + lam * nuclear_norm(Z * jnp.sqrt(n_k)[None, :]) + 0.5 * lam_b * jnp.sum(b**2)
