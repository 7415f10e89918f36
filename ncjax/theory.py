"""What the theory predicts (DESIGN.md §1), as pure functions of the setting.

Nothing here is used to *produce* a solution: the engine measures, and these functions
are put beside the measurement. All λ are in the half convention unless stated.

Conventions: ``ncjax.problem.to_half`` (the authors' λ is half of ours).

The bias. The thresholds sqrt(n_g)/N are proved (two clusters, and the largest count) for
the model with a bias, for every λ_b ≥ 0. Without a bias they are the λ_b → ∞ limit of
that statement: collapse at λ ≥ λ* carries over by continuity, its converse is a
conjecture, measured. ``zero_threshold`` is exact in every mode: Z = 0 is optimal iff
λ ≥ ‖G(V₀)‖_op, V₀ the dual point of (0, b₀), b₀ = argmin_b P(0, b) (the optimality
condition of the convex form at Z = 0, DESIGN.md §1).

Other losses. ``zero_threshold`` is exact for every convex loss with its parameters (the
same optimality condition, with the loss's gradient). The thresholds sqrt(n_g)/N are
derived for cross-entropy only, and so for a loss that is CE up to what the bias absorbs
(``Loss.ce_like``: the logit-adjusted loss, and the VS loss with γ = 0, under a free bias,
whose b + τ log π is a free bias again); for every other loss and setting ``predict``
leaves those keys NaN (docs/losses.md).

Each loss's own group threshold (docs/remedies.md, the proof): a group g of ≥ 2 classes
that share their count n_g and their weight ω_g (then also Δ_g and s_g, functions of the
count) has a minimiser with coinciding mean logits iff

    λ ≥ μ_g = ω_g (1 − α) Δ_g sqrt(n_g) / N     (CE family; CE and MSE: sqrt(n_g)/N),

in every bias mode: at a point where g is collapsed the within-g block of the dual matrix G
is −μ_g C_g (C_g the centring on g), whatever the logits, and it is orthogonal to the rest
of G. ``loss_group_threshold`` computes μ_g; ``predict`` returns it under the ``loss_``
keys, beside (never in place of) the CE keys.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ncjax import dual
from ncjax.problem import CONVENTIONS, Problem, from_half, to_half  # noqa: F401 - re-exported

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


def n_B_star(lam, K_A, n_A, K_B):
    """The two-cluster minority's collapse threshold in n_B at a fixed λ and n_A: the
    smaller root of sqrt(n_B) = λ (K_A n_A + K_B n_B), i.e. λ = ``lam_star_two_cluster``
    there (a quadratic in sqrt(n_B), its smaller root 2λK_A n_A / (1 + sqrt(D)),
    D = 1 − 4 K_A K_B λ² n_A). The minority is collapsed for n_B ≤ it and again from the
    larger root (sqrt(n_B)/N peaks at n_B = K_A n_A/K_B, between them); NaN where D < 0
    (collapsed at every n_B)."""
    D = 1 - 4 * K_A * K_B * lam**2 * n_A
    x = 2 * lam * K_A * n_A / (1 + jnp.sqrt(jnp.maximum(D, 0.0)))
    return jnp.where(D >= 0, x**2, jnp.nan)


def n_B_star_at_ratio(lam, K_A, ratio, K_B):
    """The two-cluster minority's collapse threshold in n_B at a fixed λ and ratio
    n_A/n_B: sqrt(n_B)/N = 1/(sqrt(n_B) (K_A ratio + K_B)) = λ, n_B = 1/(λ (K_A ratio +
    K_B))²; collapsed for n_B ≥ it (more samples at the same λ and ratio)."""
    return 1.0 / (lam * (K_A * ratio + K_B)) ** 2


def group_size(n_k):
    """For each class, the number of classes sharing its count: (K,) -> (K,)."""
    return jnp.sum(n_k[:, None] == n_k[None, :], axis=1)


def group_threshold(n_k):
    """Per class k, sqrt(n_k)/N if ≥ 2 classes share the count n_k, else +inf: (K,) -> (K,).

    The classes of a group sharing one count n_g have coinciding mean logits iff
    λ ≥ sqrt(n_g)/N (CE). Hong & Ling prove it for the minority of two clusters and for the
    largest count (everything collapses, Z = 0); docs/remedies.md proves it for every group
    and every bias mode (the CE case of ``loss_group_threshold``).
    """
    N = jnp.sum(n_k)
    return jnp.where(group_size(n_k) >= 2, jnp.sqrt(n_k) / N, jnp.inf)


def lam_star(n_k):
    """Threshold of the minority group (the smallest count): sqrt(n_min)/N, +inf if n_min
    is held by a single class (nothing to collapse)."""
    is_min = n_k == jnp.min(n_k)
    return jnp.min(jnp.where(is_min, group_threshold(n_k), jnp.inf))


def zero_threshold(problem: Problem):
    """‖G(V₀)‖_op with v_k = ∇ℓ(b₀, k), b₀ = argmin_b P(0, b) (0 without a bias): Z = 0 is
    the optimum iff λ ≥ this. For CE with a free bias V₀ = [π − e_k]_k, and when the
    largest count is shared this is sqrt(n_max)/N. One problem → scalar."""
    K = problem.counts.shape[0]
    Z0 = jnp.zeros((K, K), problem.counts.dtype)
    th = problem.loss_args
    b0 = problem.loss.bias_start(problem.counts / jnp.sum(problem.counts), th).astype(Z0.dtype)
    b0 = dual.refine_bias(Z0, b0, problem, 10)
    V0 = jax.vmap(problem.loss.grad, in_axes=(None, 0, None), out_axes=-1)(
        b0, jnp.arange(K), th)
    return jnp.linalg.svd(dual.dual_G(V0, problem), compute_uv=False)[0]


def loss_group_threshold(problem: Problem):
    """Per class k, the loss's own group threshold μ_k = ω_k (1 − α) Δ_k sqrt(n_k)/N (the
    CE family's ω, α, Δ of ``Problem.loss_args``; CE and MSE: ω = Δ = 1, α = 0): where
    ≥ 2 classes share n_k and all of them share ω_k; +inf for a class alone with its count
    (nothing to collapse); NaN where the classes of k's count differ in ω (the symmetry the
    proof needs is missing: not derived). One problem (counts (K,)) → (K,)."""
    n_k = problem.counts
    N = jnp.sum(n_k)
    th = problem.loss_args
    one = jnp.ones_like(n_k)
    # CE and MSE have no th: ω = Δ = 1, α = 0 (their gradients' within-group parts are
    # −(e_k − ē_g), as the family's with those values)
    omega = th.get("omega", one)
    scale = omega * (1 - th.get("alpha", 0.0)) * th.get("Delta", one)
    same = n_k[:, None] == n_k[None, :]
    shared = jnp.all(jnp.where(same, omega[None, :] == omega[:, None], True), axis=1)
    mu = scale * jnp.sqrt(n_k) / N
    return jnp.where(group_size(n_k) >= 2, jnp.where(shared, mu, jnp.nan), jnp.inf)


def predict(problem: Problem):
    """The theory's predictions for one problem (counts (K,), scalar λ's), a dict:

    lam: λ = sqrt(λ_W λ_H); c: λN; lam_star: minority threshold sqrt(n_min)/N (inf if one
    minority class); c_star: sqrt(n_min);
    minority_collapse: λ ≥ λ*;
    group_threshold (K,): sqrt(n_g)/N per class (inf for singletons);
    group_collapse (K,): λ ≥ group_threshold;
    zero_threshold: the exact Z = 0 threshold (``zero_threshold``);
    total_collapse: with a bias, the largest count is shared and λ ≥ sqrt(n_max)/N (the
      proved statement); without one, λ ≥ zero_threshold;
    etf_cosine: −1/(K−1);
    derived: whether the thresholds above are derived for the problem's loss (CE, or a
      loss that is CE up to what the bias absorbs: module docstring). Where not, lam_star,
      c_star and group_threshold are NaN, minority_collapse and group_collapse False (no
      prediction), and total_collapse is λ ≥ zero_threshold (exact for every loss).
    loss_group_threshold (K,): the loss's own threshold per class (``loss_group_threshold``;
      for CE equal to group_threshold); loss_group_collapse (K,): λ ≥ it;
    loss_lam_star: the minority's (smallest count's) loss_group_threshold (inf if one
      minority class, NaN if its classes differ in ω); loss_minority_collapse: λ ≥ it;
    loss_derived: whether loss_lam_star is derived (finite or inf, not NaN).
    """
    n_k = problem.counts
    lam = problem.lam
    K = n_k.shape[-1]
    derived = jnp.asarray(problem.loss.ce_like(
        problem.loss_args, problem.bias & (problem.lam_b == 0)))
    thr = jnp.where(derived, group_threshold(n_k), jnp.nan)
    ls = jnp.where(derived, lam_star(n_k), jnp.nan)
    is_max = n_k == jnp.max(n_k)
    zthr = zero_threshold(problem)
    total = jnp.any(is_max & (lam >= thr)) if problem.bias else lam >= zthr
    total = jnp.where(derived, total, lam >= zthr)
    lthr = loss_group_threshold(problem)
    lls = jnp.min(jnp.where(n_k == jnp.min(n_k), lthr, jnp.inf))
    lls = jnp.where(jnp.any((n_k == jnp.min(n_k)) & jnp.isnan(lthr)), jnp.nan, lls)
    return {
        "lam": lam,
        "c": c_from_lam(lam, n_k),
        "lam_star": ls,
        "c_star": ls * jnp.sum(n_k),
        "minority_collapse": lam >= ls,
        "group_threshold": thr,
        "group_collapse": lam >= thr,
        "zero_threshold": zthr,
        "total_collapse": total,
        "etf_cosine": jnp.asarray(etf_cosine(K), dtype=jnp.result_type(lam)),
        "derived": derived,
        "loss_group_threshold": lthr,
        "loss_group_collapse": lam >= lthr,
        "loss_lam_star": lls,
        "loss_minority_collapse": lam >= lls,
        "loss_derived": ~jnp.isnan(lls),
    }
