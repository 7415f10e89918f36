"""The chunks of a run directory: orbax checkpoints, their index entries and checksums.

    chunks/<step>/       one orbax StandardSave checkpoint per chunk (step = 0, 1, …),
                         written by every process that holds a shard, committed once by
                         orbax (a chunk is either there whole or absent)
    index/<step>.json    the chunk's index entry, written by process 0 alone:
                         {"step", "cells": the flat grid indices it holds (padding rows
                         left out), "rows": its stored rows (padding included),
                         "pending": true} before orbax writes the chunk; once orbax has
                         committed it the entry is replaced by {"step", "cells", "rows",
                         "arrays_sha256": ``checksum`` of its arrays, "files": {path
                         relative to chunks/<step>: sha256 of the file's bytes}, "stat":
                         ``files.stat_record`` of those files and the directories that
                         hold them ("." the chunk's own), "tally": the chunk's headline
                         numbers (``ncjax.tally``)}
    damaged/<step>/, damaged/<step>.json
                         a chunk (and its entry) that failed its checks, set aside, never
                         deleted; ``-1``, ``-2``, … are appended when the name is taken
    (claims/: independent workers' claims, ``ncjax.claims``; a worker commits chunk c of
    the plan as step c, its pending entry created exclusively: ``save(exclusive=True)``)

A chunk's tree: ``index`` int64 (rows,), each row's flat grid index, -1 for a padding row
(a chunk is padded to its compiled width by repeating its last cell), and the fields of
``SAVED`` that the run's result has (leading axis rows; dicts of such arrays,
``metrics.<name>`` once flattened): a solve's objective, gap, grad_norm, steps, status
(int, ``STATUS_NAMES``), Z, b, class_means, W, metrics and theory; a threshold grid's
(``threshold_sweep``) status, thresholds and theory.

Checksums: ``checksum`` is sha256 over the flattened tree in sorted key order, each array
as the JSON text [key, dtype.str, shape] then its C-order bytes, computed from the arrays
in memory as orbax is given them; the file digests are taken from disk after the
commit, so that a change to any byte of any file of the chunk (orbax's metadata too) is
detected, before orbax reads it. A chunk is verified (``verify``: its files, then orbax's
restore, then the checksum and the cells) whenever its arrays are read.

The quick check (``unchanged``), for what needs only the index (a resume's survey,
``ncjax show``): every file of the entry and every directory holding one has the size,
modification and status-change times and inode it had when the chunk was committed (one
digest of them, "stat"). Writing a byte of a file changes its times, adding or removing a
file its directory's; the status-change time cannot
be set back by a program (only by moving the system clock), so a chunk that passes it holds
the bytes its digests were taken from. As in git's index, a record is trusted only if it is
older than its index entry by more than a clock tick (``RACY_NS``; a change within the tick
of the last write would keep the times): the digests are taken once the chunk's files are
that old. A chunk that fails it (changed, or copied: a copy
has new inodes) is verified in full, and its entry taken anew when it passes. What the quick
check cannot see, a disk that changes bytes by itself, ``verify`` (``ncjax resume --verify``,
and every read of the arrays) does.

What is ncjax's own: an integer directory of chunks/ with an index entry. Anything else
there is reported by ``survey`` and left as it is, except orbax's temporary directory of a
write that an entry marks pending (interrupted: removed, it holds nothing committed).
Files are written by ``write_atomic`` (a temporary file ``.ncjax-tmp-*`` beside the
target, fsync, ``os.replace``), so each file is there whole or not at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np

from ncjax import tally
from ncjax.files import TMP_PREFIX, checksum, file_digests, flatten, stat_record, write_atomic
from ncjax.names import STATUS_NAMES

__all__ = ["ORBAX_TMP", "Damaged", "Chunks", "chunk_tally", "entry_ok"]

# What a chunk holds of a run's result, per configuration: a solve's fields (H is not:
# (K, m, d) per cell, and class_means summarises it), a threshold grid's "thresholds"
SAVED = ("objective", "gap", "grad_norm", "steps", "status", "Z", "b", "class_means", "W",
         "metrics", "theory", "thresholds")
ORBAX_TMP = re.compile(r"^(\d+)\.orbax-checkpoint-tmp")
# Longer than a file system's timestamp tick (a jiffy, 1-10 ms; coarser on some network
# file systems): two writes further apart than this have different times.
RACY_NS = 25_000_000


class Damaged(Exception):
    """A chunk that fails its checks; the message says which check."""


def chunk_tally(flat: dict) -> dict:
    """The tally (``ncjax.tally``) of a chunk's stored arrays, padding rows left out."""
    keep = np.asarray(flat["index"]) >= 0
    fields = {k: np.asarray(flat[k])[keep] for k in tally.read(flat)}
    return tally.of_cells(fields, np.asarray(STATUS_NAMES)[fields.pop("status")])


