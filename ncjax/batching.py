"""How a batch of configurations is laid out on devices: padding, groups, sharding.

A batch of B configurations is sharded over n devices along its first axis (a
``jax.sharding.Mesh`` with one axis "cfg" and ``shard_map``), each device getting
L = ⌈B/n⌉ configurations, the batch padded to n·L by repeating its last configuration.
Within a device the factored solver (method "ufm") runs its configurations in equal
groups of at most ``pool`` one after another (``ncjax.loop.in_groups``) — on a CPU a small
group is fastest, a configuration waiting only for the slowest of its group — and the
convex solver keeps ``pool`` slots refilled as configurations finish
(``ncjax.convex.solve_pooled``).
"""

from __future__ import annotations

import jax
import numpy as np

# Slots of the convex solver's pool per device (benchmarks/RESULTS.md: 512 was the best
# of 500-2000 and none on the 2-core CPU).
CONVEX_POOL = 512
# A smaller batch (L configurations a device) gets about L/CONVEX_WAVES slots, at least
# CONVEX_MIN: slots as many as the configurations all wait for the slowest one (L × its
# steps), an eighth of them refill (benchmarks/RESULTS.md: K = 20, 128 configurations,
# 16 slots 1.8× as fast as 128; K = 10, 1,024: 128 slots the best of 64-256).
CONVEX_WAVES, CONVEX_MIN = 8, 16
# Configurations the factored solver runs together per device, by platform; absent: all of
# them in one batched loop (a GPU needs the width). On the 2-core CPU groups of 4 solved
# the most configurations a second (benchmarks/RESULTS.md).
UFM_POOL = {"cpu": 4}


def layout(B: int, devices, method: str = "ufm", pool: int | None = None):
    """How a batch of B configurations runs on ``devices``: (B_pad, pool).

    Each of the n devices gets L = ⌈B/n⌉ configurations, the batch padded to B_pad = n·L
    by repeating its last configuration. ``pool`` None takes the default of the method
    and platform (``CONVEX_POOL``, ``UFM_POOL``). Method "ufm" with a pool p < L solves a
    device's configurations in g = ⌈L/p⌉ groups of s = ⌈L/g⌉ ≤ p, with L raised to g·s
    (fewer than g padding rows) so that the groups are equal: a smaller last group would be
    a second compiled copy of the loop. Returns B_pad and the pool the program takes (s;
    for "convex" min(p, L) slots; None: one group).
    """
    n = len(devices)
    L = -(-B // n)
    if pool is None:
        pool = (min(CONVEX_POOL, max(CONVEX_MIN, -(-L // CONVEX_WAVES))) if method == "convex"
                else UFM_POOL.get(devices[0].platform))
    if pool is None:
        return n * L, None
    if method == "ufm" and pool < L:
        groups = -(-L // pool)
        pool = -(-L // groups)
        L = groups * pool
    return n * L, min(pool, L)


def pad(a: np.ndarray, B_pad: int) -> np.ndarray:
    """``a`` (B, ...) padded to (B_pad, ...) by repeating its last row."""
    return np.concatenate([a, np.repeat(a[-1:], B_pad - a.shape[0], axis=0)])


def mesh(devices) -> jax.sharding.Mesh:
    """The one-axis ("cfg") mesh over ``devices``."""
    return jax.sharding.Mesh(np.array(devices), ("cfg",))


def sharded(m: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
    """The sharding of a configuration axis over mesh ``m``."""
    return jax.sharding.NamedSharding(m, jax.sharding.PartitionSpec("cfg"))


def replicated(m: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
    return jax.sharding.NamedSharding(m, jax.sharding.PartitionSpec())


def shard_map(f, m: jax.sharding.Mesh, n_args: int, n_replicated: int = 0):
    """f mapped over each device's shard of the first ``n_args`` arguments (their
    configuration axis), the last ``n_replicated`` passed whole; outputs sharded."""
    spec = jax.sharding.PartitionSpec("cfg")
    in_specs = (spec,) * n_args + (jax.sharding.PartitionSpec(),) * n_replicated
    if hasattr(jax, "shard_map"):
        return jax.shard_map(f, mesh=m, in_specs=in_specs, out_specs=spec, check_vma=False)
    from jax.experimental.shard_map import shard_map as legacy  # before jax 0.7
    return legacy(f, m, in_specs=in_specs, out_specs=spec, check_rep=False)
