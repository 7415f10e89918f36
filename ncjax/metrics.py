"""Collapse metrics of one solution (DESIGN.md §2): pure, per configuration, vmappable.

Shapes: W (K, d), H (K, m, d), b (K,), n_k (K,). Vectors compared across classes are
z_k (column k of Z), h̄_k (class mean) and w_k (row k of W). Groups are the sets of
classes sharing one count; "A" is the group of the largest count and "B" the group of
the smallest (the two clusters of the two-cluster profile).

The phase of a solution (DESIGN.md §1c), one rule (``phase``) for the per-cell metrics and
for ``ncjax.thresholds``: per group g, with s_g = max_{j,k∈g} ‖z_j − z_k‖ / max_k ‖z_k‖,

    Z = 0               if Z counts as zero (``is_zero``), else
    vanished            if every z_k of g is 0 to rounding (``vanished``), else
    collapsed           if |g| ≥ 2 and s_g ≤ collapse_tol, else
    none,

coded as the index into ``PHASES`` (NONE < COLLAPSED < VANISHED < ZERO: each phase holds
in every later one); a cell's ``phase`` is its minority group's.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ncjax import dual, model
from ncjax.names import PHASES
from ncjax.problem import Problem
from ncjax.tolerances import COLLAPSE_TOL, ZERO_ATOL, rounding

# the phase of a group (of a cell: of its minority), by code; ``phase`` names them
NONE, COLLAPSED, VANISHED, ZERO = range(len(PHASES))


def _masked_mean(x, mask):
    """Mean of x over mask; NaN where the mask is empty."""
    cnt = jnp.sum(mask)
    return jnp.where(cnt > 0, jnp.sum(jnp.where(mask, x, 0.0)) / jnp.maximum(cnt, 1), jnp.nan)


def cosine_matrix(X):
    """C_jk = ⟨x_j, x_k⟩ / (‖x_j‖‖x_k‖) for the rows of X (K, p); 0 where a row is 0."""
    norms = jnp.linalg.norm(X, axis=1)
    safe = jnp.where(norms > 0, norms, 1.0)
    U = X / safe[:, None]
    return jnp.where((norms[:, None] > 0) & (norms[None, :] > 0), U @ U.T, 0.0)


def distance_matrix(X):
    """D_jk = ‖x_j − x_k‖ for the rows of X (K, p)."""
    diff = X[:, None, :] - X[None, :, :]
    return jnp.sqrt(jnp.sum(diff**2, axis=-1))


def nc1(H, n_k, rtol=None):
    """NC1 = Tr(Σ_W Σ_B^†) / K, with the sample weighting of the UFM:

        Σ_W = (1/N) Σ_k (n_k/m) Σ_i (h_{k,i} − h̄_k)(h_{k,i} − h̄_k)ᵀ   (each of the N
              samples counted once, the m features of class k standing for its n_k),
        Σ_B = (1/K) Σ_k (h̄_k − h_G)(h̄_k − h_G)ᵀ,  h_G = (1/K) Σ_k h̄_k  (classes equal,
              as in Papyan–Han–Donoho),

    Σ_B^† the pseudo-inverse (singular values below ``rtol``·max dropped; default
    sqrt(eps) of the dtype, so directions Σ_B does not resolve do not blow NC1 up).
    H: (K, m, d) -> scalar. NC1 = 0 iff every class's features are equal.
    """
    K, m, _ = H.shape
    if m == 1:  # Σ_W = 0 exactly: no pseudo-inverse (an SVD a configuration) to multiply
        return 0.0 * jnp.sum(H)  # NaN where H is not finite, as the product would be
    Hbar = model.class_means(H)
    dev = H - Hbar[:, None, :]
    w = n_k / (m * jnp.sum(n_k))
    Sigma_W = jnp.einsum("k,kid,kie->de", w, dev, dev)
    cen = Hbar - jnp.mean(Hbar, axis=0)
    Sigma_B = cen.T @ cen / K
    if rtol is None:
        rtol = jnp.sqrt(jnp.finfo(H.dtype).eps)
    return jnp.trace(Sigma_W @ jnp.linalg.pinv(Sigma_B, rtol=rtol)) / K


def _spread(X, same):
    """Per class k, max_{j,l in group(k)} ‖x_j − x_l‖ for the rows of X (K, p), the groups
    the equivalence classes of ``same`` (K, K): the maximum over pairs inside k's group is
    the maximum, over j in the group, of j's largest in-group distance, O(K²)."""
    row_max = jnp.max(jnp.where(same, distance_matrix(X), 0.0), axis=1)
    return jnp.max(jnp.where(same, row_max[None, :], 0.0), axis=1)


