"""Text made from the numbers of ``ncjax.analysis``, ``ncjax.diagram`` and ``ncjax.groups``:
the markdown report of a loaded sweep (``render``, ``write``: ``ncjax report``) and the
lines the command line prints (``solution``; ``show``; beside a figure ``phase``,
``groups``, ``curves``, ``cells``, ``trace``; ``slice_note``, ``trace_note``, ``headline``;
the remedies study ``remedies``, ``remedies_write``). Each returns a string (or a path).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ncjax import analysis, diagram
from ncjax.tolerances import COLLAPSE_TOL, FAR, GAP_TOL, ZERO_ATOL
from ncjax.validate import as_out_path, replacing

MAX_ROWS = 40       # rows of the per-line tables


def _f(v, fmt=".6g") -> str:
    return "—" if v is None or not np.isfinite(v) else format(v, fmt)


def _where(d: dict) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in d.items()) or "(the single line)"


def _values(d: dict) -> str:
    """Axis values of a cell, plain: ``k=v`` with 4 significant digits for floats."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in d.items())


def _interval(lo, hi) -> str:
    return f"[{lo:.6g}, {hi:.6g}]"


FLOOR_NOTE = (f"†: a vector of the pair has ||z_k|| <= {ZERO_ATOL:g} (analysis.at_floor): the "
              "cosine measures rounding, not a direction; —: a vector vanished, no cosine.")


def _cos(v, floor: bool, fmt="+.6f") -> str:
    """A cosine, marked † when computed between vectors at the floor (``FLOOR_NOTE``)."""
    return _f(v, fmt) + (" †" if floor and np.isfinite(v) else "")


def solution(r) -> str:
    """A readable report of one solved configuration (an ``ncjax.solve`` result: counts,
    λ's, status, objective, gap, metrics, theory, Z), as ``ncjax solve`` prints it."""
    m, t = r.metrics, r.theory
    K = r.counts.shape[-1]
    yes = lambda v: "yes" if v else "no"
    low = analysis.at_floor(m["norm_z"], r.counts)
    lines = [
        f"UFM  K={K}  N={r.counts.sum():g}  counts={np.array2string(r.counts, separator=',')}",
        f"     lam_W={r.lam_W:g}  lam_H={r.lam_H:g}  lam_b={r.lam_b:g} (half convention)"
        f"  lam=sqrt(lam_W lam_H)={t['lam']:.6g}  c=lam*N={t['c']:.6g}",
        f"status     {r.status} after {r.steps} steps, |grad| = {r.grad_norm:.2e}",
        f"objective  F = {r.objective:.10g}   convex P(Z,b) = {m['convex_objective']:.10g}",
        f"certified  F - F* <= {r.gap:.2e} (duality gap, float64)",
        f"NC1        {m['nc1']:.3e}   within-class spread {m['within_spread']:.3e}",
        f"minority   spread Z {m['minority_spread_Z']:.3e}  W {m['minority_spread_W']:.3e}"
        f"  H {m['minority_spread_H']:.3e}",
        f"           collapsed (measured) {yes(m['minority_collapsed'])}"
        f"   predicted {yes(t['minority_collapse'])}  (lam* = sqrt(n_B)/N = {t['lam_star']:.6g})",
        "cosines Z  " + "  ".join(f"{w} {_cos(m['cos_Z_' + k], low[k], '+.4f')}" for k, w in
                                  (("AA", "within A"), ("BB", "within B"), ("AB", "A-B")))
        + f"   (ETF {t['etf_cosine']:+.4f})" + ("\n  " + FLOOR_NOTE if any(low.values()) else ""),
        "Z (column k = W h_k):",
        np.array2string(r.Z, precision=3, suppress_small=True, max_line_width=120),
    ]
    return "\n".join(lines)


