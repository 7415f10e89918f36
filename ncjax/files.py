"""Files that appear whole or not at all, and what says a file is the one written.

``write_atomic``: a temporary file ``.ncjax-tmp-*`` (``TMP_PREFIX``) beside the target,
fsync, ``os.replace`` (or a hard link, for a file created only if absent). ``checksum``:
sha256 over a flat dict of arrays, per key in sorted order the JSON text [key, dtype.str,
shape] then the C-order bytes. ``file_digests``: sha256 of every file's bytes under a
directory. ``stats``: [size, mtime_ns, ctime_ns, inode] of a directory and everything under
it, the record of the quick check (``ncjax.chunks``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["TMP_PREFIX", "checksum", "file_digests", "flatten", "stat", "stats",
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


def file_digests(root: Path) -> dict[str, str]:
    """{path relative to ``root``: sha256 of its bytes} for every file under ``root``."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


def stat(p) -> list[int]:
    st = os.stat(p)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def stats(root) -> dict[str, list[int]]:
    """{path relative to ``root`` ("." for itself): [size, mtime_ns, ctime_ns, inode]} of
    ``root``, every directory and every file under it."""
    root = str(root)
    out = {".": stat(root)}
    for d, dirs, files in os.walk(root):
        rel = os.path.relpath(d, root)
        for n in dirs + files:
            r = n if rel == "." else f"{rel}/{n}"
            out[r] = stat(os.path.join(d, n))
    return out
