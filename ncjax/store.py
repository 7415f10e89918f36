"""A run directory on disk: its manifest, its spec, its lock, and load.

A run directory holds

    manifest.json    what the directory holds, written (atomically) before any chunk:
                     {"format": 1, "spec_sha256": sha256 of spec.toml, "grid_shape": the
                     grid's shape, "cells": their number, "chunk_size": the chunk size
                     asked for, "source": the path the spec was read from, "loss": {"name",
                     "params": its parameters' values, "axes": the axes that carry the
                     others}, "versions":
                     {"ncjax", "jax", "jaxlib", "optax", "orbax", "numpy"} that started
                     the run (``versions``), "commit": the git commit of the ncjax
                     source when it ran from a checkout, else null (``commit``)}
    spec.toml        the spec as given (resume refuses it if it was changed since)
    chunks/, index/, damaged/
                     the chunks in orbax's layout, their index entries and checksums, and
                     the chunks that failed their checks, set aside (``ncjax.chunks``)
    .lock            the pid of the process writing here (a second writer is refused)
    claims/          independent workers' claims on chunks (``ncjax.claims``; no .lock)
    sessions/        one record a sweep, resume or worker that worked on the run: when,
                     where, on which devices, with which versions (``ncjax.sessions``)

Files are written by ``files.write_atomic``: spec.toml first, then manifest.json. A
directory that holds only spec.toml is a start that stopped before its manifest: ``resume``
continues it, and ``sweep`` with the same spec adopts it. ``sweep`` refuses any other
non-empty directory that is not a new run (foreign data is never taken for results).

Runs written before the manifest (``legacy``: spec.toml, run.json = {"spec_sha256",
"chunk_size", "source"}, chunks/ without index/) are still read: their chunks without
checksums (``load`` says so in one warning); ``resume`` indexes and checksums them and
writes their manifest.

This module owns the run directory; the driver (``ncjax.sweep``) decides what to solve and
when to write, and ``ncjax.reading`` reads a run (``load``, ``summary``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import signal
import subprocess
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ncjax import __version__
from ncjax import spec as _spec
from ncjax.chunks import Chunks
from ncjax.files import TMP_PREFIX, write_atomic
from ncjax.lock import Lock, RunError  # noqa: F401 - the run directory's, re-exported
from ncjax.names import LOSS_PARAMETERS, STATUS_NAMES
from ncjax.validate import InputError, NCJaxWarning

__all__ = ["DEFAULT_CHUNK", "FORMAT", "Interrupted", "RunError", "Run", "Lock", "Chunks", "check_new",
           "commit", "create_run", "join_run", "write_manifest", "open_run", "check_shape", "versions"]

FORMAT = 1
DEFAULT_CHUNK = 1024
MANIFEST, SPEC, LEGACY = "manifest.json", "spec.toml", "run.json"
SOURCE = Path(__file__).resolve().parent.parent  # a checkout's root, when there is one


class Run(NamedTuple):
    """An opened run directory: ``meta`` its manifest (or legacy run.json; None for a start
    that stopped before its manifest), ``spec``, ``kind`` "run" | "legacy" | "unstarted",
    and ``chunk_size``."""

    out: Path
    meta: dict | None
    spec: _spec.Spec
    kind: str
    chunk_size: int


class Interrupted(KeyboardInterrupt):
    """A sweep stopped by a signal after its last committed chunk: ``signum``, the run
    directory ``out``, the configurations ``done`` of ``total``. Everything committed is
    kept; ``ncjax resume out`` continues."""

    def __init__(self, signum: int, out: Path, done: int, total: int, how: str = ""):
        super().__init__(signum, out, done, total)
        self.signum, self.out, self.done, self.total = signum, Path(out), done, total
        self.how = how  # the resume command's options, e.g. " --worker 0/4"

    def __str__(self):
        return (f"interrupted by {signal.Signals(self.signum).name}: {self.done} of "
                f"{self.total} configurations done and saved; continue with "
                f"`ncjax resume {self.out}{self.how}`")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _listing(out: Path) -> list[str]:
    """The names in ``out`` but ncjax's unfinished temporary files."""
    try:
        return sorted(n for n in os.listdir(out) if not n.startswith(TMP_PREFIX))
    except OSError as e:
        raise RunError(f"{out}: cannot read the directory ({e.strerror})") from None


