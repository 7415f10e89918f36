"""The harness's measurements of the solver's step (``benchmarks/harness.py`` runs them):
a copy's bandwidth, the step time of the batched loop against B, the bytes a compiled step
moves, and the same step for one configuration at a time (jitted body, jitted scan).

A step time is measured as the copy's is: S steps in one compiled program over a traced S,
t(S) at S = 2 and S = 2 + S', the step time [t(2 + S') − t(2)]/S', so that the start, the
transfers and the synchronisation cancel. Every wall time is the median of ``repeats``
calls after one warm call, synchronised with ``jax.block_until_ready``.
"""

from __future__ import annotations

import functools
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.experiments import fused
from ncjax import dtypes, loop, natural, solver, sweep

# (K, d, m): the reference shape, a tiny one and the full UFM (m = n_k = 1000).
SHAPES = {"reference": (10, 64, 32), "tiny": (10, 16, 4), "full": (10, 64, 1000)}
LAM_W, LAM, LR = 0.01, 0.004, 1e-2  # λ = 0.004 > λ* = 0.00333 for 5 × 500 + 5 × 100
def counts_for(K: int, m: int) -> np.ndarray:
    """Class counts of a benchmark problem: m = 1000 is the full UFM (every n_k = m);
    otherwise two clusters, K/2 classes of 500 and the rest of 100."""
    if m >= 1000:
        return np.full(K, float(m))
    return np.array([500.0] * (K // 2) + [100.0] * (K - K // 2))


def adam_bytes(K: int, d: int, m: int, itemsize: int) -> int:
    """Bytes model of one Adam step of one configuration: read and write x = (V, U, b)
    and both moments once, 6·P·itemsize with P = K d + K m d + K."""
    return 6 * (K * d + K * m * d + K) * itemsize


def step_flops(K: int, d: int, m: int) -> int:
    """Flops of one gradient evaluation, the three K-wide products over the K m features
    (logits, ∂U, ∂V), 2·K·(K m)·d each."""
    return 6 * K * K * m * d


def median(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` (synchronised) over ``repeats`` calls after one warm."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def copy_bandwidth(nbytes: int, repeats: int, target_s: float = 0.05) -> dict:
    """Device-to-device copy y = x + 1 (float32, random x): bytes read + written per s,
    timed as the solver's step is: S copies in a ``lax.fori_loop`` over a traced S, the
    time of one [t(2 + S') − t(2)]/S', so that dispatch and synchronisation cancel (one
    call per copy timed from the host undercounts: 3,227 against 4,121 GB/s on an H200,
    2 GiB, benchmarks/RESULTS.md). ``single_call_bandwidth``: that one-call figure."""
    n = nbytes // 4
    x = jax.random.normal(jax.random.key(0), (n,), jnp.float32)
    one = jax.jit(lambda x: x + 1.0)
    t_one = median(lambda: one(x), repeats)
    copies = jax.jit(lambda x, s: jax.lax.fori_loop(0, s, lambda i, x: x + 1.0, x))
    t_lo = median(lambda: copies(x, 2), repeats)
    s = 4
    while True:
        t_hi = median(lambda: copies(x, 2 + s), repeats)
        if t_hi - t_lo >= target_s or s >= 1024:
            break
        s *= 4
    t = max(t_hi - t_lo, 1e-12) / s
    return {"bytes": 4 * n, "seconds": t, "bandwidth": 2 * 4 * n / t,
            "single_call_bandwidth": 2 * 4 * n / t_one}


def batch(K, d, m, B, *, optimizer, dtype, max_steps=2, gtol=0.0, ftol=0.0, counts=None,
          lam=None, seed=None, key_index=None):
    """Validated inputs of B configurations: (problem, per, static) of ``solver.prepare``."""
    counts = np.tile(counts_for(K, m), (B, 1)) if counts is None else counts
    lam = LAM if lam is None else lam
    problem, per, static, _ = solver.prepare(
        counts, LAM_W, np.asarray(lam) ** 2 / LAM_W, 0.0, d=d, m=m,
        seed=np.arange(B) if seed is None else seed, convention="half",
        optimizer=optimizer, learning_rate=LR if optimizer == "adam" else None,
        max_steps=max_steps, gtol=gtol, ftol=ftol, dtype=dtype, memory_size=10,
        key_index=0 if key_index is None else key_index, method="ufm")
    return problem, per, static


@functools.partial(jax.jit, static_argnames=("d", "m", "optimizer", "memory_size", "dtype",
                                             "kernel"))
def loops(keys, problems, learning_rate, gtol, ftol, max_steps, *, d, m, optimizer,
          memory_size, dtype, kernel=None):
    """The solver's loop alone (``loop.optimise``: the start and the steps, no metrics),
    max_steps traced; ``kernel``: None for XLA's step, or the ``fused.Settings`` of the
    one-kernel Adam step (``fused.solve``). Returns (x, F, ‖∇F‖, steps, status)."""
    s = loop.Settings(d, m, optimizer, max_steps, memory_size, jnp.dtype(dtype))
    if kernel is None:
        return loop.optimise(keys, problems, learning_rate, gtol, ftol, s)
    return fused.solve(keys, problems, learning_rate, gtol, ftol, s, kernel)


def device_inputs(problem, per, dtype, device):
    """``loops``'s arrays of validated inputs on ``device``: (keys, problems, learning
    rate, gtol, ftol)."""
    put = lambda a: jax.device_put(np.asarray(a, dtype), device)
    keys = jax.device_put(jax.vmap(natural.start_key)(
        per["seed"].astype(np.uint32), per["key_index"].astype(np.uint32)), device)
    return (keys, jax.tree.map(put, problem)) + tuple(
        put(per[k]) for k in ("learning_rate", "gtol", "ftol"))


@functools.cache
def compiled_loop(K, d, m, B, optimizer, dtype, device, kernel=None):
    """``loops`` for B benchmark configurations of (K, d, m) on ``device``, compiled once
    (max_steps traced; gtol = ftol = 0: every configuration runs it): (run(max_steps) ->
    outputs, seconds the compilation took, (executable, args, kwargs)). Kept, so that the
    agreement check reuses the programs the timings compiled."""
    problem, per, _ = batch(K, d, m, B, optimizer=optimizer, dtype=dtype)
    args = device_inputs(problem, per, dtype, device)
    kwargs = dict(d=d, m=m, optimizer=optimizer, memory_size=10, dtype=dtype)
    t0 = time.perf_counter()
    with dtypes.precise():
        exe = loops.lower(*args, np.int32(2), **kwargs, kernel=kernel).compile()
    compile_s = time.perf_counter() - t0
    run = lambda steps: exe(*args, jax.device_put(np.int32(steps), device))
    return run, compile_s, (exe, args, kwargs)


def solver_step(K, d, m, B, *, optimizer, dtype, device, repeats, target_s, hlo=False,
                kernel=None):
    """Step time of the solver for B configurations of shape (K, d, m), see the module
    docstring. Returns a dict of the measurement (with ``hlo``: the compiled program's
    optimised HLO text under "hlo"). ``kernel``: None for XLA's step, or the
    ``fused.Settings`` of the one-kernel Adam step (no compiled bytes then: XLA's
    cost analysis does not see into the kernel)."""
    run, compile_s, (exe, args, kwargs) = compiled_loop(K, d, m, B, optimizer, dtype, device,
                                                     kernel)
    t_lo = median(lambda: run(2), repeats)
    steps = 4
    while True:
        t_hi = median(lambda: run(2 + steps), repeats)
        if t_hi - t_lo >= target_s or steps >= 4096:
            break
        steps *= 4
    out = jax.device_get(run(2 + steps))
    dt = max(t_hi - t_lo, 1e-12) / steps
    itemsize = np.dtype(dtype).itemsize
    if kernel is None:
        with dtypes.precise():
            traffic = compiled_bytes(args, **kwargs) / B
    else:
        traffic = np.nan
    return {"K": K, "d": d, "m": m, "B": B, "optimizer": optimizer, "dtype": dtype,
            "kernel": None if kernel is None else kernel._asdict(),
            "steps": steps, "t_lo": t_lo, "t_hi": t_hi, "step_s": dt,
            "config_steps_per_s": B / dt, "compile_s": compile_s,
            "ran_all_steps": bool(np.all(np.asarray(out[3]) == 2 + steps)),
            "adam_bytes_per_s": B * adam_bytes(K, d, m, itemsize) / dt,
            "compiled_bytes": traffic, "model_bytes": adam_bytes(K, d, m, itemsize),
            "flops_per_s": B * step_flops(K, d, m) / dt} | ({"hlo": exe.as_text()} if hlo else {})


def fused_agreement(K, d, m, B, steps, settings, *, device) -> dict:
    """The one-kernel Adam loop (``benchmarks.experiments.fused``, ``settings``) against XLA's, the same B
    configurations of (K, d, m) from the same starts for ``steps`` steps (float32, products
    as ``dtypes.precise``): the largest relative difference of F, of ‖∇F‖ and of each
    block of x (over that block's largest entry), over the batch."""
    want, got = (jax.device_get(compiled_loop(K, d, m, B, "adam", "float32", device, k)[0](steps))
                 for k in (None, settings))
    rel = lambda a, b: float(np.max(np.abs(np.asarray(a, np.float64) - b))
                             / max(np.max(np.abs(np.asarray(b, np.float64))), 1e-30))
    out = {"B": B, "steps": steps, "settings": settings._asdict(),
           "all_ran": bool(np.all(got[3] == steps) and np.all(want[3] == steps)),
           "F": float(np.max(np.abs(got[1] - want[1]) / np.abs(want[1]))),
           "grad_norm": float(np.max(np.abs(got[2] - want[2]) / want[2]))}
    return out | {f"x.{k}": rel(getattr(got[0], k), getattr(want[0], k))
                  for k in ("V", "U", "b")}


def compiled_bytes(args, *, d, m, optimizer, memory_size, dtype) -> float:
    """Bytes one step of B configurations moves as compiled: XLA's cost analysis ("bytes
    accessed": operands and results of every instruction, as if nothing stayed in cache)
    of the solver's batched step (``loop.batched``: the loop body with the freeze of
    stopped configurations the solver runs, ``loop.FREEZE``) on the inputs ``args`` of
    ``loops`` (keys, problems, learning rate, gtol, ftol; (B, ...)). Over the
    bytes model it says how many times the model's traffic the program moves; its inverse
    caps the fraction of the copy a bandwidth-bound step can reach. NaN where this
    backend's compiled program gives no cost analysis (the run goes on)."""
    init, advance = loop.batched(loop.Settings(d, m, optimizer, 1 << 30, memory_size,
                                               jnp.dtype(dtype)))
    carry = jax.eval_shape(init, *args)
    cost = jax.jit(advance).lower(carry, *args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost  # older JAX
    return float((cost or {}).get("bytes accessed", np.nan))


@functools.cache
def stepper(s: loop.Settings):
    """(init, body) of the solver's loop for one configuration, each jitted once per
    settings: init(key, params) -> carry₀, body(carry, key, params) -> carry, params =
    (problem, learning rate, gtol, ftol)."""
    init = jax.jit(lambda key, p: loop.iteration(key, *p, s)[0])
    body = jax.jit(lambda c, key, p: loop.iteration(key, *p, s)[1](c))
    return init, body


def one(K, d, m, *, optimizer, dtype, gtol=0.0, ftol=0.0, max_steps=1 << 30, counts=None,
        lam=None, seed=0, key_index=0):
    """The solver's loop of one configuration: (carry₀, step), step(carry) the jitted body
    (one compilation per shape and settings, the configuration's numbers traced)."""
    problem, per, static = batch(K, d, m, 1, optimizer=optimizer, dtype=dtype,
                                 max_steps=max_steps, gtol=gtol, ftol=ftol, counts=counts,
                                 lam=lam, seed=seed, key_index=key_index)
    s = loop.Settings(d, m, optimizer, static["max_steps"], static["memory_size"],
                      jnp.dtype(dtype))
    params = (jax.tree.map(lambda a: jnp.asarray(a[0], dtype), problem),) + tuple(
        jnp.asarray(per[k][0], dtype) for k in ("learning_rate", "gtol", "ftol"))
    key = natural.start_key(int(per["seed"][0]), int(per["key_index"][0]))
    init, body = stepper(s)
    return init(key, params), lambda c: body(c, key, params)


def jitted_loop(K, d, m, steps, *, dtype, repeats):
    """One configuration, the solver's Adam body jitted, called ``steps`` times from Python."""
    carry, step = one(K, d, m, optimizer="adam", dtype=dtype)

    def run():
        c = carry
        for _ in range(steps):
            c = step(c)
        return c
    return steps / median(run, repeats)


def jitted_scan(K, d, m, steps, *, dtype, repeats):
    """One configuration, ``steps`` of the solver's Adam body in one jitted lax.scan."""
    carry, step = one(K, d, m, optimizer="adam", dtype=dtype)
    scan = jax.jit(lambda c: jax.lax.scan(lambda c, _: (step(c), None), c, None,
                                          length=steps)[0])
    return steps / median(lambda: scan(carry), repeats)


def fits(K, d, m, dtype, device, memory_size=1) -> int:
    """How many configurations of the shape the solve's bytes model fits on ``device``
    (``sweep.bytes_per_config``; memory_size 1 stands for Adam's two moments)."""
    return max(1, sweep.memory_budget([device])
               // sweep.bytes_per_config(K, d, m, memory_size, dtype))


def describe(device) -> dict:
    d = {"platform": device.platform, "name": getattr(device, "device_kind", str(device)),
         "jax": jax.__version__, "optax": optax.__version__, "python": platform.python_version(),
         "machine": platform.machine(), "processor": platform.processor()}
    if device.platform == "cpu":
        try:
            d["cores"] = os.cpu_count()
            with open("/proc/cpuinfo") as f:
                d["name"] = next(l.split(":", 1)[1].strip() for l in f if "model name" in l)
        except (OSError, StopIteration):
            pass
    return d
