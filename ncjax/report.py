"""Agreement figures of a loaded sweep (``ncjax report``): measured against predicted.

Small pure functions of a ``sweep.SweepGrid``, each returning a dict of numbers:
``agreement`` (measured minority collapse vs λ ≥ λ*), ``boundary`` (the measured crossing
of the minority spread through COLLAPSE_TOL along the run's λ-like or sample-size axis
vs the theory's), ``unconverged`` (cells by status), ``gap`` (certified duality gap),
``cosines`` (class-mean-logit cosines at the smallest and largest sample size vs the ETF);
``render`` turns them into markdown and ``write`` saves it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ncjax import analysis
from ncjax.metrics import COLLAPSE_TOL

FAR = 0.02          # "far from λ*": |λ/λ* − 1| > FAR
LAMBDA_AXES = ("lam", "c")
SAMPLE_AXES = ("n_A", "n", "n_B", "ratio")
MAX_LISTED = 20     # unconverged cells listed
MAX_ROWS = 40       # rows of the per-line tables


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
    for name in LAMBDA_AXES:
        if name in g.axes and g.axes[name].size > 1:
            return name, "lambda"
    for name in SAMPLE_AXES:
        if name in g.axes and g.axes[name].size > 1:
            return name, "sample"
    return None, None


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


def boundary(g) -> dict:
    """Per line along the λ-like axis (lam, else c; or, with neither, a sample-size axis)
    for every combination of the other axes: the measured crossing of
    metrics.minority_spread_Z through COLLAPSE_TOL (converged cells only) against the
    predicted one (λ*: theory.lam_star, or theory.c_star on a c axis; on a sample-size
    axis the sign change of theory.lam/theory.lam_star − 1, interpolated linearly).
    Returns axis, mode ("lambda", "sample" or None), lines (list of dicts), and over the
    lines with both crossings: count, max_dev (|measured/predicted − 1|), median_dev,
    worst (that line's dict)."""
    axis, mode = _axis_for_boundary(g)
    out = {"axis": axis, "mode": mode, "lines": [], "measured": 0, "max_dev": np.nan,
           "median_dev": np.nan, "worst": None}
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
        note = ("" if np.isfinite(est) else "not collapsed anywhere" if np.isfinite(lo)
                else "collapsed everywhere" if np.isfinite(hi) else "no converged cell")
        if not np.isfinite(pred):
            note += ("; " if note else "") + "no predicted crossing on the grid"
        out["lines"].append({"where": where, "measured": est, "predicted": pred,
                             "deviation": dev, "bracket": tuple(sorted((lo, hi))),
                             "rising": rising, "note": note})
    devs = np.array([ln["deviation"] for ln in out["lines"]], float)
    have = np.isfinite(devs)
    out["measured"] = int(have.sum())
    if have.any():
        a = np.abs(devs)
        out["max_dev"] = float(np.nanmax(a))
        out["median_dev"] = float(np.nanmedian(a))
        out["worst"] = out["lines"][int(np.nanargmax(a))]
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
        L += ["", f"| line | measured {b['axis']} | predicted | deviation | bracket | note |",
              "|---|---|---|---|---|---|"]
        for ln in b["lines"][:MAX_ROWS]:
            lo, hi = ln["bracket"]
            L.append(f"| {_where(ln['where'])} | {_f(ln['measured'])} | "
                     f"{_f(ln['predicted'])} | {_f(ln['deviation'], '+.4e')} | "
                     f"[{_f(lo)}, {_f(hi)}] | {ln['note']} |")
        if len(b["lines"]) > MAX_ROWS:
            L.append(f"\n({len(b['lines']) - MAX_ROWS} more lines not listed.)")
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