def group_spread(X, n_k):
    """Per class k, max_{j,l in group(k)} ‖x_j − x_l‖ for the rows of X (K, p): (K,),
    the groups the classes of equal counts."""
    return _spread(X, n_k[:, None] == n_k[None, :])


def zero_point_objective(problem: Problem, steps: int = 10):
    """min_b P(0, b): the convex objective of the zero solution Z = 0 at its best bias.

    P(0, b) = Σ_k π_k ℓ(b, k) + (λ_b/2)‖b‖², from the loss's ``bias_start`` (for CE log π,
    the exact minimiser when λ_b = 0, with value Ent(π)) by ``steps`` damped Newton steps
    (``dual.refine_bias``); without a bias P(0, 0) = Σ_k π_k ℓ(0, k). A scalar.
    """
    n_k = problem.counts
    K = n_k.shape[0]
    Z0 = jnp.zeros((K, K), n_k.dtype)
    b0 = problem.loss.bias_start(n_k / jnp.sum(n_k), problem.loss_args).astype(n_k.dtype)
    b0 = dual.refine_bias(Z0, b0, problem, steps)
    return model.convex_loss(Z0, b0, problem) + model.bias_penalty(b0, problem)


def objective_rounding(P0, K):
    """K · eps · max(1, |P0|): a bound on the rounding of P (a sum of K losses and the
    nuclear-norm term) near the value P0, in P0's dtype."""
    return K * jnp.finfo(P0.dtype).eps * jnp.maximum(1.0, jnp.abs(P0))


def is_zero(Z, P, P0, *, zero_atol=ZERO_ATOL):
    """Whether a solution counts as the zero solution Z = 0: (K, K), (), () → bool.

    Z = 0 if max_k ‖z_k‖ ≤ zero_atol, or if the solution's convex objective P = P(Z, b)
    and the zero point's P0 = min_b P(0, b) (``zero_point_objective``) agree to rounding:

        |P − P0| ≤ K · eps(dtype) · max(1, |P0|),

    a bound on the rounding of P, a sum of K losses and the nuclear-norm term, in the dtype
    of Z. Then the solve holds no evidence that its Z differs from 0. Why a fixed tolerance on
    ‖z_k‖ is not enough: by convexity, for every (Z, b),
    P(Z, b) − P0 ≥ (λ − λ_0) ‖Z D^{1/2}‖_*, λ_0 = ‖G(V_0)‖_op (``theory.zero_threshold``;
    for CE with a free bias G(π) = [(sqrt(n_k)/N)(π − e_k)]_k) the gradient of the loss
    part at (0, b_0) (Z = 0 is optimal iff λ ≥ λ_0), and
    along the top singular direction of G(π) this is all P grows. Just above λ_0 a float32
    iterate can therefore stop with ‖z_k‖ ~ 1e-4 of rounding noise whose *relative*
    spreads mean nothing. The rule cannot fire at a resolved nonzero optimum (P0 − P* >
    K eps max(1, |P0|)): in float64 that leaves out only λ within ~1e-7 (relative) below
    λ_0, in float32 within a few tenths of a percent (docs/studies/phase_nB_lam.md). A
    point far from every optimum (|P − P0| large) is judged by zero_atol
    alone.
    """
    small = jnp.max(jnp.linalg.norm(Z, axis=0)) <= zero_atol
    return small | (jnp.abs(P - P0) <= objective_rounding(jnp.asarray(P0, Z.dtype),
                                                          Z.shape[0]))


