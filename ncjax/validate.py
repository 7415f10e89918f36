"""Input checks at the boundary: every bad input becomes one clear ``InputError``."""

from __future__ import annotations

import numbers
import warnings

import numpy as np


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
    """A static integer setting such as m or d, at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def as_seeds(value, name: str = "seed") -> np.ndarray:
    seeds = np.asarray(value)
    if seeds.ndim > 1 or not np.issubdtype(seeds.dtype, np.integer):
        raise InputError(f"{name} must be an integer or a (B,) array of integers, got {value!r}")
    return seeds.astype(np.int64)


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
