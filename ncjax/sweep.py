"""Run a spec's grid in chunks, checkpoint every chunk with orbax, resume, load.

A run directory holds

    spec.toml        the spec as given (resume refuses it if it was changed since)
    run.json         the spec's sha256, the chunk size asked for, the spec's source
    chunks/<c>/      one orbax checkpoint per finished chunk (c = 0, 1, …): each row's flat
                     grid index (-1 for a padding row) and every per-configuration result,
                     written by every process that holds a shard and committed once by
                     orbax (a chunk is either there whole or absent)
    .lock            the pid of the process writing here (a second writer is refused)

Data flow: spec → grid (``ncjax.spec.expand``) → chunks of at most ``chunk_size``
configurations sharing one K, not yet in a committed chunk → ``solver.solve_sharded``
over every device of every process → orbax. Configuration i starts from the key
fold_in(key(seed_i), i), so its result does not depend on the chunking, the device count
or a resume. I/O and progress live here only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import jax
import numpy as np

from ncjax import dtypes
from ncjax import spec as _spec
from ncjax.validate import InputError
from ncjax import solver as _solver
from ncjax.solver import STATUS_NAMES

DEFAULT_CHUNK = 1024


class RunError(InputError):
    """A run directory that cannot be used as asked (exists, locked, changed spec, …)."""


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def plan(grid: _spec.Grid, chunk_size: int, done=None) -> list[np.ndarray]:
    """Flat indices per chunk: the cells not ``done`` (bool, (cells,)), in blocks of one K,
    cut into pieces of ≤ chunk_size, in order."""
    blocks = grid.blocks() if done is None else [b[~done[b]] for b in grid.blocks()]
    return [b[i:i + chunk_size] for b in blocks for i in range(0, b.size, chunk_size)]


# Saved per configuration (H is not: (K, m, d) per cell, and class_means summarises it).
_SAVED = ("objective", "gap", "grad_norm", "steps", "status", "Z", "b", "class_means", "W",
          "metrics", "theory")


def _pack(out: dict, index: np.ndarray) -> dict:
    """One chunk as an orbax tree: the raw solver outputs (jax Arrays, possibly sharded
    over several processes, padded) and ``index``, each row's flat grid index (-1 for a
    padding row)."""
    return {"index": np.asarray(index, np.int64), **{k: out[k] for k in _SAVED}}


def _flatten(tree: dict, prefix: str = "") -> dict:
    """{"metrics": {"nc1": a}} → {"metrics.nc1": a}."""
    flat = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[prefix + k] = np.asarray(v)
    return flat


class _Lock:
    """DIR/.lock created exclusively with our pid; a lock of a dead pid is taken over."""

    def __init__(self, out: Path):
        self.path = out / ".lock"

    def __enter__(self):
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and _alive(pid):
                    raise RunError(f"{self.path.parent}: another process (pid {pid}) is "
                                   "writing to this run directory") from None
                self.path.unlink(missing_ok=True)  # stale: its writer is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return self
        raise RunError(f"{self.path}: could not take the lock")

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _manager(out: Path):
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(
        (out / "chunks").absolute(), item_handlers=ocp.StandardCheckpointHandler(),
        options=ocp.CheckpointManagerOptions(max_to_keep=None, create=True,
                                             enable_async_checkpointing=False))


def _restore(mngr, step) -> dict:
    """Chunk ``step`` as a flat dict of numpy arrays, padding rows dropped. Restored as
    numpy whatever devices or processes wrote it (the target tree is built from the
    stored shapes and dtypes)."""
    import orbax.checkpoint as ocp

    meta = mngr.item_metadata(step)
    meta = getattr(meta, "tree", meta)
    target = jax.tree.map(lambda m: np.empty(m.shape, m.dtype), meta)
    chunk = _flatten(mngr.restore(step, args=ocp.args.StandardRestore(target)))
    keep = chunk["index"] >= 0
    return {k: v[keep] for k, v in chunk.items()}


def _read_chunks(mngr, out: Path, log, primary: bool) -> dict[int, dict]:
    """Every committed chunk that restores, by step. A damaged one is reported and (by
    the primary process) removed; its cells are then solved again."""
    good = {}
    for step in mngr.all_steps():
        try:
            good[step] = _restore(mngr, step)
        except Exception as e:  # noqa: BLE001 - any failure to read means damaged
            log(f"chunk {step} is damaged ({type(e).__name__}); its cells will be solved again")
            if primary:
                shutil.rmtree(out / "chunks" / str(step), ignore_errors=True)
    return good


def _all_ok(ok: bool) -> bool:
    """True when ``ok`` holds in every process (a collective: every process calls it)."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

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


def _memory_budget(devices) -> int:
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


def _progress(done, total, rate, t_left, file):
    width = 30
    fill = int(width * done / max(total, 1))
    eta = "--:--" if not np.isfinite(t_left) else time.strftime("%M:%S", time.gmtime(t_left))
    print(f"\r[{'#' * fill}{'.' * (width - fill)}] {done}/{total} configurations  "
          f"{rate:.1f}/s  ETA {eta}", end="", file=file, flush=True)


