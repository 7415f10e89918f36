"""The Unconstrained Feature Model: pure objectives of one ``ncjax.problem.Problem``.

Everything here is in the *half* convention of DESIGN.md §1, with the problem's loss ℓ
and bias mode,

    F(W, H, b) = (1/N) Σ_k (n_k/m) Σ_{i<m} ℓ(W h_{k,i} + b, k)
                 + (λ_W/2)‖W‖²_F + (λ_H/2) Σ_k (n_k/m) Σ_i ‖h_{k,i}‖² + (λ_b/2)‖b‖²,

with K classes, class counts n_k > 0 (any positive reals), N = Σ_k n_k and m free
features per class, each carrying weight n_k/m (m = n_k is the full UFM). Without a bias
(``problem.bias`` False) b is absent: the logits are W h and the b of ``Params`` is
ignored (it stays 0). Shapes:

    W: (K, d)    H: (K, m, d)    b: (K,)    n_k: (K,)

and the class-mean logits Z (K, K) have column k equal to z_k = W h̄_k.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ncjax.problem import Problem


class Params(NamedTuple):
    """UFM variables: classifier ``W`` (K, d), features ``H`` (K, m, d), bias ``b`` (K,)."""

    W: jax.Array
    H: jax.Array
    b: jax.Array


def bias_of(b: jax.Array, problem: Problem) -> jax.Array:
    """The bias the logits see: b, or 0 for a problem without a bias."""
    return b if problem.bias else jnp.zeros_like(b)


def class_means(H: jax.Array) -> jax.Array:
    """h̄_k = (1/m) Σ_i h_{k,i}: (K, m, d) -> (K, d).

    All m features of class k carry the same weight n_k/m, so the weighted class mean is
    the plain mean over the m features.
    """
    return jnp.mean(H, axis=1)


def mean_logits(W: jax.Array, H: jax.Array) -> jax.Array:
    """Z = W H̄ᵀ with column k equal to z_k = W h̄_k: (K, d), (K, m, d) -> (K, K)."""
    return W @ class_means(H).T


def data_loss(logits: jax.Array, problem: Problem) -> jax.Array:
    """The loss term of F, (1/N) Σ_k (n_k/m) Σ_{i<m} ℓ(logits[k, i], k), from the logits
    (K, m, K) of the m free features of each class; a scalar."""
    K, m, _ = logits.shape
    n_k = problem.counts
    per = problem.loss.value(logits, jnp.arange(K)[:, None], problem.loss_args)  # (K, m)
    return jnp.sum((n_k / m) * jnp.sum(per, axis=1)) / jnp.sum(n_k)


def bias_penalty(b: jax.Array, problem: Problem) -> jax.Array:
    """(λ_b/2)‖b‖², 0 without a bias."""
    return 0.5 * problem.lam_b * jnp.sum(b**2) if problem.bias else jnp.zeros((), b.dtype)


def ufm_objective(params: Params, problem: Problem) -> jax.Array:
    """F(W, H, b) of the module docstring (half convention); a scalar."""
    W, H, b = params
    w_k = problem.counts / H.shape[1]  # weight of each free feature of class k
    logits = jnp.einsum("kid,cd->kic", H, W) + bias_of(b, problem)  # (K, m, K)
    reg = (0.5 * problem.lam_W * jnp.sum(W**2)
           + 0.5 * problem.lam_H * jnp.sum(w_k * jnp.sum(H**2, axis=(1, 2))))
    return data_loss(logits, problem) + reg + bias_penalty(b, problem)


def nuclear_norm(A: jax.Array) -> jax.Array:
    """‖A‖_* = Σ singular values of a matrix (last two axes)."""
    return jnp.sum(jnp.linalg.svd(A, compute_uv=False), axis=-1)


def convex_loss(Z: jax.Array, b: jax.Array, problem: Problem) -> jax.Array:
    """Σ_k π_k ℓ(z_k + b, k) (b ignored without a bias): Z (K, K) column k = z_k."""
    K = Z.shape[0]
    per = problem.loss.value(Z.T + bias_of(b, problem), jnp.arange(K),
                             problem.loss_args)  # row k of Zᵀ is z_k
    return jnp.sum(problem.counts * per) / jnp.sum(problem.counts)


def convex_objective(Z: jax.Array, b: jax.Array, problem: Problem) -> jax.Array:
    """The convex form P(Z, b) of DESIGN.md §1 (half convention):

        P(Z, b) = Σ_k π_k ℓ(z_k + b, k) + λ ‖Z D^{1/2}‖_* + (λ_b/2)‖b‖²,

    with D = diag(n_k), λ = sqrt(λ_W λ_H), Z (K, K) whose column k is z_k (no b terms
    without a bias). min P = min F for d ≥ K − 1 and a loss convex in the logits, and
    P(W H̄ᵀ, b) ≤ F(W, H, b) for every (W, H, b).
    """
    Y = Z * jnp.sqrt(problem.counts)[None, :]
    return convex_loss(Z, b, problem) + problem.lam * nuclear_norm(Y) + bias_penalty(b, problem)