def _relative(x, scale, zero):
    """x / scale, or x itself (absolute) where the solution is the zero solution."""
    return jnp.where(zero, x, x / jnp.where(scale > 0, scale, 1.0))


def vanished(norms, zero, rtol=None):
    """Per vector, whether it is zero to the dtype's rounding: ‖x_k‖ ≤ rtol·max_j ‖x_j‖
    (rtol default ``tolerances.rounding``, sqrt(eps)), or every vector where the solution is
    the zero solution. Such a vector has no direction: its cosines are NaN, never the
    rounding noise they would measure. norms (K,) → (K,)."""
    rtol = rounding(norms.dtype) if rtol is None else rtol
    return zero | (norms <= rtol * jnp.max(norms))


class Phase(NamedTuple):
    """Per class k (K,), of its group g(k): ``spread`` s_g (absolute where Z = 0),
    ``size`` max_{j∈g} ‖z_j‖ / max_i ‖z_i‖ (what ``vanished`` compares with its rtol),
    ``collapsed``, ``vanished``, and ``code`` the index into ``PHASES`` (int32)."""

    spread: jax.Array
    size: jax.Array
    collapsed: jax.Array
    vanished: jax.Array
    code: jax.Array


def phase(Z, same, zero, *, collapse_tol=COLLAPSE_TOL, vanish_rtol=None) -> Phase:
    """The phase of every group of a solution (module docstring): Z (K, K) with column
    k = z_k; same (K, K) bool, j and k in one group (for the cells: equal counts); zero ()
    whether Z counts as 0 (``is_zero``); collapse_tol the largest s_g of a collapsed group;
    vanish_rtol that of ``vanished`` (default sqrt(eps)). A vanished group of ≥ 2 classes
    is collapsed too, whatever the tolerances."""
    norms = jnp.linalg.norm(Z, axis=0)
    top = jnp.max(norms)
    spread = _relative(_spread(Z.T, same), top, zero)
    size = jnp.max(jnp.where(same, norms[None, :], 0.0), axis=1) / jnp.where(top > 0, top, 1.0)
    gone = jnp.all(jnp.where(same, vanished(norms, zero, vanish_rtol)[None, :], True), axis=1)
    collapsed = (jnp.sum(same, axis=1) >= 2) & ((spread <= collapse_tol) | gone)
    code = jnp.where(zero, ZERO, jnp.where(gone, VANISHED, jnp.where(collapsed, COLLAPSED,
                                                                      NONE)))
    return Phase(spread, size, collapsed, gone, code.astype(jnp.int32))


