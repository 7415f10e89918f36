"""What each command of the command line does (``ncjax.cli`` parses the arguments and
calls ``do_<command>(args)``): it calls the library (solve, sweep, reading, analysis,
report, plot) and prints the strings it returns; bad input is an InputError (or a
RunError), which ``ncjax.cli`` turns into one line.
"""

from __future__ import annotations

import importlib
import json
import math
import re
import signal
import sys
from pathlib import Path

import numpy as np

from ncjax import (analysis, claims, diagram, reading, remedies, report, sessions,
                   threshold_report, threshold_study)
from ncjax.validate import MAX_CLASSES, InputError, as_out_path

__all__ = ["NEEDS", "do_bench", "do_export", "do_plot", "do_report", "do_resume", "do_show", "do_solve",
           "do_sweep", "parse_counts", "parse_loss", "preload", "result_json"]


def _lazy(name: str):
    """The module ``ncjax.<name>``, imported on first use: the modules that import
    matplotlib (``plot``, ``bench``: a third of a second or more) are imported by the
    commands that draw, and those that import JAX (``solver``, ``sweep``, ``losses``,
    ``groups``: a second) by the commands that solve, so that ``show``, which reads only a
    run's index, starts without either."""
    return importlib.import_module(f"ncjax.{name}")


# the modules each command needs beyond this one's, imported before it starts (``preload``)
NEEDS = {"solve": ("losses", "solver"), "sweep": ("sweep",), "resume": ("sweep",),
         "plot": ("plot", "groups"), "bench": ("bench",), "export": ("export",)}


def preload(args) -> None:
    """Import the modules of ``args.command`` (``NEEDS``; ``show`` and ``report`` need none
    beyond this one's), so that a signal while they load lands before it does anything.
    A plain ``resume`` of a run that is finished and idle (``reading.finished``, which
    writes nothing) needs none either: its grid is kept in ``args.finished``."""
    args.finished = None
    if args.command == "resume" and not (args.workers or args.worker or args.coordinator
                                         or args.distributed or args.verify):
        args.finished = reading.finished(args.dir)
        if args.finished is not None:
            return
    for name in NEEDS.get(args.command, ()):
        _lazy(name)


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
                   "seed": r.seed, "convention": "half", "loss": r.loss,
                   "loss_params": r.loss_params, "bias": r.bias},
    })


def parse_loss(name: str, items: list[str]):
    """The loss ``name`` with the parameters of ``--loss-param KEY=VALUE`` items (VALUE a
    number, or numbers separated by commas for a per-class parameter)."""
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            nums = [float(v) for v in value.split(",")]
        except ValueError:
            nums = None
        if not sep or not key or nums is None:
            raise InputError(f"--loss-param: expected KEY=VALUE with VALUE a number or "
                             f"numbers separated by commas, got {item!r}")
        if key in params:
            raise InputError(f"--loss-param: {key} given twice")
        params[key] = nums[0] if len(nums) == 1 else nums
    return _lazy("losses").get(name, **params)


def _dtype(args) -> str:
    if args.x64 and args.dtype not in (None, "float64"):
        raise InputError(f"--x64 and --dtype {args.dtype}: give one")
    return "float64" if args.x64 else args.dtype or "float32"


def do_solve(args) -> int:
    import jax  # as ``_lazy``: only the commands that solve import JAX

    counts = parse_counts(args.counts)
    loss = parse_loss(args.loss, args.loss_param)
    try:
        r = _lazy("solver").solve(counts, args.lam_W, args.lam_H, args.lam_b, d=args.d, m=args.m,
                         seed=args.seed, convention=args.convention, optimizer=args.optimizer,
                         max_steps=args.max_steps, gtol=args.gtol, bias=not args.no_bias,
                         loss=loss, method=args.method, gap_tol=args.gap_tol,
                         dtype=_dtype(args))
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
    import jax  # as ``_lazy``

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
    extra += [f for f, on in (("--verify", getattr(args, "verify", False)),
                              ("--quiet", args.quiet)) if on]
    rc = claims.launch(lambda i: claims.worker_argv("resume", out, None, i, n, extra), n)
    if rc in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        print(f"ncjax: workers stopped by {signal.Signals(rc - 128).name}; continue with "
              f"`ncjax resume {out} --workers {n}`", file=sys.stderr)
    elif rc == 0:
        print(_show(reading.summary(out), out))
    return rc


