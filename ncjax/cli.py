"""Command line: ``ncjax solve …`` (also ``python -m ncjax``).

Bad input ends with one line ``ncjax: error: …`` on stderr and exit status 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings

import numpy as np

from ncjax.tolerances import GAP_TOL
from ncjax.validate import InputError, NCJaxWarning


def parse_counts(text: str) -> list[float]:
    """'500,500,100' or '2x500,3x100' (k copies of a count) -> [500.0, 500.0, 100.0, …]."""
    out = []
    for item in text.split(","):
        item = item.strip()
        reps, _, value = item.rpartition("x")
        try:
            k = int(reps) if reps else 1
            n = float(value)
        except ValueError:
            raise InputError(f"--counts: cannot read {item!r}; give numbers like "
                             "500,500,100 or 2x500,3x100") from None
        if k < 1:
            raise InputError(f"--counts: a repeat must be >= 1, got {item!r}")
        out += [n] * k
    return out


def _jsonable(x):
    """numpy → plain Python; NaN/inf → None so the output is strict JSON."""
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def result_json(r) -> dict:
    """The CLI's JSON object for one solved configuration."""
    return _jsonable({
        "objective": r.objective, "gap": r.gap, "status": str(r.status), "converged": bool(r.converged),
        "steps": int(r.steps), "grad_norm": r.grad_norm, "Z": r.Z, "b": r.b,
        "metrics": r.metrics, "theory": r.theory,
        "config": {"counts": r.counts, "lam_W": r.lam_W, "lam_H": r.lam_H, "lam_b": r.lam_b,
                   "seed": r.seed, "convention": "half"},
    })


def summary(r) -> str:
    """A readable report of one solved configuration."""
    m, t = r.metrics, r.theory
    K = r.counts.shape[-1]
    yes = lambda v: "yes" if v else "no"
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
        f"cosines Z  within A {m['cos_Z_AA']:+.4f}  within B {m['cos_Z_BB']:+.4f}"
        f"  A-B {m['cos_Z_AB']:+.4f}   (ETF {t['etf_cosine']:+.4f})",
        "Z (column k = W h_k):",
        np.array2string(r.Z, precision=3, suppress_small=True, max_line_width=120),
    ]
    return "\n".join(lines)


def _solve(args) -> int:
    from ncjax.solver import solve  # imported here so --help stays fast

    counts = parse_counts(args.counts)
    r = solve(counts, args.lam_W, args.lam_H, args.lam_b, d=args.d, m=args.m, seed=args.seed,
              convention=args.convention, optimizer=args.optimizer, max_steps=args.max_steps,
              gtol=args.gtol, dtype="float64" if args.x64 else "float32")
    print(json.dumps(result_json(r)) if args.json else summary(r))
    return 0


def _distributed(args) -> bool:
    """Join JAX's multi-process runtime when asked (--coordinator, or --distributed for
    the cluster's own detection: SLURM, Open MPI, …); True for the process that reports."""
    if not (args.coordinator or args.distributed):
        return True
    import jax

    if args.coordinator and (args.num_processes is None or args.process_id is None):
        raise InputError("--coordinator needs --num-processes and --process-id")
    jax.distributed.initialize(coordinator_address=args.coordinator,
                               num_processes=args.num_processes, process_id=args.process_id)
    return jax.process_index() == 0


def _sweep(args) -> int:
    from ncjax import sweep

    primary = _distributed(args)
    g = sweep.run(args.spec, args.out, chunk_size=args.chunk_size)
    if primary:
        print(_show_text(g, args.out))
    return 0


def _resume(args) -> int:
    from ncjax import sweep

    primary = _distributed(args)
    g = sweep.resume(args.dir)
    if primary:
        print(_show_text(g, args.dir))
    return 0


def _add_distributed(parser) -> None:
    g = parser.add_argument_group(
        "multi-host", "run one process per host (or per GPU), each with the same arguments "
        "and a run directory on a file system they share")
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="address of process 0 (jax.distributed.initialize)")
    g.add_argument("--num-processes", dest="num_processes", type=int, default=None)
    g.add_argument("--process-id", dest="process_id", type=int, default=None)
    g.add_argument("--distributed", action="store_true",
                   help="jax.distributed.initialize() with the cluster's own detection "
                        "(SLURM, Open MPI, ...) instead of --coordinator")


def _show(args) -> int:
    from ncjax import sweep

    print(_show_text(sweep.load(args.dir), args.dir))
    return 0