def show(s: dict, where) -> str:
    """``ncjax show`` of the run at ``where``, from ``SweepGrid.overview``."""
    lines = [f"run {where}: grid {' x '.join(map(str, s['shape']))} = {s['size']} configurations"]
    for name, (size, lo, hi) in s["axes"].items():
        lines.append(f"  axis {name:6s} {size:4d} values  {lo:g} .. {hi:g}")
    lines.append("  status " + ", ".join(f"{n} {c}" for n, c in s["status"].items()))
    if "phases" in s:  # of a solve's cells (``metrics.phase``)
        lines.append("  phase " + ", ".join(f"{n} {c}" for n, c in s["phases"].items()))
    if "collapse" in s:
        c = s["collapse"]
        cover = ("" if c["derived"] == c["solved"] else
                 f" (the theory's threshold covers {c['derived']} of them: its loss)")
        lines.append(f"  minority collapse measured in {c['measured']} of {c['solved']} solved "
                     f"cells, predicted in {c['predicted']}; they differ in {c['differ']}"
                     + cover)
        lo, hi = s["objective"]
        lines.append(f"  objective {lo:.6g} .. {hi:.6g}"
                     + (f"; max |grad| {s['max_grad']:.2e}" if s["max_grad"] is not None else ""))
        if "gap" in s:
            gap, rel = s["gap"]
            lines.append(f"  certified gap F - F* <= {gap:.2e} "
                         f"(relative {rel:.2e}) in every solved cell")
    return "\n".join(lines)


def slice_note(shown: dict, seeds: int = 1) -> str | None:
    """The notice that a figure shows one slice of the grid (None when it shows all);
    ``seeds`` > 1: the decision panel of a phase diagram takes their majority."""
    if not shown:
        return None
    return (f"plotting the slice {shown}"
            + (f" (spread panel; the decision panel takes the majority of {seeds} seeds)"
               if seeds > 1 else ""))


def phase(ph: dict) -> str:
    """The agreement of a phase diagram (``diagram.phase_map``): the scored fraction, the
    disagreeing categories and the listed disagreeing cells."""
    S = ph["seeds"]
    per_N = f" = {ph['c']:g}/N" if ph["c"] is not None else ""
    frac = ph["agree"] / ph["scored"] if ph["scored"] else float("nan")
    lines = [f"measured collapse agrees with lam* = sqrt(n_B)/N{per_N} in {frac:.1%} of the "
             f"{ph['scored']} solved cells farther than 2% from it"
             + (f" (majority of {S} seeds; the seeds disagree among themselves in "
                f"{ph['split']} cells)" if S > 1 else "")]
    for name, n in list(ph["counts"].items())[diagram.AGREE_COLLAPSED:]:
        if n and name in diagram.DECISION_NAMES[2:4]:
            lines.append(f"  {name}: {n} cells")
    for d in ph["listed"]:
        lines.append("  " + ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}: {v}"
                                      for k, v in d.items()))
    return "\n".join(lines)


