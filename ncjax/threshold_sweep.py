"""A threshold grid's chunks: the cells of a spec with a [thresholds] table (``ncjax.spec``),
each one configuration of ``ncjax.thresholds``, a chunk of them one call.

A cell is a solve's cell (``ncjax.grid``: its counts, λ_b, loss and bias) searched along
``[thresholds].along``: along lam or c it has no λ (the search's range is the table's
bracket or lam_min); along n_B or the ratio its λ, or its c (λ = c/N at each point, where
the spec sets c), is the search's fixed ``lam=`` (``c=``), and its counts name the group
that moves (with hold = "ratios" they set the ratios). The cells of a chunk share one K
and, ``check``'s condition, their groups (classes sharing a count), so that one call
batches them (compiled once per chunk width: ``phases``' lanes).

A chunk's fields per cell (rows; G the groups, largest count first), of the kinds asked
(``[thresholds].which``; ``names.THRESHOLDS``) only:

    thresholds.collapse, thresholds.vanish (G,), thresholds.zero ()
                        ``Thresholds``' estimates in the axis's units: NaN where the phase
                        does not begin in the range (or a solve was not certified)
    thresholds.<kind>_bracket (…, 2), thresholds.<kind>_gap (…, 2)
                        the deciding solves' points, [where the phase does not hold, where
                        it holds], and their certified gaps
    thresholds.group (K,)
                        each class's group (0: the largest count)
    theory.collapse (G,), theory.zero ()
                        the theory's thresholds beside them (``theory``), NaN where it has
                        none
    status              "converged" where every asked threshold was decided by certified
                        solves, else "uncertified" (``decided``)

The theory (in the axis's units): along lam each group's own threshold μ_g
(``theory.loss_group_threshold``; cross-entropy's sqrt(n_g)/N), along c μ_g·N; Z = 0 from
sqrt(n_max)/N where the largest count is shared, the model has a bias and the loss is CE
up to what the bias absorbs (``theory.predict``'s "derived": the proved statement). Along
n_B and the ratio, for two groups and a derived loss, each group's collapse of ≥ 2
classes: the minority's at a fixed λ ``theory.n_B_star_at_ratio`` (hold = "ratios") or
``theory.n_B_star`` (the counts held; along the ratio n_A/n_B*), at a fixed c n_B* = c²
(c ≥ c* = sqrt(n_B), ``theory.predict``'s c_star); with hold = "ratios" the majority's by
the same rule at n_A = r n_B (r n_B* at a fixed λ, c²/r at a fixed c), and Z = 0 with it
where the model has a bias; nothing else there.
"""

from __future__ import annotations

import jax
import numpy as np

from ncjax import phases, problem, solvable, theory
from ncjax.dtypes import x64
from ncjax.grid import Grid, expand, spec_error
from ncjax.names import CONVERGED, UNCERTIFIED
from ncjax.spec import Spec

__all__ = ["check", "decided", "predicted", "solve"]


def check(spec: Spec) -> Spec:
    """``spec`` (with a [thresholds] table) if the engine accepts it: its loss at every
    cell (``solvable.check``), then, per K block, one group pattern (the cells of a call
    share their groups) and, along the ratio, a minority below a larger count; else a
    SpecError naming the key."""
    spec = solvable.check(spec)
    grid = expand(spec)
    for K, table in grid.tables.items():
        pattern = {phases.groups_of(row) for row in table}
        if len(pattern) > 1:
            a, b = sorted(pattern)[:2]
            raise spec_error(spec.path, "[thresholds]", "cells of one K that share their "
                             "groups (classes sharing a count: one search batches them)",
                             f"groups {a} and {b} at K = {K}")
        if spec.thresholds["along"] == "ratio" and len(next(iter(pattern))) < 2:
            raise spec_error(spec.path, "[thresholds].along", "a minority below a larger "
                             "count along 'ratio'", f"one group of {K} classes")
    return spec


def _setting(spec: Spec, grid: Grid, idx: np.ndarray, name: str) -> np.ndarray:
    """The spec's value of ``name`` (an axis's or the [problem] table's, exactly as given)
    at the cells ``idx``: (len(idx),)."""
    if name in spec.axes:
        at = np.unravel_index(idx, grid.shape)[list(spec.axes).index(name)]
        return np.asarray(spec.axes[name], np.float64)[at]
    return np.full(idx.size, float(spec.problem[name]))


def _fixed(spec: Spec, grid: Grid, idx: np.ndarray, p: dict) -> dict:
    """Along n_B or the ratio, the search's fixed λ or c per cell: {"lam": …} or {"c": …}."""
    have = set(spec.problem) | set(spec.axes)
    if "c" in have:
        return {"c": _setting(spec, grid, idx, "c")}
    return {"lam": _setting(spec, grid, idx, "lam") if "lam" in have else p["lam"]}


def decided(t: phases.Thresholds, kind: str) -> np.ndarray:
    """Whether each threshold of ``kind`` was decided by certified solves, (B, G) or (B,):
    found (finite); or no search ran (its bracket NaN: a group of one class, no onset of
    Z = 0 in the range); or, for a collapse or a vanishing, the phase held (or failed) at
    both ends of the range, both solves certified (finite gaps: "no onset in the range").
    A search stopped by a solve that was not certified leaves NaN gaps where that solve
    was an end; one stopped between the ends keeps its last certified bracket, which
    ``Thresholds`` does not tell from "no onset"."""
    est = np.asarray(getattr(t, kind))
    bracket, gap = (np.asarray(getattr(t, f"{kind}_{k}")) for k in ("bracket", "gap"))
    out = np.isfinite(est) | np.isnan(bracket).all(-1)
    return out if kind == "zero" else out | np.isfinite(gap).all(-1)