def _show_text(g, where) -> str:
    """Axes, progress, status counts and headline metrics of a loaded sweep."""
    lines = [f"run {where}: grid {' x '.join(map(str, g.shape))} = {g.status.size} configurations"]
    for name, vals in g.axes.items():
        lines.append(f"  axis {name:6s} {vals.size:4d} values  {vals.min():g} .. {vals.max():g}")
    names, counts = np.unique(g.status, return_counts=True)
    lines.append("  status " + ", ".join(f"{n} {c}" for n, c in zip(names, counts)))
    if g.done.any():
        m, t = g["metrics.minority_collapsed"], g["theory.minority_collapse"]
        ok = np.isfinite(m)
        lines.append(f"  minority collapse measured in {int(np.nansum(m))} of {ok.sum()} solved "
                     f"cells, predicted in {int(np.sum(t[ok] == 1))}; they differ in "
                     f"{int(np.sum(m[ok] != t[ok]))}")
        grad = g["grad_norm"][np.isfinite(g["grad_norm"])]
        lines.append(f"  objective {np.nanmin(g['objective']):.6g} .. "
                     f"{np.nanmax(g['objective']):.6g}"
                     + (f"; max |grad| {grad.max():.2e}" if grad.size else ""))
        if "gap" in g.fields:
            rel = g["gap"] / np.maximum(1.0, np.abs(g["objective"]))
            lines.append(f"  certified gap F - F* <= {np.nanmax(g['gap']):.2e} "
                         f"(relative {np.nanmax(rel):.2e}) in every solved cell")
    return "\n".join(lines)


# Axis labels of the figures (symbols and units).
AXIS_LABELS = {"n_A": r"majority class size $n_A$ (samples)",
               "n_B": r"minority class size $n_B$ (samples)",
               "n": r"class size $n$ (samples)", "ratio": r"imbalance ratio $n_A/n_B$",
               "lam": r"$\lambda=\sqrt{\lambda_W\lambda_H}$", "c": r"$c=\lambda N$",
               "lam_b": r"$\lambda_b$", "seed": "seed"}


def _is_log_axis(v) -> bool:
    """Whether axis values are evenly spaced in log (a {log = …} axis), not linearly."""
    v = np.sort(np.asarray(v, float))
    if v.size < 3 or v[0] <= 0:
        return False
    dl, d = np.diff(np.log(v)), np.diff(v)
    return bool(np.allclose(dl, dl[0], rtol=1e-6) and not np.allclose(d, d[0], rtol=1e-6))


def _chosen_cells(args, g) -> list[int]:
    """Flat indices from --cells I,J,… and every --cell (an index, or axis=value,… picking
    the nearest grid cell), in the order given."""
    from ncjax import report

    out = []
    for text in ([args.cells] if args.cells else []):
        for item in text.split(","):
            try:
                out.append(int(item))
            except ValueError:
                raise InputError(f"--cells: {item!r} is not a flat cell index") from None
    for text in args.cell or []:
        if "=" not in text:
            try:
                out.append(int(text))
                continue
            except ValueError:
                raise InputError(f"--cell: give a flat index or axis=value,..., got {text!r}") from None
        where = {}
        for item in text.split(","):
            k, _, v = item.partition("=")
            try:
                where[k.strip()] = float(v)
            except ValueError:
                raise InputError(f"--cell: cannot read {item!r} as axis=value") from None
        out.append(report.cell_index(g, where))
    for i in out:
        if not 0 <= i < g.status.size:
            raise InputError(f"cell {i} is not in this grid of {g.status.size} cells")
    return out


def _plot(args) -> int:
    """Draw a sweep: with --cell/--cells the heatmaps of Z of those cells (``_plot_cells``),
    or with --trace their objective and NC1 against steps (``_plot_trace``); otherwise for
    a "steps" profile with a lam or c axis the group thresholds (``_plot_groups``), for a
    run over two of lam, c, n_A, n_B, n, ratio the phase diagram with the per-cell
    decision (``_plot_phase``), and the one-axis curves for the rest (``_plot_curves``)."""
    from ncjax import report, sweep

    g = sweep.load(args.dir)
    cells = _chosen_cells(args, g)
    if args.trace is not None:
        if not cells:
            raise InputError("--trace needs the cells to trace: --cell or --cells")
        return _plot_trace(args, g, cells)
    if cells:
        return _plot_cells(args, g, cells)
    if g.spec.problem.get("profile") == "steps" and {"lam", "c"} & set(g.axes):
        return _plot_groups(args, g)
    ph = report.phase_map(g)
    if ph is None:
        return _plot_curves(args, g)
    return _plot_phase(args, g, ph)