def _local(tree) -> dict | None:
    """The tree as numpy if this process holds every array whole, else None (arrays
    sharded over several processes: each holds only its shards)."""
    import jax  # the writer's (and orbax's): what reads only the index starts without JAX

    leaves = jax.tree.leaves(tree)
    if any(isinstance(a, jax.Array) and not a.is_fully_addressable for a in leaves):
        return None
    return jax.tree.map(np.asarray, tree)


def _barrier(name: str) -> None:
    """Wait for every process (with several)."""
    import jax  # as ``_local``

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def entry_ok(e, step: int) -> bool:
    """Whether ``e`` is a well-formed index entry of ``step`` (pending or committed)."""
    ints = lambda v: isinstance(v, list) and all(type(i) is int and i >= 0 for i in v)
    if not (isinstance(e, dict) and e.get("step") == step and ints(e.get("cells"))
            and type(e.get("rows")) is int and e["rows"] >= len(e["cells"])):
        return False
    if e.get("pending") is True:
        return True
    files = e.get("files")
    return (isinstance(e.get("arrays_sha256"), str) and isinstance(files, dict) and bool(files)
            and all(isinstance(v, str) for v in files.values()))


class Chunks:
    """The chunks of the run directory ``out`` (module docstring). Every process of a
    multi-process run opens it and calls ``save`` with the same step; process 0
    (``primary``) alone writes the index and sets chunks aside."""

    def __init__(self, out: Path, *, primary: bool = True, read_only: bool = False):
        self.out, self.primary, self.read_only = Path(out), primary, read_only
        self.root, self.index_dir = self.out / "chunks", self.out / "index"
        self._manager = None
        # the primary's committed entries by step, as its survey checked them and its saves
        # wrote them (None before a survey): what the run holds once the driver is done
        self.committed: dict[int, dict] | None = None

    @property
    def _mngr(self):
        """orbax's manager of chunks/, opened on first use (reading a run without chunks
        opens none)."""
        if self._manager is None:
            import orbax.checkpoint as ocp

            self._manager = ocp.CheckpointManager(
                self.root.absolute(), item_handlers=ocp.StandardCheckpointHandler(),
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=None, create=not self.read_only,
                    enable_async_checkpointing=False))
        return self._manager

    def steps(self) -> list[int]:
        """The steps of chunks/: its directories named by an integer, in order."""
        if not self.root.is_dir():
            return []
        with os.scandir(self.root) as it:  # DirEntry.is_dir: no stat a chunk
            return sorted(int(p.name) for p in it
                          if p.name.isdigit() and str(int(p.name)) == p.name and p.is_dir())

    # -- reading ---------------------------------------------------------------------
    def entries(self) -> tuple[dict[int, dict], list[str], dict[int, str]]:
        """(good index entries by step, names in index/ that are not entries, {step: why}
        for entries that cannot be read)."""
        good, foreign, bad = {}, [], {}
        if not self.index_dir.is_dir():
            return good, foreign, bad
        with os.scandir(self.index_dir) as it:  # plain strings: 10^4 entries in a blink
            found = sorted((p.name, p.path, p.is_file()) for p in it)
        for name, path, is_file in found:
            if name.startswith(TMP_PREFIX):
                continue  # a write that never finished: not an entry
            stem = name[:-5] if name.endswith(".json") else ""
            if not (stem.isdigit() and str(int(stem)) == stem and is_file):
                foreign.append(name)
                continue
            step = int(stem)
            try:
                with open(path, "rb") as f:
                    e = json.loads(f.read())
            except (OSError, ValueError):
                e = None
            if entry_ok(e, step):
                good[step] = e
            else:
                bad[step] = "its index entry is unreadable"
        return good, foreign, bad

    def restore_raw(self, step: int) -> dict:
        """Chunk ``step`` as stored (padding rows included), a flat dict of numpy arrays,
        restored as numpy whatever devices or processes wrote it (the target tree is built
        from the stored shapes and dtypes). Damaged if orbax cannot restore it."""
        import jax  # orbax's, imported by it anyway
        import orbax.checkpoint as ocp

        # orbax's handler on the chunk's own folder: its CheckpointManager would first
        # list every step of chunks/ (seconds at 10^4 chunks) to read one
        handler, d = ocp.StandardCheckpointHandler(), (self.root / str(step) / "default")
        try:
            meta = handler.metadata(d.absolute())
            meta = getattr(meta, "tree", meta)
            target = jax.tree.map(lambda m: np.empty(m.shape, m.dtype), meta)
            tree = handler.restore(d.absolute(), args=ocp.args.StandardRestore(target))
            flat = flatten(tree)
        except Exception as e:  # noqa: BLE001 - any failure to restore means damaged
            raise Damaged(f"orbax cannot restore it: {type(e).__name__}") from None
        if "index" not in flat:
            raise Damaged("it has no index array")
        return flat

    def unchanged(self, step: int, entry: dict | None) -> bool:
        """The quick check (module docstring): whether chunk ``step``'s files and
        directories are those its committed ``entry`` recorded."""
        rec = None if entry is None or entry.get("pending") else entry.get("stat")
        if not (isinstance(rec, dict) and type(rec.get("newest")) is int):
            return False  # none taken, or an earlier ncjax's record: verified instead
        try:
            written = os.stat(f"{self.index_dir}/{step}.json").st_mtime_ns
            if rec["newest"] + RACY_NS > written:
                return False  # recorded within a clock tick of a write: proves nothing
            return stat_record(f"{self.root}/{step}", entry["files"]) == rec
        except (OSError, TypeError, ValueError, KeyError):
            return False

    def verify(self, step: int, entry: dict | None, cells: int, padded: bool = False) -> dict:
        """Chunk ``step`` checked against its index ``entry`` (None: a chunk without
        checksums, of a run written before them), padding rows dropped (kept if
        ``padded``); ``cells`` the grid's size. Raises Damaged."""
        d = self.root / str(step)
        if not d.is_dir():
            raise Damaged("its files are missing")
        if entry is not None and "files" in entry:  # checked before orbax reads them
            have = file_digests(d)
            for name, digest in entry["files"].items():
                if have.get(name) != digest:
                    how = "missing" if name not in have else "changed"
                    raise Damaged(f"its file {name} is {how}")
            extra = sorted(set(have) - set(entry["files"]))
            if extra:
                raise Damaged(f"it holds a file it was not written with: {extra[0]}")
        flat = self.restore_raw(step)
        want = None if entry is None else entry.get("arrays_sha256")
        if want is not None and checksum(flat) != want:
            raise Damaged("its arrays differ from those written (checksum)")
        index = flat["index"]
        keep = index >= 0
        if index.ndim != 1 or (index >= cells).any() or any(
                v.shape[:1] != index.shape for v in flat.values()):
            raise Damaged("its cells are not cells of this grid")
        if entry is not None and (index.size != entry["rows"]
                                  or index[keep].tolist() != entry["cells"]):
            raise Damaged("its cells differ from its index entry")
        return flat if padded else {k: v[keep] for k, v in flat.items()}

    # -- the driver's survey -----------------------------------------------------------
    def survey(self, cells: int, log, *, legacy: bool = False, shared: bool = False,
               full: bool = False) -> tuple[np.ndarray, int]:
        """(done, next_step): which cells (bool, (cells,)) the chunks that pass ``verify``
        hold, and the next free step. Every process calls it; the primary sets aside
        damaged chunks (reported through ``log``), indexes a chunk whose commit was not
        yet recorded (and, ``legacy``, every chunk of a run written before checksums),
        removes an interrupted write (a chunk's or an index entry's), and reports what
        under chunks/ is not its own.
        ``shared`` (independent workers, ``ncjax.claims``: others write meanwhile): a
        pending entry is a write in flight, or a dead worker's that the next claimant of
        its chunk cleans up (``recover``); it and orbax's temporary folders are left alone.
        A committed chunk that passes the quick check (``unchanged``) is taken as done
        unread, unless ``full``; one that is verified instead gets its entry anew."""
        entries, foreign_idx, bad = self.entries()
        names = sorted(p.name for p in self.root.iterdir()) if self.root.is_dir() else []
        steps = set(self.steps())
        if legacy:  # every orbax step is one of ours; an index is not read but rewritten
            entries, foreign_idx, bad = {s: None for s in steps}, [], {}
        taken = [int(m.group(1)) for n in names if (m := ORBAX_TMP.match(n))]
        next_step = max([*steps, *entries, *bad, *taken], default=-1) + 1
        pending = {s for s, e in entries.items() if e is not None and e.get("pending")}
        done = np.zeros(cells, bool)
        committed = {}
        actions = []  # the primary's changes, made once every process has read
        for step, e in sorted(entries.items()):
            if shared and step in pending:
                continue
            try:
                if step in pending and not (self.root / str(step)).is_dir():
                    actions.append(("drop", step, None))  # interrupted before its commit
                    continue
                if not full and self.unchanged(step, e) and tally.valid(e.get("tally")):
                    done[e["cells"]] = True
                    committed[step] = e
                    continue
                flat = self.verify(step, e, cells, padded=True)
                if not self.read_only:  # a new chunk, an old entry, a copied run
                    committed[step] = self.entry(step, flat)
                    actions.append(("index", step, committed[step]))
                done[flat["index"][flat["index"] >= 0]] = True
            except Damaged as why:
                actions.append(("aside", step, str(why)))
        actions += [("aside", step, why) for step, why in bad.items()]
        for n in names:
            m = ORBAX_TMP.match(n)
            if n.isdigit() and str(int(n)) == n and (int(n) in entries or int(n) in bad):
                continue
            if m and shared:
                continue
            if m and int(m.group(1)) in pending:
                actions.append(("rmtmp", int(m.group(1)), n))
            else:
                log(f"{self.root / n} is not one of this run's chunks; left as it is")
        for n in foreign_idx:
            log(f"{self.index_dir / n} is not an index entry of this run; left as it is")
        if not shared and self.index_dir.is_dir():  # shared: another worker's write in flight
            actions += [("rmidx", -1, n) for n in sorted(os.listdir(self.index_dir))
                        if n.startswith(TMP_PREFIX)]
        _barrier("ncjax: chunks read")
        for kind, step, arg in actions:
            if kind == "aside":
                where = self.set_aside(step) if self.primary else "damaged/"
                log(f"chunk {step} is damaged ({arg}): set aside in {where}; its cells will "
                    "be solved again")
            elif not self.primary:
                continue
            elif kind == "index":
                self.write_entry(step, arg)
            elif kind == "drop":
                (self.index_dir / f"{step}.json").unlink(missing_ok=True)
            elif kind == "rmidx":  # an entry's write killed before its rename
                (self.index_dir / arg).unlink(missing_ok=True)
            else:
                shutil.rmtree(self.root / arg, ignore_errors=True)
        if legacy and entries:
            log(f"{self.out}: a run written before checksums: its {len(entries)} chunks were "
                "read without them, and are now checksummed and indexed")
        _barrier("ncjax: chunks set aside")
        if self._manager is not None:
            self._manager.reload()
        self.committed = committed if self.primary and not shared and not self.read_only \
            else None
        return done, next_step

    def set_aside(self, step: int) -> Path:
        """Move chunk ``step`` and its index entry to damaged/ (never deleted)."""
        dest = self.out / "damaged"
        dest.mkdir(exist_ok=True)
        name, n = str(step), 0
        while (dest / name).exists() or (dest / f"{name}.json").exists():
            n += 1
            name = f"{step}-{n}"
        for src, dst in ((self.root / str(step), dest / name),
                         (self.index_dir / f"{step}.json", dest / f"{name}.json")):
            with contextlib.suppress(FileNotFoundError):  # another worker moved it
                os.replace(src, dst)
        return dest / name

    # -- writing -----------------------------------------------------------------------
    def entry(self, step: int, flat: dict, pending: bool = False) -> dict:
        """The index entry of chunk ``step`` (``flat``: its stored arrays, or only its
        "index" when ``pending``): pending, before orbax writes it, or with its checksums,
        the files' taken from disk (after orbax committed it)."""
        index = np.asarray(flat["index"])
        e = {"step": step, "cells": index[index >= 0].tolist(), "rows": int(index.size)}
        if pending:
            e["pending"] = True
        else:
            d = self.root / str(step)
            names = list(file_digests(d, read=False))
            before = stat_record(d, names)
            if 0 < (lag := before["newest"] + 2 * RACY_NS - time.time_ns()) < 10**9:
                time.sleep(lag / 1e9)  # a later change then has a later time
            e["arrays_sha256"] = checksum(flat)
            e["files"] = file_digests(d)
            if list(e["files"]) == names and stat_record(d, names) == before:
                e["stat"] = before  # else a file changed meanwhile: no quick check
            e["tally"] = chunk_tally(flat)
        return e

    def write_entry(self, step: int, entry: dict, exclusive: bool = False) -> bool:
        """Write index/<step>.json atomically (``exclusive``: only if there is none; False
        if there is)."""
        self.index_dir.mkdir(exist_ok=True)
        return write_atomic(self.index_dir / f"{step}.json", json.dumps(entry), exclusive)

    def save(self, step: int, result: dict, index: np.ndarray, exclusive: bool = False) -> bool:
        """Commit chunk ``step``: the run's result (its fields of ``SAVED``, padded rows
        included) and ``index``, each row's flat grid index (-1 for a padding row), then
        its checksums.
        Returns True once both are written; ``exclusive`` (workers): False, and nothing
        written, if index/<step>.json exists (another worker commits this chunk)."""
        import orbax.checkpoint as ocp

        tree = {"index": np.asarray(index, np.int64),
                **{k: result[k] for k in SAVED if k in result}}
        local = _local(tree)
        if self.primary and not self.write_entry(step, self.entry(step, tree, pending=True),
                                                 exclusive):
            return False
        # force: steps are not written in increasing order (other workers, re-solves)
        if not self._mngr.save(step, args=ocp.args.StandardSave(tree), force=True):
            raise RuntimeError(f"orbax did not save chunk {step} in {self.root}")
        self._mngr.wait_until_finished()
        # the arrays' checksum from memory, so that the write itself is checked too; with
        # several processes (none holds every array) from the committed chunk, read back
        # by all of them (orbax's restore is collective)
        flat = flatten(local) if local is not None else self.restore_raw(step)
        if self.primary:
            e = self.entry(step, flat)
            self.write_entry(step, e)
            if self.committed is not None:
                self.committed[step] = e
        _barrier(f"ncjax: chunk {step} indexed")  # every process then reads the same index
        return True

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()
