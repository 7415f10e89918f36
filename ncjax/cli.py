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

from ncjax._validate import InputError, NCJaxWarning


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


def _plot(args) -> int:
    """The (n_B, λ) phase diagram of a sweep, with the theory's boundary on top; for a
    "steps" profile with a lam or c axis, the group-threshold figure (``_plot_groups``)."""
    from pathlib import Path

    from ncjax import plot, sweep

    g = sweep.load(args.dir)
    if g.spec.problem.get("profile") == "steps" and {"lam", "c"} & set(g.axes):
        return _plot_groups(args, g)
    if not {"n_B", "lam"} <= set(g.axes):
        return _plot_curves(args, g)
    others = {k: v[0].item() for k, v in g.axes.items() if k not in ("n_B", "lam")}
    if others:
        print(f"ncjax: plotting the slice {others}", file=sys.stderr)
        g = g.sel(**others)
    order = [list(g.axes).index("lam"), list(g.axes).index("n_B")]
    spread = np.transpose(g["metrics.minority_spread_Z"], order)  # rows λ, columns n_B
    collapsed = np.transpose(g["metrics.minority_collapsed"], order) == 1
    lam_star = np.transpose(g["theory.lam_star"], order)[0]
    n_B, lam = g.axes["n_B"], g.axes["lam"]
    p = g.spec.problem
    N = p["K_A"] * p["n_A"] + p["K_B"] * n_B if "n_A" in p and "K_A" in p else None
    lam_zero = np.sqrt(p["n_A"]) / N if N is not None and p["K_A"] >= 2 else None
    out = Path(args.out) if args.out else Path(args.dir) / "phase.png"
    plot.phase_diagram(n_B, lam, spread, lam_star, collapsed=collapsed, lam_zero=lam_zero,
                       out=out, title=f"{Path(args.dir).name}: minority spread, "
                                      f"{spread.size} cells")
    lam_grid = lam[:, None] * np.ones_like(spread)
    far = np.abs(lam_grid / lam_star[None, :] - 1) > 0.02
    pred = lam_grid >= lam_star[None, :]
    solved = np.isfinite(spread)
    agree = (collapsed == pred)[far & solved].mean()
    print(f"measured collapse agrees with lam* = sqrt(n_B)/N in {agree:.1%} of the "
          f"{int((far & solved).sum())} solved cells farther than 2% from it")
    print(f"wrote {out}")
    return 0


def _plot_curves(args, g) -> int:
    """One-axis runs: under λ = c/N with a sample-size axis, the mean cosines of Z against
    it (``plot.cosines``, the angle study); otherwise the minority spread along the run's
    λ or sample-size axis with the theory's crossing (``plot.spread_curve``)."""
    from pathlib import Path

    from ncjax import plot, report
    from ncjax.metrics import COLLAPSE_TOL

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


# A cell enters the group-threshold study only if certified: status converged and duality
# gap F - F* <= GAP_TOL (absolute; every objective here is O(1)).
GAP_TOL = 1e-8


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
    from ncjax.metrics import COLLAPSE_TOL, ZERO_ATOL

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
    pl = sub.add_parser("plot", help="draw a sweep: the (n_B, lam) phase diagram, or "
                        "the per-group spreads of a 'steps' profile against lam or c")
    pl.add_argument("dir")
    pl.add_argument("--out", default=None, help="figure file, .png or .pdf (default "
                    "DIR/phase.png, or DIR/groups.png for a 'steps' run)")
    pl.set_defaults(run=_plot)
    rp = sub.add_parser("report", help="write a markdown report of a sweep's agreement "
                        "with the theory (collapse, boundary, gap, cosines)")
    rp.add_argument("dir")
    rp.add_argument("--out", default=None, help="markdown file (default DIR/report.md)")
    rp.set_defaults(run=_report)
    return p


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