def groups(t: dict) -> str:
    """The group thresholds of a "steps" run (``groups.thresholds``): one line per group,
    the Z = 0 line and one line per neighbouring pair (merge)."""
    c_axis = t["axis"] == "c"
    sym = "c" if c_axis else "lam"
    per_N = "" if c_axis else "/N"
    steps = "[" + ", ".join(f"[{k}, {v:g}]" for k, v in t["groups"]) + "]"
    ok = t["certified"]
    L = [f"group thresholds, profile steps {steps}, "
         f"N = {t['N']:g}: conjecture {sym}_g = {'sqrt(n_g)' if c_axis else 'sqrt(n_g)/N'}; "
         f"measured: group spread of Z <= {COLLAPSE_TOL:g} from there on "
         f"({int(ok.sum())} of {ok.size} cells certified: converged, gap <= {GAP_TOL:g})"]
    for r in t["rows"]:
        if r["K_g"] < 2:
            L.append(f"  n_g={r['n_g']:g} K_g=1 predicted=none (one class: nothing to collapse)")
            continue
        est, lo, hi, pred = r["measured"], r["lo"], r["hi"], r["predicted"]
        if np.isfinite(est):
            got = (f"measured={est:.6g} deviation={est / pred - 1:+.2%} "
                   f"bracket={_interval(lo, hi)}")
            if np.isfinite(r["zero"]):
                got += f" spread->0 at {r['zero']:.6g} ({r['zero'] / pred - 1:+.3%})"
        elif np.isfinite(hi):
            got = f"measured=below {hi:.6g} (collapsed at every certified point)"
        elif np.isfinite(lo):
            got = f"measured=above {lo:.6g} (not collapsed at the largest certified point)"
        else:
            got = "measured=none (no certified point)"
        L.append(f"  n_g={r['n_g']:g} K_g={r['K_g']} predicted={pred:.6g} {got}")

    z = t["zero"]
    exact = (f"; exact condition ||N G(pi)||_op{per_N} = {z['exact']:.6g}"
             if z["exact"] is not None else "")
    shared = (f"sqrt(n_max){per_N} = {z['shared']:.6g} (n_max shared by {z['K_max']} classes)"
              if z["shared"] is not None else
              f"n_max held by one class (sqrt(n_max){per_N} not claimed)")
    lo, hi = z["lo"], z["hi"]
    where = (f"from {sym} in {_interval(lo, hi)}" if np.isfinite(lo) and np.isfinite(hi)
             else "nowhere on the grid" if np.isfinite(lo) else "at every certified point")
    if np.isfinite(z["z0"]):
        where += f", max_k ||z_k|| -> 0 at {z['z0']:.6g}"
    L.append(f"  Z = 0 measured {where}; {shared}{exact}")

    for m in t["merges"]:
        pair = f"n_g={m['pair'][0]:g} and n_g={m['pair'][1]:g}"
        if np.isfinite(m["measured"]):
            L.append(f"  merge {pair}: one cluster from {sym}={m['measured']:.6g} "
                     f"bracket={_interval(m['lo'], m['hi'])} until Z = 0")
        elif np.isfinite(m["hi"]):
            L.append(f"  merge {pair}: one cluster at every certified point with Z != 0")
        else:
            L.append(f"  merge {pair}: apart wherever Z != 0")
    return "\n".join(L)


def curves(cv: dict) -> str:
    """Per line of a one-axis run (``analysis.curves``): the cosines at its two ends
    against the ETF (angles), or the measured crossing against the theory's (spread)."""
    if cv["kind"] == "angles":
        cos = cv["cosines"]
        axis = cos["axis"]
        labels = [analysis.line_label(r["where"]) for r in cos["rows"]]
        return "\n".join(
            f"{lab}: {axis} {r['small']:g} -> {r['large']:g}: "
            + "  ".join(f"cos {k} {_cos(r[k + '_small'], r[k + '_small_floor'], '+.5f')} -> "
                        f"{_cos(r[k + '_large'], r[k + '_large_floor'], '+.5f')}"
                        for k in ("AA", "BB", "AB")) + f"  (ETF {r['etf']:+.5f})"
            for r, lab in zip(cos["rows"], labels))
    b = cv["boundary"]
    axis = b["axis"]
    labels = [analysis.line_label(ln["where"]) for ln in b["lines"]]
    return "\n".join(
        f"{lab}: measured {axis} {ln['measured']:.6g}, theory {ln['predicted']:.6g}"
        f" ({ln['deviation']:+.3%})" + (f"  {ln['note']}" if ln["note"] else "")
        for ln, lab in zip(b["lines"], labels))


def cell(c: dict) -> str:
    """One chosen cell (an ``analysis.cells`` entry): its axis values, N, λ/λ*, the
    measured and the predicted decision."""
    return (f"cell {c['index']}: {_values(c['values'])}"
            + f" | N={c['N']:g}, lam/lam*={c['ratio']:.3g}; measured {c['measured']}, "
              f"theory {c['theory']}")