def _plot_phase(args, g, ph) -> int:
    """A run over two axes (``report.phase_map``): the minority spread of the first seed
    (log colour) with the measured (majority) and the theory's boundaries, beside the
    per-cell decision against the theory; prints the agreement."""
    from pathlib import Path

    import matplotlib.pyplot as plt

    from ncjax import plot
    from ncjax.analysis import AGREE_COLLAPSED, DECISION_NAMES

    x, y, S = ph["x"], ph["y"], ph["seeds"]
    shown = dict(ph["sliced"])
    if "seed" in g.axes:
        shown["seed"] = g.axes["seed"][0].item()
    if shown:
        print(f"ncjax: plotting the slice {shown}"
              + (f" (spread panel; the decision panel takes the majority of {S} seeds)"
                 if S > 1 else ""), file=sys.stderr)
    p = g.spec.problem
    c = p.get("c")
    per_N = f" = {c:g}/N" if c is not None else ""
    if y == "lam":
        star_label = r"theory $\lambda^*=\sqrt{n_B}/N$"
        zero_label = r"theory $Z=0$: $\sqrt{n_A}/N$"
    elif y == "c":
        star_label = r"theory $c^*=\sqrt{n_B}$"
        zero_label = r"theory $Z=0$: $c=\sqrt{n_A}$"
    else:
        star_label = (r"theory $\lambda=\lambda^*=\sqrt{n_B}/N$"
                      + (f": $n_B=c^2={c * c:g}$" if c is not None else ""))
        zero_label = (r"theory $Z=0$ from $\lambda=\sqrt{n_A}/N$"
                      + (f": $n_A=c^2$" if c is not None else ""))
    out = Path(args.out) if args.out else Path(args.dir) / "phase.png"
    lam_txt = (f", $\\lambda$ = {c:g}/N" if c is not None else
               f", $\\lambda$ = {p['lam']:g}" if "lam" in p and "lam" not in g.axes else "")
    fig = plot.phase_diagram(
        ph["xv"], ph["yv"], ph["spread"], ph["y_star"], star=ph["star"], y_zero=ph["y_zero"],
        zero=ph["zero"], collapsed=ph["frac"] > 0.5, zero_measured=ph["zero_frac"] > 0.5,
        decision=ph["category"],
        split=(ph["frac"] > 0) & (ph["frac"] < 1), counts=list(ph["counts"].values()),
        seeds=S, xlabel=AXIS_LABELS.get(x, x), ylabel=AXIS_LABELS.get(y, y),
        log_x=x in ("lam", "c") or _is_log_axis(ph["xv"]),
        log_y=y in ("lam", "c") or _is_log_axis(ph["yv"]), star_label=star_label,
        zero_label=zero_label, out=out,
        title=f"{Path(args.dir).name}: {ph['yv'].size} x {ph['xv'].size} cells"
              + (f" x {S} seeds" if S > 1 else "") + lam_txt
              + ("".join(f", {k} = {v:g}" for k, v in ph["sliced"].items())))
    plt.close(fig)
    frac = ph["agree"] / ph["scored"] if ph["scored"] else float("nan")
    print(f"measured collapse agrees with lam* = sqrt(n_B)/N{per_N} in {frac:.1%} of the "
          f"{ph['scored']} solved cells farther than 2% from it"
          + (f" (majority of {S} seeds; the seeds disagree among themselves in "
             f"{ph['split']} cells)" if S > 1 else ""))
    for name, n in list(ph["counts"].items())[AGREE_COLLAPSED:]:
        if n and name in DECISION_NAMES[2:4]:
            print(f"  {name}: {n} cells")
    for d in ph["listed"]:
        print("  " + ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}: {v}"
                               for k, v in d.items()))
    print(f"wrote {out}")
    return 0


# Axis names as symbols in figure titles.
AXIS_SYMBOLS = {"n_A": "$n_A$", "n_B": "$n_B$", "n": "$n$", "ratio": "$n_A/n_B$",
                "lam": "$\\lambda$", "c": "$c$", "lam_b": "$\\lambda_b$", "lam_W": "$\\lambda_W$",
                "lam_H": "$\\lambda_H$", "K_A": "$K_A$", "K_B": "$K_B$", "K": "$K$"}


