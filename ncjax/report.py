"""Agreement figures of a loaded sweep (``ncjax report``): measured against predicted.

Small pure functions of a ``sweep.SweepGrid``, each returning a dict of numbers:
``agreement`` (measured minority collapse vs λ ≥ λ*), ``boundary`` (the measured crossing
of the minority spread through COLLAPSE_TOL along the run's λ-like or sample-size axis
vs the theory's), ``unconverged`` (cells by status), ``gap`` (certified duality gap),
``cosines`` (class-mean-logit cosines at the smallest and largest sample size vs the ETF),
``phase_map`` (a run over two of lam, c, n_A, n_B, n, ratio: the per-cell decision, majority
over seeds, against the theory's); ``render`` turns them into markdown and ``write`` saves it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ncjax import analysis
from ncjax.validate import InputError
from ncjax.tolerances import COLLAPSE_TOL, FAR

LAMBDA_AXES = ("lam", "c")
SAMPLE_AXES = ("n_A", "n", "n_B", "ratio")
MAX_LISTED = 20     # unconverged cells listed
MAX_ROWS = 40       # rows of the per-line tables
# Axes a phase diagram is drawn over: those that move λ/λ* (lam_b, K's and seed do not).
PHASE_AXES = ("lam", "c", "n_A", "n_B", "n", "ratio")


def lines(g, axis: str):
    """Yield (other-axis values dict, index tuple selecting the line along ``axis``)."""
    names = list(g.axes)
    ax = names.index(axis)
    others = [n for n in names if n != axis]
    for idx in np.ndindex(*[g.axes[n].size for n in others]):
        full = list(idx)
        full.insert(ax, slice(None))
        yield {n: g.axes[n][i].item() for n, i in zip(others, idx)}, tuple(full)


def agreement(g) -> dict:
    """Measured minority collapse (metrics.minority_collapsed) vs the theory's
    (theory.minority_collapse = λ ≥ λ*), over the solved cells and over those with
    |λ/λ* − 1| > FAR."""
    if not g.done.any():
        return {"solved": 0, "agree": 0, "fraction": np.nan, "far": 0, "far_agree": 0,
                "far_fraction": np.nan}
    m, t = g["metrics.minority_collapsed"], g["theory.minority_collapse"]
    solved = g.done & np.isfinite(m)
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
        hits = [sum(np.isfinite(_sign_change(np.sort(np.asarray(g.axes[a], float)),
                                             f[idx][order[a]]))
                    for _, idx in lines(g, a)) for a in cands]
        return cands[int(np.argmax(hits))], "sample"
    return (cands[0], "sample") if cands else (None, None)


def _sign_change(x, f):
    """First x where f (NaN ignored) changes sign, by linear interpolation; NaN if none."""
    ok = np.isfinite(f)
    x, f = x[ok], f[ok]
    s = np.sign(f)
    for i in range(x.size - 1):
        if s[i] == 0:
            return float(x[i])
        if s[i] * s[i + 1] < 0:
            return float(x[i] + f[i] / (f[i] - f[i + 1]) * (x[i + 1] - x[i]))
    return float(x[-1]) if x.size and s[-1] == 0 else np.nan


def _crossing(x, spread, rising: bool):
    """``analysis.collapse_threshold`` along increasing x (collapse as x rises), or, when
    the collapse comes as x falls (``rising`` False), along 1/x mapped back."""
    if rising:
        return analysis.collapse_threshold(x, spread, COLLAPSE_TOL)
    est, lo, hi = analysis.collapse_threshold(1 / x[::-1], spread[::-1], COLLAPSE_TOL)
    return 1 / est, 1 / lo, 1 / hi  # lo/hi swap meaning: bracket in x is (hi, lo) sorted


def _root(x, spread, rising: bool):
    """``analysis.spread_root`` along increasing x, or (``rising`` False) along 1/x."""
    if rising:
        return analysis.spread_root(x, spread, COLLAPSE_TOL)
    return 1 / analysis.spread_root(1 / x[::-1], spread[::-1], COLLAPSE_TOL)


def boundary(g) -> dict:
    """Per line along the λ-like axis (lam, else c; or, with neither, a sample-size axis)
    for every combination of the other axes: the measured crossing of
    metrics.minority_spread_Z through COLLAPSE_TOL (converged cells only) against the
    predicted one (λ*: theory.lam_star, or theory.c_star on a c axis; on a sample-size
    axis the sign change of theory.lam/theory.lam_star − 1, interpolated linearly).
    Each line also carries ``zero``: where the spread reaches 0 (``analysis.spread_root``,
    second order in the grid step, where the tolerance crossing is first order) and its
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
            pred = _sign_change(x, fl)
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


