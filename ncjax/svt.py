"""The proximal operator of τ‖·‖_*, singular-value soft-thresholding (SVT), for the convex
solver's step (``ncjax.convex``): A (K, K), τ > 0 → prox(A, τ) = U max(S − τ, 0) Vᵀ with
A = U S Vᵀ.

Two routes to the same matrix:

* ``by_svd``: LAPACK's SVD of A, accurate to rounding whatever A;
* ``by_gram``: the eigendecomposition of the Gram matrix AᵀA = V diag(s²) Vᵀ, then
  prox = A V diag(max(1 − τ/s, 0)) Vᵀ (A V = U S). A K × K eigh costs about half an SVD on
  the CPU (``ncjax bench``'s LAPACK bounds). Forming AᵀA squares the condition: the
  eigenvalues carry an absolute error of a few eps·s_max², so s_j an error of
  ~eps·s_max²/s_j. The singular values below τ are set to 0 whatever their error; for one
  above, the error of (1 − τ/s_j) s_j makes the output's relative error ~eps·s_max/τ.

``prox`` takes the Gram route when that error is negligible for every matrix of a batch,
τ ≥ GRAM_RATIO[dtype]·‖A‖_F (‖A‖_F ≥ s_max; in float64 1e-4, a relative error ≲ 1e-12
against the solver's gap tolerance of 1e-9), and the SVD otherwise; float32 (eps ≈ 1e-7
against a tolerance of 1e-5) always takes the SVD. The choice is one per batch: under
``jax.vmap`` ``prox`` runs once on the whole batch (``jax.custom_batching.custom_vmap``),
so the SVD is computed only when some matrix needs it, where a vmapped ``lax.cond`` would
compute both routes for all. The certificate of ``ncjax.dual`` does not use ``prox``: a
route's error could cost steps, never a wrong "converged".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# τ/‖A‖_F from which the Gram route is taken, by dtype (absent: never).
GRAM_RATIO = {"float64": 1e-4}


def by_svd(A: jax.Array, tau: jax.Array) -> jax.Array:
    """U max(S − τ, 0) Vᵀ by the SVD: A (..., K, K), τ (...)."""
    U, S, Vt = jnp.linalg.svd(A, full_matrices=False)
    return (U * jnp.maximum(S - tau[..., None], 0.0)[..., None, :]) @ Vt


def by_gram(A: jax.Array, tau: jax.Array) -> jax.Array:
    """A V diag(max(1 − τ/s, 0)) Vᵀ by the eigh of AᵀA = V diag(s²) Vᵀ: A (..., K, K),
    τ (...) > 0."""
    w, V = jnp.linalg.eigh(jnp.swapaxes(A, -1, -2) @ A)
    s = jnp.sqrt(jnp.maximum(w, 0.0))
    t = tau[..., None]
    keep = s > t
    f = jnp.where(keep, 1 - t / jnp.where(keep, s, 1.0), 0.0)
    return (A @ (V * f[..., None, :])) @ jnp.swapaxes(V, -1, -2)


def gram_ok(A: jax.Array, tau: jax.Array) -> jax.Array:
    """Whether the Gram route is accurate for every matrix: A (..., K, K), τ (...) → ()."""
    ratio = GRAM_RATIO.get(A.dtype.name)
    if ratio is None:
        return jnp.asarray(False)
    return jnp.all(tau >= ratio * jnp.sqrt(jnp.sum(A**2, axis=(-2, -1))))


@jax.custom_batching.custom_vmap
def prox(A: jax.Array, tau: jax.Array) -> jax.Array:
    """prox of τ‖·‖_* of A (..., K, K), τ (...): the Gram route if ``gram_ok`` for all of
    them, else the SVD (module docstring). Under vmap, once on the whole batch. Not
    differentiable (custom_vmap)."""
    return jax.lax.cond(gram_ok(A, tau), by_gram, by_svd, A, tau)


@prox.def_vmap
def _prox_batched(axis_size, in_batched, A, tau):
    A, tau = (x if batched else jnp.broadcast_to(x, (axis_size,) + jnp.shape(x))
              for x, batched in zip((A, tau), in_batched))
    return prox(A, tau), True