def _cell_text(g, i, counts) -> tuple[str, str]:
    """(plain one-line description of cell i, three-line figure title): its axis values,
    N, λ/λ*, the measured and the predicted decision."""
    from ncjax import report

    idx = np.unravel_index(i, g.shape)
    vals = report.cell_values(g, i)
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else f"{v}"
    ratio = g["theory.lam"][idx] / g["theory.lam_star"][idx]

    def yes(v, z):
        return ("collapsed" if v == 1 else "not collapsed") + (" (Z = 0)" if z == 1 else "")

    meas = yes(g["metrics.minority_collapsed"][idx], g["metrics.zero_solution"][idx])
    pred = yes(g["theory.minority_collapse"][idx], g["theory.total_collapse"][idx])
    N = float(np.sum(counts))
    plain = (f"cell {i}: " + ", ".join(f"{k}={fmt(v)}" for k, v in vals.items())
             + f" | N={N:g}, lam/lam*={ratio:.3g}; measured {meas}, theory {pred}")
    title = (f"cell {i}: " + ", ".join(f"{AXIS_SYMBOLS.get(k, k)} = {fmt(v)}"
                                       for k, v in vals.items())
             + f"\n$N$ = {N:g}, $\\lambda/\\lambda^*$ = {ratio:.3g}"
             + f"\nmeasured: {meas}\ntheory: {pred}")  # one line each: both fit a panel
    return plain, title


def _plot_cells(args, g, cells) -> int:
    """Heatmaps of Z for the chosen cells (``plot.z_heatmaps``); prints one line each."""
    from pathlib import Path

    import matplotlib.pyplot as plt

    from ncjax import plot, spec

    grid = spec.expand(g.spec)
    counts = grid.counts(cells)
    Zs = np.stack([g["Z"][np.unravel_index(i, g.shape)] for i in cells])
    if not np.isfinite(Zs).all():
        missing = [i for i, Z in zip(cells, Zs) if not np.isfinite(Z).all()]
        raise InputError(f"cells {missing} are not solved yet")
    texts = [_cell_text(g, i, n) for i, n in zip(cells, counts)]
    out = Path(args.out) if args.out else Path(args.dir) / "cells.png"
    fig = plot.z_heatmaps(Zs, counts, [t for _, t in texts], out=out)
    plt.close(fig)
    for i, (plain, _), Z in zip(cells, texts, Zs):
        idx = np.unravel_index(i, g.shape)
        print(plain + f" | spread {g['metrics.minority_spread_Z'][idx]:.3g}, max|Z| "
                      f"{np.abs(Z).max():.3g}, status {g.status[idx]}")
    print(f"wrote {out}")
    return 0


