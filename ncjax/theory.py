"""What the theory predicts (DESIGN.md §1), as pure functions of the setting.

Nothing here is used to *produce* a solution: the engine measures, and these functions
are put beside the measurement. All λ are in the half convention unless stated.

Conventions. ncjax writes (λ_W/2)‖W‖² + (λ_H/2)‖H‖² + (λ_b/2)‖b‖²; the authors' code
writes λ‖·‖² without the 1/2, so λ_half = 2 λ_paper for each of λ_W, λ_H, λ_b, and the
convex form's λ = sqrt(λ_W λ_H) (half) = 2 sqrt(λ_W λ_H) (paper).
"""

from __future__ import annotations

import jax.numpy as jnp

from ncjax.validate import InputError

CONVENTIONS = ("half", "paper")


def to_half(lam_W, lam_H, lam_b, convention: str = "half"):
    """Convert (λ_W, λ_H, λ_b) from ``convention`` to the half convention."""
    if convention == "half":
        return lam_W, lam_H, lam_b
    if convention == "paper":
        return 2 * lam_W, 2 * lam_H, 2 * lam_b
    raise InputError(f"convention must be one of {CONVENTIONS}, got {convention!r}")


def from_half(lam_W, lam_H, lam_b, convention: str = "half"):
    """Convert (λ_W, λ_H, λ_b) from the half convention to ``convention``."""
    if convention == "half":
        return lam_W, lam_H, lam_b
    if convention == "paper":
        return lam_W / 2, lam_H / 2, lam_b / 2
    raise InputError(f"convention must be one of {CONVENTIONS}, got {convention!r}")


def effective_lam(lam_W, lam_H):
    """λ = sqrt(λ_W λ_H), the weight of the nuclear norm in the convex form (half)."""
    return jnp.sqrt(lam_W * lam_H)


def lam_from_c(c, n_k):
    """Per-sample scaling λ = c / N, N = Σ_k n_k (n_k: (..., K))."""
    return c / jnp.sum(n_k, axis=-1)


def c_from_lam(lam, n_k):
    """c = λ N, the inverse of ``lam_from_c``."""
    return lam * jnp.sum(n_k, axis=-1)


def etf_cosine(K):
    """Cosine between two vectors of a K-class simplex ETF: −1/(K−1)."""
    return -1.0 / (K - 1)


def lam_star_two_cluster(K_A, n_A, K_B, n_B):
    """Minority-collapse threshold λ* = sqrt(n_B)/N, N = K_A n_A + K_B n_B (K_B ≥ 2)."""
    return jnp.sqrt(n_B) / (K_A * n_A + K_B * n_B)


def group_size(n_k):
    """For each class, the number of classes sharing its count: (K,) -> (K,)."""
    return jnp.sum(n_k[:, None] == n_k[None, :], axis=1)


def group_threshold(n_k):
    """Per class k, sqrt(n_k)/N if ≥ 2 classes share the count n_k, else +inf: (K,) -> (K,).

    The conjecture measured by ncjax: the classes of a group sharing one count n_g have
    coinciding mean logits iff λ ≥ sqrt(n_g)/N. Proved for the minority of two clusters
    and for the largest count (everything collapses, Z = 0).
    """
    N = jnp.sum(n_k)
    return jnp.where(group_size(n_k) >= 2, jnp.sqrt(n_k) / N, jnp.inf)


def lam_star(n_k):
    """Threshold of the minority group (the smallest count): sqrt(n_min)/N, +inf if n_min
    is held by a single class (nothing to collapse)."""
    is_min = n_k == jnp.min(n_k)
    return jnp.min(jnp.where(is_min, group_threshold(n_k), jnp.inf))


def predict(n_k, lam):
    """The theory's predictions for one configuration (n_k (K,), λ scalar), a dict:

    lam_star: minority threshold sqrt(n_min)/N (inf if one minority class);
    c: λN; c_star: sqrt(n_min);
    minority_collapse: λ ≥ λ*;
    group_threshold (K,): sqrt(n_g)/N per class (inf for singletons);
    group_collapse (K,): λ ≥ group_threshold;
    total_collapse: the largest count is shared and λ ≥ sqrt(n_max)/N (then Z = 0);
    etf_cosine: −1/(K−1).
    """
    K = n_k.shape[-1]
    thr = group_threshold(n_k)
    ls = lam_star(n_k)
    is_max = n_k == jnp.max(n_k)
    return {
        "lam": lam,
        "c": c_from_lam(lam, n_k),
        "lam_star": ls,
        "c_star": ls * jnp.sum(n_k),
        "minority_collapse": lam >= ls,
        "group_threshold": thr,
        "group_collapse": lam >= thr,
        "total_collapse": jnp.any(is_max & (lam >= thr)),
        "etf_cosine": jnp.asarray(etf_cosine(K), dtype=jnp.result_type(lam)),
    }
