"""Command line: ``ncjax solve …`` (also ``python -m ncjax``).

Parses the arguments, calls the library (solve, sweep, analysis, report, plot) and prints
the strings it returns. Bad input ends with one line ``ncjax: error: …`` on stderr and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import sys
import threading
import warnings
from pathlib import Path

import jax
import numpy as np

from ncjax import (analysis, bench, claims, diagram, draw, groups, optimizers, plot, problem,
                   report, solver, stopping, sweep)
from ncjax.validate import MAX_CLASSES, InputError, NCJaxWarning, as_out_path
from ncjax.xla import configure_cpu


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
        if len(out) + k > MAX_CLASSES:
            raise InputError(f"--counts: at most {MAX_CLASSES} classes, got {item!r} after "
                             f"{len(out)}")
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
        "objective": r.objective, "gap": r.gap, "status": str(r.status),
        "converged": bool(r.converged), "finished": bool(r.finished),
        "steps": int(r.steps), "grad_norm": r.grad_norm, "Z": r.Z, "b": r.b,
        "metrics": r.metrics, "theory": r.theory,
        "config": {"counts": r.counts, "lam_W": r.lam_W, "lam_H": r.lam_H, "lam_b": r.lam_b,
                   "seed": r.seed, "convention": "half", "loss": r.loss, "bias": r.bias},
    })


def _solve(args) -> int:
    counts = parse_counts(args.counts)
    try:
        r = solver.solve(counts, args.lam_W, args.lam_H, args.lam_b, d=args.d, m=args.m,
                         seed=args.seed, convention=args.convention, optimizer=args.optimizer,
                         max_steps=args.max_steps, gtol=args.gtol, bias=not args.no_bias,
                         dtype="float64" if args.x64 else "float32")
    except jax.errors.JaxRuntimeError as e:
        oom = re.search(r"[Oo]ut of memory[^.\n]*|RESOURCE_EXHAUSTED[^.\n]*", str(e))
        if oom is None:
            raise
        raise InputError(f"this configuration does not fit in device memory (K = "
                         f"{len(counts)}, d = {args.d or len(counts)}, m = {args.m}): "
                         f"{oom.group(0)}") from None
    print(json.dumps(result_json(r)) if args.json else report.solution(r))
    return 0


def _distributed(args) -> bool:
    """Join JAX's multi-process runtime when asked (--coordinator, or --distributed for
    the cluster's own detection: SLURM, Open MPI, …); True for the process that reports."""
    if not (args.coordinator or args.distributed):
        return True
    if args.coordinator and (args.num_processes is None or args.process_id is None):
        raise InputError("--coordinator needs --num-processes and --process-id")
    jax.distributed.initialize(coordinator_address=args.coordinator,
                               num_processes=args.num_processes, process_id=args.process_id)
    return jax.process_index() == 0


def _worker_mode(args):
    """(i, n) for --worker i/n, else None; InputError for a bad --worker, --workers or
    --claim-timeout, or workers asked together with jax.distributed."""
    if args.worker is not None and args.workers is not None:
        raise InputError("--worker and --workers: give one (--workers N starts N processes, "
                         "each --worker i/N)")
    if (args.worker is not None or args.workers is not None) and (args.coordinator
                                                                   or args.distributed):
        raise InputError("--worker/--workers and --coordinator/--distributed exclude each "
                         "other: workers are independent processes, jax.distributed joins "
                         "processes into one mesh")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers: expected a number of processes >= 1, got {args.workers}")
    claims.check_timeout(args.claim_timeout)
    return None if args.worker is None else claims.parse_worker(args.worker)


def _spawn(args, out) -> int:
    """--workers N: N processes ``ncjax resume OUT --worker i/N`` (the run made first, here,
    so that a refusal is one line), waited for; then the grid shown."""
    n, extra = args.workers, ["--claim-timeout", repr(args.claim_timeout)]
    rc = claims.launch(lambda i: claims.worker_argv("resume", out, None, i, n, extra), n)
    if rc in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        print(f"ncjax: workers stopped by {signal.Signals(rc - 128).name}; continue with "
              f"`ncjax resume {out} --workers {n}`", file=sys.stderr)
    elif rc == 0:
        print(report.show(analysis.summary(sweep.load(out)), out))
    return rc


