"""Where each phase begins along λ: certified thresholds by bisection (``thresholds``).

The convex form depends on λ = sqrt(λ_W λ_H) only (DESIGN.md §1b). Along λ, for counts
n (K,) with groups g of classes sharing a count (largest count first), the optimum Z(λ)
(K, K; column k = z_k, class k's mean logits) passes through

    collapse_g   the smallest λ from which the group's mean logits coincide:
                 spread_g(λ) = max_{k∈g} ‖z_k − z̄_g‖ / ‖Z‖_F ≤ COINCIDE
    vanish_g     the smallest λ from which they are all 0:
                 max_{k∈g} ‖z_k‖ / ‖Z‖_F ≤ ZERO (or Z = 0)
    zero         the smallest λ from which Z = 0: the exact dual condition
                 ``theory.zero_threshold`` (‖G(V₀)‖_op at the zero point), checked by
                 certified solves at zero·(1 ∓ rtol)

Each threshold of a group is found by bisection in log λ on its predicate (false below,
true from the threshold on), inside the bracket [lo, hi] = [lam_min, zero·(1 + rtol)]
(``lam_min`` default 0.1·sqrt(n_min)/N), until hi/lo − 1 ≤ rtol; every step solves all the
searches of every configuration as one batch (``ncjax.solve``, method "convex", float64,
compiled once for the batch), and a step whose solve is not certified (gap > GAP_RTOL·|F|)
leaves its search's bracket as it was and stops it (its threshold then NaN, its bracket
kept). The estimate is the bracket's geometric mean; NaN where the phase does not occur
in the range (the predicate already true at lo, or a collapse of a group of one class).

The tolerances COINCIDE and ZERO are relative to ‖Z‖_F and far above the solves' error
(float64, gap ≤ 1e-12·|F|: a spread of 1e-16 once collapsed against ~1.85·(1 − λ/λ*) below
the two-cluster threshold), so the bracket's rtol, not the tolerance, sets the accuracy.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from ncjax import dtypes, losses, problem, solver, theory
from ncjax.validate import InputError, as_counts, as_lam

__all__ = ["COINCIDE", "ZERO", "GAP_RTOL", "Thresholds", "thresholds", "groups_of"]

COINCIDE = 1e-9    # a group's spread (relative to ‖Z‖_F) at or below which it has collapsed
ZERO = 1e-9        # a group's largest ‖z_k‖ (relative to ‖Z‖_F) at or below which it vanished
GAP_RTOL = 1e-12   # the certificate every deciding solve must meet: gap ≤ GAP_RTOL·|F|
GTOL = 1e-13       # the convex solver's own stopping tolerance for those solves
SOLVE_STEPS = 20_000  # a solve that has not met GTOL by then decides nothing


class Thresholds(NamedTuple):
    """The thresholds of B configurations (``thresholds``): ``groups`` the class indices
    of each group, largest count first (G groups); ``collapse``, ``vanish`` (B, G);
    ``zero`` (B,); ``*_bracket`` (..., 2) the [lo, hi] of the deciding solves (the
    predicate false at lo, true at hi); ``*_gap`` (..., 2) their certified gaps. NaN where
    the phase does not occur in the range (or a search's solve was not certified)."""

    groups: tuple
    collapse: np.ndarray
    vanish: np.ndarray
    zero: np.ndarray
    collapse_bracket: np.ndarray
    vanish_bracket: np.ndarray
    zero_bracket: np.ndarray
    collapse_gap: np.ndarray
    vanish_gap: np.ndarray
    zero_gap: np.ndarray


def groups_of(n: np.ndarray) -> tuple:
    """The classes sharing a count, largest count first: a tuple of index tuples."""
    values = sorted(set(n.tolist()), reverse=True)
    return tuple(tuple(int(k) for k in np.flatnonzero(n == v)) for v in values)


def _take(loss, rows: np.ndarray, B: int):
    """``loss`` with its parameters given per configuration (B,) or (B, K) taken at
    ``rows`` (a batch of searches), those given once left as they are."""
    if not loss.params:
        return loss
    params = {}
    for name, v in loss.params:
        a = np.asarray(v, np.float64)
        per = a.ndim == (2 if name in loss.per_class else 1)
        params[name] = a[rows] if per and a.shape[0] == B else a
    return losses.get(loss.name, **params)


def _zero_thresholds(n, lam_b, loss, bias) -> np.ndarray:
    """The exact Z = 0 threshold of each configuration, (B,)."""
    with dtypes.x64(True):
        prob, _, _ = problem.make(n, 1.0, 1.0, lam_b, loss=loss, bias=bias)
        prob = jax.tree.map(lambda a: jax.numpy.asarray(a, jax.numpy.float64), prob)
        return np.asarray(jax.vmap(theory.zero_threshold)(prob))


def _predicates(r, members: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(collapsed, vanished, certified) of each solve of a batch, for the group
    ``members`` (S, K) bool of each search."""
    Z = np.asarray(r.Z, np.float64)                     # (S, K, K), column k = z_k
    scale = np.linalg.norm(Z, axis=(1, 2))
    tiny = scale <= np.finfo(np.float64).tiny
    safe = np.where(tiny, 1.0, scale)
    cols = np.linalg.norm(Z, axis=1) / safe[:, None]    # (S, K): ‖z_k‖/‖Z‖
    mean = (Z * members[:, None, :]).sum(-1) / members.sum(-1, keepdims=True)
    dev = np.linalg.norm(Z - mean[:, :, None], axis=1) / safe[:, None]
    spread = np.where(members, dev, 0.0).max(-1)
    largest = np.where(members, cols, 0.0).max(-1)
    certified = np.asarray(r.gap) <= GAP_RTOL * np.maximum(np.abs(r.objective), 1e-300)
    return tiny | (spread <= COINCIDE), tiny | (largest <= ZERO), certified


def thresholds(counts, lam_b=0.0, *, loss=None, bias: bool = True, rtol: float = 1e-6,
               lam_min=None, max_steps: int = 100) -> Thresholds:
    """Per configuration, along λ = sqrt(λ_W λ_H): the λ at which each group of ≥ 2 classes
    sharing a count collapses, the λ from which each group's mean logits are all 0, and
    the λ from which Z = 0 (module docstring), to ``rtol`` relative.

    Args:
      counts: (K,) or (B, K); the configurations of a batch share their groups (classes
        sharing a count in one share it in all).
      lam_b: scalar or (B,); loss, bias: as ``ncjax.solve``.
      rtol: the bracket's relative width at which a search stops (≥ 1e-12).
      lam_min: the bottom of the search range, scalar or (B,) (default 0.1·sqrt(n_min)/N,
        a tenth of cross-entropy's smallest group threshold; far below it the logits grow
        as log(1/λ) and the solves slow down).
      max_steps: bisection steps at most (a search of the default range takes ~24).
    """
    n = as_counts(counts)
    one = n.ndim == 1
    n = np.atleast_2d(n).astype(np.float64)
    B, K = n.shape
    rtol = float(as_lam("rtol", rtol, positive=True))
    if not 1e-12 <= rtol < 1:
        raise InputError(f"rtol must be in [1e-12, 1), got {rtol}")
    groups = groups_of(n[0])
    if any(groups_of(row) != groups for row in n[1:]):
        raise InputError("the configurations of a batch must share their groups (classes "
                         "sharing a count in one configuration share it in all)")
    lb = np.broadcast_to(np.asarray(as_lam("lam_b", lam_b), np.float64), (B,))
    loss = losses.get(loss)
    zero = _zero_thresholds(n, lb, loss, bias)
    lo0 = 0.1 * np.sqrt(n.min(1)) / n.sum(1) if lam_min is None else np.broadcast_to(
        np.asarray(as_lam("lam_min", lam_min, positive=True), np.float64), (B,))
    G = len(groups)
    # searches: (config b, group g, kind 0 collapse / 1 vanish), plus the zero check
    b_idx, g_idx, kind = (a.ravel() for a in np.meshgrid(np.arange(B), np.arange(G),
                                                         np.arange(2), indexing="ij"))
    members = np.zeros((b_idx.size, K), bool)
    for s, g in enumerate(g_idx):
        members[s, list(groups[g])] = True
    active = ~((kind == 0) & (members.sum(-1) < 2))     # a single class never "collapses"
    lo, hi = lo0[b_idx].copy(), zero[b_idx] * (1 + rtol)
    ok = np.ones(lo.size, bool)

    width = 2 * max(b_idx.size, B)  # every solve this wide: one compiled program

    def solve(lam, rows):
        m = rows.size
        pad = np.full(width - m, m - 1)
        at = np.concatenate([np.arange(m), pad])
        rows, lam = rows[at], np.asarray(lam)[at]
        r = solver.solve(n[rows], lam, lam, lb[rows], loss=_take(loss, rows, B), bias=bias,
                         method="convex", dtype="float64", gtol=GTOL, gap_tol=GAP_RTOL,
                         max_steps=SOLVE_STEPS)
        return jax.tree.map(lambda a: a[:m] if isinstance(a, np.ndarray) and a.ndim
                            and a.shape[0] == width else a, r)

    # the range's ends: true at hi (Z = 0 from zero on); false at lo, else no threshold
    rows = b_idx
    r = solve(np.concatenate([lo, hi]), np.concatenate([rows, rows]))
    col, van, cert = _predicates(r, np.concatenate([members, members]))
    S = lo.size
    truth = np.where(np.concatenate([kind, kind]) == 0, col, van)
    gap_lo, gap_hi = np.array(r.gap[:S], float), np.array(r.gap[S:], float)
    ok &= cert[:S] & cert[S:] & truth[S:]
    below = ok & ~truth[:S]                             # the phase begins inside the range
    searching = active & below
    for _ in range(max_steps):
        searching &= hi / lo - 1 > rtol
        if not searching.any():
            break
        idx = np.flatnonzero(searching)
        mid = np.sqrt(lo[idx] * hi[idx])
        r = solve(mid, b_idx[idx])
        col, van, cert = _predicates(r, members[idx])
        true = np.where(kind[idx] == 0, col, van)
        good = cert
        up = good & true
        down = good & ~true
        hi[idx[up]], gap_hi[idx[up]] = mid[up], np.asarray(r.gap)[up]
        lo[idx[down]], gap_lo[idx[down]] = mid[down], np.asarray(r.gap)[down]
        ok[idx[~good]] = False
        searching[idx[~good]] = False
    found = active & below & ok & (hi / lo - 1 <= rtol)
    est = np.where(found, np.sqrt(lo * hi), np.nan)
    shape = (B, G, 2)
    est, lo, hi = est.reshape(shape), lo.reshape(shape), hi.reshape(shape)
    gap_lo, gap_hi = gap_lo.reshape(shape), gap_hi.reshape(shape)
    bracket = np.stack([lo, hi], -1)
    gaps = np.stack([gap_lo, gap_hi], -1)

    # Z = 0: exact; certified solves just below (Z ≠ 0) and just above (Z = 0)
    zl, zh = zero * (1 - rtol), zero * (1 + rtol)
    rz = solve(np.concatenate([zl, zh]), np.concatenate([np.arange(B)] * 2))
    Zn = np.linalg.norm(np.asarray(rz.Z, np.float64), axis=(1, 2))
    certz = np.asarray(rz.gap) <= GAP_RTOL * np.maximum(np.abs(rz.objective), 1e-300)
    zero_ok = certz[:B] & certz[B:] & (Zn[:B] > Zn[B:])
    out = Thresholds(groups, est[..., 0], est[..., 1], np.where(zero_ok, zero, np.nan),
                     bracket[:, :, 0], bracket[:, :, 1], np.stack([zl, zh], -1),
                     gaps[:, :, 0], gaps[:, :, 1],
                     np.stack([np.asarray(rz.gap[:B]), np.asarray(rz.gap[B:])], -1))
    if one:
        out = out._replace(**{k: v[0] for k, v in out._asdict().items() if k != "groups"})
    return out