def cosines(g) -> dict | None:
    """With a sample-size axis (n_A, n, n_B or ratio) spanning a range: cos_Z_AA, _BB, _AB
    at its smallest and largest value for each combination of the other axes, beside the
    ETF cosine −1/(K−1) (theory.etf_cosine). None otherwise."""
    axis = next((a for a in SAMPLE_AXES if a in g.axes and np.ptp(g.axes[a]) > 0), None)
    if axis is None or not g.done.any():
        return None
    x = np.asarray(g.axes[axis], float)
    lo, hi = int(np.argmin(x)), int(np.argmax(x))
    rows = []
    for where, idx in lines(g, axis):
        row = {"where": where, "small": x[lo], "large": x[hi]}
        for pair in ("AA", "BB", "AB"):
            v = g[f"metrics.cos_Z_{pair}"][idx]
            row[f"{pair}_small"], row[f"{pair}_large"] = float(v[lo]), float(v[hi])
        e = g["theory.etf_cosine"][idx]
        e = e[np.isfinite(e)]
        row["etf"] = float(e[0]) if e.size else np.nan
        rows.append(row)
    return {"axis": axis, "rows": rows}


def phase_axes(g):
    """(x, y): the first two axes of the run, in file order, among PHASE_AXES with more
    than one value; None if there are fewer than two."""
    names = [a for a in g.axes if a in PHASE_AXES and g.axes[a].size > 1]
    return (names[0], names[1]) if len(names) >= 2 else None