def _sweep(args) -> int:
    worker = _worker_mode(args)
    if args.workers is not None:
        sweep.join(args.spec, args.out, chunk_size=args.chunk_size)
        return _spawn(args, args.out)
    primary = _distributed(args)
    g = sweep.run(args.spec, args.out, chunk_size=args.chunk_size, worker=worker,
                  claim_timeout=args.claim_timeout)
    if primary:
        print(report.show(analysis.summary(g), args.out))
    return 0


def _resume(args) -> int:
    worker = _worker_mode(args)
    if args.workers is not None:
        sweep.opened(args.dir, workers=True)
        return _spawn(args, args.dir)
    primary = _distributed(args)
    g = sweep.resume(args.dir, worker=worker, claim_timeout=args.claim_timeout)
    if primary:
        print(report.show(analysis.summary(g), args.dir))
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
    w = parser.add_argument_group(
        "workers", "independent processes claiming chunks of a shared run directory (no "
        "coordinator; a crashed worker's chunks are taken over); not with multi-host")
    w.add_argument("--worker", default=None, metavar="I/N",
                   help="run as worker I of N, 0 <= I < N (e.g. "
                        "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
    w.add_argument("--workers", type=int, default=None, metavar="N",
                   help="start N worker processes on this machine and wait for them")
    w.add_argument("--claim-timeout", dest="claim_timeout", type=float,
                   default=claims.CLAIM_TIMEOUT, metavar="SECONDS",
                   help="a claim whose heartbeat is older is taken over (default "
                        f"{claims.CLAIM_TIMEOUT:g})")


def _show(args) -> int:
    print(report.show(analysis.summary(sweep.load(args.dir)), args.dir))
    return 0


def _chosen_cells(args, g) -> list[int]:
    """Flat indices from --cells I,J,… and every --cell (an index, or axis=value,… picking
    the nearest grid cell), in the order given."""
    out = []
    for text in ([args.cells] if args.cells is not None else []):
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
                raise InputError(f"--cell: give a flat index or axis=value,..., "
                                 f"got {text!r}") from None
        where = {}
        for item in text.split(","):
            k, _, v = item.partition("=")
            try:
                where[k.strip()] = float(v)
            except ValueError:
                raise InputError(f"--cell: cannot read {item!r} as axis=value") from None
            if not math.isfinite(where[k.strip()]):
                raise InputError(f"--cell: {item!r}: expected a finite value")
        out.append(analysis.cell_index(g, where))
    for i in out:
        if not 0 <= i < g.status.size:
            raise InputError(f"cell {i} is not in this grid of {g.status.size} cells")
    return out


def _note(text) -> None:
    if text:
        print(f"ncjax: {text}", file=sys.stderr)


def _plot(args) -> int:
    """Draw a sweep: with --cell/--cells the heatmaps of Z of those cells (``plot.cells``),
    or with --trace their objective and NC1 against steps (``plot.trace``); otherwise for
    a "steps" profile with a lam or c axis the group thresholds (``plot.groups``), for a
    run over two of lam, c, n_A, n_B, n, ratio the phase diagram with the per-cell
    decision (``plot.phase``), and the one-axis curves for the rest (``plot.curves``).
    Prints what the figure shows, then where it was written."""
    if args.out is not None:  # refused before the run is read or a cell re-solved
        as_out_path(args.out, name="--out", formats=draw.FORMATS)
    for flag, v, what in (("--trace", args.trace, "a number of steps"),
                          ("--m", args.m, "features per class")):
        if v is not None and not 1 <= v < 2**31:
            raise InputError(f"{flag}: expected {what} >= 1 and < 2**31, got {v}")
    g = sweep.load(args.dir)
    run = Path(args.dir)

    def out(default):
        return Path(args.out) if args.out else run / default

    cells = _chosen_cells(args, g)
    if args.trace is not None:
        if not cells:
            raise InputError("--trace needs the cells to trace: --cell or --cells")
        _note(report.trace_note(g.spec.solver))
        traced = plot.retrace(g, cells, args.trace, m=args.m)
        print(report.trace(traced))
        path = out("trace.png")
        plot.trace(traced, name=run.name, out=path)
    elif cells:
        path = out("cells.png")
        plot.cells(g, cells, out=path)
        print(report.cells(analysis.cells(g, cells)))
    elif groups.applies(g):
        t = groups.thresholds(g)
        _note(report.slice_note(t["sliced"]))
        print(report.groups(t))
        path = out("groups.png")
        plot.groups(g, name=run.name, out=path)
    elif (ph := diagram.phase_map(g)) is not None:
        _note(report.slice_note(ph["shown"], ph["seeds"]))
        path = out("phase.png")
        plot.phase(g, name=run.name, out=path)
        print(report.phase(ph))
    else:
        cv = analysis.curves(g)
        if cv is None:
            raise InputError(f"{args.dir}: nothing to plot for axes {list(g.axes)}: plot draws "
                             "(n_B, lam) phase diagrams, one-axis lam / c / sample-size curves "
                             "and 'steps' group thresholds")
        path = out("angles.png" if cv["kind"] == "angles" else "spread.png")
        plot.curves(g, name=run.name, out=path)
        print(report.curves(cv))
    print(f"wrote {path}")
    return 0


def _report(args) -> int:
    """Write the markdown agreement report of a sweep (``ncjax.report``); print where."""
    if args.out is not None:
        as_out_path(args.out, name="--out")
    g = sweep.load(args.dir)
    out = report.write(g, Path(args.out) if args.out else Path(args.dir) / "report.md",
                       title=str(args.dir))
    print(f"wrote {out}")
    print(report.headline(analysis.agreement(g)))
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
    s.add_argument("--convention", choices=problem.CONVENTIONS, default="half",
                   help="half: (lam/2)||.||^2 (default); paper: lam||.||^2")
    s.add_argument("--d", type=int, default=None, help="feature dimension (default K)")
    s.add_argument("--m", type=int, default=1, help="free features per class")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--optimizer", choices=optimizers.OPTIMIZERS, default="lbfgs")
    s.add_argument("--max-steps", dest="max_steps", type=int,
                   default=stopping.DEFAULT_MAX_STEPS)
    s.add_argument("--gtol", type=float, default=None,
                   help="gradient tolerance relative to the start (default by dtype)")
    s.add_argument("--no-bias", dest="no_bias", action="store_true",
                   help="the model W h without a bias (the SELI setting); --lam-b unused")
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
    pl.add_argument("--out", default=None, help="figure file, .png, .pdf, .svg, ... (default "
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
    bn = bench.arguments(sub.add_parser(
        "bench", help="time to solution of the standard minority-collapse grid beside its "
        "baselines (one configuration a call, cvxpy), on the current device (JSON, "
        "markdown, PNG)"))
    bn.set_defaults(run=bench.from_args)
    return p


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Python next runs: a command ends as on Ctrl-C, with one line."""


def _terminate(signum, _frame):
    raise _Terminated


def main(argv=None) -> int:
    configure_cpu()  # before JAX starts its CPU backend (docs/known-issues.md)
    parser = build_parser()
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", NCJaxWarning)
            warnings.showwarning = lambda msg, cat, *a, **k: print(
                f"ncjax: warning: {msg}", file=sys.stderr)
            return args.run(args)
    except InputError as e:
        print(f"ncjax: error: {e}", file=sys.stderr)
        return 2
    except sweep.Interrupted as e:
        print(f"ncjax: {e}", file=sys.stderr)
        return 128 + e.signum
    except BrokenPipeError:  # the reader of our output went away (`ncjax show D | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt as e:
        signum = signal.SIGTERM if isinstance(e, _Terminated) else signal.SIGINT
        print(f"ncjax: interrupted by {signal.Signals(signum).name}; nothing it writes is left "
              "half-written", file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
