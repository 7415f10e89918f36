"""Class-count profiles n_k (K,), as float64 numpy arrays; counts may be any positive reals."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ncjax.validate import InputError, as_counts


def explicit(counts: Sequence[float]) -> np.ndarray:
    """An explicit list n_1, …, n_K (checked: finite, positive, K ≥ 2)."""
    n = as_counts(counts)
    if n.ndim != 1:
        raise InputError(f"an explicit profile is one list of counts, got shape {n.shape}")
    return n


def steps(groups: Iterable[tuple[int, float]]) -> np.ndarray:
    """Several steps: ``[(K_1, n_1), (K_2, n_2), …]`` gives K_g classes of n_g samples each."""
    out = []
    for g in groups:
        try:
            k, n = g
        except (TypeError, ValueError):
            raise InputError(f"each step is a pair (number of classes, count), got {g!r}") from None
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise InputError(f"the number of classes in a step must be an integer >= 1, got {k!r}")
        out += [n] * int(k)
    return explicit(out)


def two_cluster(K_A: int, n_A: float, K_B: int, n_B: float) -> np.ndarray:
    """K_A majority classes of n_A samples followed by K_B minority classes of n_B."""
    return steps([(K_A, n_A), (K_B, n_B)])


def long_tail(K: int, n_max: float, rho: float) -> np.ndarray:
    """n_k = n_max · ρ^(−k/(K−1)), k = 0 … K−1: from n_max down to n_max/ρ (ρ ≥ 1)."""
    if isinstance(K, bool) or int(K) != K or K < 2:
        raise InputError(f"K must be an integer >= 2, got {K!r}")
    if not np.isfinite(rho) or rho < 1:
        raise InputError(f"the imbalance ratio rho must be finite and >= 1, got {rho!r}")
    k = np.arange(K)
    return explicit(n_max * float(rho) ** (-k / (K - 1)))
