"""The phase diagram of a run over two axes: per cell, the measured minority-collapse
decision against the theory's.

A run over two of PHASE_AXES (those that move λ/λ*: lam, c, n_A, n_B, n, ratio) gives,
on its (ny, nx) grid of cells (rows: the second such axis y, columns: the first x), the
fraction of each cell's converged seeds whose minority collapsed (majority: measured
collapsed), against the theory's λ ≥ λ* = sqrt(n_B)/N, coded by ``decision_categories``;
cells with |λ/λ* − 1| ≤ FAR are "near" and not scored. The Z = 0 boundary is
λ = sqrt(n_max)/N where the largest count is shared (DESIGN.md §1). Pure numpy.
"""

from __future__ import annotations

import warnings

import numpy as np

from ncjax.analysis import LAMBDA_AXES, MAX_LISTED
from ncjax.tolerances import FAR

PHASE_AXES = ("lam", "c", "n_A", "n_B", "n", "ratio")

# Per-cell decision codes (``decision_categories``) and their names, in code order.
AGREE_COLLAPSED, AGREE_NOT, FALSE_COLLAPSE, MISSED_COLLAPSE, NEAR, UNSOLVED = range(6)
DECISION_NAMES = ("agree: collapsed", "agree: not collapsed",
                  "measured collapsed, theory not", "measured not collapsed, theory collapsed",
                  "near the boundary (not scored)", "no converged solve")


def decision_categories(frac, predicted, near):
    """Per cell, the measured minority-collapse decision against the theory's, as codes.

    Args:
      frac: (...) fraction of the cell's converged solves (one per seed) whose minority
        collapsed, NaN where none converged. The measured decision is the majority:
        collapsed iff frac > 1/2 (a tie counts as not collapsed).
      predicted: (...) bool, the theory's decision (λ ≥ λ*).
      near: (...) bool, the cell lies near the theory's boundary (|λ/λ* − 1| ≤ FAR in
        ``phase_map``), where the decision is not scored.
    Returns:
      (...) int: UNSOLVED where frac is NaN, else NEAR where ``near``, else
      AGREE_COLLAPSED / AGREE_NOT where the majority equals the prediction, FALSE_COLLAPSE
      (measured collapsed, theory not) or MISSED_COLLAPSE (measured not, theory collapsed).
    """
    frac = np.asarray(frac, float)
    predicted = np.asarray(predicted, bool)
    measured = frac > 0.5
    code = np.where(measured == predicted,
                    np.where(predicted, AGREE_COLLAPSED, AGREE_NOT),
                    np.where(measured, FALSE_COLLAPSE, MISSED_COLLAPSE))
    code = np.where(np.asarray(near, bool), NEAR, code)
    return np.where(np.isfinite(frac), code, UNSOLVED).astype(int)


def phase_axes(g):
    """(x, y): the first two axes of the run, in file order, among PHASE_AXES with more
    than one value; None if there are fewer than two."""
    names = [a for a in g.axes if a in PHASE_AXES and g.axes[a].size > 1]
    return (names[0], names[1]) if len(names) >= 2 else None