def _execute(out: Path, spec: _spec.Spec, chunk_size: int, quiet: bool):
    file = sys.stderr
    primary = jax.process_index() == 0
    say = not quiet and primary
    log = (lambda msg: print(f"ncjax: {msg}", file=file)) if say else (lambda msg: None)
    grid = _spec.expand(spec)
    total = int(np.prod(grid.shape))
    lock, err = _Lock(out), None
    if primary:
        try:
            lock.__enter__()
        except RunError as e:
            err = e
    if not _all_ok(err is None):
        raise err or RunError(f"{out}: process 0 could not take the run directory's lock")
    try:
        _solve_chunks(out, spec, grid, total, chunk_size, log, say, primary, file)
    finally:
        if primary:
            lock.__exit__()
    return load(out)


def _solve_chunks(out, spec, grid, total, chunk_size, log, say, primary, file):
    """Solve every cell not yet in a committed chunk, chunk by chunk; each chunk is one
    orbax checkpoint (step = the next free integer)."""
    from jax.experimental import multihost_utils

    mngr = _manager(out)
    stored = _read_chunks(mngr, out, log, primary)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("ncjax: damaged chunks removed")
    mngr.reload()
    done = np.zeros(total, bool)
    for chunk in stored.values():
        done[chunk["index"]] = True
    next_step = max(stored, default=-1) + 1
    if done.any():
        log(f"resuming: {int(done.sum())} of {total} configurations already done "
            f"({len(stored)} chunks)")
    devices = jax.devices()
    p, m, solver = grid.params, int(spec.problem.get("m", 1)), spec.solver
    K, d = int(p["K"].max()), int(p["d"].max())
    per_cfg = bytes_per_config(K, d, m, solver.get("memory_size", 10),
                               solver.get("dtype", "float32"))
    fit = max(1, _memory_budget(jax.local_devices()) // per_cfg * len(devices))
    if fit < chunk_size:
        log(f"chunks of {fit} configurations (not {chunk_size}): what fits in device memory "
            f"at ~{per_cfg} bytes per configuration")
    size = min(chunk_size, fit)
    log(f"{total} configurations, sharded over {len(devices)} {jax.default_backend()} "
        f"device(s) in {jax.process_count()} process(es)")
    t0, n_new, n_done = time.perf_counter(), 0, int(done.sum())
    with dtypes.x64(solver.get("dtype") == "float64"):
        while not done.all():
            idx = plan(grid, size, done)[0]
            # one width per K block (one compiled program), padded as the solver pads a
            # batch (``solver.layout``); padding rows repeat the last cell and are stored
            # with index -1
            width = _solver.layout(min(size, int(np.sum(p["K"] == p["K"][idx[0]]))),
                                   devices, solver.get("method", "ufm"),
                                   solver.get("pool"))[0]
            rows = np.concatenate([idx, np.full(width - idx.size, idx[-1])])
            try:
                r, err = _solver.solve_sharded(
                    grid.counts(rows), p["lam_W"][rows], p["lam_H"][rows], p["lam_b"][rows],
                    d=int(p["d"][idx[0]]), m=m, seed=p["seed"][rows], key_index=rows,
                    devices=devices, **solver), None
                jax.block_until_ready(r)
            except Exception as e:  # noqa: BLE001 - only an out-of-memory error is retried
                if not _is_oom(e):
                    raise
                r, err = None, e
            if not _all_ok(err is None):
                if idx.size == 1:
                    raise RunError("one configuration does not fit in device memory") from err
                size = max(1, idx.size // 2)
                log(f"a chunk of {idx.size} configurations did not fit in device memory; "
                    f"retrying in chunks of {size}")
                continue
            index = np.concatenate([idx, np.full(width - idx.size, -1)])
            mngr.save(next_step, args=_save_args(_pack(r, index)))
            mngr.wait_until_finished()
            next_step += 1
            done[idx] = True
            n_done += idx.size
            n_new += idx.size
            if say:
                dt = time.perf_counter() - t0
                rate = n_new / dt if dt > 0 else 0.0
                _progress(n_done, total, rate, (total - n_done) / rate if rate else np.inf,
                          file)
    if say and n_new:
        print(file=file)
        dt = time.perf_counter() - t0
        log(f"solved {n_new} configurations in {dt:.1f} s ({n_new / dt:.1f}/s)")
    mngr.close()


def _save_args(tree):
    import orbax.checkpoint as ocp

    return ocp.args.StandardSave(tree)


def run(spec_path, out, *, chunk_size: int | None = None, quiet: bool = False):
    """Start a sweep of the spec at ``spec_path`` in the new directory ``out``; returns the
    loaded grid (``load``). With several processes (``jax.distributed.initialize`` called
    first) every process calls it with the same arguments and ``out`` on a file system
    they share; each solves its addressable shards and orbax writes the chunks."""
    sp = _spec.load(spec_path)
    out = Path(out)
    size = chunk_size or sp.run.get("chunk_size", DEFAULT_CHUNK)
    err = None
    if size < 1:
        err = RunError(f"chunk size must be >= 1, got {size}")
    elif jax.process_index() == 0:
        if (out / "spec.toml").exists():
            err = RunError(f"{out}: already holds a run; continue it with `ncjax resume {out}`")
        else:
            out.mkdir(parents=True, exist_ok=True)
            (out / "spec.toml").write_text(sp.text)
            (out / "run.json").write_text(json.dumps(
                {"spec_sha256": _sha(sp.text), "chunk_size": size, "source": str(spec_path)},
                indent=1))
    if not _all_ok(err is None):
        raise err or RunError(f"{out}: process 0 refused the run directory (see its output)")
    return _execute(out, sp._replace(path=str(out / "spec.toml")), size, quiet)


def _open(out: Path):
    try:
        meta = json.loads((out / "run.json").read_text())
        text = (out / "spec.toml").read_text()
    except (OSError, ValueError):
        raise RunError(f"{out}: not a run directory (no readable spec.toml and run.json)") from None
    if _sha(text) != meta["spec_sha256"]:
        raise RunError(f"{out}/spec.toml was changed after the run started; a resumed run "
                       "must keep its spec (start a new run directory instead)")
    return meta, _spec.loads(text, str(out / "spec.toml"))


def resume(out, *, quiet: bool = False):
    """Continue the run in ``out`` where it stopped; returns the loaded grid."""
    out = Path(out)
    meta, sp = _open(out)
    return _execute(out, sp, meta["chunk_size"], quiet)


class SweepGrid:
    """A loaded run: ``axes`` (name → values, in order), ``shape``, ``fields`` (name →
    array shaped ``shape + per-configuration shape``; NaN, or -1 for integers, where a
    cell is missing), ``status`` (str array, "missing" where not solved), ``done``."""

    def __init__(self, axes, fields, status, done, spec):
        self.axes, self.fields, self.status, self.done, self.spec = axes, fields, status, done, spec
        self.shape = tuple(v.size for v in axes.values())

    def __getitem__(self, name):
        return self.fields[name]

    def sel(self, **where) -> "SweepGrid":
        """The sub-grid at the given axis values (each the nearest grid value)."""
        index, axes = [], {}
        for name, vals in self.axes.items():
            if name in where:
                i = int(np.argmin(np.abs(vals - where.pop(name))))
                index.append(i)
            else:
                index.append(slice(None))
                axes[name] = vals
        if where:
            raise InputError(f"no axis {sorted(where)}; the axes are {list(self.axes)}")
        idx = tuple(index)
        return SweepGrid(axes, {k: v[idx] for k, v in self.fields.items()}, self.status[idx],
                         self.done[idx], self.spec)

    def to_xarray(self):
        """An xarray.Dataset of the fields that are one number per cell (xarray optional)."""
        try:
            import xarray as xr
        except ImportError:
            raise ImportError("to_xarray needs xarray: pip install xarray") from None
        dims = list(self.axes)
        data = {k: (dims, v) for k, v in self.fields.items() if v.shape == self.shape}
        data["status"] = (dims, self.status)
        return xr.Dataset(data, coords=dict(self.axes))


def load(out) -> SweepGrid:
    """Load a run directory, finished or not: missing cells are NaN and "missing"."""
    out = Path(out)
    _, sp = _open(out)
    grid = _spec.expand(sp)
    total = int(np.prod(grid.shape))
    fields: dict[str, np.ndarray] = {}
    status = np.full(total, "missing", dtype=object)
    done = np.zeros(total, bool)
    if (out / "chunks").exists():
        mngr = _manager(out)
        for step in mngr.all_steps():
            chunk = _restore(mngr, step)
            idx = chunk.pop("index")
            status[idx] = np.asarray(STATUS_NAMES)[chunk.pop("status")]
            done[idx] = True
            for k, v in chunk.items():
                if k not in fields:  # missing cells: NaN (booleans become 0./1.), ints -1
                    if np.issubdtype(v.dtype, np.integer):
                        dtype, fill = v.dtype, -1
                    else:
                        dtype, fill = (float if v.dtype == bool else v.dtype), np.nan
                    fields[k] = np.full((total,) + v.shape[1:], fill, dtype=dtype)
                if fields[k].shape[1:] != v.shape[1:]:
                    continue  # per-class fields of a grid whose K varies: not stacked
                fields[k][idx] = v
        mngr.close()
    shape = grid.shape
    fields = {k: v.reshape(shape + v.shape[1:]) for k, v in fields.items()}
    axes = {k: v for k, v in sp.axes.items()}
    return SweepGrid(axes, fields, status.reshape(shape), done.reshape(shape), sp)
