"""Input checks at the boundary: every bad input becomes one clear ``InputError``.

The output side of the boundary too: a file ncjax is asked to write is checked before any
work (``as_out_path``) and appears atomically (``replacing``), so an interrupted write
never leaves a truncated file in place of a good one.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import uuid
import warnings
from pathlib import Path

import numpy as np

# A configuration's random start is fold_in(key(seed), key_index) with both cast to uint32
# (``solver.program``): values outside [0, 2**32) would wrap onto another cell's start.
SEED_RANGE = 2**32
# The most classes a text input (a spec, ``--counts``) may build: Z alone is K × K numbers
# per configuration, 40 GB in float32 at this K, beyond any one device.
MAX_CLASSES = 100_000


class InputError(ValueError):
    """A bad argument to ncjax, with a message that says which one and why."""


class NCJaxWarning(UserWarning):
    """A setting ncjax accepts but whose results need care (e.g. d < K − 1)."""


def _as_float_array(name: str, value) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numeric, got {value!r}") from None
    return arr


def as_counts(counts) -> np.ndarray:
    """Class counts n_k as float64, shaped (K,) or (B, K): finite, > 0, K ≥ 2."""
    n = _as_float_array("counts", counts)
    if n.ndim not in (1, 2):
        raise InputError(f"counts must be shaped (K,) or (B, K), got shape {n.shape}")
    if n.shape[-1] < 2:
        raise InputError(f"need at least 2 classes, got K = {n.shape[-1]}")
    if n.size == 0:
        raise InputError("counts is empty")
    if not np.all(np.isfinite(n)):
        raise InputError(f"every class count must be finite, got {n.tolist()}")
    if np.any(n <= 0):
        raise InputError(f"every class count n_k must be > 0, got {n.tolist()}")
    return n


def as_lam(name: str, value, *, positive: bool = False) -> np.ndarray:
    """A regularisation strength (scalar or (B,)): finite and ≥ 0 (> 0 if ``positive``)."""
    lam = _as_float_array(name, value)
    if lam.ndim > 1:
        raise InputError(f"{name} must be a scalar or shaped (B,), got shape {lam.shape}")
    if not np.all(np.isfinite(lam)):
        raise InputError(f"{name} must be finite, got {lam.tolist()}")
    if np.any(lam < 0):
        raise InputError(f"{name} must be >= 0, got {lam.tolist()}")
    if positive and np.any(lam == 0):
        raise InputError(
            f"{name} must be > 0: with {name} = 0 the UFM objective has no minimiser "
            "(scaling the other factor up drives the loss to 0)")
    return lam


def as_int(name: str, value, *, minimum: int) -> int:
    """A static integer setting such as m or d, at least ``minimum`` and below 2**31 (array
    dimensions and step counts are int32 in the compiled programs)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {value}")
    if value >= 2**31:
        raise InputError(f"{name} must be < 2**31, got {value}")
    return int(value)


def as_seeds(value, name: str = "seed") -> np.ndarray:
    """Seeds (or key indices), an integer or (B,) integers in [0, 2**32): the range of the
    uint32 the PRNG key is made from, so that distinct seeds are distinct starts."""
    seeds = np.asarray(value)
    if np.issubdtype(seeds.dtype, np.integer) and seeds.ndim <= 1:
        bad = seeds[(seeds < 0) | (seeds >= SEED_RANGE)]
        if bad.size:
            raise InputError(f"{name} must be in [0, 2**32) (the PRNG key's uint32), "
                             f"got {bad.flat[0]}")
        return seeds.astype(np.int64)
    seeds = np.asarray(value, dtype=object)  # Python ints beyond int64, refused by range
    if seeds.ndim > 1 or not all(isinstance(v, (numbers.Integral, np.integer))
                                 and not isinstance(v, (bool, np.bool_)) for v in seeds.flat):
        raise InputError(f"{name} must be an integer or a (B,) array of integers, got {value!r}")
    bad = [int(v) for v in seeds.flat if not 0 <= v < SEED_RANGE]
    if bad:
        raise InputError(f"{name} must be in [0, 2**32) (the PRNG key's uint32), got {bad[0]}")
    return seeds.astype(np.int64)


def as_out_path(path, *, name: str = "out", formats=None) -> Path:
    """A file to write, checked before any work: not a directory, in a directory that
    exists and is writable, and (``formats``: lower-case extensions) of a known format."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{name} {str(p)!r} is a directory; give a file name")
    parent = p.parent
    if not parent.is_dir():
        raise InputError(f"{name} {str(p)!r}: no directory {str(parent)!r} (create it first)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{name} {str(p)!r}: cannot write in {str(parent)!r}")
    if formats is not None and p.suffix.lower().lstrip(".") not in formats:
        raise InputError(f"{name} {str(p)!r}: expected a file ending in one of "
                         f"{', '.join('.' + f for f in formats)}")
    return p


@contextlib.contextmanager
def replacing(path):
    """Yield a temporary path beside ``path`` to write in full; on success it replaces
    ``path`` in one step (``os.replace``), on any failure it is removed and ``path`` stays
    as it was. An OSError becomes an InputError naming ``path``."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp
        os.replace(tmp, p)
    except OSError as e:
        raise InputError(f"{p}: cannot write: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)


def broadcast_batch(counts: np.ndarray, **per_config: np.ndarray):
    """Broadcast counts (K,)|(B, K) and per-configuration scalars|(B,) to one batch size B.

    Returns (B, batched, counts (B, K), {name: (B,)}); ``batched`` is False when every input
    was unbatched. Mismatched leading sizes raise an ``InputError`` naming them.
    """
    sizes = {}
    if counts.ndim == 2:
        sizes["counts"] = counts.shape[0]
    for name, v in per_config.items():
        if v.ndim == 1:
            sizes[name] = v.shape[0]
    distinct = set(sizes.values())
    if len(distinct) > 1:
        desc = ", ".join(f"{k}: {v}" for k, v in sizes.items())
        raise InputError(f"mismatched batch sizes ({desc}); batched inputs must share one B")
    batched = bool(sizes)
    B = distinct.pop() if distinct else 1
    if B == 0:
        raise InputError("the batch is empty (B = 0)")
    counts = np.broadcast_to(counts, (B, counts.shape[-1]))
    out = {k: np.broadcast_to(v, (B,)) for k, v in per_config.items()}
    return B, batched, counts, out


def warn_small_d(d: int, K: int) -> None:
    if d < K - 1:
        warnings.warn(
            f"d = {d} < K - 1 = {K - 1}: the convex form then only bounds the optimum "
            "from below (min P <= min F), and the theory's thresholds assume d >= K - 1",
            NCJaxWarning, stacklevel=4)
