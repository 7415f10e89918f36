"""Command line: ``ncjax solve …`` (also ``python -m ncjax``).

Parses the arguments and runs the command (``ncjax.commands``). Bad input ends with one
line ``ncjax: error: …`` on stderr and exit status 2, never a traceback; a signal with one
line and 128 + its number.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import warnings

from ncjax import claims, commands, names
from ncjax.convention import CONVENTIONS
from ncjax import __version__
from ncjax.store import Interrupted, versions
from ncjax.validate import InputError, NCJaxWarning
from ncjax.xla import configure_cpu


# written as it is shown (the parser keeps its lines, so that --version stays on one)
DESCRIPTION = ("Where neural collapse happens in the Unconstrained Feature Model: solve one\n"
               "configuration, run and resume sweeps, show, plot, report and export them.\n"
               "'ncjax COMMAND --help' gives a command's options.")


def _add_quiet(parser) -> None:
    parser.add_argument("--quiet", action="store_true",
                        help="no progress and no notes on stderr (errors, warnings and the "
                             "summary on stdout remain)")


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ncjax", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    deps = ", ".join(f"{k} {v}" for k, v in versions().items() if k != "ncjax")
    p.add_argument("--version", action="version", version=f"ncjax {__version__} ({deps})")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("solve", help="solve one UFM configuration and print its metrics")
    s.add_argument("--counts", required=True,
                   help="class counts n_k, e.g. 500,500,100,100,100 or 2x500,3x100")
    s.add_argument("--lam-W", dest="lam_W", type=float, required=True)
    s.add_argument("--lam-H", dest="lam_H", type=float, required=True)
    s.add_argument("--lam-b", dest="lam_b", type=float, default=0.0)
    s.add_argument("--convention", choices=CONVENTIONS, default="half",
                   help="half: (lam/2)||.||^2 (default); paper: lam||.||^2")
    s.add_argument("--d", type=int, default=None, help="feature dimension (default K)")
    s.add_argument("--m", type=int, default=1, help="free features per class")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--optimizer", choices=names.OPTIMIZERS, default="lbfgs")
    s.add_argument("--max-steps", dest="max_steps", type=int,
                   default=names.DEFAULT_MAX_STEPS)
    s.add_argument("--gtol", type=float, default=None,
                   help="gradient tolerance relative to the start (default by dtype)")
    s.add_argument("--loss", default="ce", choices=sorted(names.LOSS_PARAMETERS),
                   help="the per-sample loss (default ce, cross-entropy)")
    s.add_argument("--loss-param", dest="loss_param", action="append", default=[],
                   metavar="KEY=VALUE", help="a parameter of --loss, e.g. tau=1 or "
                   "weights=1,1,5 (one value per class); repeat for each")
    s.add_argument("--no-bias", dest="no_bias", action="store_true",
                   help="the model W h without a bias (the SELI setting); --lam-b unused")
    s.add_argument("--method", choices=names.METHODS, default="ufm",
                   help="ufm: an optimiser on (W, H, b) (default); convex: the convex form, "
                        "then factorised")
    s.add_argument("--dtype", choices=names.DTYPES, default=None,
                   help="the solve's dtype (default float32; the certificate is float64)")
    s.add_argument("--x64", action="store_true", help="the same as --dtype float64")
    s.add_argument("--gap-tol", dest="gap_tol", type=float, default=None,
                   help="converged means certified: duality gap <= GAP_TOL * |F| (default "
                        "by dtype)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(run=commands.do_solve)

    sw = sub.add_parser("sweep", help="run a TOML sweep spec in chunks, checkpointed")
    sw.add_argument("spec")
    sw.add_argument("--out", required=True, help="new run directory")
    sw.add_argument("--chunk-size", dest="chunk_size", type=int, default=None)
    sw.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE",
                    help="override a value of the spec, e.g. solver.method=convex or "
                         "axes.seed=[0,1] (VALUE in TOML); repeatable; the run keeps the "
                         "spec as overridden")
    _add_quiet(sw)
    _add_distributed(sw)
    sw.set_defaults(run=commands.do_sweep)
    rs = sub.add_parser("resume", help="continue a stopped or killed sweep")
    rs.add_argument("dir")
    rs.add_argument("--verify", action="store_true",
                    help="read and checksum every chunk, not only check that its files are "
                         "those it was written with")
    _add_quiet(rs)
    _add_distributed(rs)
    rs.set_defaults(run=commands.do_resume)
    sh = sub.add_parser("show", help="axes, progress, status counts and headline metrics")
    sh.add_argument("dir")
    sh.set_defaults(run=commands.do_show)
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
    pl.add_argument("--size", default=None,
                    help="the figure's size preset (ncjax.style.SIZES): column (a paper's "
                         "column, 3.4 in), full (its text width, 7 in; the default) or slide")
    pl.set_defaults(run=commands.do_plot)
    rp = sub.add_parser("report", help="write a markdown report of a sweep's agreement "
                        "with the theory (collapse, boundary, gap, cosines)")
    rp.add_argument("dir")
    rp.add_argument("--out", default=None, help="markdown file (default DIR/report.md)")
    rp.set_defaults(run=commands.do_report)
    ex = sub.add_parser("export", help="write a run's fields for other tools: netCDF (every "
                        "field, with its axes, classes and attributes) or CSV (a row a cell)")
    ex.add_argument("dir")
    ex.add_argument("--to", default="netcdf", help="netcdf (default) or csv")
    ex.add_argument("--out", default=None, help="the file (default DIR/run.nc or DIR/run.csv)")
    ex.set_defaults(run=commands.do_export)
    sub.add_parser(  # its options are ncjax.bench's own (``ncjax bench --help``)
        "bench", add_help=False, help="time to solution of the standard minority-collapse "
        "grid beside its baselines (one configuration a call, cvxpy), on the current device "
        "(JSON, markdown, PNG)").set_defaults(run=commands.do_bench)
    return p


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Python next runs: a command ends as on Ctrl-C, with one line."""


def _terminate(signum, _frame):
    raise _Terminated


def main(argv=None) -> int:
    configure_cpu()  # before JAX starts its CPU backend (docs/known-issues.md)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "command", None) != "bench" and rest:
        parser.parse_args(argv)  # the error for the arguments it does not know
    args.rest = rest
    commands.preload(args)  # under the starting handlers of ``ncjax.__main__``
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
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
    except Interrupted as e:
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