def check_new(out, sp: _spec.Spec) -> None:
    """RunError unless ``out`` can become a new run of ``sp``: absent, an empty writable
    directory, or a start of the same spec that stopped before its manifest."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunError(f"{out}: exists and is not a directory")
    if not out.is_dir():
        return
    names = _listing(out)
    if MANIFEST in names or LEGACY in names:
        raise RunError(f"{out}: already holds a run; continue it with `ncjax resume {out}`")
    if [n for n in names if n != ".lock"] == [SPEC]:
        try:
            same = (out / SPEC).read_text() == sp.text
        except (OSError, UnicodeDecodeError):
            same = False
        if not same:
            raise RunError(f"{out}: holds the spec.toml of another run that did not start; "
                           f"continue it with `ncjax resume {out}`, or choose another --out")
    elif names:
        shown = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
        raise RunError(f"{out}: not empty and not an ncjax run (it holds {shown}); a sweep "
                       "starts only in a new or empty directory")
    if not os.access(out, os.W_OK | os.X_OK):
        raise RunError(f"{out}: cannot write to this directory")


def versions() -> dict:
    """The versions of ncjax and of the packages a run's results depend on."""
    out = {"ncjax": __version__}
    for name, dist in (("jax", "jax"), ("jaxlib", "jaxlib"), ("optax", "optax"),
                       ("orbax", "orbax-checkpoint"), ("numpy", "numpy")):
        try:
            out[name] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


def commit(root: Path = SOURCE) -> str | None:
    """The git commit of the ncjax source at ``root`` ("<sha>" or "<sha>+dirty" when files
    tracked there are modified), or None when ncjax was not imported from a checkout (an
    installed wheel) or git cannot tell."""
    if not (root / ".git").exists() or not (root / "ncjax" / "__init__.py").exists():
        return None
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def write_manifest(out, sp: _spec.Spec, chunk_size: int, source, shape,
                   exclusive: bool = False) -> None:
    """Write ``out``/manifest.json (module docstring) atomically (``exclusive``: unless
    there is one)."""
    shape = [int(n) for n in shape]
    write_atomic(Path(out) / MANIFEST, json.dumps({
        "format": FORMAT, "spec_sha256": _sha(sp.text), "grid_shape": shape,
        "cells": int(np.prod(shape)), "chunk_size": int(chunk_size), "source": str(source),
        "loss": _loss_record(sp),
        "versions": versions(), "commit": commit()},
        indent=1), exclusive)


def _loss_record(sp: _spec.Spec) -> dict:
    """The run's loss: its name, its parameters' values and the axes that carry others."""
    name = sp.problem.get("loss", "ce")
    names = LOSS_PARAMETERS[name]
    return {"name": name, "params": {k: sp.problem[k] for k in names if k in sp.problem},
            "axes": [k for k in names if k in sp.axes]}


def create_run(out, sp: _spec.Spec, chunk_size: int, source, shape) -> None:
    """Make ``out`` a new run directory of the spec ``sp`` (``check_new``; its spec.toml,
    then its manifest); RunError if it cannot be one."""
    out = Path(out)
    check_new(out, sp)
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / SPEC, sp.text)
        write_manifest(out, sp, chunk_size, source, shape)
    except OSError as e:
        raise RunError(f"{out}: cannot write the run directory: {e.strerror or e}") from None


