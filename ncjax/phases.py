"""Where each phase begins, along λ, c = λN, n_B or the ratio: certified thresholds.

The convex form (DESIGN.md §1b) sees the counts through π and N and λ = sqrt(λ_W λ_H).
A search moves one variable x (``AXES``) and keeps the rest of the problem:

    lam    λ = x, the counts fixed
    c      c = λN = x, the counts fixed (the λ search in units of c)
    n_B    the count of the minority group (the classes of the smallest count) = x, at a
           fixed λ (``lam=``) or a fixed c (``c=``: λ = c/N(x)); ``hold="counts"`` keeps
           the other counts (the ratio moves), ``hold="ratios"`` scales every count with
           it, n(x) = n·x/n_min (the ratios stay)
    ratio  n_max/n_B = x, n_B = n_max/x moving, the other counts fixed; fixed λ or c

Internally x = f(y) with y the count or λ that moves, so that the problem at y has counts
a + s·y (K,) and λ = u·y + v + w/N(y) (``search.Line``).

For counts n (K,) with groups g of classes sharing a count (largest count first), the
optimum Z (K, K; column k = z_k, class k's mean logits) is in a phase per group
(``metrics.phase``, the rule of the per-cell metrics): none, collapsed (the group's z_k
coincide), vanished (all 0), Z = 0. The thresholds, per configuration and group:

    collapse_g   where the group's phase becomes ≥ collapsed (groups of ≥ 2 classes)
    vanish_g     where it becomes ≥ vanished
    zero         where Z = 0

Z = 0 is optimal iff λ ≥ ‖G(V₀)‖_op (``theory.zero_threshold``, exact): along λ and c
its onset y₀ is that number; along n_B and the ratio the root of λ(y) = zero_threshold(y)
in the bracket, bisected on the exact condition to floating resolution (``search.zero_root``).
It is checked by two certified solves at y₀·(1 + δ)^{±1/2}, δ = max(rtol, ZERO_CHECK): on
the side of Z = 0, max_k ‖z_k‖ ≤ TOL (logit units); on the other Z ≠ 0, shown by
P(Z, b) < P₀ − (the rounding of P), P₀ = min_b P(0, b) (``metrics.zero_point_objective``):
a point below every point with Z = 0 (P₀ − P* grows only as (Δμ)²/2, μ = λ sqrt(N), which
for δ below ~1e-6 the rounding of P hides). Else NaN.

The search for collapse_g or vanish_g (its predicate "phase ≥ collapsed" or "≥ vanished",
decided at certified points only) runs from the bracket's far end (along λ lam_min) to its
near end, the Z = 0 check's point on the side of Z ≠ 0 (where the onset of Z = 0 is in the
range; every phase holds where Z = 0). Where the predicate differs at the two ends, the
bracket [x_out, x_in] (the phase does not hold at x_out, holds at x_in) is narrowed until
|log(x_in/x_out)| ≤ log(1 + rtol), the estimate sqrt(x_in·x_out); each step is a secant
step in log x on the measure the predicate thresholds (the group's spread or its largest
‖z_k‖, relative to max_j ‖z_j‖, less TOL), through the last two points where the phase
does not hold, aimed short of the root it predicts by SHORT of its length (so that it
lands where the phase does not hold yet, and the next secant is better), or a bisection
step (``search.next_point``: where there is no such secant, it leaves the
bracket, or after a secant step that overshot). Where the predicate fails at both ends
next to Z = 0, one more point across the onset of Z = 0 shows the phase beginning with
Z = 0 (the larger groups along λ): the threshold is then y₀ exactly. NaN where the
predicate is the same at both ends (no onset in the range; a search finds one crossing:
along n_B at a fixed n_A the minority is collapsed below n_B* and again from a larger
n_B, so its bracket must end between), for the collapse of a group of one class, or
where a solve was not certified (the bracket of the last certified points kept).

Every point is a float64 convex solve (``ncjax.convex``, stopped at gap ≤ GTOL·|P|); a
decision needs gap ≤ SEARCH_GAP_RTOL·|P|. The ends start from 0; every later point from
the solution at the same search's previous point (``convex.start``; the bias moved with
the loss's bias start, ``search.warm``), and from 0 again if that start does not converge. All
searches of all configurations run as one compiled program (``search.run``): a while_loop
whose body is one round of the convex solver (``convex.round_``) vmapped over the
searches, each search moving to its next point as its solve finishes (as a slot of
``convex.solve_pooled`` refills), so a call costs about the longest search's rounds, not
Σ over steps of each step's slowest solve. The searches are padded to ``search.width``
lanes, so that calls of nearby sizes share the program.

Tolerances (``ncjax.tolerances``; the search's constants are ``ncjax.search``'s): TOL =
``rounding(float64)`` = sqrt(eps) = 1.5e-8 for all
three decisions (``metrics.phase`` with collapse_tol and vanish_rtol TOL, ``metrics.is_zero``
with zero_atol TOL). Certified float64 solves leave ~1e-16 where a phase holds, and the
measures grow about linearly from their thresholds (the two-cluster spread as
~7-11·(1 − λ/λ*)), so for rtol ≥ ~1e-8 the bracket sets the accuracy; below, TOL does (a few
1e-9).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ncjax import compilation, losses, problem, search, theory
from ncjax.dtypes import x64
from ncjax.names import THRESHOLD_AXES, THRESHOLD_HOLDS, THRESHOLD_RTOL, THRESHOLDS
from ncjax.validate import InputError, as_counts, as_int, as_lam

__all__ = ["AXES", "HOLDS", "THRESHOLDS", "Thresholds", "thresholds", "groups_of"]

AXES, HOLDS, THRESHOLDS = THRESHOLD_AXES, THRESHOLD_HOLDS, THRESHOLDS  # ``which``
# the Z = 0 checks' width at least: below, P₀ − P* is under the rounding of P
ZERO_CHECK = 1e-6


class Thresholds(NamedTuple):
    """The thresholds of B configurations along ``along`` (``thresholds``), in its units:
    ``groups`` the class indices of each group, largest count first (G groups);
    ``collapse``, ``vanish`` (B, G); ``zero`` (B,); ``*_bracket`` (..., 2) the points of
    the deciding solves, [where the phase does not hold, where it holds] (so [lo, hi] along
    λ; the reverse where the phase holds below); ``*_gap`` (..., 2) their certified gaps.
    NaN where the phase does not occur in the range or a search's solve was not certified
    (brackets and gaps NaN where no search ran: the collapse of a group of one class)."""

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
    along: str


def groups_of(n: np.ndarray) -> tuple:
    """The classes sharing a count, largest count first: a tuple of index tuples."""
    values = sorted(set(n.tolist()), reverse=True)
    return tuple(tuple(int(k) for k in np.flatnonzero(n == v)) for v in values)


def _convert(y, *, mul, inverse):
    """mul/y or mul·y per configuration: mul (B,), y (B, ...)."""
    m = mul.reshape((-1,) + (1,) * (np.ndim(y) - 1))
    return m / y if inverse else y * m


_zero_lam = jax.jit(jax.vmap(theory.zero_threshold))  # the exact Z = 0 threshold in λ, (B,)


def _per_config(name, v, B) -> np.ndarray:
    return np.broadcast_to(np.asarray(as_lam(name, v, positive=True), np.float64), (B,))


def thresholds(counts, lam_b=0.0, *, loss=None, bias: bool = True, rtol: float = 1e-6,
               along: str = "lam", lam=None, c=None, hold: str = "counts", bracket=None,
               lam_min=None, which=THRESHOLDS, max_steps: int = 100) -> Thresholds:
    """Per configuration, along ``along`` (module docstring): where each group of ≥ 2
    classes sharing a count collapses, where each group's mean logits become all 0, and
    where Z = 0, to ``rtol`` relative, each decision certified.

    Args:
      counts: (K,) or (B, K); the configurations of a batch share their groups (classes
        sharing a count in one share it in all). Along n_B and the ratio the minority's
        count in ``counts`` only names the group that moves (with hold="ratios" it sets
        the ratios).
      lam_b: scalar or (B,); loss, bias: as ``ncjax.solve``.
      rtol: the bracket's relative width at which a search stops, in [1e-12, 1) (below
        ~1e-8 the decisions' tolerance, not the bracket, sets the accuracy).
      along: "lam" (default), "c", "n_B" or "ratio" (``AXES``).
      lam, c: along n_B and the ratio, exactly one: the fixed λ, or the fixed c = λN
        (λ = c/N at each point), scalar or (B,).
      hold: along n_B, "counts" (default: the other counts fixed) or "ratios" (every count
        scaled with n_B).
      bracket: (lo, hi), scalars or (B,), in the axis's units: the range searched
        (needed along n_B and the ratio; along λ and c default from lam_min to the onset
        of Z = 0).
      lam_min: along λ and c without a bracket, the bottom of the range in λ, scalar or
        (B,) (default 0.1·sqrt(n_min)/N, a tenth of cross-entropy's smallest group
        threshold; far below it the logits grow as log(1/λ) and the solves slow down).
      which: the thresholds to find, a subset of ``THRESHOLDS`` (default all); the others
        are NaN.
      max_steps: steps at most per search after its two ends (the default λ range takes
        ≤ 24 bisection steps; the secant steps take fewer).
    Returns:
      ``Thresholds`` (leading axis B dropped for counts (K,)).
    Raises:
      InputError: on a bad argument.
    """
    n = as_counts(counts)
    one = n.ndim == 1
    n = np.atleast_2d(n).astype(np.float64)
    B, K = n.shape
    rtol = float(as_lam("rtol", rtol, positive=True))
    if not THRESHOLD_RTOL[0] <= rtol < THRESHOLD_RTOL[1]:
        raise InputError(f"rtol must be in [{THRESHOLD_RTOL[0]:g}, {THRESHOLD_RTOL[1]:g}), "
                         f"got {rtol}")
    if along not in AXES:
        raise InputError(f"along must be one of {AXES}, got {along!r}")
    if hold not in HOLDS or (hold == "ratios" and along != "n_B"):
        raise InputError(f"hold must be one of {HOLDS} ('ratios' only along n_B), got "
                         f"{hold!r} along {along!r}")
    which = (which,) if isinstance(which, str) else tuple(which)
    if not which or not set(which) <= set(THRESHOLDS):
        raise InputError(f"which must name some of {THRESHOLDS}, got {which!r}")
    max_steps = as_int("max_steps", max_steps, minimum=1)
    groups = groups_of(n[0])
    if any(groups_of(row) != groups for row in n[1:]):
        raise InputError("the configurations of a batch must share their groups (classes "
                         "sharing a count in one configuration share it in all)")
    G = len(groups)
    lb = np.broadcast_to(np.asarray(as_lam("lam_b", lam_b), np.float64), (B,))
    loss = losses.get(loss)
    prob, _, _ = problem.make(n, 1.0, 1.0, lb, loss=loss, bias=bias)
    compilation.use_cache()
    N = n.sum(1)
    minority = np.zeros(K, bool)
    minority[list(groups[-1])] = True
    zeros = np.zeros(B)
    if along in ("lam", "c"):
        if lam is not None or c is not None:
            raise InputError(f"lam and c fix λ along n_B and the ratio; along {along!r} "
                             f"the range is bracket= or lam_min=")
        a, s, u, v, w = n, np.zeros_like(n), np.ones(B), zeros, zeros
        mul, inverse = (N if along == "c" else np.ones(B)), False  # x = N·λ or λ
    else:
        if (lam is None) == (c is None):
            raise InputError(f"along {along!r} needs exactly one of lam= (a fixed λ) and "
                             f"c= (a fixed c = λN), got lam={lam!r}, c={c!r}")
        if bracket is None:
            raise InputError(f"along {along!r} needs bracket=(lo, hi), the range of {along}")
        if lam_min is not None:
            raise InputError(f"lam_min is the bottom of a λ range; along {along!r} give "
                             "bracket=(lo, hi)")
        if along == "ratio" and G < 2:
            raise InputError("along 'ratio' needs a minority and a larger count: counts "
                             f"{n[0].tolist()} have one group")
        v = zeros if lam is None else _per_config("lam", lam, B)
        w = zeros if c is None else _per_config("c", c, B)
        u = zeros
        if hold == "ratios":
            a, s = np.zeros_like(n), n / n.min(1, keepdims=True)
        else:
            a, s = np.where(minority, 0.0, n), np.broadcast_to(minority, n.shape) * 1.0
        # x = n_max/y (the largest count held) or y
        mul, inverse = (a.max(1), True) if along == "ratio" else (np.ones(B), False)
    to_x = functools.partial(_convert, mul=mul, inverse=inverse)
    from_x = functools.partial(_convert, mul=mul if inverse else 1 / mul, inverse=inverse)
    if bracket is not None:
        if lam_min is not None:
            raise InputError("give lam_min or bracket, not both")
        try:
            b_lo, b_hi = bracket
        except (TypeError, ValueError):
            raise InputError(f"bracket must be (lo, hi), got {bracket!r}") from None
        lo_x, hi_x = _per_config("bracket", b_lo, B), _per_config("bracket", b_hi, B)
        if np.any(lo_x >= hi_x):
            raise InputError(f"bracket must have lo < hi, got {bracket!r}")
    with x64(True):
        prob = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), prob)
        f64 = lambda x: jnp.asarray(x, jnp.float64)
        line = search.Line(prob, f64(a), f64(s), f64(u), f64(v), f64(w))
        if along in ("lam", "c"):
            z_y = np.asarray(_zero_lam(prob))
            if bracket is None:
                lo_y = (0.1 * np.sqrt(n.min(1)) / N if lam_min is None
                        else _per_config("lam_min", lam_min, B))
                hi_y = z_y * (1 + rtol)
            else:
                lo_y, hi_y = from_x(lo_x), from_x(hi_x)
            z_y = np.where((np.minimum(lo_y, hi_y) <= z_y) & (z_y <= np.maximum(lo_y, hi_y)),
                           z_y, np.nan)
            z_up = np.ones(B, bool)
        else:
            lo_y, hi_y = from_x(lo_x), from_x(hi_x)
            zo, zi, zc = (np.asarray(a) for a in search.zero_root(line, f64(lo_y), f64(hi_y)))
            z_y = np.where(zc, np.sqrt(zo * zi), np.nan)
            z_up = zi > zo  # Z = 0 above the root
        # a search runs from its far end to the Z = 0 check's point on the side of Z ≠ 0
        # (every phase holds where Z = 0), and across the onset of Z = 0 where the phase
        # holds at neither (``search.advance``)
        check = max(rtol, ZERO_CHECK)
        half = np.sqrt(1 + check)
        has_z = np.isfinite(z_y)
        far = np.where(has_z, np.where(z_up, np.minimum(lo_y, hi_y), np.maximum(lo_y, hi_y)),
                       lo_y)
        near = np.where(has_z, np.where(z_up, z_y / half, z_y * half), hi_y)

        # the lanes: (config, group, kind) searches of collapse and vanish, and Z = 0 checks
        cfg, grp, kind = (x.ravel() for x in np.meshgrid(np.arange(B), np.arange(G),
                                                         [search.COLLAPSE, search.VANISH], indexing="ij"))
        sizes = np.array([len(g) for g in groups])
        keep = (kind == search.VANISH) | (sizes[grp] >= 2)  # a single class never "collapses"
        keep &= np.isin(kind, [k for k, name in ((search.COLLAPSE, "collapse"), (search.VANISH, "vanish"))
                               if name in which])
        zcfg = np.flatnonzero(has_z) if "zero" in which else np.zeros(0, int)
        cfg = np.concatenate([cfg[keep], zcfg])
        grp = np.concatenate([grp[keep], np.zeros(zcfg.size, int)])
        kind = np.concatenate([kind[keep], np.full(zcfg.size, search.ZERO)])
        lo = np.concatenate([far[cfg[:keep.sum()]], z_y[zcfg] / half])
        hi = np.concatenate([near[cfg[:keep.sum()]], z_y[zcfg] * half])
        edge = has_z[cfg]
        # padded with idle copies of the first lane (a dummy where there is none), so that
        # calls of nearby sizes share one compiled program
        S = cfg.size
        take = np.r_[np.arange(S), np.zeros(search.width(S) - S, int)]
        if S == 0:
            cfg, grp, kind, lo, hi, edge = [0], [0], [search.VANISH], far[:1], near[:1], [False]
        cfg, grp, kind, lo, hi, edge = (np.asarray(x)[take] for x in
                                        (cfg, grp, kind, lo, hi, edge))
        label = np.zeros(K, int)
        for i, g in enumerate(groups):
            label[list(g)] = i
        same = np.broadcast_to(label[:, None] == label[None, :], (cfg.size, K, K))
        members = label[None, :] == grp[:, None]
        lanes = jax.tree.map(lambda x: x[cfg], line)
        r = search.run(lanes, same, members, jnp.asarray(kind), edge, np.arange(take.size) < S,
                    f64(lo), f64(hi), f64(np.log1p(rtol)), f64(np.log1p(check)),
                    max_bisect=max_steps)
        r = jax.tree.map(lambda x: np.asarray(x)[:S], r._replace(solver=None))
        cfg, grp, kind = cfg[:S], grp[:S], kind[:S]

    def place(rows, value, shape):
        outv = np.full(shape, np.nan)
        outv[rows] = value
        return outv

    found = r.found
    # a phase found to begin with Z = 0 (its bracket across the onset) begins there exactly
    at_zero = found & np.isfinite(z_y[cfg]) & ((r.inn > z_y[cfg]) == z_up[cfg])
    est = np.where(at_zero, z_y[cfg], np.where(found, np.sqrt(r.out * r.inn), np.nan))
    bracket_y = np.stack([r.out, r.inn], -1)
    gaps = np.stack([r.gap_out, r.gap_in], -1)
    sel = slice(0, int(keep.sum()))
    rows = (cfg[sel], grp[sel], kind[sel])
    est_g = place(rows, est[sel], (B, G, 2))
    brk_g = place(rows, bracket_y[sel], (B, G, 2, 2))
    gap_g = place(rows, gaps[sel], (B, G, 2, 2))
    zs = slice(int(keep.sum()), None)
    # the checks agree with the exact condition on the side of Z = 0
    agree = found[zs] & ((r.inn[zs] > r.out[zs]) == z_up[zcfg])
    zero_ok = place(zcfg, agree.astype(float), (B,)) == 1
    zero = np.where(zero_ok, z_y, np.nan)
    zbrk = place(zcfg, bracket_y[zs], (B, 2))
    zgap = place(zcfg, gaps[zs], (B, 2))
    out = Thresholds(groups, to_x(est_g[..., 0]), to_x(est_g[..., 1]), to_x(zero),
                     to_x(brk_g[:, :, 0]), to_x(brk_g[:, :, 1]), to_x(zbrk),
                     gap_g[:, :, 0], gap_g[:, :, 1], zgap, along)
    if one:
        out = out._replace(**{k: v[0] for k, v in out._asdict().items()
                              if k not in ("groups", "along")})
    return out
