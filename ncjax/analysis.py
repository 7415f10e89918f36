"""Numbers read off a loaded sweep: what was measured, beside the theory's predictions.

Pure numpy, returning numbers, arrays and dicts of them (text is ``ncjax.report``,
figures ``ncjax.plot``). Two kinds:

Curve readings, on one curve s (L,) along increasing x (L,) (λ, c = λN or a sample size),
NaN where a point is not known:
  ``collapse_threshold``  where s falls to the collapse tolerance and stays there,
  ``spread_zero``         where s reaches 0, by a straight line through its last points,
  ``spread_root``         where s reaches 0, by the polynomial through its last points,
  ``sign_change``         where a function of x changes sign.

Grid readings, of a loaded ``SweepGrid`` g (axes: name → (n_a,) values; g[field]:
(*g.shape, …)): ``agreement`` (measured minority collapse against λ ≥ λ* = sqrt(n_B)/N),
``boundary`` (the measured crossing along one axis against the theory's), ``unconverged``,
``gap`` (the certified duality gap), ``cosines`` (against the simplex ETF), ``curves`` (what
a one-axis run shows), ``cells`` (chosen cells), and the
lookups ``lines``, ``line_label``, ``cell_index``, ``cell_values``. The phase diagram over
two axes is ``ncjax.diagram``; the group thresholds of a "steps" profile ``ncjax.groups``.
"""

from __future__ import annotations

import numpy as np

from ncjax import spec as _spec
from ncjax.tolerances import COLLAPSE_TOL, FAR, ZERO_ATOL
from ncjax.validate import InputError

LAMBDA_AXES = ("lam", "c")
SAMPLE_AXES = ("n_A", "n", "n_B", "ratio")
MAX_LISTED = 20     # cells listed by ``unconverged`` and ``diagram.phase_map``


def collapse_threshold(lam, spread, tol):
    """Measured collapse threshold of one curve: the smallest λ above which ``spread``
    stays ≤ ``tol``, located between grid points by linear interpolation of the spread in
    log λ (the spread falls about linearly to 0 as λ rises to a group's threshold).

    Args:
      lam: (L,) increasing λ values; spread: (L,) spread at each, NaN where not known
        (those points are left out); tol: the collapse tolerance.
    Returns:
      (estimate, lo, hi): lo < hi the bracketing known grid points (spread > tol at lo,
      ≤ tol from hi on). Collapsed at every known point: (nan, nan, lam_min); never at
      the largest known λ: (nan, lam_max, nan); no known point: all NaN.
    """
    lam, spread = np.asarray(lam, float), np.asarray(spread, float)
    ok = np.isfinite(spread)
    lam, spread = lam[ok], spread[ok]
    if lam.size == 0:
        return np.nan, np.nan, np.nan
    above = np.flatnonzero(spread > tol)
    if above.size == 0:
        return np.nan, np.nan, float(lam[0])
    i = above[-1]
    if i == lam.size - 1:
        return np.nan, float(lam[-1]), np.nan
    s0, s1 = spread[i], spread[i + 1]
    t = (s0 - tol) / (s0 - s1)
    est = np.exp(np.log(lam[i]) + t * (np.log(lam[i + 1]) - np.log(lam[i])))
    return float(est), float(lam[i]), float(lam[i + 1])


def spread_zero(lam, spread, *, eps=1e-8, points=3):
    """Where the spread itself reaches 0: the straight line through the last ``points``
    known points with spread > ``eps`` (the ones just below the threshold), extrapolated
    in λ to spread 0. Sharper than ``collapse_threshold`` (which stops at the tolerance, a
    little before the threshold) where the spread falls linearly to 0; NaN where the zero
    does not fall between the last point with spread > eps and the next (a spread that
    jumps to 0, as the largest group's does when Z vanishes) or too few points are known.
    lam: (L,) increasing; spread: (L,), NaN where not known."""
    lam, spread = np.asarray(lam, float), np.asarray(spread, float)
    ok = np.isfinite(spread)
    lam, spread = lam[ok], spread[ok]
    big = np.flatnonzero(spread > eps)
    if big.size == 0 or big[-1] == lam.size - 1 or big[-1] + 1 < points:
        return np.nan
    i = big[-1]
    slope, icpt = np.polyfit(lam[i + 1 - points:i + 1], spread[i + 1 - points:i + 1], 1)
    if not slope < 0:
        return np.nan
    z0 = -icpt / slope
    return float(z0) if lam[i] < z0 <= lam[i + 1] else np.nan