def _plot_trace(args, g, cells) -> int:
    """F − F_final, NC1 (m ≥ 2) and the minority spread of Z against the optimiser step for
    the chosen cells, re-solved by ``ncjax.trace`` with the run's optimiser and dtype for
    --trace steps from each cell's own random start (key_index = its flat index; with
    --m, m features per class instead of the run's, and so another start). F_final is the
    smaller of the trace's last value and the stored objective of a converged cell."""
    from pathlib import Path

    import matplotlib.pyplot as plt

    from ncjax import plot, report, spec
    from ncjax import trace as _trace

    grid = spec.expand(g.spec)
    sol, prm = g.spec.solver, grid.params
    m = int(args.m if args.m is not None else g.spec.problem.get("m", 1))
    if sol.get("method", "ufm") == "convex":
        print("ncjax: this run used the convex method, which has no path in (W, H, b); "
              f"tracing the UFM solver ({sol.get('optimizer', 'lbfgs')}) from each cell's "
              "random start", file=sys.stderr)
    opts = {k: sol[k] for k in ("optimizer", "learning_rate", "memory_size", "dtype")
            if k in sol}
    counts = grid.counts(cells)
    gaps, nc1, spread, labels = [], [], [], []
    for i, n in zip(cells, counts):
        t = _trace.trace(n, prm["lam_W"][i], prm["lam_H"][i], prm["lam_b"][i], steps=args.trace,
                         d=int(prm["d"][i]), m=m, seed=int(prm["seed"][i]), key_index=i, **opts)
        idx = np.unravel_index(i, g.shape)
        F = t.objective.astype(float)
        stored = g["objective"][idx] if g.status[idx] == "converged" else np.nan
        gaps.append(F - np.nanmin([F[-1], stored]))
        nc1.append(t.nc1)
        spread.append(t.minority_spread_Z)
        ratio = g["theory.lam"][idx] / g["theory.lam_star"][idx]
        vals = report.cell_values(g, i)
        plain = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in vals.items())
        labels.append(f"cell {i}: " + ", ".join(
            f"{AXIS_SYMBOLS.get(k, k)}={v:.4g}" if isinstance(v, float)
            else f"{AXIS_SYMBOLS.get(k, k)}={v}" for k, v in vals.items())
            + f", $\\lambda/\\lambda^*$={ratio:.3g}")
        print(f"cell {i} ({plain}, lam/lam*={ratio:.3g}): F {F[0]:.8g} -> {F[-1]:.10g} after "
              f"{args.trace} steps (stored objective {g['objective'][idx]:.10g}, "
              f"{g.status[idx]})"
              + (f"; NC1 {t.nc1[0]:.3g} -> {t.nc1[-1]:.3g}" if m > 1 else "")
              + f"; minority spread {spread[-1][0]:.3g} -> {spread[-1][-1]:.3g}")
    out = Path(args.out) if args.out else Path(args.dir) / "trace.png"
    fig = plot.traces(np.arange(args.trace + 1), np.array(gaps),
                      np.array(nc1) if m > 1 else None, np.array(spread), labels,
                      title=f"{Path(args.dir).name}: {opts.get('optimizer', 'lbfgs')}, "
                            f"{opts.get('dtype', 'float32')}, m = {m}, "
                            "re-solved from each cell's random start", out=out)
    plt.close(fig)
    print(f"wrote {out}")
    return 0


def _plot_curves(args, g) -> int:
    """One-axis runs: under λ = c/N with a sample-size axis, the mean cosines of Z against
    it (``plot.cosines``, the angle study); otherwise the minority spread along the run's
    λ or sample-size axis with the theory's crossing (``plot.spread_curve``)."""
    from pathlib import Path

    from ncjax import plot, report
    from ncjax.tolerances import COLLAPSE_TOL

    name = Path(args.dir).name
    per_N = "c" in g.axes or "c" in g.spec.problem
    cos = report.cosines(g) if per_N else None
    b = report.boundary(g)
    if cos is None and b["axis"] is None:
        raise InputError(f"{args.dir}: nothing to plot for axes {list(g.axes)}: plot draws "
                         "(n_B, lam) phase diagrams, one-axis lam / c / sample-size curves "
                         "and 'steps' group thresholds")
    out = Path(args.out) if args.out else Path(args.dir) / ("angles.png" if cos else "spread.png")
    symbols = {"n_A": r"$n_A$", "n_B": r"$n_B$", "n": r"$n$", "ratio": r"ratio $n_A/n_B$",
               "lam": r"$\lambda=\sqrt{\lambda_W\lambda_H}$", "c": r"$c=\lambda N$"}
    if cos is not None:
        axis = cos["axis"]
        labels = [", ".join(f"{k} = {v:g}" for k, v in r["where"].items()) or "all"
                  for r in cos["rows"]]
        vals = {key: [] for key in ("AA", "BB", "AB")}
        for where, idx in report.lines(g, axis):
            for key in vals:
                vals[key].append(g[f"metrics.cos_Z_{key}"][idx])
        x = np.asarray(g.axes[axis], float)
        plot.cosines(x, {k: np.array(v) for k, v in vals.items()}, cos["rows"][0]["etf"],
                     line_labels=labels, xlabel=f"{symbols.get(axis, axis)} (samples)",
                     title=f"{name}: mean cosines of the class-mean logits, "
                           f"{g.status.size} cells", out=out)
        for r, lab in zip(cos["rows"], labels):
            print(f"{lab}: {axis} {r['small']:g} -> {r['large']:g}: "
                  + "  ".join(f"cos {k} {r[k + '_small']:+.5f} -> {r[k + '_large']:+.5f}"
                              for k in ("AA", "BB", "AB")) + f"  (ETF {r['etf']:+.5f})")
    else:
        axis = b["axis"]
        labels = [", ".join(f"{k} = {v:g}" for k, v in ln["where"].items()) or "all"
                  for ln in b["lines"]]
        spreads = [np.where(g.status[idx] == "converged",
                            g["metrics.minority_spread_Z"][idx], np.nan)
                   for _, idx in report.lines(g, axis)]
        x = np.asarray(g.axes[axis], float)
        plot.spread_curve(x, np.array(spreads), np.array([ln["predicted"] for ln in b["lines"]]),
                          line_labels=labels, tol=COLLAPSE_TOL, xlabel=symbols.get(axis, axis),
                          log_x=axis in ("lam", "c"),
                          title=f"{name}: minority spread along {axis}", out=out)
        for ln, lab in zip(b["lines"], labels):
            print(f"{lab}: measured {axis} {ln['measured']:.6g}, theory {ln['predicted']:.6g}"
                  f" ({ln['deviation']:+.3%})" + (f"  {ln['note']}" if ln["note"] else ""))
    print(f"wrote {out}")
    return 0




