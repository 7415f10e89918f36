"""The sweep driver: run a spec's grid in chunks, resume a stopped run.

Data flow: spec → grid (``ncjax.spec.expand``; ``spec.load`` and ``solvable.check`` have
refused what ``solver.prepare`` would, and the chunk size is checked, before the run
directory is written) →
chunks (``plan``: at most ``chunk_size`` configurations sharing one K, not yet in a
committed chunk, fewer where device memory is short) → ``solver.solve_sharded`` over every device of every process → one committed
chunk each (``ncjax.store``, which owns the run directory's layout and the chunk format);
a threshold grid's chunk (a spec with [thresholds]) is one ``ncjax.thresholds`` call
instead (``ncjax.threshold_sweep``), on one device.
Configuration i starts from the key fold_in(key(seed_i), i), so its result does not depend
on the chunking, the device count or a resume. I/O and progress live here and in
``ncjax.store`` only. A resume first surveys the chunks (``store.Chunks.survey``: every
chunk verified, a damaged one set aside and its cells solved again). With several
processes every process runs the same driver; the collectives (``_all_ok``, the survey's
barriers) keep them in step, and process 0 alone takes the lock, writes the run's files
and reports. Independent workers (``worker=(i, n)``: no lock, no collectives) claim the
chunks of the fixed plan one by one (``ncjax.claims``) and commit chunk c as step c.

``load`` and ``SweepGrid`` (``ncjax.reading``) and ``RunError`` (``ncjax.store``) are
re-exported.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils

from ncjax import (batching, claims, dtypes, sessions, solvable, solver, store,
                   threshold_sweep)
from ncjax.progress import Progress
from ncjax import spec as _spec
from ncjax.chunks import SAVED
from ncjax.reading import RESUMING, SweepGrid, load
from ncjax.store import DEFAULT_CHUNK, Interrupted, RunError  # noqa: F401 - re-exported
from ncjax.validate import InputError

__all__ = ["DEFAULT_CHUNK", "Interrupted", "RunError", "SweepGrid", "bytes_per_config",
           "check_chunk_size", "load", "memory_budget", "plan", "resume", "run"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def deferred_signals(out, release, log, how: str = ""):
    """SIGINT and SIGTERM, while a run writes its chunks: the first is recorded (the chunk in
    flight is finished and committed, then the run stops: ``stopping()``), a second abandons
    the chunk at once: ``release()`` (the lock, or a worker's claims; None: nothing), one
    line printed, and the process exits with 128 + signum (the chunk's pending index entry
    is cleaned up by the next resume). Python runs handlers between bytecodes, never inside
    an XLA call, so no signal lands in the middle of the runtime's own threads. Yields
    ``stopping``: the recorded signal or None. Outside the main thread (where handlers
    cannot be set) signals are left as they are."""
    got = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return

    def handler(signum, _frame):
        if got:
            if release is not None:
                release()
            print(f"ncjax: stopped by {signal.Signals(signum).name}, the chunk in flight "
                  f"abandoned; continue with `ncjax resume {out}{how}`",
                  file=sys.stderr, flush=True)
            os._exit(128 + signum)
        got.append(signum)
        log(f"{signal.Signals(signum).name}: stopping after the chunk in flight "
            "(again to stop now)")

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield lambda: got[0] if got else None
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def plan(grid: _spec.Grid, chunk_size: int, done=None) -> list[np.ndarray]:
    """Flat indices per chunk: the cells not ``done`` (bool, (cells,)), in blocks of one K,
    cut into pieces of ≤ chunk_size, in order."""
    blocks = grid.blocks() if done is None else [b[~done[b]] for b in grid.blocks()]
    return [b[i:i + chunk_size] for b in blocks for i in range(0, b.size, chunk_size)]


def _all_ok(ok: bool) -> bool:
    """True when ``ok`` holds in every process (a collective: every process calls it)."""
    if jax.process_count() == 1:
        return ok
    return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def _is_oom(e: Exception) -> bool:
    text = str(e)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def bytes_per_config(K: int, d: int, m: int, memory_size: int, dtype: str) -> int:
    """Device bytes one configuration of a chunk needs, a deliberate over-estimate.

    The solve holds per configuration the variables x = (V, U, b) with P = K d + K m d + K
    numbers, and L-BFGS keeps 2·memory_size more copies of that size beside the iterate,
    the gradient, the update and the line search's points (≈ 12 more); the metrics add a
    few K×K matrices and their SVDs (≈ 32 K²). Bytes = itemsize × ((2·memory_size + 12) P
    + 32 K²).
    """
    P = K * d + K * m * d + K
    return np.dtype(dtype).itemsize * ((2 * memory_size + 12) * P + 32 * K * K)


def memory_budget(devices) -> int:
    """Bytes a chunk may take on one device: half of what its allocator reports free
    (GPU/TPU); on the CPU, a quarter of the host's physical memory per device."""
    stats = devices[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(0.5 * (stats["bytes_limit"] - stats.get("bytes_in_use", 0)))
    try:
        phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        phys = 8 << 30
    return int(0.25 * phys / max(1, jax.local_device_count()))


def check_chunk_size(size) -> int:
    """``size`` if it is a chunk size (an integer >= 1), else RunError."""
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise RunError(f"chunk size (--chunk-size, [run].chunk_size) must be an integer "
                       f">= 1, got {size!r}")
    return int(size)


def _execute(out: Path, spec: _spec.Spec, grid: _spec.Grid, chunk_size: int, quiet: bool,
             kind: str = "run", source="unknown", verify: bool = False) -> SweepGrid:
    """Under the lock: survey the chunks, write the manifest of a run that has none
    (``kind`` "legacy" or "unstarted", see ``store.Run``), solve what is not done."""
    file = sys.stderr
    primary = jax.process_index() == 0
    say = not quiet and primary
    log = (lambda msg: print(f"ncjax: {msg}", file=file)) if say else (lambda msg: None)
    total = int(np.prod(grid.shape))
    lock, err = store.Lock(out), None
    if primary:
        try:
            lock.__enter__()
        except RunError as e:
            err = e
    if primary and err is None and (live := claims.live_claims(out)):
        lock.__exit__()
        err = RunError(f"{out}: {len(live)} worker(s) are at work on this run (claims/); "
                       "join them with --worker i/n, or wait until they are done")
    if not _all_ok(err is None):
        raise err or RunError(f"{out}: process 0 could not take the run directory's lock")
    try:
        with deferred_signals(out, lock.__exit__ if primary else None, log) as stopping:
            chunks = store.Chunks(out, primary=primary)
            try:
                done, next_step = chunks.survey(total, log, legacy=kind == "legacy",
                                                full=verify)
                if kind != "run" and primary:
                    try:
                        store.write_manifest(out, spec, chunk_size, source, grid.shape)
                    except OSError as e:
                        raise RunError(f"{out}: cannot write manifest.json "
                                       f"({e.strerror})") from None
                with sessions.recorded(out, jax.devices(), stopping, on=primary,
                                       process=jax.process_index()):
                    _solve_chunks(chunks, done, next_step, spec, grid, chunk_size, log, say,
                                  file, stopping)
                held = chunks.committed
            finally:
                chunks.close()
            if not _all_ok(stopping() is None):
                raise Interrupted(stopping() or signal.SIGINT, out, int(done.sum()), total)
    finally:
        if primary:
            lock.__exit__()
    return load(out, surveyed=True if held is None else held)


def _solve_chunks(chunks, done, next_step, spec, grid, chunk_size, log, say, file,
                  stopping=lambda: None):
    """Solve every cell not ``done`` (updated in place), chunk by chunk; each chunk is one
    orbax checkpoint (step = the next free integer) and its index entry. Stops before the
    next chunk once ``stopping()`` returns a signal (in every process at once)."""
    total = done.size
    if done.any():
        log(RESUMING.format(done=int(done.sum()), total=total))
    if done.all():
        return
    blocks = _block_sizes(grid)
    size = _fitting(spec, grid, chunk_size, blocks, log)
    t0, n_new, n_done = time.perf_counter(), 0, int(done.sum())
    bar = Progress(total, file)
    # planned once (O(cells)), again only when a chunk is halved: the pieces of a plan are
    # the next ones of the plan made after each of them
    pending = plan(grid, size, done)[::-1]
    with dtypes.x64(spec.solver.get("dtype") == "float64"):
        while pending and _all_ok(stopping() is None):
            idx = pending[-1]
            try:
                (r, index), err = _solve(spec, grid, idx, size, blocks), None
            except Exception as e:  # noqa: BLE001 - only an out-of-memory error is retried
                if not _is_oom(e):
                    raise
                r, err = None, e
            if not _all_ok(err is None):
                size = _halve(idx.size, err, log)
                pending = plan(grid, size, done)[::-1]
                continue
            pending.pop()
            chunks.save(next_step, r, index)
            next_step += 1
            done[idx] = True
            n_done, n_new = n_done + idx.size, n_new + idx.size
            if say:
                bar.update(n_done, n_new, final=not pending)
    if say and n_new:
        bar.close()
        dt = time.perf_counter() - t0
        log(f"solved {n_new} configurations in {dt:.1f} s ({n_new / dt:.1f}/s)")


def _block_sizes(grid) -> dict:
    """K -> the number of cells of that K (one compiled program each)."""
    return {int(grid.params_at(b[:1])["K"][0]): b.size for b in grid.blocks()}


def _fitting(spec, grid, chunk_size: int, blocks: dict, log) -> int:
    """The chunk size that fits in device memory (``bytes_per_config``), at most
    ``chunk_size``; logs the devices. ``blocks``: K -> cells of that K."""
    devices, opts = jax.devices(), spec.solver
    if spec.thresholds is not None:  # a few K×K matrices a search: chunks fit
        log(f"{int(np.prod(grid.shape))} configurations, thresholds along "
            f"{spec.thresholds['along']} on one {jax.default_backend()} device")
        return chunk_size
    d = max(int(grid.params_at(b[:1])["d"][0]) for b in grid.blocks())
    per_cfg = bytes_per_config(max(blocks), d,
                               int(spec.problem.get("m", 1)), opts.get("memory_size", 10),
                               opts.get("dtype", "float32"))
    fit = max(1, memory_budget(jax.local_devices()) // per_cfg * len(devices))
    if fit < chunk_size:
        log(f"chunks of {fit} configurations (not {chunk_size}): what fits in device memory "
            f"at ~{per_cfg} bytes per configuration")
    log(f"{int(np.prod(grid.shape))} configurations, sharded over {len(devices)} "
        f"{jax.default_backend()} device(s) in {jax.process_count()} process(es)")
    return min(chunk_size, fit)


def _halve(n: int, err, log) -> int:
    if n == 1:
        raise RunError("one configuration does not fit in device memory; this run "
                       "cannot finish here (start a smaller one)") from err
    log(f"a chunk of {n} configurations did not fit in device memory; retrying in chunks "
        f"of {max(1, n // 2)}")
    return max(1, n // 2)


def _solve(spec, grid, idx: np.ndarray, size: int, blocks: dict):
    """(the solver's outputs, the rows' flat indices) of the cells ``idx`` (one K): padded
    to one width per K block (one compiled program), as the solver pads a batch
    (``batching.layout``); padding rows repeat the last cell and are stored with index -1.
    ``blocks``: K -> cells of that K. A threshold grid's cells: ``threshold_sweep.solve``,
    unpadded."""
    if spec.thresholds is not None:
        return threshold_sweep.solve(spec, grid, idx)
    devices, opts = jax.devices(), spec.solver
    width = batching.layout(min(size, blocks[int(grid.params_at(idx[:1])["K"][0])]), devices,
                            opts.get("method", "ufm"), opts.get("pool"))[0]
    rows = np.concatenate([idx, np.full(width - idx.size, idx[-1])])
    p = grid.params_at(rows)
    # one process: the chunk split over this host's cores (ncjax.cores); several: each
    # solves its addressable shards
    one = jax.process_count() == 1
    r = (solver.solve_host if one else solver.solve_sharded)(
        grid.counts(rows), p["lam_W"], p["lam_H"], p["lam_b"],
        d=int(p["d"][0]), m=int(spec.problem.get("m", 1)), seed=p["seed"],
        key_index=rows, loss=solvable.loss_at(spec.problem, spec.axes, p),
        bias=spec.problem.get("bias", True), devices=None if one else devices, **opts)
    jax.block_until_ready(r)
    return r, np.concatenate([idx, np.full(width - idx.size, -1)])


def _solve_pieces(spec, grid, idx: np.ndarray, size: int, blocks: dict, log):
    """``_solve`` of ``idx`` in pieces of at most ``size`` (halved while out of memory),
    joined into one chunk (numpy)."""
    parts, start = [], 0
    while start < idx.size:
        piece = idx[start:start + size]
        try:
            r, index = _solve(spec, grid, piece, size, blocks)
        except Exception as e:  # noqa: BLE001 - only an out-of-memory error is retried
            if not _is_oom(e):
                raise
            size = _halve(piece.size, e, log)
            continue
        parts.append(({k: r[k] for k in SAVED if k in r}, index))
        start += piece.size
    if len(parts) == 1:
        return parts[0]
    return (jax.tree.map(lambda *a: np.concatenate([np.asarray(x) for x in a]),
                         *[t for t, _ in parts]), np.concatenate([i for _, i in parts]))


def run(spec_path, out, *, chunk_size: int | None = None, quiet: bool = False,
        worker=None, claim_timeout: float = claims.CLAIM_TIMEOUT, sets=()) -> SweepGrid:
    """Start a sweep of the spec at ``spec_path`` in the new directory ``out``; returns the
    loaded grid (``load``). Everything is checked (the spec, the solver's settings, the
    chunk size, ``out``: ``store.check_new``) before anything is written. With several
    processes (``jax.distributed.initialize`` called first) every process calls it with
    the same arguments and ``out`` on a file system they share; each solves its
    addressable shards and orbax writes the chunks. ``worker=(i, n)``: worker i of n
    independent processes (``join``; ``ncjax.claims``), each calling it. ``sets``: the
    spec's values overridden ("TABLE.KEY=VALUE", ``spec.override``); the run keeps the spec
    as overridden."""
    if worker is not None:
        return _work(*join(spec_path, out, chunk_size=chunk_size, sets=sets), worker,
                     claim_timeout, quiet)
    out, (sp, size, grid), err = Path(out), _checked(spec_path, chunk_size, sets), None
    if jax.process_index() == 0:
        try:
            store.create_run(out, sp, size, spec_path, grid.shape)
        except RunError as e:
            err = e
    if not _all_ok(err is None):
        raise err or RunError(f"{out}: process 0 refused the run directory (see its output)")
    sp = sp._replace(path=str(out / "spec.toml"))
    return _execute(out, sp, grid._replace(spec=sp), size, quiet)


def _checked(spec_path, chunk_size, sets=()):
    sp = _spec.load(spec_path, sets)
    sp = (solvable.check if sp.thresholds is None else threshold_sweep.check)(sp)
    size = check_chunk_size(sp.run.get("chunk_size", DEFAULT_CHUNK) if chunk_size is None
                            else chunk_size)
    return sp, size, _spec.expand(sp)


def join(spec_path, out, *, chunk_size: int | None = None, sets=()):
    """(the opened run, its grid) for independent workers: ``out`` made a run of the spec
    (the checks of ``run``; of workers started together one writes its files) or its run
    of the same spec adopted (``store.join_run``)."""
    sp, size, grid = _checked(spec_path, chunk_size, sets)
    r = store.join_run(out, sp, size, spec_path, grid.shape, asked=chunk_size)
    return r, grid._replace(spec=r.spec)


def opened(out, *, workers: bool = False):
    """(the opened run ``out``, its grid), checked for ``resume``; ``workers``: the run is
    given a manifest if it stopped before one, and a run of an earlier ncjax is refused."""
    r = store.open_run(out)
    if workers and r.kind == "legacy":
        raise RunError(f"{out}: a run of an earlier ncjax (no manifest.json); continue it "
                       f"once without --worker")
    grid = _spec.expand(r.spec)
    store.check_shape(r, grid.shape)
    check_chunk_size(r.chunk_size)
    if workers and r.kind == "unstarted":
        store.write_manifest(out, r.spec, r.chunk_size, "unknown", grid.shape, exclusive=True)
        r = store.open_run(out)
    return r, grid


def _work(r: store.Run, grid, worker, timeout: float, quiet: bool,
          verify: bool = False) -> SweepGrid:
    """Worker ``worker`` = (i, n) of the run ``r``: ``claims.work`` under deferred signals,
    its claims' heartbeats refreshed meanwhile; returns the loaded grid once it is done."""
    name = f"{worker[0]}/{worker[1]}"
    log = (lambda msg: None) if quiet else (
        lambda msg: print(f"ncjax: worker {name}: {msg}", file=sys.stderr, flush=True))
    if (pid := store.Lock(r.out).holder()) is not None:
        raise RunError(f"{r.out}: a single process (pid {pid}) is writing to this run "
                       "directory; workers join only a run no single process writes")
    total, mine = int(np.prod(grid.shape)), claims.Claims(r.out, worker, timeout)
    with deferred_signals(r.out, mine.release_all, log, f" --worker {name}") as stopping, \
            mine.heartbeat():
        chunks = store.Chunks(r.out)
        try:
            done, _ = chunks.survey(total, log, shared=True, full=verify)
            if not done.all():
                blocks = _block_sizes(grid)
                size = _fitting(r.spec, grid, r.chunk_size, blocks, log)
                with dtypes.x64(r.spec.solver.get("dtype") == "float64"), \
                        sessions.recorded(r.out, jax.devices(), stopping, worker=name):
                    claims.work(mine, chunks, plan(grid, r.chunk_size), done,
                                lambda idx: _solve_pieces(r.spec, grid, idx, size, blocks,
                                                          log), log, stopping)
        finally:
            chunks.close()
        if stopping() is not None:
            raise Interrupted(stopping(), r.out, int(done.sum()), total, f" --worker {name}")
    log("the grid is done")
    return load(r.out, surveyed=True)


def resume(out, *, quiet: bool = False, worker=None,
           claim_timeout: float = claims.CLAIM_TIMEOUT, verify: bool = False) -> SweepGrid:
    """Continue the run in ``out`` where it stopped (a run of an earlier ncjax, or a start
    that stopped before its manifest, too); returns the loaded grid. ``worker=(i, n)``: as
    worker i of n independent processes (``run``). A chunk whose files are those it was
    written with is taken as done unread (``store.Chunks.unchanged``); ``verify``: every
    chunk read and checksummed."""
    r, grid = opened(Path(out), workers=worker is not None)
    if worker is not None:
        return _work(r, grid, worker, claim_timeout, quiet, verify)
    return _execute(r.out, r.spec, grid, r.chunk_size, quiet, r.kind,
                    (r.meta or {}).get("source", "unknown"), verify)
