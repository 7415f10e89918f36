"""Per-step traces of one solve: the objective and the collapse metrics along the way.

The solver (``ncjax.solver``) keeps only the end of each run. ``trace`` solves ONE
configuration again with the solver's own loop (``loop.iteration``: the same random start,
the same optimiser steps on F = ``model.ufm_objective`` ∘ ``natural.to_params``), for a
fixed number of steps under ``lax.scan``, recording at the start and after every step:

    objective   F(W, H, b)                                   (half convention)
    grad_norm   ‖∇F‖ in the solver's natural coordinates
    nc1         NC1 = Tr(Σ_W Σ_B^†)/K (``metrics.nc1``); NaN for m = 1, where every class
                has one feature and there is no within-class variability to measure
    minority_spread_Z  max_{j,k∈B} ‖z_j − z_k‖ / max_k ‖z_k‖ (B: the classes of the
                smallest count; relative, no zero rule), meaningful for every m

There is no stopping rule and no freezing: after S steps the iterate is the one
``ncjax.solve(..., gtol=0, ftol=0, max_steps=S)`` returns (a NaN is recorded as it
comes; the solver would have kept the last finite iterate).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ncjax import dtypes
from ncjax import dtypes, loop, metrics, model, natural, solver
from ncjax.problem import Problem
from ncjax.validate import InputError


class Trace(NamedTuple):
    """Per-step records of one solve, numpy arrays of (steps + 1,): index 0 is the random
    start, index s the iterate after s optimiser steps."""

    objective: np.ndarray
    grad_norm: np.ndarray
    nc1: np.ndarray
    minority_spread_Z: np.ndarray


def _record(x, value, gnorm, problem: Problem):
    """(F, ‖∇F‖, NC1 or NaN for m = 1, minority spread of Z) at the natural point x."""
    n_k = problem.counts
    W, H, _ = natural.to_params(x, problem)
    Z = model.mean_logits(W, H)
    zk = Z.T  # rows z_k
    in_B = n_k == jnp.min(n_k)
    spread = jnp.max(jnp.where(in_B, metrics.group_spread(zk, n_k), 0.0))
    scale = jnp.max(jnp.linalg.norm(zk, axis=1))
    nc1 = metrics.nc1(H, n_k) if H.shape[1] > 1 else jnp.asarray(jnp.nan, value.dtype)
    return value, gnorm, nc1, spread / jnp.where(scale > 0, scale, 1.0)


@functools.partial(jax.jit, static_argnames=("d", "m", "optimizer", "memory_size", "dtype",
                                             "steps"))
def _trace_one(seed, key_index, problem, learning_rate, *, d, m, optimizer, memory_size,
               dtype, steps):
    """The compiled trace: the solver's own loop (``loop.iteration`` from
    ``natural.start_key(seed, key_index)``) for ``steps`` steps under ``lax.scan``,
    gtol = ftol = 0 so that no step stops it. Returns four (steps + 1,) arrays."""
    zero = jnp.zeros((), jnp.dtype(dtype))
    s = loop.Settings(d, m, optimizer, steps, memory_size, jnp.dtype(dtype))
    carry, body = loop.iteration(natural.start_key(seed, key_index), problem, learning_rate,
                                 zero, zero, s)
    record = lambda c: _record(c.x, c.value, c.gnorm, problem)

    def step(c, _):
        c = body(c)
        return c, record(c)

    _, rec = jax.lax.scan(step, carry, None, length=steps)
    return tuple(jnp.concatenate([a[None], r]) for a, r in zip(record(carry), rec))


def trace(counts, lam_W, lam_H, lam_b=0.0, *, steps: int, loss=None, bias: bool = True,
          d: int | None = None, m: int = 1, seed: int = 0, key_index: int = 0,
          convention: str = "half", optimizer="lbfgs", learning_rate=None,
          memory_size: int = 10, dtype: str = "float32") -> Trace:
    """Solve one configuration for exactly ``steps`` optimiser steps and record F, ‖∇F‖,
    NC1 and the minority spread of Z at the start and after every step.

    The arguments mean what they mean in ``ncjax.solve`` (one configuration: counts (K,),
    scalar λ's; ``seed`` and ``key_index`` pick the random start, so a sweep's cell i is
    traced with its seed and key_index = i); checked the same way. Returns a ``Trace``.
    """
    prob, per, static, batched = solver.prepare(
        counts, lam_W, lam_H, lam_b, loss=loss, bias=bias, d=d, m=m, seed=seed,
        convention=convention, optimizer=optimizer, learning_rate=learning_rate,
        max_steps=steps, dtype=dtype, memory_size=memory_size, key_index=key_index)
    if batched:
        raise InputError("trace takes one configuration: counts (K,) and scalar settings")
    dt = static["dtype"]
    with dtypes.x64(dt == "float64"), dtypes.precise():  # the solve's arithmetic
        one = jax.tree.map(lambda a: np.asarray(a[0], dt), prob)
        out = _trace_one(
            np.uint32(per["seed"][0]), np.uint32(per["key_index"][0]), one,
            np.asarray(per["learning_rate"][0], dt), d=static["d"], m=static["m"],
            optimizer=static["optimizer"], memory_size=static["memory_size"], dtype=dt,
            steps=static["max_steps"])
        return Trace(*(np.asarray(a) for a in jax.device_get(out)))