def _fmt_interval(lo, hi) -> str:
    return f"[{lo:.6g}, {hi:.6g}]"


def _plot_groups(args, g) -> int:
    """Group thresholds of a "steps" profile over λ (or c = λN): per group of ≥ 2 classes
    sharing a count n_g, the measured collapse threshold (``analysis.collapse_threshold`` of the
    group's spread of Z, certified cells only) against the conjecture sqrt(n_g)/N; the
    measured Z = 0 threshold against sqrt(n_max)/N and the exact condition ‖G(π)‖_op ≤ λ
    (λ_b = 0); where neighbouring groups merge into one cluster. Prints one line each and
    draws ``plot.group_spreads``."""
    from pathlib import Path

    import matplotlib.pyplot as plt

    from ncjax import analysis, plot, profiles
    from ncjax.tolerances import COLLAPSE_TOL, ZERO_ATOL

    x_name = "lam" if "lam" in g.axes else "c"
    others = {k: v[0].item() for k, v in g.axes.items() if k != x_name}
    if others:
        print(f"ncjax: plotting the slice {others}", file=sys.stderr)
        g = g.sel(**others)
    x = g.axes[x_name]
    order = np.argsort(x)
    x = x[order]
    n = profiles.steps(g.spec.problem["groups"])
    N = float(n.sum())
    unit = N if x_name == "c" else 1.0  # thresholds in the axis' units
    sym = "c" if x_name == "c" else "lam"
    n_g = np.unique(n)[::-1]
    K_g = np.array([int(np.sum(n == v)) for v in n_g])
    first = np.array([int(np.flatnonzero(n == v)[0]) for v in n_g])
    members = [np.flatnonzero(n == v) for v in n_g]

    ok = g.status[order] == "converged"
    if "gap" in g.fields:
        ok &= g["gap"][order] <= GAP_TOL
    spread = np.where(ok[:, None], g["metrics.spread_Z_group"][order][:, first], np.nan).T
    pred = np.sqrt(n_g) / N * unit
    meas = np.full(n_g.size, np.nan)
    steps = "[" + ", ".join(f"[{k}, {v:g}]" for k, v in g.spec.problem["groups"]) + "]"
    print(f"group thresholds, profile steps {steps}, "
          f"N = {N:g}: conjecture {sym}_g = {'sqrt(n_g)' if sym == 'c' else 'sqrt(n_g)/N'}; "
          f"measured: group spread of Z <= {COLLAPSE_TOL:g} from there on "
          f"({int(ok.sum())} of {ok.size} cells certified: converged, gap <= {GAP_TOL:g})")
    for i in range(n_g.size):
        if K_g[i] < 2:
            print(f"  n_g={n_g[i]:g} K_g=1 predicted=none (one class: nothing to collapse)")
            continue
        est, lo, hi = analysis.collapse_threshold(x, spread[i], COLLAPSE_TOL)
        meas[i] = est
        if np.isfinite(est):
            got = (f"measured={est:.6g} deviation={est / pred[i] - 1:+.2%} "
                   f"bracket={_fmt_interval(lo, hi)}")
            z0 = analysis.spread_zero(x, spread[i])
            if np.isfinite(z0):
                got += f" spread->0 at {z0:.6g} ({z0 / pred[i] - 1:+.3%})"
        elif np.isfinite(hi):
            got = f"measured=below {hi:.6g} (collapsed at every certified point)"
        elif np.isfinite(lo):
            got = f"measured=above {lo:.6g} (not collapsed at the largest certified point)"
        else:
            got = "measured=none (no certified point)"
        print(f"  n_g={n_g[i]:g} K_g={K_g[i]} predicted={pred[i]:.6g} {got}")

    zero = np.where(ok, g["metrics.zero_solution"][order], np.nan)
    _, z_lo, z_hi = analysis.collapse_threshold(x, 1.0 - zero, 0.5)
    Zr = np.swapaxes(g["Z"][order], -1, -2)  # rows z_k
    scale = np.max(np.linalg.norm(Zr, axis=-1), axis=-1)
    # max_k ‖z_k‖ falls linearly to 0: where it gets there, from the last points above
    z0 = analysis.spread_zero(x, np.where(ok, scale, np.nan), eps=ZERO_ATOL)
    pi = n / N
    G_pi = (pi[:, None] - np.eye(n.size)) * np.sqrt(n)[None, :]  # N·G(q), q_k = π for all k
    lam_b = others.get("lam_b", g.spec.problem.get("lam_b", 0.0))
    per_N = "" if x_name == "c" else "/N"
    exact = (f"; exact condition ||N G(pi)||_op{per_N} = "
             f"{np.linalg.norm(G_pi, 2) / N * unit:.6g}" if lam_b == 0 else "")
    shared = (f"sqrt(n_max){per_N} = {np.sqrt(n.max()) / N * unit:.6g} (n_max shared by "
              f"{K_g[0]} classes)" if K_g[0] >= 2 else
              f"n_max held by one class (sqrt(n_max){per_N} not claimed)")
    where = (f"from {sym} in {_fmt_interval(z_lo, z_hi)}" if np.isfinite(z_lo) and np.isfinite(z_hi)
             else "nowhere on the grid" if np.isfinite(z_lo) else "at every certified point")
    if np.isfinite(z0):
        where += f", max_k ||z_k|| -> 0 at {z0:.6g}"
    print(f"  Z = 0 measured {where}; {shared}{exact}")

    extra = []
    for i in range(n_g.size - 1):
        both = np.concatenate([members[i], members[i + 1]])
        V = Zr[:, both]
        d = np.max(np.linalg.norm(V[:, :, None] - V[:, None, :], axis=-1), axis=(1, 2))
        rel = np.where(ok & (zero == 0), d / np.where(scale > 0, scale, 1.0), np.nan)
        est, lo, hi = analysis.collapse_threshold(x, rel, COLLAPSE_TOL)
        pair = f"n_g={n_g[i]:g} and n_g={n_g[i + 1]:g}"
        if np.isfinite(est):
            extra.append(("$s$ of two neighbouring\ngroups together (merge)", rel))
            print(f"  merge {pair}: one cluster from {sym}={est:.6g} "
                  f"bracket={_fmt_interval(lo, hi)} until Z = 0")
        elif np.isfinite(hi):
            print(f"  merge {pair}: one cluster at every certified point with Z != 0")
        else:
            print(f"  merge {pair}: apart wherever Z != 0")

    out = Path(args.out) if args.out else Path(args.dir) / "groups.png"
    multi = K_g >= 2
    xlabel = (r"$c=\lambda N$" if x_name == "c" else r"$\lambda=\sqrt{\lambda_W\lambda_H}$")
    fig = plot.group_spreads(
        x, spread[multi], n_g[multi], K_g[multi], pred[multi], tol=COLLAPSE_TOL,
        lam_meas=meas[multi], lam_zero=z_hi if np.isfinite(z_hi) else None, extra=extra,
        xlabel=xlabel,
        pred_label=r"\sqrt{n_g}" if x_name == "c" else r"\sqrt{n_g}/N",
        title=f"{Path(args.dir).name}: "
              + " + ".join(f"{k}$\\times${v:g}" for k, v in g.spec.problem["groups"])
              + f" ($K_g\\times n_g$), N = {N:g}; {int(ok.sum())} certified solutions",
        out=out)
    plt.close(fig)
    print(f"wrote {out}")
    return 0