def compute(W, H, b, problem: Problem, *, zero_atol=ZERO_ATOL, collapse_tol=COLLAPSE_TOL):
    """All metrics of one solution of ``problem``, a dict of arrays (names → shapes):

    nc1 (): see ``nc1``.
    within_spread (): max_{k,i} ‖h_{k,i} − h̄_k‖ / max_k ‖h̄_k‖ (absolute if Z = 0).
    cos_Z, cos_H, cos_W (K, K): cosine matrices of z_k, h̄_k, w_k (uncentred); NaN in the
      rows and columns of vectors that vanished (``vanished``).
    cos_{Z,H,W}_AA, _BB, _AB (): mean cosine over pairs j ≠ k within A, within B, and
      across A–B (NaN where there is no such pair, or a vector of a pair vanished).
    cos_{Z,H,W}_group (K,): per class, mean cosine to the other classes of its group.
    spread_{Z,H,W}_group (K,): per class, the largest distance between two vectors of its
      group over the largest vector norm (absolute if Z = 0).
    minority_spread_{Z,H,W} (): spread of group B (DESIGN.md §2).
    group_collapsed, group_vanished (K,), group_phase (K,) int32: the phase of the class's
      group (``phase``: collapsed, spread_Z_group ≤ collapse_tol with ≥ 2 classes, or
      vanished; vanished, every z_j of the group 0 to the dtype's rounding, or Z = 0;
      the code, an index into ``PHASES``).
    minority_collapsed, minority_vanished (), phase () int32: the same of group B (a cell's
      phase: none / minority collapsed / minority vanished / Z = 0).
    zero_solution (): Z counts as 0 (``is_zero``: max_k ‖z_k‖ ≤ zero_atol, or P(Z, b) equal
      to min_b P(0, b) up to the dtype's rounding).
    norm_W, norm_H, norm_Z, norm_b (): Frobenius norms (norm_H of the class means).
    norm_z, norm_h, norm_w (K,): per-class norms.
    convex_objective (): P(Z, b) of the convex form.
    """
    n_k = problem.counts
    K = W.shape[0]
    Hbar = model.class_means(H)
    Z = W @ Hbar.T
    vecs = {"Z": Z.T, "H": Hbar, "W": W}  # rows are z_k, h̄_k, w_k
    norms = {key: jnp.linalg.norm(v, axis=1) for key, v in vecs.items()}
    P = model.convex_objective(Z, b, problem)
    zero = is_zero(Z, P, zero_point_objective(problem), zero_atol=zero_atol)

    same = n_k[:, None] == n_k[None, :]
    off = ~jnp.eye(K, dtype=bool)
    in_A = n_k == jnp.max(n_k)
    in_B = n_k == jnp.min(n_k)
    pair_masks = {
        "AA": in_A[:, None] & in_A[None, :] & off,
        "BB": in_B[:, None] & in_B[None, :] & off,
        "AB": in_A[:, None] & in_B[None, :] & ~same,
    }
    out = {}
    for key, v in vecs.items():
        gone = vanished(norms[key], zero)
        C = jnp.where(gone[:, None] | gone[None, :], jnp.nan, cosine_matrix(v))
        out[f"cos_{key}"] = C
        for pair, mask in pair_masks.items():
            out[f"cos_{key}_{pair}"] = _masked_mean(C, mask)
        gmask = same & off
        cnt = jnp.sum(gmask, axis=1)
        out[f"cos_{key}_group"] = jnp.where(
            cnt > 0, jnp.sum(jnp.where(gmask, C, 0.0), axis=1) / jnp.maximum(cnt, 1), jnp.nan)
        spread = _relative(group_spread(v, n_k), jnp.max(norms[key]), zero)
        out[f"spread_{key}_group"] = spread
        out[f"minority_spread_{key}"] = jnp.max(jnp.where(in_B, spread, 0.0))

    ph = phase(Z, same, zero, collapse_tol=collapse_tol)
    minority = jnp.argmin(n_k)  # a class of group B: its group's phase is B's
    out["group_collapsed"], out["group_vanished"] = ph.collapsed, ph.vanished
    out["group_phase"] = ph.code
    out["minority_collapsed"] = ph.collapsed[minority]
    out["minority_vanished"] = ph.vanished[minority]
    out["phase"] = ph.code[minority]
    out["zero_solution"] = zero

    out["nc1"] = nc1(H, n_k)
    within = jnp.max(jnp.linalg.norm(H - Hbar[:, None, :], axis=-1))
    out["within_spread"] = _relative(within, jnp.max(norms["H"]), zero)

    out["norm_W"] = jnp.linalg.norm(W)
    out["norm_H"] = jnp.linalg.norm(Hbar)
    out["norm_Z"] = jnp.linalg.norm(Z)
    out["norm_b"] = jnp.linalg.norm(b)
    out["norm_z"], out["norm_h"], out["norm_w"] = norms["Z"], norms["H"], norms["W"]
    out["convex_objective"] = P
    return out