def spread_root(lam, spread, tol, *, points=3):
    """Where the spread reaches 0, read from the uncollapsed side: the root of the
    polynomial of degree ``points`` − 1 through the last ``points`` known points with
    spread > tol (in log λ) nearest to the bracket [λ_i, λ_{i+1}] (λ_i the last of those
    points, λ_{i+1} the next known one, the first collapsed), if it lies within one
    bracket width of it, moved into the bracket (the measurements say the threshold is
    there: spread > tol at λ_i, collapsed at λ_{i+1}); if there is none, the same with the
    straight line through the last two. NaN when no such root, no bracket (see
    ``collapse_threshold``) or too few points.

    The spread is a smooth function of λ on the uncollapsed side that vanishes at the
    threshold, so this root is a second-order estimate of it: unlike the tolerance
    crossing (``collapse_threshold``), which sits next to the first collapsed grid point
    and so up to one grid step from the threshold, its error shrinks with the square of
    the step. lam: (L,) increasing; spread: (L,), NaN where not known.
    """
    lam, spread = np.asarray(lam, float), np.asarray(spread, float)
    ok = np.isfinite(spread)
    lam, spread = lam[ok], spread[ok]
    _, lo, hi = collapse_threshold(lam, spread, tol)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return np.nan
    i = int(np.flatnonzero(lam == lo)[0])
    a, b = np.log(lam[i]), np.log(lam[i + 1])
    for deg in range(points - 1, 0, -1):
        if i + 1 < deg + 1:
            continue
        u, s = np.log(lam[i - deg:i + 1]), spread[i - deg:i + 1]
        roots = np.roots(np.polyfit(u - a, s, deg)) + a
        roots = roots[np.isreal(roots)].real
        if roots.size:
            inside = np.clip(roots, a, b)
            j = int(np.argmin(np.abs(roots - inside)))
            if abs(roots[j] - inside[j]) <= b - a:
                return float(np.exp(inside[j]))
    return np.nan


def sign_change(x, f):
    """First x where f (NaN ignored) changes sign, by linear interpolation; NaN if none.
    x: (L,) increasing; f: (L,)."""
    ok = np.isfinite(f)
    x, f = x[ok], f[ok]
    s = np.sign(f)
    for i in range(x.size - 1):
        if s[i] == 0:
            return float(x[i])
        if s[i] * s[i + 1] < 0:
            return float(x[i] + f[i] / (f[i] - f[i + 1]) * (x[i + 1] - x[i]))
    return float(x[-1]) if x.size and s[-1] == 0 else np.nan


def lines(g, axis: str):
    """Yield (other-axis values dict, index tuple selecting the line along ``axis``)."""
    names = list(g.axes)
    ax = names.index(axis)
    others = [n for n in names if n != axis]
    for idx in np.ndindex(*[g.axes[n].size for n in others]):
        full = list(idx)
        full.insert(ax, slice(None))
        yield {n: g.axes[n][i].item() for n, i in zip(others, idx)}, tuple(full)


def line_label(where: dict) -> str:
    """The name of a line along one axis: its other-axis values "k = v, …", or "all"."""
    return ", ".join(f"{k} = {v:g}" for k, v in where.items()) or "all"


def cell_index(g, where: dict) -> int:
    """Flat (C-order) index of the grid cell nearest to ``where`` (axis name → value: each
    named axis at its nearest grid value, every other axis at its first value). It is the
    cell's key_index in the sweep (its random start)."""
    unknown = sorted(set(where) - set(g.axes))
    if unknown:
        raise InputError(f"no axis {unknown}; the axes are {list(g.axes)}")
    idx = [int(np.argmin(np.abs(np.asarray(v, float) - float(where[k])))) if k in where else 0
           for k, v in g.axes.items()]
    return int(np.ravel_multi_index(idx, g.shape))


def cell_values(g, i: int) -> dict:
    """Axis name → value of the cell with flat index ``i``."""
    idx = np.unravel_index(int(i), g.shape)
    return {k: v[j].item() for (k, v), j in zip(g.axes.items(), idx)}