def do_sweep(args) -> int:
    worker = _worker_mode(args)
    if args.workers is not None:
        _lazy("sweep").join(args.spec, args.out, chunk_size=args.chunk_size, sets=args.set)
        return _spawn(args, args.out)
    primary = _distributed(args)
    g = _lazy("sweep").run(args.spec, args.out, chunk_size=args.chunk_size, worker=worker,
                           claim_timeout=args.claim_timeout, quiet=args.quiet, sets=args.set)
    if primary:
        print(_show(g.overview(), args.out))
    return 0


def do_resume(args) -> int:
    if args.finished is not None:  # nothing to do (``preload``): said as a resume says it
        n = int(args.finished.done.size)
        if not args.quiet:
            print("ncjax: " + reading.RESUMING.format(done=n, total=n), file=sys.stderr)
        print(_show(args.finished.overview(), args.dir))
        return 0
    worker = _worker_mode(args)
    if args.workers is not None:
        _lazy("sweep").opened(args.dir, workers=True)
        return _spawn(args, args.dir)
    primary = _distributed(args)
    g = _lazy("sweep").resume(args.dir, worker=worker, claim_timeout=args.claim_timeout,
                              verify=args.verify, quiet=args.quiet)
    if primary:
        print(_show(g.overview(), args.dir))
    return 0


def _show(s: dict, where) -> str:
    """``ncjax show``'s text of a run's overview: a threshold grid's with its thresholds."""
    return (threshold_report.show if "search" in s else report.show)(s, where)


def _threshold_grid(path):
    """The run at ``path`` loaded if it is a threshold grid, else None (solves, runs)."""
    g = None if remedies.is_collection(path) else reading.load(path)
    return g if g is not None and threshold_study.applies(g) else None


def do_show(args) -> int:
    print(_show(reading.summary(args.dir), args.dir))
    if line := sessions.describe(args.dir):
        print(line)
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


