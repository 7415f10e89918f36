"""Files that appear whole or not at all, and what says a file is the one written.

``write_atomic``: a temporary file ``.ncjax-tmp-*`` (``TMP_PREFIX``) beside the target,
fsync, ``os.replace`` (or a hard link, for a file created only if absent). ``checksum``:
sha256 over a flat dict of arrays, per key in sorted order the JSON text [key, dtype.str,
shape] then the C-order bytes. ``file_digests``: sha256 of every file's bytes under a
directory. ``stat_record``: one digest of the [size, mtime_ns, ctime_ns, inode] of a
directory's files and the directories that hold them, the record of the quick check
(``ncjax.chunks``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["TMP_PREFIX", "checksum", "file_digests", "flatten", "stat_record",
           "write_atomic"]

TMP_PREFIX = ".ncjax-tmp-"


def write_atomic(path, text: str, exclusive: bool = False) -> bool:
    """Write ``text`` to ``path`` so that it appears whole or not at all (OSError if the
    directory cannot be written); ``exclusive``: only if ``path`` does not exist (a hard
    link, which never replaces a file), False if it does. True once written."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself durable (not on every FS)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return True


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"metrics": {"nc1": a}} → {"metrics.nc1": a} (numpy arrays)."""
    flat = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            flat.update(flatten(v, f"{prefix}{k}."))
        else:
            flat[prefix + k] = np.asarray(v)
    return flat


def checksum(flat: dict) -> str:
    """sha256 of a flat dict of arrays: per key in sorted order, [key, dtype, shape] as
    JSON, then the array's C-order bytes."""
    h = hashlib.sha256()
    for k in sorted(flat):
        a = np.ascontiguousarray(flat[k])
        h.update(json.dumps([k, a.dtype.str, list(a.shape)]).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def file_digests(root: Path, read: bool = True) -> dict[str, str | None]:
    """{path relative to ``root``: sha256 of its bytes (None unless ``read``)} for every
    file under ``root``, in sorted order."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            if read else None for p in sorted(Path(root).rglob("*")) if p.is_file()}


def stat_paths(files) -> list[str]:
    """The paths a stat record covers: "." and every directory holding one of ``files``
    (relative paths), then the files, in that order."""
    dirs = {"."}
    for f in files:  # each file's parents, up to the first one already seen
        i = f.rfind("/")
        while i > 0 and (d := f[:i]) not in dirs:
            dirs.add(d)
            i = f.rfind("/", 0, i)
    return sorted(dirs) + list(files)


def stat_record(root, files) -> dict:
    """{"sha256": digest of [size, mtime_ns, ctime_ns, inode] of each path of
    ``stat_paths(files)`` under ``root``, in order (int64 bytes), "newest": the latest of
    those times}. Writing a byte of a file changes its times, adding, removing or renaming
    a file its directory's. OSError if a path is missing."""
    paths = stat_paths(files)
    if os.stat in os.supports_dir_fd:  # one lookup of root, not one a path
        fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            st = [os.stat(p, dir_fd=fd) for p in paths]
        finally:
            os.close(fd)
    else:
        st = [os.stat(os.path.join(root, p)) for p in paths]
    a = np.array([(s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino) for s in st], np.int64)
    return {"sha256": hashlib.sha256(a.tobytes()).hexdigest(), "newest": int(a[:, 1:].max())}
