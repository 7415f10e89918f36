"""A run directory read: ``load`` (a ``SweepGrid``, its arrays read lazily) and ``summary``
(``ncjax show``'s numbers, from the index alone).

``load`` checks every chunk (the quick check of ``chunks.Chunks.unchanged``, or
``chunks.Chunks.verify`` in full) and reads the arrays when they are first used, verifying
each chunk it reads, and of a ``SweepGrid.sel`` only the chunks that hold its cells.
``summary`` merges the tallies of the index entries (``ncjax.tally``), verifying and
tallying only the chunks that fail the quick check. A damaged chunk is a RunError naming it
and saying that ``ncjax resume DIR`` solves it again; with ``skip_damaged=True`` its cells
load as "missing" instead, with one warning each. A chunk still being written loads as
missing.
"""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import numpy as np

from ncjax import spec as _spec
from ncjax import tally
from ncjax.chunks import Chunks, Damaged, chunk_tally
from ncjax.names import STATUS_NAMES
from ncjax.store import Run, RunError, check_shape, open_run
from ncjax.validate import InputError, NCJaxWarning

__all__ = ["RESUMING", "SweepGrid", "finished", "load", "summary"]


class SweepGrid:
    """A loaded run: ``axes`` (name → values, in order), ``shape``, ``done`` (bool,
    ``shape``), ``fields`` (name → array shaped ``shape + per-configuration shape``; NaN,
    or -1 for integers, where a cell is missing), ``status`` (str array, "missing" where not
    solved). ``fields`` and ``status`` are read from the chunks on first use (``read``: a
    function of the flat cell indices wanted → (fields, status) flat), and ``sel`` reads
    only the chunks that hold its cells."""

    def __init__(self, axes, fields, status, done, spec, read=None, cells=None):
        self.axes, self.done, self.spec = axes, done, spec
        self._fields, self._status, self._read = fields, status, read
        self.tally = None  # of the solved cells, from the index (``load``), or None
        self.meta = None   # the run's manifest (``load``), or None
        self.shape = tuple(v.size for v in axes.values())
        self._cells = (np.arange(int(np.prod(self.shape))).reshape(self.shape)
                       if cells is None and read is not None else cells)

    def _load(self):
        if self._fields is None:
            fields, status = self._read(self._cells.ravel())
            self._fields = {k: v.reshape(self.shape + v.shape[1:]) for k, v in fields.items()}
            self._status = status.reshape(self.shape)

    @property
    def fields(self) -> dict:
        self._load()
        return self._fields

    @property
    def status(self) -> np.ndarray:
        self._load()
        return self._status

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
        if self._fields is None:
            g = SweepGrid(axes, None, None, self.done[idx], self.spec, self._read,
                          self._cells[idx])
        else:
            g = SweepGrid(axes, {k: v[idx] for k, v in self._fields.items()},
                          self._status[idx], self.done[idx], self.spec)
        g.meta = self.meta
        return g

    def overview(self) -> dict:
        """What ``ncjax show`` prints (``tally.overview``; a threshold grid's also its
        [thresholds] table, "search"): from the index's tallies for a loaded run (no chunk
        read), else from the fields (a ``sel``'d grid)."""
        t = self.tally
        if t is None:
            done, n = self.done.ravel(), len(self.shape)
            fields = {k: self[k].reshape((-1,) + self[k].shape[n:])[done]
                      for k in tally.read(self.fields) if k != "status"}
            t = tally.of_cells(fields, self.status.reshape(-1)[done])
        out = tally.overview(self.shape, self.axes, t)
        if self.spec.thresholds is not None:
            out["search"] = dict(self.spec.thresholds)
        return out

    def to_xarray(self):
        """Every stored field as an ``xarray.Dataset`` (``pip install 'ncjax[xarray]'``).

        A variable a field, named as stored without its table ("metrics.nc1" → "nc1";
        the theory's "theory.lam_star" → "theory_lam_star"), its dimensions the run's axes,
        then (``DIMS``) "class" for a per-class value, ("logit", "class") for Z (column k
        = class k's mean logits), ("class", "feature") for W and the class means,
        ("class", "class_j") for a cosine matrix, "groups" (and "end", a bracket's) for a
        threshold grid's; booleans as 0/1 (NaN where missing), "status" as text.
        Coordinates: every axis, and the classes; attributes: the run's problem, solver and
        loss (JSON), the spec's text and the versions that wrote it."""
        try:
            import xarray as xr
        except ImportError:
            raise ImportError("to_xarray needs xarray: pip install 'ncjax[xarray]'") from None
        dims, data = list(self.axes), {"status": (list(self.axes), self.status)}
        for key, v in self.fields.items():
            table, _, name = key.rpartition(".")
            extra = _dims_of(name, v.ndim - len(dims))
            data[f"theory_{name}" if table == "theory" else name] = (dims + extra, v)
        coords = dict(self.axes)
        K = next((v.shape[len(dims)] for k, v in self.fields.items() if k == "b"), None)
        if K is not None:
            coords |= {"class": np.arange(K), "logit": np.arange(K), "class_j": np.arange(K)}
        attrs = {"problem": json.dumps(self.spec.problem, default=_plain),
                 "solver": json.dumps(self.spec.solver, default=_plain),
                 "convention": "half: (lam/2)||.||^2 for lam_W, lam_H, lam_b; lam = "
                               "sqrt(lam_W lam_H) (DESIGN.md)",
                 "spec": self.spec.text}
        meta = self.meta or {}
        attrs |= {k: json.dumps(meta[k]) for k in ("loss", "versions") if k in meta}
        return xr.Dataset(data, coords=coords, attrs=attrs)