def do_plot(args) -> int:
    """Draw a sweep: with --cell/--cells the heatmaps of Z of those cells (``plot.cells``),
    or with --trace their objective and NC1 against steps (``plot.trace``); otherwise for
    a "steps" profile with a lam or c axis the group thresholds (``plot.groups``), for a
    run over two of lam, c, n_A, n_B, n, ratio the phase diagram with the per-cell
    decision (``plot.phase``), and the one-axis curves for the rest (``plot.curves``); a
    remedies run or a folder of them (``ncjax.remedies``) the remedies figure
    (``plot.remedies``), a threshold grid its thresholds (``plot.thresholds``), at the
    size preset ``args.size`` where the parser gives one
    (``style.SIZES``; else the default). Prints what the figure shows, then where it was
    written."""
    plot, style = _lazy("plot"), _lazy("style")
    size = getattr(args, "size", None) or style.DEFAULT_SIZE
    style.size_of(size)  # refused, like --out, before the run is read or a cell re-solved
    if args.out is not None:
        as_out_path(args.out, name="--out", formats=style.FORMATS)
    if (tg := _threshold_grid(args.dir)) is not None:
        if args.trace is not None or args.cells is not None or args.cell:
            raise InputError(f"{args.dir}: a threshold grid holds thresholds, not solutions: "
                             "no --cell, --cells or --trace")
        path = Path(args.out) if args.out else Path(args.dir) / "thresholds.png"
        plot.thresholds(tg, size=size, out=path)
        print(threshold_report.headline(threshold_study.study(tg)))
        print(f"wrote {path}")
        return 0
    runs = _remedies_runs(args)
    if runs is not None:  # a remedies run, or a folder of them (``ncjax.remedies``)
        path = Path(args.out) if args.out else Path(args.dir) / "remedies.png"
        plot.remedies(runs, size=size, out=path)
        print(report.remedies_headline(remedies.studies(runs)))
        print(f"wrote {path}")
        return 0
    for flag, v, what in (("--trace", args.trace, "a number of steps"),
                          ("--m", args.m, "features per class")):
        if v is not None and not 1 <= v < 2**31:
            raise InputError(f"{flag}: expected {what} >= 1 and < 2**31, got {v}")
    g = reading.load(args.dir)
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
        plot.trace(traced, size=size, out=path)
    elif cells:
        path = out("cells.png")
        plot.cells(g, cells, size=size, out=path)
        print(report.cells(analysis.cells(g, cells)))
    elif _lazy("groups").applies(g):
        t = _lazy("groups").thresholds(g)
        _note(report.slice_note(t["sliced"]))
        print(report.groups(t))
        path = out("groups.png")
        plot.groups(g, size=size, out=path)
    elif (ph := diagram.phase_map(g)) is not None:
        _note(report.slice_note(ph["shown"], ph["seeds"]))
        path = out("phase.png")
        plot.phase(g, size=size, out=path)
        print(report.phase(ph))
    else:
        cv = analysis.curves(g)
        if cv is None:
            raise InputError(f"{args.dir}: nothing to plot for axes {list(g.axes)}: plot draws "
                             "(n_B, lam) phase diagrams, one-axis lam / c / sample-size curves "
                             "and 'steps' group thresholds")
        path = out("angles.png" if cv["kind"] == "angles" else "spread.png")
        plot.curves(g, size=size, out=path)
        print(report.curves(cv))
    print(f"wrote {path}")
    return 0


def _remedies_runs(args):
    """(name, grid) runs of a remedies study at args.dir (a folder of runs, or one remedies
    run without --cell/--cells/--trace), else None."""
    if remedies.is_collection(args.dir):
        return remedies.collection(args.dir)
    picked = getattr(args, "cells", None) or getattr(args, "cell", None) or getattr(
        args, "trace", None) is not None
    if not picked:
        g = reading.load(args.dir)
        if remedies.applies(g):
            return [(Path(args.dir).name, g)]
    return None


def do_report(args) -> int:
    """Write the markdown agreement report of a sweep (``ncjax.report``), of a remedies
    study (``report.remedies``) or of a threshold grid (``threshold_report``); print
    where."""
    if args.out is not None:
        as_out_path(args.out, name="--out")
    if (tg := _threshold_grid(args.dir)) is not None:
        out = threshold_report.write(tg, Path(args.out) if args.out else
                                     Path(args.dir) / "report.md", title=str(args.dir))
        print(f"wrote {out}")
        print(threshold_report.headline(threshold_study.study(tg)))
        return 0
    runs = _remedies_runs(args)
    if runs is not None:
        sts = remedies.studies(runs)
        out = report.remedies_write(sts, Path(args.out) if args.out else
                                    Path(args.dir) / "report.md", title=str(args.dir))
        print(f"wrote {out}")
        print(report.remedies_headline(sts))
        return 0
    g = reading.load(args.dir)
    out = report.write(g, Path(args.out) if args.out else Path(args.dir) / "report.md",
                       title=str(args.dir))
    print(f"wrote {out}")
    print(report.headline(analysis.agreement(g)))
    return 0



def do_export(args) -> int:
    """Write the run ``args.dir`` as netCDF or CSV (``ncjax.export``); print where."""
    export = _lazy("export")
    path = Path(args.out) if args.out else Path(args.dir) / f"run{export.FORMATS.get(args.to, '')}"
    export.check(path, args.to)  # before the run is read
    print(f"wrote {export.write(reading.load(args.dir), path, args.to)}")
    return 0


def do_bench(args) -> int:
    """``ncjax bench``: its options are ``ncjax.bench``'s own (``args.rest``)."""
    return _lazy("bench").main(args.rest)