def _decision(collapsed, zero) -> str:
    return ("collapsed" if collapsed == 1 else "not collapsed") + (" (Z = 0)" if zero == 1 else "")


def cells(g, idx) -> list[dict]:
    """The chosen cells (flat indices ``idx``), one dict each: index, values (axis →
    value), counts (K,) n_k, N, ratio λ/λ*, Z (K, K) (NaN: not solved), spread (the minority
    spread of Z), status, objective (stored), and the measured and predicted decisions as
    words ("collapsed", "not collapsed", with " (Z = 0)" where Z counts as / is predicted 0).
    """
    counts = _spec.expand(g.spec).counts(list(idx))
    out = []
    for i, n in zip(idx, counts):
        c = np.unravel_index(int(i), g.shape)
        out.append({
            "index": int(i), "values": cell_values(g, i), "counts": n, "N": float(np.sum(n)),
            "ratio": g["theory.lam"][c] / g["theory.lam_star"][c], "Z": g["Z"][c],
            "spread": g["metrics.minority_spread_Z"][c], "status": g.status[c],
            "objective": g["objective"][c],
            "measured": _decision(g["metrics.minority_collapsed"][c],
                                  g["metrics.zero_solution"][c]),
            "theory": _decision(g["theory.minority_collapse"][c],
                                g["theory.total_collapse"][c])})
    return out


def agreement(g) -> dict:
    """Measured minority collapse (metrics.minority_collapsed) vs the theory's
    (theory.minority_collapse = λ ≥ λ*), over the solved cells whose loss the threshold is
    derived for (theory.derived) and over those with |λ/λ* − 1| > FAR."""
    if not g.done.any():
        return {"solved": 0, "agree": 0, "fraction": np.nan, "far": 0, "far_agree": 0,
                "far_fraction": np.nan}
    m, t = g["metrics.minority_collapsed"], g["theory.minority_collapse"]
    solved = g.done & np.isfinite(m)
    if "theory.derived" in g.fields:  # the theory's threshold holds for the cell's loss
        solved &= g["theory.derived"] == 1
    same = (m == t) & solved
    with np.errstate(divide="ignore", invalid="ignore"):
        far = solved & (np.abs(g["theory.lam"] / g["theory.lam_star"] - 1) > FAR)
    n, k = int(solved.sum()), int(same.sum())
    nf, kf = int(far.sum()), int((same & far).sum())
    return {"solved": n, "agree": k, "fraction": k / n if n else np.nan,
            "far": nf, "far_agree": kf, "far_fraction": kf / nf if nf else np.nan}


def _axis_for_boundary(g):
    """The λ-like axis (lam, then c) if the run has one; otherwise the sample-size axis
    along which the theory's λ/λ* − 1 changes sign in the most lines (ties: SAMPLE_AXES
    order), so a two-axis (ratio, n_B) run at λ = c/N is cut along n_B, not ratio."""
    for name in LAMBDA_AXES:
        if name in g.axes and g.axes[name].size > 1:
            return name, "lambda"
    cands = [a for a in SAMPLE_AXES if a in g.axes and g.axes[a].size > 1]
    if len(cands) > 1 and g.done.any():
        with np.errstate(divide="ignore", invalid="ignore"):
            f = g["theory.lam"] / g["theory.lam_star"] - 1
        order = {a: np.argsort(np.asarray(g.axes[a], float)) for a in cands}
        hits = [sum(np.isfinite(sign_change(np.sort(np.asarray(g.axes[a], float)),
                                            f[idx][order[a]]))
                    for _, idx in lines(g, a)) for a in cands]
        return cands[int(np.argmax(hits))], "sample"
    return (cands[0], "sample") if cands else (None, None)


def _crossing(x, spread, rising: bool):
    """``collapse_threshold`` along increasing x (collapse as x rises), or, when the
    collapse comes as x falls (``rising`` False), along 1/x mapped back."""
    if rising:
        return collapse_threshold(x, spread, COLLAPSE_TOL)
    est, lo, hi = collapse_threshold(1 / x[::-1], spread[::-1], COLLAPSE_TOL)
    return 1 / est, 1 / lo, 1 / hi  # lo/hi swap meaning: bracket in x is (hi, lo) sorted