# the dimensions of a field's per-cell axes (``SweepGrid.to_xarray``), by its name
DIMS = {"Z": ("logit", "class"), "W": ("class", "feature"),
        "class_means": ("class", "feature"),
        # a threshold grid's (``threshold_sweep``): per group of classes, a bracket's two ends
        "group": ("class",), "collapse": ("groups",), "vanish": ("groups",),
        **{f"{k}_{s}": ("groups", "end") for k in ("collapse", "vanish")
           for s in ("bracket", "gap")}, "zero_bracket": ("end",), "zero_gap": ("end",)}


def _dims_of(name: str, ndim: int) -> list[str]:
    if ndim == 0:
        return []
    if name in DIMS:
        return list(DIMS[name])
    if ndim == 2 and name.startswith("cos_"):
        return ["class", "class_j"]
    return ["class"] if ndim == 1 else [f"{name}_{i}" for i in range(ndim)]


def _plain(v):
    return v.tolist() if isinstance(v, np.ndarray) else str(v)


def _damaged(out: Path, step: int, why: str, skip: bool) -> None:
    if not skip:
        raise RunError(f"{out}: chunk {step} is damaged ({why}); `ncjax resume {out}` sets "
                       "it aside and solves its cells again")
    warnings.warn(f"{out}: chunk {step} is damaged ({why}): its cells load as missing; "
                  f"`ncjax resume {out}` solves them again", NCJaxWarning, stacklevel=4)


def _committed(run: Run, chunks: Chunks, total: int, skip: bool, surveyed):
    """(entries of the run's committed chunks by step: None for a legacy run's; the chunks
    checked in full, {step: verified arrays}). Every chunk passes the quick check
    (``Chunks.unchanged``; ``surveyed`` True: taken as checked; a dict: those entries, as
    checked) or is verified; a damaged one is a RunError (``skip``: left out, with a
    warning)."""
    if isinstance(surveyed, dict):
        return dict(surveyed), {}
    if run.kind == "legacy":
        warnings.warn(f"{run.out}: a run written before checksums (no manifest.json): its "
                      f"chunks are read without them; `ncjax resume {run.out}` checksums them",
                      NCJaxWarning, stacklevel=4)
        entries, bad = {s: None for s in chunks.steps()}, {}
    else:
        entries, _, bad = chunks.entries()
        entries = {s: e for s, e in entries.items() if not e.get("pending")}
    for step, why in sorted(bad.items()):
        _damaged(run.out, step, why, skip)
    checked = {}
    for step, e in sorted(entries.items()):
        if e is not None and (surveyed or chunks.unchanged(step, e)):
            continue
        try:
            checked[step] = chunks.verify(step, e, total)
        except Damaged as why:
            _damaged(run.out, step, str(why), skip)
            del entries[step]
    return entries, checked


