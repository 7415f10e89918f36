"""The benchmark's problem and its rules of timing, shared by ``ncjax bench``'s sections.

The grid (the one of ``sweeps/bench_16384.toml``, generated here): two clusters, k_a
classes of n_A = 500 and k_b of n_B, n_B = linspace(20, 400, n), λ = geomspace(1e-3, 8e-3,
n) (λ = sqrt(λ_W λ_H), half convention), λ_W = 0.01, λ_H = λ²/λ_W, n_B outer. On a CPU
ncjax is timed as a user calls it (``devices_of``: every core). A timing is
the median of ``repeats`` calls after one warm call; the warm call's excess over that
median is the compilation ("compile_s"); a rate is what converged over the seconds.
"""

from __future__ import annotations

import time

import numpy as np

K_A, N_A, K_B, LAM_W = 5, 500.0, 5, 0.01
N_B = (20.0, 400.0)
LAM = (1e-3, 8e-3)
FULL, TINY = 128, 6  # grid points per axis
# configurations of the samples: (one at a time by ncjax.solve, cvxpy), full and tiny
SAMPLES = {"full": (32, 16), "tiny": (4, 2)}
# The peers: classes per cluster of the second problem (K = 20), its grid points per axis,
# the configurations scipy's L-BFGS-B solves, and the batch of the LAPACK bounds
K20 = 10
PEER_POINTS = {"full": 16, "tiny": 0}
SCIPY_SAMPLE = {"full": 32, "tiny": 2}
LAPACK_BATCH = 512



def grid(n: int = FULL, k_a: int = K_A, k_b: int = K_B):
    """The benchmark's n × n configurations, n_B outer: (counts (n², K), λ_W, λ_H (n²,)),
    k_a classes of N_A and k_b of n_B (K = k_a + k_b)."""
    n_B, lam = np.meshgrid(np.linspace(*N_B, n), np.geomspace(*LAM, n), indexing="ij")
    n_B, lam = n_B.ravel(), lam.ravel()
    counts = np.concatenate([np.full((n_B.size, k_a), N_A),
                             np.repeat(n_B[:, None], k_b, axis=1)], axis=1)
    return counts, np.full(n_B.size, LAM_W), lam**2 / LAM_W


def devices_of(device):
    """``ncjax.solve``'s ``devices`` for a bench on ``device``: None (its default: the local
    devices, a CPU batch split over the cores by ``ncjax.cores``) for a CPU, else
    [device]."""
    return None if device.platform == "cpu" else [device]


def sample(B: int, n: int) -> np.ndarray:
    """n evenly spaced configuration indices of B (fewer if B < n)."""
    return np.unique(np.linspace(0, B - 1, n).round().astype(int))


def timed(fn, repeats: int):
    """(first call's seconds, median of ``repeats`` further calls, their seconds, last
    value); ``fn`` returns host values (numpy), so a call ends when its work has."""
    t0 = time.perf_counter()
    value = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times)), times, value


def route(name, configurations, converged, first, seconds, times, **extra) -> dict:
    """One row of results: the rates follow from the raw numbers."""
    return {"route": name, "configurations": int(configurations),
            "converged": int(converged), "seconds": seconds, "times": times,
            "compile_s": max(first - seconds, 0.0), "converged_per_s": converged / seconds,
            **extra}


def ratio(a: float, b: float) -> str:
    """a/b as the table writes it (∞ when b is 0)."""
    if b == 0:
        return "∞"
    q = a / b
    return f"{q:,.0f}×" if q >= 10 else f"{q:.2f}×" if q >= 0.1 else f"{q:.2g}×"