def _report(args) -> int:
    """Write the markdown agreement report of a sweep (``ncjax.report``); print where."""
    from pathlib import Path

    from ncjax import report, sweep

    g = sweep.load(args.dir)
    out = report.write(g, Path(args.out) if args.out else Path(args.dir) / "report.md",
                       title=str(args.dir))
    print(f"wrote {out}")
    print(report.headline(report.agreement(g)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ncjax", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("solve", help="solve one UFM configuration and print its metrics")
    s.add_argument("--counts", required=True,
                   help="class counts n_k, e.g. 500,500,100,100,100 or 2x500,3x100")
    s.add_argument("--lam-W", dest="lam_W", type=float, required=True)
    s.add_argument("--lam-H", dest="lam_H", type=float, required=True)
    s.add_argument("--lam-b", dest="lam_b", type=float, default=0.0)
    s.add_argument("--convention", choices=["half", "paper"], default="half",
                   help="half: (lam/2)||.||^2 (default); paper: lam||.||^2")
    s.add_argument("--d", type=int, default=None, help="feature dimension (default K)")
    s.add_argument("--m", type=int, default=1, help="free features per class")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--optimizer", choices=["lbfgs", "adam", "gd"], default="lbfgs")
    s.add_argument("--max-steps", dest="max_steps", type=int, default=5000)
    s.add_argument("--gtol", type=float, default=None,
                   help="gradient tolerance relative to the start (default by dtype)")
    s.add_argument("--x64", action="store_true", help="solve in float64")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(run=_solve)

    sw = sub.add_parser("sweep", help="run a TOML sweep spec in chunks, checkpointed")
    sw.add_argument("spec")
    sw.add_argument("--out", required=True, help="new run directory")
    sw.add_argument("--chunk-size", dest="chunk_size", type=int, default=None)
    _add_distributed(sw)
    sw.set_defaults(run=_sweep)
    rs = sub.add_parser("resume", help="continue a stopped or killed sweep")
    rs.add_argument("dir")
    _add_distributed(rs)
    rs.set_defaults(run=_resume)
    sh = sub.add_parser("show", help="axes, progress, status counts and headline metrics")
    sh.add_argument("dir")
    sh.set_defaults(run=_show)
    pl = sub.add_parser("plot", help="draw a sweep: a phase diagram over two axes with the "
                        "per-cell decision, curves along one axis, the per-group spreads of a "
                        "'steps' profile, or Z / the path of chosen cells")
    pl.add_argument("dir")
    pl.add_argument("--out", default=None, help="figure file, .png or .pdf (default "
                    "DIR/phase.png; DIR/groups.png for a 'steps' run, DIR/spread.png or "
                    "DIR/angles.png for one-axis runs, DIR/cells.png with --cell, "
                    "DIR/trace.png with --trace)")
    pl.add_argument("--cell", action="append", default=None, metavar="SEL",
                    help="draw Z of this cell instead: a flat index, or axis=value,... "
                         "(nearest grid value; other axes at their first value); repeatable")
    pl.add_argument("--cells", default=None, metavar="I,J,...",
                    help="draw Z of the cells with these flat indices")
    pl.add_argument("--trace", type=int, default=None, metavar="STEPS",
                    help="with --cell/--cells: re-solve each for STEPS optimiser steps from "
                         "its random start and draw F - F_final and NC1 (m = 1: the "
                         "minority spread of Z) against the step")
    pl.add_argument("--m", type=int, default=None,
                    help="with --trace: features per class of the re-solve (default the "
                         "run's m; NC1 needs m >= 2). Another m is another random start.")
    pl.set_defaults(run=_plot)
    rp = sub.add_parser("report", help="write a markdown report of a sweep's agreement "
                        "with the theory (collapse, boundary, gap, cosines)")
    rp.add_argument("dir")
    rp.add_argument("--out", default=None, help="markdown file (default DIR/report.md)")
    rp.set_defaults(run=_report)
    bn = add_bench_arguments(sub.add_parser(
        "bench", help="throughput, bandwidth against a copy, time to solution and growth, "
        "beside the baselines, on the current device (JSON, markdown, PNG)"))
    bn.set_defaults(run=_bench)
    return p


def add_bench_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The benchmark's options (``ncjax bench`` and ``benchmarks/bench.py`` share them)."""
    p.add_argument("--out", default=None, help="folder for bench.json, bench.md, bench.png")
    p.add_argument("--tiny", action="store_true", help="a run of seconds (the tests' mode)")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed calls per measurement, after one warm call (the median)")
    return p


def _bench(args) -> int:
    from ncjax import bench
    return bench.from_args(args)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", NCJaxWarning)
            warnings.showwarning = lambda msg, cat, *a, **k: print(
                f"ncjax: warning: {msg}", file=sys.stderr)
            return args.run(args)
    except InputError as e:
        print(f"ncjax: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
