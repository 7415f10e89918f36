"""Run a spec's grid in chunks, checkpoint every chunk with orbax, resume, load.

A run directory holds

    spec.toml        the spec as given (resume refuses it if it was changed since)
    run.json         the spec's sha256, the chunk plan's size, the ncjax version
    chunks/<c>/      one orbax checkpoint per finished chunk c: its flat grid indices and
                     every per-configuration result (written atomically by orbax: a
                     chunk is either committed whole or absent)
    .lock            the pid of the process writing here (a second writer is refused)

Data flow: spec → grid (``ncjax.spec.expand``) → chunks of at most ``chunk_size``
configurations sharing one K → ``ncjax.solve`` → orbax. Configuration i starts from
the key fold_in(key(seed_i), i), so its result does not depend on the chunking or on a
resume. I/O and progress live here only.
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

from ncjax import spec as _spec
from ncjax._validate import InputError
from ncjax.solver import STATUS_NAMES, solve

DEFAULT_CHUNK = 1024


class RunError(InputError):
    """A run directory that cannot be used as asked (exists, locked, changed spec, …)."""


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def plan(grid: _spec.Grid, chunk_size: int) -> list[np.ndarray]:
    """Flat indices per chunk: blocks of one K, cut into pieces of ≤ chunk_size, in order."""
    return [b[i:i + chunk_size] for b in grid.blocks() for i in range(0, b.size, chunk_size)]


def _pack(r, idx) -> dict:
    """One chunk's results as a flat dict of numpy arrays (orbax-friendly: no strings)."""
    out = {"index": np.asarray(idx, np.int64),
           "status": np.asarray([STATUS_NAMES.index(s) for s in r.status], np.int32)}
    for name in ("objective", "grad_norm", "steps", "Z", "b", "class_means", "W"):
        out[name] = np.asarray(getattr(r, name))
    out.update({f"metrics.{k}": np.asarray(v) for k, v in r.metrics.items()})
    out.update({f"theory.{k}": np.asarray(v) for k, v in r.theory.items()})
    return out


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
        (out / "chunks").absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=None, create=True,
                                             enable_async_checkpointing=False))


def _restore(mngr, step):
    import orbax.checkpoint as ocp

    return mngr.restore(step, args=ocp.args.StandardRestore())


def _good_chunks(mngr, out: Path, log) -> set[int]:
    """Committed chunks that restore; a damaged one is removed (and solved again)."""
    good = set()
    for step in mngr.all_steps():
        try:
            _restore(mngr, step)
            good.add(step)
        except Exception as e:  # noqa: BLE001 - any failure to read means damaged
            log(f"chunk {step} is damaged ({type(e).__name__}); it will be solved again")
            shutil.rmtree(out / "chunks" / str(step), ignore_errors=True)
    if len(good) != len(mngr.all_steps()):
        mngr.reload()
    return good


def _progress(done, total, rate, t_left, file):
    width = 30
    fill = int(width * done / max(total, 1))
    eta = "--:--" if not np.isfinite(t_left) else time.strftime("%M:%S", time.gmtime(t_left))
    print(f"\r[{'#' * fill}{'.' * (width - fill)}] {done}/{total} configurations  "
          f"{rate:.1f}/s  ETA {eta}", end="", file=file, flush=True)


def _execute(out: Path, spec: _spec.Spec, chunk_size: int, quiet: bool):
    file = sys.stderr
    log = (lambda msg: None) if quiet else (lambda msg: print(f"ncjax: {msg}", file=file))
    grid = _spec.expand(spec)
    chunks = plan(grid, chunk_size)
    total = int(np.prod(grid.shape))
    solver = spec.solver
    with _Lock(out):
        mngr = _manager(out)
        done = _good_chunks(mngr, out, log)
        n_done = sum(chunks[c].size for c in done if c < len(chunks))
        if done:
            log(f"resuming: {len(done)} of {len(chunks)} chunks already done")
        log(f"{total} configurations in {len(chunks)} chunks, sharded over "
            f"{jax.local_device_count()} {jax.default_backend()} device(s)")
        t0, n_new = time.perf_counter(), 0
        p = grid.params
        for c, idx in enumerate(chunks):
            if c in done:
                continue
            # pad a block's last chunk to the block's chunk width: one compiled program
            width = min(chunk_size, int(np.sum(p["K"] == p["K"][idx[0]])))
            pad = np.concatenate([idx, np.full(width - idx.size, idx[-1])])
            r = solve(grid.counts(pad), p["lam_W"][pad], p["lam_H"][pad], p["lam_b"][pad],
                      d=int(p["d"][idx[0]]), m=int(spec.problem.get("m", 1)),
                      seed=p["seed"][pad], key_index=pad, **solver)
            r = jax.tree.map(lambda a: a[:idx.size], r)  # drop the padding
            mngr.save(c, args=_save_args(_pack(r, idx)))
            mngr.wait_until_finished()
            n_done += idx.size
            n_new += idx.size
            if not quiet:
                dt = time.perf_counter() - t0
                rate = n_new / dt if dt > 0 else 0.0
                _progress(n_done, total, rate, (total - n_done) / rate if rate else np.inf,
                          file)
        if not quiet and n_new:
            print(file=file)
        mngr.close()
    return load(out)


def _save_args(tree):
    import orbax.checkpoint as ocp

    return ocp.args.StandardSave(tree)


def run(spec_path, out, *, chunk_size: int | None = None, quiet: bool = False):
    """Start a sweep of the spec at ``spec_path`` in the new directory ``out``; returns the
    loaded grid (``load``)."""
    sp = _spec.load(spec_path)
    out = Path(out)
    if (out / "spec.toml").exists():
        raise RunError(f"{out}: already holds a run; continue it with `ncjax resume {out}`")
    size = chunk_size or sp.run.get("chunk_size", DEFAULT_CHUNK)
    if size < 1:
        raise RunError(f"chunk size must be >= 1, got {size}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.toml").write_text(sp.text)
    (out / "run.json").write_text(json.dumps({"spec_sha256": _sha(sp.text), "chunk_size": size,
                                              "source": str(spec_path)}, indent=1))
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
