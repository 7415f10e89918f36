"""A run directory on disk: its files, its lock, its chunks in orbax's layout, and load.

A run directory holds

    spec.toml        the spec as given (resume refuses it if it was changed since)
    run.json         {"spec_sha256": sha256 of spec.toml, "chunk_size": the chunk size
                     asked for, "source": the path the spec was read from}
    chunks/<c>/      one orbax checkpoint per finished chunk (step c = 0, 1, …), written by
                     every process that holds a shard and committed once by orbax (a chunk
                     is either there whole or absent)
    .lock            the pid of the process writing here (a second writer is refused)

The chunk format: one orbax StandardSave tree per chunk, with

    index            int64 (rows,): each row's flat grid index, -1 for a padding row (a
                     chunk is padded to its compiled width by repeating its last cell)
    objective, gap, grad_norm, steps, status (int, ``STATUS_NAMES``), Z, b, class_means, W
                     the solver's per-configuration outputs, leading axis rows
    metrics, theory  dicts of per-configuration arrays (``metrics.<name>`` once loaded)

H is not saved: it is (K, m, d) per cell, and class_means summarises it. Reading a chunk
drops its padding rows. This module owns the bytes on disk; the driver
(``ncjax.sweep``) decides what to solve and when to write.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import jax
import numpy as np

from ncjax import spec as _spec
from ncjax.stopping import STATUS_NAMES
from ncjax.validate import InputError

__all__ = ["RunError", "Lock", "Chunks", "create_run", "open_run", "SweepGrid", "load"]


class RunError(InputError):
    """A run directory that cannot be used as asked (exists, locked, changed spec, …)."""


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def create_run(out: Path, sp: _spec.Spec, chunk_size: int, source) -> None:
    """Make ``out`` a new run directory of the spec ``sp`` (its spec.toml and run.json);
    RunError if it already holds a run."""
    out = Path(out)
    if (out / "spec.toml").exists():
        raise RunError(f"{out}: already holds a run; continue it with `ncjax resume {out}`")
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.toml").write_text(sp.text)
    (out / "run.json").write_text(json.dumps(
        {"spec_sha256": _sha(sp.text), "chunk_size": chunk_size, "source": str(source)},
        indent=1))


def open_run(out: Path) -> tuple[dict, _spec.Spec]:
    """run.json (as a dict) and the spec of the run directory ``out``; RunError if it is not
    one or its spec.toml was changed after the run started."""
    out = Path(out)
    try:
        meta = json.loads((out / "run.json").read_text())
        text = (out / "spec.toml").read_text()
    except (OSError, ValueError):
        raise RunError(f"{out}: not a run directory (no readable spec.toml and run.json)") from None
    if _sha(text) != meta["spec_sha256"]:
        raise RunError(f"{out}/spec.toml was changed after the run started; a resumed run "
                       "must keep its spec (start a new run directory instead)")
    return meta, _spec.loads(text, str(out / "spec.toml"))


class Lock:
    """DIR/.lock created exclusively with our pid; a lock of a dead pid is taken over."""

    def __init__(self, out: Path):
        self.path = Path(out) / ".lock"

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


# Saved per configuration (H is not: (K, m, d) per cell, and class_means summarises it).
_SAVED = ("objective", "gap", "grad_norm", "steps", "status", "Z", "b", "class_means", "W",
          "metrics", "theory")


def _pack(result: dict, index: np.ndarray) -> dict:
    """One chunk as an orbax tree: the raw solver outputs (jax Arrays, possibly sharded
    over several processes, padded) and ``index``, each row's flat grid index (-1 for a
    padding row)."""
    return {"index": np.asarray(index, np.int64), **{k: result[k] for k in _SAVED}}


def _flatten(tree: dict, prefix: str = "") -> dict:
    """{"metrics": {"nc1": a}} → {"metrics.nc1": a}."""
    flat = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[prefix + k] = np.asarray(v)
    return flat


class Chunks:
    """The chunks of the run directory ``out``: DIR/chunks/, one orbax checkpoint each
    (created on first use). Every process of a multi-process run opens it; ``save`` is
    then called by all of them with the same step."""

    def __init__(self, out: Path):
        import orbax.checkpoint as ocp

        self.out = Path(out)
        self._mngr = ocp.CheckpointManager(
            (self.out / "chunks").absolute(), item_handlers=ocp.StandardCheckpointHandler(),
            options=ocp.CheckpointManagerOptions(max_to_keep=None, create=True,
                                                 enable_async_checkpointing=False))

    def steps(self) -> list[int]:
        """The committed chunks' steps."""
        return list(self._mngr.all_steps())

    def restore(self, step: int) -> dict:
        """Chunk ``step`` as a flat dict of numpy arrays ("metrics.nc1", …), padding rows
        dropped. Restored as numpy whatever devices or processes wrote it (the target tree
        is built from the stored shapes and dtypes)."""
        import orbax.checkpoint as ocp

        meta = self._mngr.item_metadata(step)
        meta = getattr(meta, "tree", meta)
        target = jax.tree.map(lambda m: np.empty(m.shape, m.dtype), meta)
        chunk = _flatten(self._mngr.restore(step, args=ocp.args.StandardRestore(target)))
        keep = chunk["index"] >= 0
        return {k: v[keep] for k, v in chunk.items()}

    def read(self, log, primary: bool) -> dict[int, dict]:
        """Every committed chunk that restores, by step. A damaged one is reported through
        ``log`` and (by the ``primary`` process) removed, so that its cells are solved
        again; call ``reload`` once every process has read."""
        good = {}
        for step in self._mngr.all_steps():
            try:
                good[step] = self.restore(step)
            except Exception as e:  # noqa: BLE001 - any failure to read means damaged
                log(f"chunk {step} is damaged ({type(e).__name__}); its cells will be solved again")
                if primary:
                    shutil.rmtree(self.out / "chunks" / str(step), ignore_errors=True)
        return good

    def reload(self) -> None:
        """See the directory as it is now (after damaged chunks were removed)."""
        self._mngr.reload()

    def save(self, step: int, result: dict, index: np.ndarray) -> None:
        """Commit chunk ``step``: the solver's outputs ``result`` (padded rows included) and
        ``index``, each row's flat grid index (-1 for a padding row). Returns once it is
        committed."""
        import orbax.checkpoint as ocp

        self._mngr.save(step, args=ocp.args.StandardSave(_pack(result, index)))
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.close()


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
    _, sp = open_run(out)
    grid = _spec.expand(sp)
    total = int(np.prod(grid.shape))
    fields: dict[str, np.ndarray] = {}
    status = np.full(total, "missing", dtype=object)
    done = np.zeros(total, bool)
    if (out / "chunks").exists():
        chunks = Chunks(out)
        for step in chunks.steps():
            chunk = chunks.restore(step)
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
        chunks.close()
    shape = grid.shape
    fields = {k: v.reshape(shape + v.shape[1:]) for k, v in fields.items()}
    axes = {k: v for k, v in sp.axes.items()}
    return SweepGrid(axes, fields, status.reshape(shape), done.reshape(shape), sp)