def cells(cs: list[dict]) -> str:
    """One line per chosen cell: ``cell`` with its spread, max|Z| and status."""
    return "\n".join(cell(c) + f" | spread {c['spread']:.3g}, max|Z| "
                               f"{np.abs(c['Z']).max():.3g}, status {c['status']}"
                     for c in cs)


def trace_note(solver: dict) -> str | None:
    """The notice that a convex run (``solver``: its [solver] table) is traced by UFM's."""
    if solver.get("method", "ufm") != "convex":
        return None
    return ("this run used the convex method, which has no path in (W, H, b); tracing the "
            f"UFM solver ({solver.get('optimizer', 'lbfgs')}) from each cell's random start")


def trace(traced) -> str:
    """One line per re-solved cell (a ``plot.Retrace``): F at the start and after the
    steps beside the stored objective, NC1 (m ≥ 2) and the minority spread."""
    lines = []
    for c, F, nc1, s in zip(traced.cells, traced.objective, traced.nc1, traced.spread):
        lines.append(
            f"cell {c['index']} ({_values(c['values'])}, lam/lam*={c['ratio']:.3g}): "
            f"F {F[0]:.8g} -> {F[-1]:.10g} after {traced.steps} steps (stored objective "
            f"{c['objective']:.10g}, {c['status']})"
            + (f"; NC1 {nc1[0]:.3g} -> {nc1[-1]:.3g}" if traced.m > 1 else "")
            + f"; minority spread {s[0]:.3g} -> {s[-1]:.3g}")
    return "\n".join(lines)


def headline(a: dict) -> str:
    """One line: how often the measured collapse matches the theory (``analysis.agreement``)."""
    return (f"minority collapse matches the theory in {a['agree']} of {a['solved']} solved "
            f"cells ({_f(a['fraction'], '.2%')}); in {a['far_agree']} of {a['far']} cells "
            f"farther than {FAR:.0%} from lam* ({_f(a['far_fraction'], '.2%')})")