@jax.jit
def _rules(prob: problem.Problem):
    """Per cell (batched ``prob``): whether the CE thresholds are derived for its loss
    (``theory.predict``'s "derived"), μ_k (``theory.loss_group_threshold``) and
    sqrt(n_k)/N (``theory.group_threshold``), (B,), (B, K), (B, K)."""
    return jax.vmap(lambda q: (theory.predict(q)["derived"], theory.loss_group_threshold(q),
                               theory.group_threshold(q.counts)))(prob)


def predicted(spec: Spec, counts: np.ndarray, prob: problem.Problem, groups: tuple,
              fixed: dict) -> dict:
    """The theory's thresholds of the cells (module docstring): {"collapse": (B, G),
    "zero": (B,)}, NaN where it has none. ``prob`` the cells' problems (their λ unused),
    ``fixed`` the search's fixed λ or c along n_B and the ratio."""
    th = spec.thresholds
    along, B, G = th["along"], counts.shape[0], len(groups)
    first = np.array([g[0] for g in groups])
    N = counts.sum(1)
    with x64(True):
        derived, mu, ce = (np.asarray(v)[..., first] if v.ndim > 1 else np.asarray(v)
                           for v in _rules(prob))
        collapse, zero = np.full((B, G), np.nan), np.full(B, np.nan)
        if along in ("lam", "c"):
            scale = N if along == "c" else np.ones(B)
            collapse = np.where(np.isfinite(mu), mu * scale[:, None], np.nan)
            if len(groups[0]) >= 2 and spec.problem.get("bias", True):
                zero = np.where(derived, ce[:, 0] * scale, np.nan)
        elif G == 2:
            K_A, K_B = len(groups[0]), len(groups[1])
            n_A, n_B = counts[:, first[0]], counts[:, first[1]]
            r, nan = n_A / n_B, np.full(B, np.nan)
            if "c" in fixed:  # c ≥ c* = sqrt(n_g): n_B ≤ c², and n_A = r n_B ≤ c²
                star_B = fixed["c"] ** 2
                star_A = star_B / r if th["hold"] == "ratios" else nan
            elif th["hold"] == "ratios":  # sqrt(n_A)/N = λ at n_A = r n_B: r times n_B*
                star_B = np.asarray(theory.n_B_star_at_ratio(fixed["lam"], K_A, r, K_B))
                star_A = r * star_B
            else:
                star_B, star_A = np.asarray(theory.n_B_star(fixed["lam"], K_A, n_A, K_B)), nan
            x = (lambda y: n_A / y) if along == "ratio" else (lambda y: y)
            collapse = np.stack([x(star_A) if K_A >= 2 else nan,
                                 x(star_B) if K_B >= 2 else nan], 1)
            collapse = np.where(derived[:, None], collapse, np.nan)
            if K_A >= 2 and spec.problem.get("bias", True):
                zero = collapse[:, 0]
    return {"collapse": collapse, "zero": zero}


def solve(spec: Spec, grid: Grid, idx: np.ndarray):
    """(the fields of the cells ``idx`` (module docstring), their flat indices): one
    ``ncjax.thresholds`` call; ``idx`` share one K and their groups (``check``)."""
    th, idx = spec.thresholds, np.asarray(idx, np.int64)
    p = grid.params_at(idx)
    counts = grid.counts(idx)
    loss, bias = solvable.loss_at(spec.problem, spec.axes, p), spec.problem.get("bias", True)
    kw = {k: th[k] for k in ("rtol", "hold", "lam_min", "max_steps") if k in th}
    if "bracket" in th:
        kw["bracket"] = tuple(th["bracket"])
    fixed = _fixed(spec, grid, idx, p) if th["along"] in ("n_B", "ratio") else {}
    t = phases.thresholds(counts, p["lam_b"], loss=loss, bias=bias, along=th["along"],
                          which=tuple(th["which"]), **kw, **fixed)
    ok = np.ones(idx.size, bool)
    for kind in th["which"]:
        d = decided(t, kind)
        ok &= d if d.ndim == 1 else d.all(1)
    # the cells' problems for the theory: its thresholds do not depend on λ (λ = 1 unused)
    prob, _, _ = problem.make(counts, 1.0, 1.0, p["lam_b"], loss=loss, bias=bias)
    theory_ = predicted(spec, counts, prob, t.groups, fixed)
    label = np.zeros(counts.shape[1], np.int64)
    for g, members in enumerate(t.groups):
        label[list(members)] = g
    found = {"group": np.broadcast_to(label, counts.shape).copy()}
    for kind in th["which"]:
        for suffix in ("", "_bracket", "_gap"):
            found[kind + suffix] = np.asarray(getattr(t, kind + suffix), np.float64)
    fields = {"status": np.where(ok, CONVERGED, UNCERTIFIED).astype(np.int32),
              "thresholds": found,
              "theory": {k: v for k, v in theory_.items() if k in th["which"]}}
    return fields, idx