def phase_map(g) -> dict | None:
    """A run over two of PHASE_AXES as a phase diagram: per cell (rows y, columns x), the
    measured minority-collapse decision (majority over the seed axis, converged solves
    only) against the theory's (λ ≥ λ*), ``analysis.decision_categories`` with "near"
    meaning |λ/λ* − 1| ≤ FAR. Other axes except seed are sliced at their first value.
    None for runs with fewer than two such axes or no solved cell.

    Returns a dict: x, y (axis names), xv (nx,), yv (ny,), sliced (axis → value), seeds
    (S), spread (ny, nx) minority spread of Z of the first seed (NaN unless converged),
    frac (ny, nx) fraction of converged seeds collapsed (NaN: none), zero_frac (ny, nx)
    fraction whose Z counts as 0 (metrics.zero_solution), n_conv (ny, nx),
    predicted (ny, nx) bool, ratio (ny, nx) λ/λ*, star (ny, nx) log(λ/λ*) (its zero
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
    lam, lam_star = theory["lam"], theory["lam_star"]
    lam_zero = np.max(theory["group_threshold"], axis=-1)  # sqrt(n_max)/N, inf: not shared
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = lam / lam_star
        star = np.log(ratio)
        zero = np.where(np.isfinite(lam_zero), np.log(lam / lam_zero), np.nan)
    near = np.abs(ratio - 1) <= FAR
    predicted = theory["minority_collapse"] == 1
    category = analysis.decision_categories(frac, predicted, near)
    y_star = y_zero = None
    if y in LAMBDA_AXES:
        unit = 1.0 if y == "lam" else np.asarray(g.axes[y], float)[:, None] / lam  # N
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            y_star = np.nanmax(lam_star * unit, axis=0)
            y_zero = np.nanmax(np.where(np.isfinite(lam_zero), lam_zero * unit, np.nan),
                               axis=0)
    scored = np.isin(category, (analysis.AGREE_COLLAPSED, analysis.AGREE_NOT,
                                analysis.FALSE_COLLAPSE, analysis.MISSED_COLLAPSE))
    agree = np.isin(category, (analysis.AGREE_COLLAPSED, analysis.AGREE_NOT))
    xv, yv = np.asarray(g.axes[x]), np.asarray(g.axes[y])
    listed = [{x: xv[j].item(), y: yv[i].item(), "lam/lam*": float(ratio[i, j]),
               "collapsed seeds": f"{int(np.nansum(collapsed[i, j]))} of {int(conv[i, j].sum())}",
               "category": analysis.DECISION_NAMES[category[i, j]]}
              for i, j in zip(*np.nonzero(scored & ~agree))][:MAX_LISTED]
    return {"x": x, "y": y, "xv": xv, "yv": yv, "sliced": sliced, "seeds": seeds,
            "spread": spread, "frac": frac, "zero_frac": zero_frac, "n_conv": conv.sum(axis=2),
            "predicted": predicted, "ratio": ratio, "star": star,
            "zero": zero if np.isfinite(zero).any() else None,
            "y_star": y_star, "y_zero": y_zero if y_zero is not None and np.isfinite(y_zero).any()
            else None, "category": category,
            "counts": {name: int(np.sum(category == code))
                       for code, name in enumerate(analysis.DECISION_NAMES)},
            "split": int(np.sum((frac > 0) & (frac < 1))),
            "scored": int(scored.sum()), "agree": int((scored & agree).sum()), "listed": listed}


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


def _f(v, fmt=".6g") -> str:
    return "—" if v is None or not np.isfinite(v) else format(v, fmt)


def _where(d: dict) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in d.items()) or "(the single line)"


def headline(a: dict) -> str:
    return (f"minority collapse matches the theory in {a['agree']} of {a['solved']} solved "
            f"cells ({_f(a['fraction'], '.2%')}); in {a['far_agree']} of {a['far']} cells "
            f"farther than {FAR:.0%} from lam* ({_f(a['far_fraction'], '.2%')})")


def render(g, title: str = "sweep") -> str:
    """The markdown report of a loaded grid."""
    a, b, u, gp, c = agreement(g), boundary(g), unconverged(g), gap(g), cosines(g)
    L = [f"# ncjax report: {title}", "",
         f"Grid {' x '.join(map(str, g.shape))} = {g.status.size} cells; axes: "
         + ", ".join(f"{k} ({v.size} values, {v.min():g} .. {v.max():g})"
                     for k, v in g.axes.items()) + ".", "",
         "## Agreement with the theory", "",
         f"Measured `metrics.minority_collapsed` (minority spread of Z <= {COLLAPSE_TOL:g}) "
         "against the prediction `theory.minority_collapse` (lam >= lam* = sqrt(n_B)/N).", "",
         f"- all solved cells: {a['agree']} of {a['solved']} agree, "
         f"fraction {_f(a['fraction'], '.6f')}",
         f"- cells with |lam/lam* - 1| > {FAR:g}: {a['far_agree']} of {a['far']} agree, "
         f"fraction {_f(a['far_fraction'], '.6f')}", "",
         "## Measured boundary against lam*", ""]
    if b["mode"] is None:
        L.append(f"No boundary is measured for this run's axes ({', '.join(g.axes)}): it "
                 "needs a lam or c axis, or a sample-size axis (n_A, n, n_B, ratio).")
    else:
        what = ("lam* (theory.lam_star" + (", as c* = lam* N" if b["axis"] == "c" else "")
                + "; constant along the axis)" if b["mode"] == "lambda" else
                "the predicted crossing: where lam/lam* - 1 changes sign along the axis "
                "(linear interpolation)")
        L += [f"Along `{b['axis']}`, per line of the other axes: where the minority spread "
              f"of Z crosses {COLLAPSE_TOL:g} (`analysis.collapse_threshold`, converged "
              f"cells), against {what}.", "",
              f"- lines: {len(b['lines'])}, with both crossings on the grid: {b['measured']}",
              f"- max relative deviation |measured/predicted - 1|: {_f(b['max_dev'], '.6e')}",
              f"- median relative deviation: {_f(b['median_dev'], '.6e')}"]
        if b["worst"] is not None:
            w = b["worst"]
            L.append(f"- largest at {_where(w['where'])}: measured {_f(w['measured'])}, "
                     f"predicted {_f(w['predicted'])}")
        L += [f"- where the spread reaches 0 (`analysis.spread_root`: root of the quadratic "
              f"through the last 3 points above {COLLAPSE_TOL:g}, second order in the grid "
              f"step), found on {b['zeros']} lines: max relative deviation "
              f"{_f(b['max_dev_zero'], '.6e')}, median {_f(b['median_dev_zero'], '.6e')}"]
        L += ["", f"| line | measured {b['axis']} | predicted | deviation | bracket | "
              "spread -> 0 at | deviation | note |", "|---|---|---|---|---|---|---|---|"]
        for ln in b["lines"][:MAX_ROWS]:
            lo, hi = ln["bracket"]
            L.append(f"| {_where(ln['where'])} | {_f(ln['measured'])} | "
                     f"{_f(ln['predicted'])} | {_f(ln['deviation'], '+.4e')} | "
                     f"[{_f(lo)}, {_f(hi)}] | {_f(ln['zero'])} | "
                     f"{_f(ln['zero_deviation'], '+.4e')} | {ln['note']} |")
        if len(b["lines"]) > MAX_ROWS:
            L.append(f"\n({len(b['lines']) - MAX_ROWS} more lines not listed.)")
    ph = phase_map(g)
    if ph is not None:
        L += ["", f"## Per-cell decision over ({ph['x']}, {ph['y']})", "",
              f"{ph['yv'].size} x {ph['xv'].size} cells ({ph['y']} x {ph['x']})"
              + (f", sliced at {_where(ph['sliced'])}" if ph["sliced"] else "")
              + f"; {ph['seeds']} seed(s) per cell. Measured decision: the minority collapsed "
              "in more than half of the cell's converged solves; theory: lam >= lam*; cells "
              f"with |lam/lam* - 1| <= {FAR:g} are near the boundary and not scored.", ""]
        L += [f"- {name}: {n}" for name, n in ph["counts"].items()]
        L += [f"- scored cells (farther than {FAR:g} from lam*): {ph['agree']} of "
              f"{ph['scored']} agree, fraction "
              f"{_f(ph['agree'] / ph['scored'] if ph['scored'] else np.nan, '.6f')}",
              f"- cells whose seeds disagree with each other: {ph['split']}"]
        if ph["listed"]:
            L += ["", "Disagreeing cells:", ""]
            L += ["- " + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}: {v}"
                                   for k, v in d.items()) for d in ph["listed"]]
    L += ["", "## Cells that did not converge", "",
          f"- converged: {u['converged']} of {u['total']}; missing (not solved yet): "
          f"{u['missing']}",
          f"- not converged: {u['count']}"
          + ("".join(f"; {s} {n}" for s, n in u["by_status"].items()))]
    if u["listed"]:
        L += ["", f"First {len(u['listed'])}:", ""]
        L += [f"- {d['status']}: " + _where({k: v for k, v in d.items() if k != "status"})
              for d in u["listed"]]
    L += ["", "## Certified gap", ""]
    if gp is None:
        L.append("No certified gap in this run (no `gap` field).")
    else:
        L += [f"- max absolute gap F - F*: {gp['max_abs']:.6e} (at {_where(gp['where'])})",
              f"- max relative gap (gap / max(1, |F|)): {gp['max_rel']:.6e}",
              f"- over {gp['cells']} solved cells"]
    L += ["", "## Asymptotic cosines", ""]
    if c is None:
        L.append("No sample-size axis (n_A, n, n_B, ratio) spanning a range in this run.")
    else:
        ax = c["axis"]
        L += [f"Mean cosines between class-mean logits z_k at the smallest and largest "
              f"`{ax}`, against the simplex ETF -1/(K-1).", "",
              f"| line | {ax} | cos AA | cos BB | cos AB | ETF |", "|---|---|---|---|---|---|"]
        for r in c["rows"][:MAX_ROWS]:
            for end in ("small", "large"):
                L.append(f"| {_where(r['where'])} | {r[end]:g} | {_f(r['AA_' + end], '+.6f')} "
                         f"| {_f(r['BB_' + end], '+.6f')} | {_f(r['AB_' + end], '+.6f')} "
                         f"| {_f(r['etf'], '+.6f')} |")
        if len(c["rows"]) > MAX_ROWS:
            L.append(f"\n({len(c['rows']) - MAX_ROWS} more lines not listed.)")
    L += ["", "**Headline:** " + headline(a), ""]
    return "\n".join(L)


def write(g, path, title: str | None = None) -> Path:
    """Write ``render(g)`` to ``path``; returns the path."""
    path = Path(path)
    path.write_text(render(g, title or path.parent.name), encoding="utf-8")
    return path