def join_run(out, sp: _spec.Spec, chunk_size: int, source, shape, asked=None) -> Run:
    """For independent workers: make ``out`` a run of ``sp`` as ``create_run`` does, its
    files created exclusively (of workers started together one writes each, and a spec.toml
    is only ever joined by the same spec), or adopt the run of the same spec already there;
    returns it opened. RunError for a run of another spec, or another chunk size than
    ``asked`` (the chunk size given explicitly)."""
    out = Path(out)
    if not (out / MANIFEST).exists():
        try:
            check_new(out, sp)
        except RunError:
            if not (out / MANIFEST).exists():  # else another worker made it meanwhile
                raise
        else:
            try:
                out.mkdir(parents=True, exist_ok=True)
                if (not write_atomic(out / SPEC, sp.text, exclusive=True)
                        and (out / SPEC).read_text() != sp.text):
                    raise RunError(f"{out}: another worker started it with another spec")
                write_manifest(out, sp, chunk_size, source, shape, exclusive=True)
            except (OSError, UnicodeDecodeError) as e:
                raise RunError(f"{out}: cannot write the run directory: "
                               f"{getattr(e, 'strerror', None) or e}") from None
    r = open_run(out)
    if r.kind != "run" or r.meta["spec_sha256"] != _sha(sp.text):
        raise RunError(f"{out}: holds a run of another spec; workers of one run are given "
                       "the same spec (or choose another --out)")
    if asked is not None and asked != r.chunk_size:
        raise RunError(f"{out}: its chunk size is {r.chunk_size}, not {asked}; workers of "
                       "one run share its chunks (leave --chunk-size out)")
    check_shape(r, shape)
    return r


def _checked_meta(path: Path, legacy: bool) -> dict:
    """The manifest (or legacy run.json) at ``path``, its keys checked."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunError(f"{path}: cannot be read as JSON ({type(e).__name__}); not a run "
                       "file ncjax wrote") from None
    need = {"spec_sha256": str, "chunk_size": int}
    if not legacy:
        need.update(format=int, grid_shape=list, source=str)
    if not isinstance(meta, dict):
        raise RunError(f"{path}: not a run file ncjax wrote (a JSON object is expected)")
    for key, kind in need.items():
        v = meta.get(key)
        if not isinstance(v, kind) or isinstance(v, bool):
            got = "no such key" if key not in meta else f"got {v!r}"
            raise RunError(f"{path}: not a run file ncjax wrote: {key!r} must be "
                           f"{'an integer' if kind is int else 'a ' + kind.__name__} ({got})")
    if meta["chunk_size"] < 1:
        raise RunError(f"{path}: not a run file ncjax wrote: 'chunk_size' must be >= 1 "
                       f"(got {meta['chunk_size']})")
    if not legacy and meta["format"] != FORMAT:
        raise RunError(f"{path}: run format {meta['format']}; this ncjax reads format {FORMAT}")
    return meta


def open_run(out) -> Run:
    """The run directory ``out`` (``Run``); RunError if it is not one, its files are not
    ncjax's, or its spec.toml was changed after the run started."""
    out = Path(out)
    if not out.is_dir():
        why = "not a directory" if out.exists() else "no such directory"
        raise RunError(f"{out}: not a run directory ({why})")
    if (out / MANIFEST).exists():
        kind, meta = "run", _checked_meta(out / MANIFEST, legacy=False)
    elif (out / LEGACY).exists():
        kind, meta = "legacy", _checked_meta(out / LEGACY, legacy=True)
    elif [n for n in _listing(out) if n != ".lock"] == [SPEC]:
        kind, meta = "unstarted", None  # stopped between its spec.toml and its manifest
    else:
        raise RunError(f"{out}: not a run directory (no manifest.json, nor the spec.toml "
                       "and run.json of an earlier ncjax)")
    try:
        text = (out / SPEC).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise RunError(f"{out / SPEC}: cannot read the run's spec ({type(e).__name__})") from None
    if meta is not None and _sha(text) != meta["spec_sha256"]:
        raise RunError(f"{out}/spec.toml was changed after the run started; a resumed run "
                       "must keep its spec (start a new run directory instead)")
    sp = _spec.loads(text, str(out / SPEC))
    size = meta["chunk_size"] if meta else sp.run.get("chunk_size", DEFAULT_CHUNK)
    return Run(out, meta, sp, kind, size)


def check_shape(run: Run, shape) -> None:
    """RunError if the manifest's grid is not the spec's (``shape``)."""
    if run.kind == "run" and tuple(run.meta["grid_shape"]) != tuple(shape):
        raise RunError(f"{run.out / MANIFEST}: its grid {tuple(run.meta['grid_shape'])} is "
                       f"not the spec's {tuple(shape)}")