def render(g, title: str = "sweep") -> str:
    """The markdown report of a loaded grid."""
    a, b, u = analysis.agreement(g), analysis.boundary(g), analysis.unconverged(g)
    gp, c = analysis.gap(g), analysis.cosines(g)
    L = [f"# ncjax report: {title}", "",
         f"Grid {' x '.join(map(str, g.shape))} = {g.status.size} cells; axes: "
         + ", ".join(f"{k} ({v.size} values, {v.min():g} .. {v.max():g})"
                     for k, v in g.axes.items()) + "." + "".join(
             " Cells by phase (`metrics.phase`): " + ", ".join(f"{n} {c}" for n, c in p.items())
             + "." for p in [g.overview().get("phases")] if p), "",
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
    ph = diagram.phase_map(g)
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
                L.append(f"| {_where(r['where'])} | {r[end]:g} | " + " | ".join(
                    _cos(r[f"{k}_{end}"], r[f"{k}_{end}_floor"]) for k in ("AA", "BB", "AB"))
                         + f" | {_f(r['etf'], '+.6f')} |")
        if len(c["rows"]) > MAX_ROWS:
            L.append(f"\n({len(c['rows']) - MAX_ROWS} more lines not listed.)")
        L += ["", FLOOR_NOTE]
    L += ["", "**Headline:** " + headline(a), ""]
    return "\n".join(L)


def remedies(sts: list, title: str = "remedies") -> str:
    """The markdown report of a remedies study (``remedies.studies``): per run the per-cell
    agreement of metrics.minority_collapsed with theory.loss_minority_collapse (λ ≥ μ_B),
    and per line (ratio, strength) μ_B against the measured thresholds."""
    L = [f"# ncjax report: {title}", "",
         "Per run, per line along lam: the theory's minority threshold mu_B = omega_B "
         "(1 - alpha) Delta_B sqrt(n_B)/N (`theory.loss_lam_star`); the measured one, where "
         f"the minority spread of Z crosses {COLLAPSE_TOL:g} (`analysis.collapse_threshold`, "
         "its bracket on the grid) and where it reaches 0 (`analysis.spread_root`); where "
         "the minority's mean logits vanish (`metrics.minority_vanished`: the bracket) and "
         "where Z = 0 (bracket, beside the exact `theory.zero_threshold`); cos_Z_AB at "
         f"lam_cos. Cells: certified (converged, gap <= {GAP_TOL:g}).", ""]
    for st in sts:
        a = st["agreement"]
        rows = st["rows"]
        inb = sum(r["in_bracket"] for r in rows)
        rd = np.abs([r["root_deviation"] for r in rows])
        L += [f"## {st['name']}: {st['loss']} over {st['axis']}, lam_b = {st['lam_b']:g}", "",
              f"- cells {a['cells']}, certified {a['certified']}; measured minority collapse "
              f"= (lam >= mu_B) in {a['agree']} of {a['scored']}, in {a['far_agree']} of "
              f"{a['far']} farther than {FAR:.0%} from mu_B",
              f"- mu_B inside the sharp bracket (spread of Z > 1e-6 at its lower end, <= 1e-6 "
              f"from its upper end on) on {inb} of {len(rows)} lines; spread -> 0 "
              f"found on {int(np.isfinite(rd).sum())} lines, max |deviation| "
              f"{_f(np.nanmax(rd) if np.isfinite(rd).any() else np.nan, '.3%')}",
              "- lam_cos: " + ", ".join(f"ratio {r:g}: {v:.4g}"
                                        for r, v in st["lam_cos"].items()), "",
              f"| ratio | {st['axis']} | mu_B | measured | bracket | spread -> 0 | deviation "
              "| vanishes in | Z = 0 in | exact Z = 0 | cos AB |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r, c in zip(rows, st["cos_at"].reshape(-1)):
            L.append(f"| {r['ratio']:g} | {r['strength']:g} | {_f(r['predicted'])} | "
                     f"{_f(r['measured'])} | [{_f(r['bracket'][0])}, {_f(r['bracket'][1])}] | "
                     f"{_f(r['root'])} | {_f(r['root_deviation'], '+.3%')} | "
                     f"[{_f(r['vanish_bracket'][0], '.4g')}, {_f(r['vanish_bracket'][1], '.4g')}]"
                     f" | [{_f(r['zero_bracket'][0], '.4g')}, {_f(r['zero_bracket'][1], '.4g')}]"
                     f" | {_f(r['zero_threshold'])} | {_f(c, '+.4f')} |")
        L.append("")
    return "\n".join(L)


def remedies_write(sts: list, path, title: str) -> Path:
    """Write ``remedies(sts, title)`` to ``path`` atomically; returns the path."""
    path = as_out_path(path)
    with replacing(path) as tmp:
        tmp.write_text(remedies(sts, title), encoding="utf-8")
    return path


def remedies_headline(sts: list) -> str:
    """One line: the per-cell agreement and the lines with μ_B inside the bracket."""
    a = [st["agreement"] for st in sts]
    lines = [r for st in sts for r in st["rows"]]
    return (f"remedies: measured minority collapse = (lam >= mu_B) in "
            f"{sum(x['agree'] for x in a)} of {sum(x['scored'] for x in a)} certified cells; "
            f"mu_B inside the sharp measured bracket on {sum(r['in_bracket'] for r in lines)} of "
            f"{len(lines)} lines")


def write(g, path, title: str | None = None) -> Path:
    """Write ``render(g)`` to ``path`` (checked first by ``validate.as_out_path``),
    atomically: an interrupted write leaves the file as it was. Returns the path."""
    path = as_out_path(path)
    text = render(g, title or path.parent.name)
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