def _root(x, spread, rising: bool):
    """``spread_root`` along increasing x, or (``rising`` False) along 1/x."""
    if rising:
        return spread_root(x, spread, COLLAPSE_TOL)
    return 1 / spread_root(1 / x[::-1], spread[::-1], COLLAPSE_TOL)


def boundary(g) -> dict:
    """Per line along the λ-like axis (lam, else c; or, with neither, a sample-size axis)
    for every combination of the other axes: the measured crossing of
    metrics.minority_spread_Z through COLLAPSE_TOL (converged cells only) against the
    predicted one (λ*: theory.lam_star, or theory.c_star on a c axis; on a sample-size
    axis the sign change of theory.lam/theory.lam_star − 1, interpolated linearly).
    Each line also carries ``zero``: where the spread reaches 0 (``spread_root``, second
    order in the grid step, where the tolerance crossing is first order) and its
    ``zero_deviation``. Returns axis, mode ("lambda", "sample" or None), lines (list of
    dicts), and over the lines with both crossings: count, max_dev (|measured/predicted −
    1|), median_dev, worst (that line's dict); max_dev_zero, median_dev_zero, zeros (lines
    with a root) for ``zero``."""
    axis, mode = _axis_for_boundary(g)
    out = {"axis": axis, "mode": mode, "lines": [], "measured": 0, "max_dev": np.nan,
           "median_dev": np.nan, "worst": None, "zeros": 0, "max_dev_zero": np.nan,
           "median_dev_zero": np.nan}
    if axis is None or not g.done.any():
        return out
    x_all = np.asarray(g.axes[axis], float)
    order = np.argsort(x_all)
    x = x_all[order]
    ok = g.status == "converged"
    spread = np.where(ok, g["metrics.minority_spread_Z"], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = g["theory.lam"] / g["theory.lam_star"] - 1
    pred_field = g["theory.c_star" if axis == "c" else "theory.lam_star"]
    for where, idx in lines(g, axis):
        s = spread[idx][order]
        if mode == "lambda":
            p = pred_field[idx][order]
            p = p[np.isfinite(p)]
            pred = float(p[0]) if p.size else np.nan
            rising = True
        else:
            fl = f[idx][order]
            pred = sign_change(x, fl)
            fin = fl[np.isfinite(fl)]
            rising = not (fin.size >= 2 and fin[-1] < fin[0])
        est, lo, hi = _crossing(x, s, rising)
        dev = est / pred - 1 if np.isfinite(est) and np.isfinite(pred) and pred != 0 else np.nan
        zero = _root(x, s, rising)
        zdev = zero / pred - 1 if np.isfinite(zero) and np.isfinite(pred) and pred != 0 else np.nan
        note = ("" if np.isfinite(est) else "not collapsed anywhere" if np.isfinite(lo)
                else "collapsed everywhere" if np.isfinite(hi) else "no converged cell")
        if not np.isfinite(pred):
            note += ("; " if note else "") + "no predicted crossing on the grid"
        out["lines"].append({"where": where, "measured": est, "predicted": pred,
                             "deviation": dev, "bracket": tuple(sorted((lo, hi))),
                             "zero": zero, "zero_deviation": zdev,
                             "rising": rising, "note": note})
    devs = np.array([ln["deviation"] for ln in out["lines"]], float)
    have = np.isfinite(devs)
    out["measured"] = int(have.sum())
    if have.any():
        a = np.abs(devs)
        out["max_dev"] = float(np.nanmax(a))
        out["median_dev"] = float(np.nanmedian(a))
        out["worst"] = out["lines"][int(np.nanargmax(a))]
    zd = np.abs(np.array([ln["zero_deviation"] for ln in out["lines"]], float))
    out["zeros"] = int(np.isfinite(zd).sum())
    if out["zeros"]:
        out["max_dev_zero"] = float(np.nanmax(zd))
        out["median_dev_zero"] = float(np.nanmedian(zd))
    return out


def unconverged(g) -> dict:
    """Cells whose status is neither "converged" nor "missing": counts per status, and
    the first MAX_LISTED with their axis values; "missing" counted apart."""
    names = list(g.axes)
    bad = (g.status != "converged") & (g.status != "missing")
    st, cnt = np.unique(g.status[bad].astype(str), return_counts=True)
    listed = []
    for idx in zip(*np.nonzero(bad)):
        if len(listed) == MAX_LISTED:
            break
        listed.append({"status": str(g.status[idx]),
                       **{n: g.axes[n][i].item() for n, i in zip(names, idx)}})
    return {"total": int(g.status.size), "converged": int(np.sum(g.status == "converged")),
            "missing": int(np.sum(g.status == "missing")), "count": int(bad.sum()),
            "by_status": {str(s): int(c) for s, c in zip(st, cnt)}, "listed": listed}


def gap(g) -> dict | None:
    """Largest certified duality gap F − F* (absolute, and relative to max(1, |F|)) over
    the solved cells; None without a "gap" field."""
    if "gap" not in g.fields or not np.isfinite(g["gap"]).any():
        return None
    gp = g["gap"]
    rel = gp / np.maximum(1.0, np.abs(g["objective"]))
    i = np.unravel_index(np.nanargmax(gp), gp.shape)
    return {"max_abs": float(np.nanmax(gp)), "max_rel": float(np.nanmax(rel)),
            "where": {n: g.axes[n][k].item() for n, k in zip(g.axes, i)},
            "cells": int(np.isfinite(gp).sum())}


def at_floor(norms, counts=None) -> dict:
    """Per pair of ``metrics``' cosines (AA within the largest count's group, BB within the
    smallest's, AB across): whether a vector of it is at the rounding floor, ‖z_k‖ ≤
    ZERO_ATOL (the norm at which Z counts as 0), though not vanished (``metrics.vanished``
    leaves its cosines NaN): its cosine measures rounding, not a direction. norms (K,);
    counts (K,), or None (not known: every class taken to be in every pair)."""
    norms = np.asarray(norms, float)
    counts = np.zeros(norms.shape) if counts is None else np.asarray(counts, float)
    low, in_A, in_B = norms <= ZERO_ATOL, counts == counts.max(), counts == counts.min()
    return {"AA": bool(low[in_A].any()), "BB": bool(low[in_B].any()),
            "AB": bool(low[in_A | in_B].any())}


def cosines(g) -> dict | None:
    """With a sample-size axis (n_A, n, n_B or ratio) spanning a range: cos_Z_AA, _BB, _AB
    at its smallest and largest value for each combination of the other axes, each with
    ``at_floor`` (keys {pair}_{end}_floor), beside the ETF cosine −1/(K−1)
    (theory.etf_cosine). None otherwise."""
    axis = next((a for a in SAMPLE_AXES if a in g.axes and np.ptp(g.axes[a]) > 0), None)
    if axis is None or not g.done.any():
        return None
    x = np.asarray(g.axes[axis], float)
    lo, hi = int(np.argmin(x)), int(np.argmax(x))
    grid, ax = _spec.expand(g.spec), list(g.axes).index(axis)
    whole = grid.shape == g.shape  # a sub-grid (``sel``) does not know its cells' counts
    rows = []
    for where, idx in lines(g, axis):
        row = {"where": where, "small": x[lo], "large": x[hi]}
        for end, j in (("small", lo), ("large", hi)):
            cell = idx[:ax] + (j,) + idx[ax + 1:]
            n = grid.counts([np.ravel_multi_index(cell, g.shape)])[0] if whole else None
            row.update({f"{p}_{end}_floor": v
                        for p, v in at_floor(g["metrics.norm_z"][cell], n).items()})
        for pair in ("AA", "BB", "AB"):
            v = g[f"metrics.cos_Z_{pair}"][idx]
            row[f"{pair}_small"], row[f"{pair}_large"] = float(v[lo]), float(v[hi])
        e = g["theory.etf_cosine"][idx]
        e = e[np.isfinite(e)]
        row["etf"] = float(e[0]) if e.size else np.nan
        rows.append(row)
    return {"axis": axis, "rows": rows}


def curves(g) -> dict | None:
    """What a run of one axis shows: under λ = c/N (a c axis, or c fixed) with a
    sample-size axis, the cosines of Z along it (``cosines``: the angle study); otherwise
    the minority spread along the ``boundary`` axis. A dict kind ("angles" or "spread"),
    cosines, boundary; None when neither applies."""
    cos = cosines(g) if "c" in g.axes or "c" in g.spec.problem else None
    b = boundary(g)
    if cos is None and b["axis"] is None:
        return None
    return {"kind": "angles" if cos is not None else "spread", "cosines": cos, "boundary": b}
