"""Group thresholds of a "steps" profile along λ (or c = λN), read off a loaded grid.

The conjecture (DESIGN.md §1): a group of K_g ≥ 2 classes sharing one count n_g collapses
(its class-mean logits z_k coincide) iff λ ≥ sqrt(n_g)/N, and when the largest count is
shared, Z = 0 iff λ ≥ sqrt(n_max)/N. For λ_b = 0 the exact condition for Z = 0 is the
dual's: the zero point's q_k = π for every k is feasible, ‖G(π)‖_op ≤ λ with
G(q) = [(sqrt(n_k)/N)(q_k − e_k)]_k (K, K) (DESIGN.md §1; ``dual.dual_G`` of
v_k = q_k − e_k).

``thresholds`` measures each of these on the certified cells (converged, gap ≤ GAP_TOL)
of a run over lam or c: per group the crossing of its spread
s_g = max_{j,k∈g}‖z_j − z_k‖ / max_k‖z_k‖ through COLLAPSE_TOL (``analysis.
collapse_threshold``) and where s_g reaches 0 (``analysis.spread_zero``); where Z turns 0;
where two neighbouring groups merge into one cluster. Numbers only: text is
``report.groups``, the figure ``plot.groups``.
"""

from __future__ import annotations

import numpy as np

from ncjax import analysis, dtypes, problem, profiles, theory
from ncjax.tolerances import COLLAPSE_TOL, GAP_TOL, ZERO_ATOL


def applies(g) -> bool:
    """Whether g is a group-threshold study: a "steps" profile with a lam or c axis."""
    return g.spec.problem.get("profile") == "steps" and bool({"lam", "c"} & set(g.axes))


def zero_condition(n) -> float:
    """‖G(π)‖_op for counts n (K,): Z = 0 is optimal (free bias) iff λ is at least this
    (``theory.zero_threshold``, in float64 as the grid's numbers are)."""
    with dtypes.x64(True):
        return float(theory.zero_threshold(problem.from_lam(np.asarray(n, np.float64), 0.0)))


def thresholds(g) -> dict:
    """The group-threshold study of a "steps" run over lam (or c); other axes are sliced
    at their first value. L points along the axis, G distinct counts (largest first).

    Returns a dict:
      axis ("lam" or "c"), x (L,) sorted axis values, sliced (axis → value), groups (the
      spec's [[K_g, n_g], …]), counts n (K,), N, unit (N on a c axis, else 1: thresholds
      are in the axis' units), certified (L,) bool, n_g (G,), K_g (G,), predicted (G,)
      sqrt(n_g)/N·unit, spread (G, L) s_g (NaN where not certified);
      rows: per group a dict n_g, K_g, predicted, measured, lo, hi (the bracket of
        ``analysis.collapse_threshold``), zero (``analysis.spread_zero``; all NaN for
        K_g = 1);
      zero: lo, hi (bracket where the measured Z turns 0), z0 (where max_k‖z_k‖ reaches
        0), shared (sqrt(n_max)/N·unit, None when one class holds n_max), K_max (classes
        holding n_max), exact (``zero_condition``·unit, None unless λ_b = 0);
      merges: per neighbouring pair of groups a dict pair (n_i, n_j), measured, lo, hi and
        spread (L,) (the relative spread of the two together, where Z ≠ 0).
    """
    x_name = "lam" if "lam" in g.axes else "c"
    sliced = {k: v[0].item() for k, v in g.axes.items() if k != x_name}
    if sliced:
        g = g.sel(**sliced)
    x = g.axes[x_name]
    order = np.argsort(x)
    x = x[order]
    n = profiles.steps(g.spec.problem["groups"])
    N = float(n.sum())
    unit = N if x_name == "c" else 1.0
    n_g = np.unique(n)[::-1]
    K_g = np.array([int(np.sum(n == v)) for v in n_g])
    members = [np.flatnonzero(n == v) for v in n_g]
    first = np.array([m[0] for m in members])

    ok = g.status[order] == "converged"
    if "gap" in g.fields:
        ok &= g["gap"][order] <= GAP_TOL
    spread = np.where(ok[:, None], g["metrics.spread_Z_group"][order][:, first], np.nan).T
    pred = np.sqrt(n_g) / N * unit
    rows = []
    for i in range(n_g.size):
        est = lo = hi = z0 = np.nan
        if K_g[i] >= 2:
            est, lo, hi = analysis.collapse_threshold(x, spread[i], COLLAPSE_TOL)
            if np.isfinite(est):
                z0 = analysis.spread_zero(x, spread[i])
        rows.append({"n_g": n_g[i], "K_g": int(K_g[i]), "predicted": pred[i],
                     "measured": est, "lo": lo, "hi": hi, "zero": z0})

    zero = np.where(ok, g["metrics.zero_solution"][order], np.nan)
    _, z_lo, z_hi = analysis.collapse_threshold(x, 1.0 - zero, 0.5)
    Zr = np.swapaxes(g["Z"][order], -1, -2)  # rows z_k
    scale = np.max(np.linalg.norm(Zr, axis=-1), axis=-1)
    # max_k ‖z_k‖ falls linearly to 0, so a line through its last points finds the zero
    z0 = analysis.spread_zero(x, np.where(ok, scale, np.nan), eps=ZERO_ATOL)
    lam_b = sliced.get("lam_b", g.spec.problem.get("lam_b", 0.0))
    zero_info = {"lo": z_lo, "hi": z_hi, "z0": z0, "K_max": int(K_g[0]),
                 "shared": np.sqrt(n.max()) / N * unit if K_g[0] >= 2 else None,
                 "exact": zero_condition(n) * unit if lam_b == 0 else None}

    merges = []
    for i in range(n_g.size - 1):
        both = np.concatenate([members[i], members[i + 1]])
        V = Zr[:, both]
        d = np.max(np.linalg.norm(V[:, :, None] - V[:, None, :], axis=-1), axis=(1, 2))
        rel = np.where(ok & (zero == 0), d / np.where(scale > 0, scale, 1.0), np.nan)
        est, lo, hi = analysis.collapse_threshold(x, rel, COLLAPSE_TOL)
        merges.append({"pair": (n_g[i], n_g[i + 1]), "measured": est, "lo": lo, "hi": hi,
                       "spread": rel})
    return {"axis": x_name, "x": x, "sliced": sliced, "groups": g.spec.problem["groups"],
            "counts": n, "N": N, "unit": unit, "certified": ok, "n_g": n_g, "K_g": K_g,
            "predicted": pred, "spread": spread, "rows": rows, "zero": zero_info,
            "merges": merges}