def _read(out: Path, entries: dict, checked: dict, total: int, skip: bool, want: np.ndarray):
    """(fields, status) of the flat cells ``want`` (in that order), from the chunks that
    hold them, each verified as it is read (``checked``: those verified already)."""
    fields: dict[str, np.ndarray] = {}
    status = np.full(want.size, "missing", dtype=object)
    pos = np.full(total, -1, np.int64)
    pos[want] = np.arange(want.size)
    chunks = Chunks(out, read_only=True)
    try:
        for step, e in sorted(entries.items()):
            if e is not None and not (pos[e["cells"]] >= 0).any():
                continue
            try:
                chunk = checked[step] if step in checked else chunks.verify(step, e, total)
            except Damaged as why:
                _damaged(out, step, str(why), skip)
                continue
            p = pos[chunk.pop("index")]
            keep = p >= 0
            p = p[keep]
            status[p] = np.asarray(STATUS_NAMES)[chunk.pop("status")[keep]]
            for k, v in chunk.items():
                if k not in fields:  # missing cells: NaN (booleans become 0./1.), ints -1
                    if np.issubdtype(v.dtype, np.integer):
                        dtype, fill = v.dtype, -1
                    else:
                        dtype, fill = (float if v.dtype == bool else v.dtype), np.nan
                    fields[k] = np.full((want.size,) + v.shape[1:], fill, dtype=dtype)
                if fields[k].shape[1:] != v.shape[1:]:
                    continue  # per-class fields of a grid whose K varies: not stacked
                fields[k][p] = v[keep]
    finally:
        chunks.close()
    return fields, status


def load(out, *, skip_damaged: bool = False, surveyed: bool | dict = False) -> SweepGrid:
    """Load a run directory, finished or not: missing cells are NaN and "missing". Every
    chunk passes the quick check (``Chunks.unchanged``) or is verified in full now
    (``surveyed``: the caller, the run's writer, has just checked every chunk; a dict: and
    these are their entries, ``Chunks.committed``, not read again); a damaged
    one is a RunError (``skip_damaged``: its cells load as missing, with a warning). The
    arrays are read (each chunk verified in full) when ``fields`` or ``status`` is first
    used, of the cells of a ``sel`` only those. A chunk still being written loads as
    missing."""
    out = Path(out)
    surveyed_entries = isinstance(surveyed, dict)  # their tallies were checked as well
    run = open_run(out)
    sp = run.spec
    grid = _spec.expand(sp)
    check_shape(run, grid.shape)
    total = int(np.prod(grid.shape))
    chunks = Chunks(out, read_only=True)
    try:
        entries, checked = _committed(run, chunks, total, skip_damaged, surveyed)
        parts = []
        for step, e in sorted(entries.items()):
            if step not in checked and (surveyed_entries or tally.valid(e.get("tally"))):
                parts.append(e["tally"])
            else:  # tallied from its arrays: an entry of an earlier ncjax, a legacy run
                flat = checked.get(step)
                parts.append(chunk_tally(chunks.verify(step, e, total, padded=True)
                                         if flat is None else flat))
    finally:
        chunks.close()
    done = np.zeros(total, bool)
    for step, e in entries.items():
        if e is not None:
            done[e["cells"]] = True
        elif step in checked:
            done[checked[step]["index"]] = True
    read = functools.partial(_read, out, entries, checked, total, skip_damaged)
    g = SweepGrid(dict(sp.axes), None, None, done.reshape(grid.shape), sp, read)
    g.meta = run.meta
    g.tally = tally.merge(parts)
    return g


# what a resume says first (``ncjax.sweep``, and ``ncjax resume`` of a ``finished`` run)
RESUMING = "resuming: {done} of {total} configurations already done"


def finished(out) -> SweepGrid | None:
    """The grid of the run ``out`` if it is finished and idle: a run with a manifest, no
    writer's lock, no workers' claims, every chunk passing the quick check and every cell
    done, so that a resume has nothing to do (``ncjax resume`` then needs no solver);
    else None (a resume has work, or must look closer: it reports what it finds)."""
    out = Path(out)
    try:
        if (out / ".lock").exists() or any((out / "claims").glob("*")):
            return None
        if open_run(out).kind != "run":
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("error", NCJaxWarning)
            g = load(out)
    except (InputError, RunError, NCJaxWarning, OSError):
        return None
    return g if g.done.all() else None


def summary(out, *, skip_damaged: bool = False) -> dict:
    """``ncjax show``'s numbers of the run ``out`` (``SweepGrid.overview``), from its
    index: each chunk's tally, the chunks that fail the quick check verified (and tallied)
    in full."""
    return load(out, skip_damaged=skip_damaged).overview()