def phase_map(g) -> dict | None:
    """A run over two of PHASE_AXES as a phase diagram: per cell (rows y, columns x), the
    measured minority-collapse decision (majority over the seed axis, converged solves
    only) against the theory's (λ ≥ λ*), ``decision_categories`` with "near"
    meaning |λ/λ* − 1| ≤ FAR. Other axes except seed are sliced at their first value.
    None for runs with fewer than two such axes or no solved cell.

    Returns a dict: x, y (axis names), xv (nx,), yv (ny,), sliced (axis → value), shown
    (the slice the spread panel shows: sliced and the first seed), c (the run's fixed
    c = λN, or None), seeds (S), spread (ny, nx) minority spread of Z of the first seed
    (NaN unless converged), zero_shown (ny, nx) bool, whether that solve's Z counts as 0
    (metrics.zero_solution), frac (ny, nx) fraction of converged seeds collapsed (NaN:
    none), zero_frac (ny, nx) fraction whose Z counts as 0, n_conv
    (ny, nx), predicted (ny, nx) bool, ratio (ny, nx) λ/λ*, star (ny, nx) log(λ/λ*) (its zero
    contour is the theory's boundary), zero (ny, nx) log(λ/λ_0) with λ_0 = sqrt(n_max)/N
    when the largest count is shared (Z = 0 above it; None if never), y_star / y_zero
    (nx,) the same thresholds in the y axis' units when y is lam or c (else None),
    category (ny, nx) int, counts (DECISION_NAMES → cells), split (cells whose seeds
    disagree), scored / agree (cells farther than FAR from λ* with a converged solve /
    whose majority equals the theory), listed (the first MAX_LISTED disagreeing cells).
    """
    axes = phase_axes(g)
    if axes is None or not g.done.any():
        return None
    x, y = axes
    sliced = {k: v[0].item() for k, v in g.axes.items() if k not in (x, y, "seed")}
    if sliced:
        g = g.sel(**sliced)
    shown = dict(sliced)
    if "seed" in g.axes:
        shown["seed"] = g.axes["seed"][0].item()
    names = list(g.axes)
    perm = [names.index(y), names.index(x)] + ([names.index("seed")] if "seed" in names else [])
    seeds = g.axes["seed"].size if "seed" in names else 1

    def cells(a):
        """(ny, nx, S, ...) from a grid field."""
        a = np.transpose(a, perm + list(range(len(names), a.ndim)))
        return a if "seed" in names else a[:, :, None]

    conv = cells(g.status == "converged")
    collapsed = cells(g["metrics.minority_collapsed"]).astype(float)
    collapsed = np.where(conv, collapsed, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # cells with no converged seed
        frac = np.nanmean(collapsed, axis=2)
        zero_frac = np.nanmean(np.where(conv, cells(g["metrics.zero_solution"]), np.nan),
                               axis=2)
        theory = {k: np.nanmax(cells(g[f"theory.{k}"]).astype(float), axis=2)
                  for k in ("lam", "lam_star", "minority_collapse", "group_threshold")}
    spread = np.where(conv[:, :, 0], cells(g["metrics.minority_spread_Z"])[:, :, 0], np.nan)
    zero_shown = conv[:, :, 0] & (cells(g["metrics.zero_solution"])[:, :, 0] == 1)
    lam, lam_star = theory["lam"], theory["lam_star"]
    lam_zero = np.max(theory["group_threshold"], axis=-1)  # sqrt(n_max)/N, inf: not shared
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = lam / lam_star
        star = np.log(ratio)
        zero = np.where(np.isfinite(lam_zero), np.log(lam / lam_zero), np.nan)
    near = np.abs(ratio - 1) <= FAR
    predicted = theory["minority_collapse"] == 1
    category = decision_categories(frac, predicted, near)
    y_star = y_zero = None
    if y in LAMBDA_AXES:
        unit = 1.0 if y == "lam" else np.asarray(g.axes[y], float)[:, None] / lam  # N
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            y_star = np.nanmax(lam_star * unit, axis=0)
            y_zero = np.nanmax(np.where(np.isfinite(lam_zero), lam_zero * unit, np.nan),
                               axis=0)
    scored = np.isin(category, (AGREE_COLLAPSED, AGREE_NOT, FALSE_COLLAPSE, MISSED_COLLAPSE))
    agree = np.isin(category, (AGREE_COLLAPSED, AGREE_NOT))
    xv, yv = np.asarray(g.axes[x]), np.asarray(g.axes[y])
    listed = [{x: xv[j].item(), y: yv[i].item(), "lam/lam*": float(ratio[i, j]),
               "collapsed seeds": f"{int(np.nansum(collapsed[i, j]))} of {int(conv[i, j].sum())}",
               "category": DECISION_NAMES[category[i, j]]}
              for i, j in zip(*np.nonzero(scored & ~agree))][:MAX_LISTED]
    return {"x": x, "y": y, "xv": xv, "yv": yv, "sliced": sliced, "shown": shown,
            "c": g.spec.problem.get("c"), "seeds": seeds,
            "spread": spread, "zero_shown": zero_shown, "frac": frac, "zero_frac": zero_frac,
            "n_conv": conv.sum(axis=2),
            "predicted": predicted, "ratio": ratio, "star": star,
            "zero": zero if np.isfinite(zero).any() else None,
            "y_star": y_star, "y_zero": y_zero if y_zero is not None and np.isfinite(y_zero).any()
            else None, "category": category,
            "counts": {name: int(np.sum(category == code))
                       for code, name in enumerate(DECISION_NAMES)},
            "split": int(np.sum((frac > 0) & (frac < 1))),
            "scored": int(scored.sum()), "agree": int((scored & agree).sum()), "listed": listed}
