"""Throughput and time to solution, side by side with the ways the UFM is solved today.

One run on the current default device (``ncjax bench``, ``python benchmarks/bench.py``)
measures, and writes ``bench.json`` (every raw number, the machine, the command),
``bench.md`` (the tables, also printed) and ``bench.png`` (throughput against B):

* **copy**: a device-to-device copy y = x + 1 of ``copy_bytes`` bytes, repeated in a
  ``lax.fori_loop`` and timed by difference as the step is (``copy_bandwidth``); its
  bandwidth is (bytes read + bytes written)/t, the ceiling the solver's step is compared
  with.
* **throughput**: the solver's own step (``solver._optimise``: ``_loop`` of every
  configuration in one batched ``lax.while_loop``, stopping rule included) with gtol =
  ftol = 0 so every configuration runs max_steps, for the SHAPES (K, d, m) and batch
  sizes B = 1, 4, 16, … as far as fit. One compiled program per (shape, B); max_steps is
  traced, so t(S) is measured at S = 2 and S = 2 + S' and the step time is
  [t(2 + S') − t(2)]/S': the start, the metrics and the transfers cancel.
  Configuration-steps per second = B / step time.
  **Bytes model** of an Adam step: it must at least read and write x = (V, U, b) and both
  moments once, 6·P·itemsize bytes per configuration, P = K d + K m d + K; the achieved
  bandwidth B·6·P·itemsize/step time is given as a fraction of the copy's. Next to it,
  the bytes the compiled step moves (``compiled_bytes``: XLA's cost analysis) over the
  model: how far the program is from the model's traffic.
* **one-kernel step** (on a GPU; the tiny mode runs one launch in Pallas's interpreter):
  the same loop with each Adam step one Pallas kernel (``ncjax.fused``: the bytes model's
  6 passes), each launch of ``FUSED_SETTINGS`` at B = 8,192, the fastest against B (rows
  of the throughput table), and its iterates, F and ‖∇F‖ against XLA's loop after 200
  steps from the same starts (``fused_agreement``).
* **step baselines**, the same step for one configuration at a time: the solver's body
  jitted and called from a Python loop; the same body in a jitted ``lax.scan``; the same
  objective and torch.optim.Adam in a PyTorch loop (when torch is installed).
* **time to solution**: the 16,384-configuration sweep ``sweeps/bench_16384.toml`` run to
  the engine's tolerance by the compiled solve (method "ufm", its defaults: L-BFGS,
  float32; and method "convex"), in converged configurations per second, compilation
  timed apart. Baselines on an evenly spaced sample of the same configurations, same
  stopping rule: the solver's L-BFGS step jitted and called from Python; one
  configuration per call of the compiled solve (B = 1); the convex form by cvxpy +
  Clarabel (``ncjax.reference``; when installed); torch.optim.LBFGS (strong Wolfe, history
  10) to the same gradient tolerance (when installed).
* **growth**: the step time per configuration against B (from the throughput), against N
  for the full UFM (m = n_k = n) and against K, each with its work (bytes model; flops
  ≈ 6·K·(K m)·d of the three K-wide products), and where the time per unit of work
  departs from its value at the largest size by more than 25%.

Every wall time is the median of ``repeats`` calls after one warm call, synchronised
with ``jax.block_until_ready`` (torch: ``torch.cuda.synchronize``).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ncjax import dtypes
from ncjax import solver, spec as _spec, sweep
from ncjax.validate import InputError

# (K, d, m): the reference shape, a tiny one and the full UFM (m = n_k = 1000).
SHAPES = {"reference": (10, 64, 32), "tiny": (10, 16, 4), "full": (10, 64, 1000)}
LAM_W, LAM, LR = 0.01, 0.004, 1e-2  # λ = 0.004 > λ* = 0.00333 for 5 × 500 + 5 × 100
SWEEP = Path(__file__).resolve().parent.parent / "sweeps" / "bench_16384.toml"


# launches of the one-kernel Adam step (``ncjax.fused.Settings``: rows a block, blocks a
# program, num_warps, num_stages, precision) the GPU run compares for the reference shape
# (K m = 320 rows: 16, 32 or 64 a block); the fastest is then run against B. A program
# writes a (16, d) partial ∇_V: at 16 rows a program those partials are as large as U
# (two passes more than the model), at 64 a quarter, at 320 (one program a
# configuration) a twentieth, but each configuration's rows are then one program's loop.
FUSED_SETTINGS = tuple(
    (rows, per, warps, stages, precision)
    for precision in ("ieee", "tf32x3")
    # warps in proportion to the rows: 16 floats of each (rows, d = 64) block a thread
    for rows, per, warps, stages in ((16, 1, 2, 1), (64, 1, 8, 1), (16, 4, 2, 2),
                                     (32, 2, 4, 2), (16, 20, 2, 2), (32, 10, 4, 2),
                                     (64, 5, 8, 2)))


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


def _median(fn, repeats: int) -> float:
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
    t_one = _median(lambda: one(x), repeats)
    loop = jax.jit(lambda x, s: jax.lax.fori_loop(0, s, lambda i, x: x + 1.0, x))
    t_lo = _median(lambda: loop(x, 2), repeats)
    s = 4
    while True:
        t_hi = _median(lambda: loop(x, 2 + s), repeats)
        if t_hi - t_lo >= target_s or s >= 1024:
            break
        s *= 4
    t = max(t_hi - t_lo, 1e-12) / s
    return {"bytes": 4 * n, "seconds": t, "bandwidth": 2 * 4 * n / t,
            "single_call_bandwidth": 2 * 4 * n / t_one}


def _batch(K, d, m, B, *, optimizer, dtype, max_steps=2, gtol=0.0, ftol=0.0,
           counts=None, lam=None, seed=None, key_index=None):
    """Validated inputs of B configurations: (per, static) of ``solver._inputs``."""
    counts = np.tile(counts_for(K, m), (B, 1)) if counts is None else counts
    lam = LAM if lam is None else lam
    per, static, _ = solver._inputs(
        counts, LAM_W, np.asarray(lam) ** 2 / LAM_W, 0.0, d=d, m=m,
        seed=np.arange(B) if seed is None else seed, convention="half",
        optimizer=optimizer, learning_rate=LR if optimizer == "adam" else None,
        max_steps=max_steps, gtol=gtol, ftol=ftol, dtype=dtype, memory_size=10,
        key_index=0 if key_index is None else key_index, method="ufm", gap_tol=None,
        pool=None)
    return per, static


def _compiled(per, static, device):
    """The solve's program for one device, compiled: (run(max_steps) -> outputs, seconds
    the compilation took)."""
    fn, args, kwargs, _ = solver._program(per, static, [device])
    t0 = time.perf_counter()
    with dtypes.precise():
        exe = fn.lower(*args, **kwargs).compile()
    compile_s = time.perf_counter() - t0

    def run(steps=None):
        a = args if steps is None else args[:-1] + (jax.device_put(np.int32(steps), device),)
        return exe(*a)
    return run, compile_s


# the solver's loop alone (``solver._optimise``: the start and the steps, no metrics)
_loops = jax.jit(solver._optimise, static_argnames=("d", "m", "optimizer", "memory_size",
                                                   "dtype", "kernel"))


@functools.cache
def _loop(K, d, m, B, optimizer, dtype, device, kernel=None):
    """``_loops`` for B benchmark configurations of (K, d, m) on ``device``, compiled once
    (max_steps traced; gtol = ftol = 0: every configuration runs it): (run(max_steps) ->
    outputs, seconds the compilation took). Kept, so that the agreement check reuses the
    programs the timings compiled. Also (executable, args, kwargs) of ``_loops``."""
    per, static = _batch(K, d, m, B, optimizer=optimizer, dtype=dtype)
    put = lambda k, t=dtype: jax.device_put(np.asarray(per[k], t), device)
    keys = jax.device_put(jax.vmap(solver.start_key)(
        per["seed"].astype(np.uint32), per["key_index"].astype(np.uint32)), device)
    args = (keys,) + tuple(put(k) for k in ("counts", "lam_W", "lam_H", "lam_b",
                                            "learning_rate", "gtol", "ftol"))
    kwargs = dict(d=d, m=m, optimizer=optimizer, memory_size=10, dtype=dtype)
    t0 = time.perf_counter()
    with dtypes.precise():
        exe = _loops.lower(*args, np.int32(2), **kwargs, kernel=kernel).compile()
    compile_s = time.perf_counter() - t0
    run = lambda steps: exe(*args, jax.device_put(np.int32(steps), device))
    return run, compile_s, (exe, args, kwargs)


def solver_step(K, d, m, B, *, optimizer, dtype, device, repeats, target_s, hlo=False,
                kernel=None):
    """Step time of the solver for B configurations of shape (K, d, m), see the module
    docstring. Returns a dict of the measurement (with ``hlo``: the compiled program's
    optimised HLO text under "hlo"). ``kernel``: None for XLA's step, or the
    ``ncjax.fused.Settings`` of the one-kernel Adam step (no compiled bytes then: XLA's
    cost analysis does not see into the kernel)."""
    run, compile_s, (exe, args, kwargs) = _loop(K, d, m, B, optimizer, dtype, device, kernel)
    t_lo = _median(lambda: run(2), repeats)
    steps = 4
    while True:
        t_hi = _median(lambda: run(2 + steps), repeats)
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
    """The one-kernel Adam loop (``ncjax.fused``, ``settings``) against XLA's, the same B
    configurations of (K, d, m) from the same starts for ``steps`` steps (float32, products
    as ``dtypes.precise``): the largest relative difference of F, of ‖∇F‖ and of each
    block of x (over that block's largest entry), over the batch."""
    want, got = (jax.device_get(_loop(K, d, m, B, "adam", "float32", device, k)[0](steps))
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
    of the solver's batched step (``solver._batched``: the loop body with the freeze of
    stopped configurations the solver runs, ``solver.FREEZE``) on the inputs ``args`` of
    ``_loops`` (keys, n_k, λ_W, λ_H, λ_b, learning rate, gtol, ftol; (B, ...)). Over the
    bytes model it says how many times the model's traffic the program moves; its inverse
    caps the fraction of the copy a bandwidth-bound step can reach. NaN where this
    backend's compiled program gives no cost analysis (the run goes on)."""
    init, advance = solver._batched(d=d, m=m, optimizer=optimizer,
                                    max_steps=1 << 30, memory_size=memory_size,
                                    dtype=jnp.dtype(dtype))
    carry = jax.eval_shape(init, *args)
    cost = jax.jit(advance).lower(carry, *args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost  # older JAX
    return float((cost or {}).get("bytes accessed", np.nan))


@functools.cache
def _stepper(static_items):
    """(init, body) of the solver's loop for one configuration, each jitted once per
    static setting: init(key, params) -> carry₀, body(carry, key, params) -> carry."""
    static = dict(static_items)
    init = jax.jit(lambda key, p: solver._loop(key, *p, **static)[0])
    body = jax.jit(lambda c, key, p: solver._loop(key, *p, **static)[1](c))
    return init, body


def _one(K, d, m, *, optimizer, dtype, gtol=0.0, ftol=0.0, max_steps=1 << 30, counts=None,
         lam=None, seed=0, key_index=0):
    """The solver's loop of one configuration: (carry₀, step), step(carry) the jitted body
    (one compilation per shape and static setting, the configuration's numbers traced)."""
    per, static = _batch(K, d, m, 1, optimizer=optimizer, dtype=dtype, max_steps=max_steps,
                         gtol=gtol, ftol=ftol, counts=counts, lam=lam, seed=seed,
                         key_index=key_index)
    static = {k: static[k] for k in ("d", "m", "optimizer", "max_steps", "memory_size")}
    static["dtype"] = jnp.dtype(dtype)
    params = tuple(jnp.asarray(per[k][0], dtype) for k in (
        "counts", "lam_W", "lam_H", "lam_b", "learning_rate", "gtol", "ftol"))
    key = solver.start_key(int(per["seed"][0]), int(per["key_index"][0]))
    init, body = _stepper(tuple(sorted(static.items(), key=lambda kv: kv[0])))
    return init(key, params), lambda c: body(c, key, params)


def jitted_loop(K, d, m, steps, *, dtype, repeats):
    """One configuration, the solver's Adam body jitted, called ``steps`` times from Python."""
    carry, step = _one(K, d, m, optimizer="adam", dtype=dtype)

    def run():
        c = carry
        for _ in range(steps):
            c = step(c)
        return c
    return steps / _median(run, repeats)


def jitted_scan(K, d, m, steps, *, dtype, repeats):
    """One configuration, ``steps`` of the solver's Adam body in one jitted lax.scan."""
    carry, step = _one(K, d, m, optimizer="adam", dtype=dtype)
    scan = jax.jit(lambda c: jax.lax.scan(lambda c, _: (step(c), None), c, None,
                                          length=steps)[0])
    return steps / _median(lambda: scan(carry), repeats)


def _torch_problem(n_k, lam_W, lam_H, x0, dev):
    """F in natural coordinates (solver module docstring) as a torch closure over
    parameters initialised at x0 = (V, U, b)."""
    import torch

    n = torch.tensor(np.asarray(n_k), dtype=torch.float32, device=dev)
    K, m = x0.U.shape[0], x0.U.shape[1]
    lam = float(np.sqrt(lam_W * lam_H))
    w = n / m
    V, U, b = (torch.tensor(np.asarray(a), device=dev, requires_grad=True) for a in x0)
    labels = torch.arange(K, device=dev)[:, None].expand(K, m).reshape(-1)

    def f():
        logits = torch.einsum("kid,cd->kic", U, V) / w.sqrt()[:, None, None] + b
        ce = torch.nn.functional.cross_entropy(logits.reshape(K * m, K), labels,
                                               reduction="none").reshape(K, m)
        return ((w * ce.sum(1)).sum() / n.sum()
                + lam / 2 * ((V ** 2).sum() + (U ** 2).sum()))
    return f, [V, U, b]


def _torch_device():
    import torch
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _torch_sync():
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def torch_adam(K, d, m, steps, *, repeats):
    """One configuration, ``steps`` torch.optim.Adam steps on the same F and start."""
    import torch

    dev = _torch_device()
    x0 = solver.init_natural(jax.random.key(0), jnp.asarray(counts_for(K, m)), d=d, m=m,
                             dtype=jnp.float32)
    f, params = _torch_problem(counts_for(K, m), LAM_W, LAM ** 2 / LAM_W, x0, dev)
    opt = torch.optim.Adam(params, lr=LR)

    def run():
        for _ in range(steps):
            opt.zero_grad()
            f().backward()
            opt.step()
        _torch_sync()
    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return steps / float(np.median(times))


# ---------------------------------------------------------------------- time to solution

def sweep_problems(path=SWEEP):
    """The benchmark sweep's configurations: (counts (B, K), λ (B,), spec)."""
    sp = _spec.load(path)
    grid = _spec.expand(sp)
    return grid.counts(), grid.params["lam"], grid.params["lam_W"], grid.params["lam_H"], sp


def ncjax_sweep(counts, lam_W, lam_H, *, method, device, d, m):
    """The compiled solve of every configuration at once (the engine's defaults) and the
    certificate: converged configurations per second."""
    B = counts.shape[0]
    per, static, _ = solver._inputs(
        counts, lam_W, lam_H, 0.0, d=d, m=m, seed=0, convention="half", optimizer="lbfgs",
        learning_rate=None, max_steps=solver.DEFAULT_MAX_STEPS, gtol=None, ftol=None,
        dtype="float32", memory_size=10, key_index=np.arange(B), method=method,
        gap_tol=None, pool=None)
    run, compile_s = _compiled(per, static, device)
    t0 = time.perf_counter()
    out = jax.block_until_ready(run())
    solve_s = time.perf_counter() - t0
    status = np.asarray(out["status"])
    conv = int(np.sum(status == solver.CONVERGED))
    return {"method": method, "configurations": B, "converged": conv,
            "compile_s": compile_s, "solve_s": solve_s, "converged_per_s": conv / solve_s,
            "median_steps": float(np.median(np.asarray(out["steps"])))}


def sample(B: int, n: int) -> np.ndarray:
    """n evenly spaced configuration indices of B."""
    return np.unique(np.linspace(0, B - 1, n).round().astype(int))


def loop_to_tolerance(counts, lam, idx, *, d, m):
    """Per configuration: the solver's L-BFGS body jitted, stepped from Python until its
    own stopping rule ends it (the default gtol, ftol, max_steps), one host check a step."""
    K = counts.shape[1]
    gtol, ftol = solver.GTOL["float32"], solver.FTOL["float32"]
    conv, t0 = 0, time.perf_counter()
    for i in idx:
        carry, step = _one(K, d, m, optimizer="lbfgs", dtype="float32", gtol=gtol,
                           ftol=ftol, max_steps=solver.DEFAULT_MAX_STEPS,
                           counts=counts[i:i + 1], lam=lam[i:i + 1], seed=0, key_index=i)
        if i == idx[0]:
            # compile, untimed: the first step's output types (weak types) differ from
            # the start's, so the second step compiles once more
            jax.block_until_ready(step(step(carry)))
            t0 = time.perf_counter()
        c = carry
        while int(c.status) < 0:
            c = step(c)
        conv += int(c.status) == solver.CONVERGED
    return conv, time.perf_counter() - t0


def solve_one_at_a_time(counts, lam, idx, *, device, d, m):
    """Per configuration: one call of the compiled solve with B = 1."""
    conv, t = 0, 0.0
    run = None
    for i in idx:
        per, static = _batch(counts.shape[1], d, m, 1, optimizer="lbfgs", dtype="float32",
                             max_steps=solver.DEFAULT_MAX_STEPS,
                             gtol=solver.GTOL["float32"], ftol=solver.FTOL["float32"],
                             counts=counts[i:i + 1], lam=lam[i:i + 1], seed=0, key_index=i)
        fn, args, kwargs, _ = solver._program(per, static, [device])
        if run is None:
            with dtypes.precise():
                run = fn.lower(*args, **kwargs).compile()
            jax.block_until_ready(run(*args))
        t0 = time.perf_counter()
        out = jax.block_until_ready(run(*args))
        t += time.perf_counter() - t0
        conv += int(out["status"][0]) == solver.CONVERGED
    return conv, t


def cvxpy_to_tolerance(counts, lam, idx, *, tol=1e-6):
    """Per configuration: the convex form by cvxpy + Clarabel to gap and feasibility
    ``tol`` (problem construction included: that is the route's cost)."""
    from ncjax import reference

    conv, t0 = 0, time.perf_counter()
    for i in idx:
        prob, _, _ = reference.problem(counts[i], float(lam[i]), 0.0)
        conv += reference.solve(prob, tol) == "optimal"
    return conv, time.perf_counter() - t0


def torch_lbfgs_to_tolerance(counts, lam_W, lam_H, idx, *, d, m):
    """Per configuration: torch.optim.LBFGS (strong Wolfe, history 10), one iteration a
    call, until the solver's stopping rule (float32 defaults) ends it: ‖∇F‖ ≤ gtol·‖∇F(x₀)‖,
    or F moved by at most ftol·max(|F|, 1) over the last WINDOW iterations (checked every
    WINDOW iterations; the solver counts evaluations), or max_steps iterations."""
    import torch

    dev = _torch_device()
    gtol, ftol = solver.GTOL["float32"], solver.FTOL["float32"]
    conv, t = 0, 0.0
    for i in idx:
        key = solver.start_key(0, int(i))
        x0 = solver.init_natural(key, jnp.asarray(counts[i]), d=d, m=m, dtype=jnp.float32)
        f, params = _torch_problem(counts[i], float(lam_W[i]), float(lam_H[i]), x0, dev)
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=1, history_size=10,
                                line_search_fn="strong_wolfe", tolerance_grad=0.0,
                                tolerance_change=0.0)

        def closure():
            opt.zero_grad()
            loss = f()
            loss.backward()
            return loss

        def gnorm():
            return float(torch.sqrt(sum((p.grad ** 2).sum() for p in params)))
        _torch_sync()
        t0 = time.perf_counter()
        value_ref = float(closure())
        target = gtol * gnorm()
        flat = False
        for it in range(1, solver.DEFAULT_MAX_STEPS + 1):
            opt.step(closure)
            g = gnorm()
            if g <= target or not np.isfinite(g):
                break
            if it % solver.WINDOW == 0:
                with torch.no_grad():
                    value = float(f())
                flat = abs(value_ref - value) <= ftol * max(abs(value), 1.0)
                if flat:
                    break
                value_ref = value
        _torch_sync()
        t += time.perf_counter() - t0
        conv += bool(g <= target or flat)
    return conv, t


def _available(name: str) -> bool:
    try:
        __import__(name)
        return True
    except ImportError:
        return False


# ----------------------------------------------------------------------------- the run

def _fits(K, d, m, dtype, device, memory_size=1) -> int:
    """How many configurations of the shape the solve's bytes model fits on ``device``
    (``sweep.bytes_per_config``; memory_size 1 stands for Adam's two moments)."""
    return max(1, sweep._memory_budget([device])
               // sweep.bytes_per_config(K, d, m, memory_size, dtype))


def run(*, tiny: bool = False, repeats: int = 3, out: Path | None = None,
        device=None, log=print) -> dict:
    """The whole benchmark (module docstring); ``tiny``: seconds, for the tests. Every
    JAX route runs under ``dtypes.precise`` (float32 products in float32, not TF32), as
    the solver does; PyTorch's float32 products are float32 by default."""
    with dtypes.precise():
        return _run(tiny=tiny, repeats=repeats, out=out, device=device, log=log)


def _run(*, tiny, repeats, out, device, log) -> dict:
    device = jax.devices()[0] if device is None else device
    gpu = device.platform == "gpu"
    cfg = dict(
        copy_bytes=(1 << 22) if tiny else (1 << 31 if gpu else 1 << 28),
        b_max=1 if tiny else (1 << 18 if gpu else 1 << 12),
        target_s=0.01 if tiny else (0.1 if gpu else 0.2),
        loop_steps=20 if tiny else 200,
        sweep_n=8 if tiny else 16384,
        sample_n=2 if tiny else 24,
        slow_sample_n=1 if tiny else 8,
        shapes=["tiny"] if tiny else list(SHAPES),
        n_grid=[] if tiny else ([100, 300, 1000, 3000, 10000] if gpu
                                   else [100, 300, 1000, 3000]),
        K_grid=[10] if tiny else [10, 30, 100, 300, 1000],
        growth_elems=(1 << 14) if tiny else (1 << 27 if gpu else 1 << 22),
        fused_B=1 if tiny else 8192,
        fused_agree=(1, 20) if tiny else (256, 200),  # (B, steps)
    )
    res = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
           "command": " ".join(sys.argv), "device": _describe(device), "config": cfg}
    log(f"# ncjax bench on {res['device']['name']}")

    res["copy"] = copy_bandwidth(cfg["copy_bytes"], repeats)
    log(f"copy: {res['copy']['bandwidth'] / 1e9:.1f} GB/s (one call timed alone: "
        f"{res['copy']['single_call_bandwidth'] / 1e9:.1f} GB/s)")

    save = (lambda: None) if out is None else (lambda: _save(res, out))
    save()

    res["throughput"] = []
    for name in cfg["shapes"]:
        K, d, m = SHAPES[name]
        for opt in ["adam", "lbfgs"] if name == "reference" else ["adam"]:
            b_max = min(cfg["b_max"], _fits(K, d, m, "float32", device,
                                            memory_size=10 if opt == "lbfgs" else 1))
            # every power of 4 for the reference shape's Adam step, of 16 otherwise; and
            # the largest B that fits
            factor = 4 if (name, opt) == ("reference", "adam") else 16
            sizes = [int(factor ** i) for i in range(20) if factor ** i <= b_max]
            sizes += [b_max] if sizes[-1] < b_max and not tiny else []
            for B in sizes:
                r = solver_step(K, d, m, B, optimizer=opt, dtype="float32", device=device,
                                repeats=repeats, target_s=cfg["target_s"],
                                hlo=out is not None and B == sizes[-1] and opt == "adam"
                                and name == "reference")
                r["shape"] = name
                if "hlo" in r:
                    Path(out).mkdir(parents=True, exist_ok=True)
                    (Path(out) / "step_adam_hlo.txt").write_text(r.pop("hlo"))
                res["throughput"].append(r)
                log(f"{name} {opt} B={B}: {r['config_steps_per_s']:.4g} config-steps/s, "
                    f"{r['adam_bytes_per_s'] / res['copy']['bandwidth']:.1%} of copy")
    save()

    if gpu or tiny:
        _fused_section(res, cfg, device, repeats, log, save, tiny=tiny, out=out)

    res["step_baselines"] = []
    for name in cfg["shapes"]:
        K, d, m = SHAPES[name]
        steps = max(5, cfg["loop_steps"] // (10 if m >= 1000 else 1))
        row = {"shape": name, "K": K, "d": d, "m": m,
               "jitted_loop": jitted_loop(K, d, m, steps, dtype="float32", repeats=repeats),
               "jitted_scan": jitted_scan(K, d, m, steps, dtype="float32", repeats=repeats)}
        if _available("torch"):
            row["torch"] = torch_adam(K, d, m, steps, repeats=repeats)
        res["step_baselines"].append(row)
        log(f"{name} baselines: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()
                                               if isinstance(v, float)))

    save()

    def keep(tts):
        res["time_to_solution"] = tts
        save()
    res["time_to_solution"] = _time_to_solution(cfg, device, log, keep)
    save()
    res["growth"] = _growth(cfg, device, repeats, log)
    res["tables"] = tables(res)
    log(res["tables"])
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        _save(res, out)
        (out / "bench.md").write_text(res["tables"])
        plot(res, out / "bench.png")
    return res


def _fused_section(res, cfg, device, repeats, log, save, *, tiny, out=None) -> None:
    """The one-kernel Adam step (``ncjax.fused``) for the reference shape (tiny mode: the
    tiny shape, one launch, Pallas's interpreter): each launch of ``FUSED_SETTINGS`` at
    B = ``fused_B`` (a launch that fails to compile is logged and skipped), the fastest
    against B as the XLA step is (rows in res["throughput"] with its ``kernel``), and its
    agreement with XLA's loop (``fused_agreement``). With ``out``, the compiled program of
    the largest B goes to step_adam_fused_hlo.txt there, and the copies it holds are
    counted (a copy of the loop's U buffers around the kernel would undo its savings)."""
    from ncjax import fused
    name = "tiny" if tiny else "reference"
    K, d, m = SHAPES[name]
    launches = ([fused.Settings(interpret=True)] if tiny else
                [fused.Settings(*s) for s in FUSED_SETTINGS])
    sec = res["fused"] = {"shape": name, "B": cfg["fused_B"], "launches": []}
    kw = dict(optimizer="adam", dtype="float32", device=device, repeats=repeats,
              target_s=cfg["target_s"])
    copy = res["copy"]["bandwidth"]
    for s in launches:
        try:
            r = solver_step(K, d, m, cfg["fused_B"], **kw, kernel=s)
        except Exception as e:  # a launch Triton cannot compile; the others go on
            log(f"fused {s}: failed: {type(e).__name__}: {str(e)[:300]}")
            sec["launches"].append({"kernel": s._asdict(), "error": str(e)[:2000]})
            continue
        sec["launches"].append(r)
        log(f"fused {tuple(s)[:5]} B={r['B']}: {r['config_steps_per_s']:.4g} config-steps/s, "
            f"{r['adam_bytes_per_s'] / copy:.1%} of copy")
        save()
    ok = [r for r in sec["launches"] if "error" not in r]
    if not ok:
        return
    best = fused.Settings(**max(ok, key=lambda r: r["config_steps_per_s"])["kernel"])
    b_max = min(cfg["b_max"], _fits(K, d, m, "float32", device))
    # B of the agreement check first: its programs are then compiled once
    sizes = [cfg["fused_agree"][0]] + [B for B in (4 ** i for i in range(5, 10))
                                       if B <= b_max] + [b_max]
    for B in sorted(set(sizes)):
        hlo = out is not None and B == max(sizes)
        try:
            r = solver_step(K, d, m, B, **kw, kernel=best, hlo=hlo) | {"shape": name}
        except Exception as e:  # e.g. out of memory at the largest B; the run goes on
            log(f"{name} adam, one kernel, B={B}: failed: {type(e).__name__}: "
                f"{str(e)[:300]}")
            sec.setdefault("failed_B", []).append(B)
            continue
        if hlo:
            text = r.pop("hlo")
            Path(out).mkdir(parents=True, exist_ok=True)
            (Path(out) / "step_adam_fused_hlo.txt").write_text(text)
            sec["hlo_copies"] = sum(" copy(" in line or "copy-start" in line
                                    for line in text.splitlines())
            log(f"one-kernel program at B={B}: {sec['hlo_copies']} copy instructions")
        res["throughput"].append(r)
        log(f"{name} adam, one kernel {tuple(best)[:5]}, B={B}: "
            f"{r['config_steps_per_s']:.4g} config-steps/s, "
            f"{r['adam_bytes_per_s'] / copy:.1%} of copy")
        save()
    sec["agreement"] = fused_agreement(K, d, m, *cfg["fused_agree"], best, device=device)
    log(f"fused vs XLA after {cfg['fused_agree'][1]} steps: " + ", ".join(
        f"{k} {v:.2g}" for k, v in sec["agreement"].items() if isinstance(v, float)))
    save()


def _save(res, out) -> None:
    """bench.json as it stands (written after every section: a run cut short keeps them)."""
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "bench.json").write_text(json.dumps(res, indent=1, default=float))


def _time_to_solution(cfg, device, log, keep=lambda tts: None) -> dict:
    """The 16,384-configuration sweep by ncjax (methods ufm and convex) and the baselines
    on samples of it (module docstring); ``keep(tts)`` after each baseline, so that a run
    cut short keeps those done."""
    counts, lam, lam_W, lam_H, sp = sweep_problems()
    K, d, m = counts.shape[1], int(sp.problem.get("d", counts.shape[1])), 1
    idx_all = sample(counts.shape[0], cfg["sweep_n"])
    counts, lam, lam_W, lam_H = counts[idx_all], lam[idx_all], lam_W[idx_all], lam_H[idx_all]
    B = counts.shape[0]
    tts = {"spec": str(SWEEP.name), "configurations": B, "ncjax": []}
    for method in ("ufm", "convex"):
        r = ncjax_sweep(counts, lam_W, lam_H, method=method, device=device, d=d, m=m)
        tts["ncjax"].append(r)
        keep(tts)
        log(f"sweep {method}: {r['converged']}/{B} converged in {r['solve_s']:.2f} s "
            f"({r['converged_per_s']:.4g}/s; compile {r['compile_s']:.1f} s)")
    idx = sample(B, cfg["sample_n"])
    slow = sample(B, cfg["slow_sample_n"])
    routes = [("jitted step, Python loop (L-BFGS)", slow,
               lambda: loop_to_tolerance(counts, lam, slow, d=d, m=m)),
              ("compiled solve, one configuration a call", idx,
               lambda: solve_one_at_a_time(counts, lam, idx, device=device, d=d, m=m))]
    if _available("cvxpy"):
        routes.append(("cvxpy + Clarabel (convex form), tol 1e-6", idx,
                       lambda: cvxpy_to_tolerance(counts, lam, idx)))
    if _available("torch"):
        routes.append(("torch.optim.LBFGS loop", slow,
                       lambda: torch_lbfgs_to_tolerance(counts, lam_W, lam_H, slow, d=d, m=m)))
    tts["baselines"] = []
    for route, which, fn in routes:  # each logged and kept as it ends
        c, t = fn()
        b = {"route": route, "sample": len(which), "converged": int(c), "seconds": t,
             "converged_per_s": c / t}
        tts["baselines"].append(b)
        keep(tts)
        log(f"sweep baseline {b['route']}: {b['converged']}/{b['sample']} in "
            f"{b['seconds']:.2f} s ({b['converged_per_s']:.4g}/s)")
    return tts


def _growth(cfg, device, repeats, log) -> dict:
    """Step time of the Adam solver against N (full UFM) and K, B filling the device."""
    g = {"N": [], "K": []}
    for axis, sizes in (("N", cfg["n_grid"]), ("K", cfg["K_grid"])):
        for s in sizes:
            K, d, m = (10, 64, s) if axis == "N" else (s, 64, 1)
            P = K * d + K * m * d + K
            B = max(1, min(1 << int(np.log2(max(1, cfg["growth_elems"] // P))),
                           _fits(K, d, m, "float32", device)))
            r = solver_step(K, d, m, B, optimizer="adam", dtype="float32", device=device,
                            repeats=repeats, target_s=cfg["target_s"])
            r["N"] = K * m if axis == "N" else None
            g[axis].append(r)
            log(f"growth {axis}: K={K} m={m} B={B}: {r['step_s'] / B:.3g} s per config-step")
    return g


def _describe(device) -> dict:
    import optax
    d = {"platform": device.platform, "name": getattr(device, "device_kind", str(device)),
         "jax": jax.__version__, "optax": optax.__version__, "python": platform.python_version(),
         "machine": platform.machine(), "processor": platform.processor()}
    if device.platform == "cpu":
        try:
            import os
            d["cores"] = os.cpu_count()
            with open("/proc/cpuinfo") as f:
                d["name"] = next(l.split(":", 1)[1].strip() for l in f if "model name" in l)
        except (OSError, StopIteration):
            pass
    return d


# ------------------------------------------------------------------------------ output

def _ratio(a, b) -> str:
    return f"{a / b:,.0f}×" if a / b >= 10 else f"{a / b:.2f}×"


def tables(res: dict) -> str:
    """The markdown tables of a run's results."""
    copy = res["copy"]["bandwidth"]
    dev = res["device"]
    lines = [f"# ncjax bench — {dev['name']} ({dev['platform']}), jax {dev['jax']}, "
             f"{res['date']}", "", f"Command: `{res['command']}`", "",
             (f"Copy (y = x + 1, {res['copy']['bytes'] / 2**20:.0f} MiB, in a loop, timed "
              f"by difference as the steps are): {copy / 1e9:.1f} GB/s (read + write); one "
              f"call timed alone: {res['copy']['single_call_bandwidth'] / 1e9:.1f} GB/s."
              if "single_call_bandwidth" in res["copy"] else  # runs before 95156fb
              f"Copy (y = x + 1, {res['copy']['bytes'] / 2**20:.0f} MiB, one call timed "
              f"alone): {copy / 1e9:.1f} GB/s (read + write)."), "",
             "## Solver step throughput (float32)", "",
             "| shape (K, d, m) | optimizer | B | config-steps/s | Adam bytes model, GB/s "
             "| of copy | compiled bytes / model | ran all steps |",
             "|---|---|---|---|---|---|---|---|"]
    for r in res["throughput"]:
        ratio = r["compiled_bytes"] / r["model_bytes"] if "compiled_bytes" in r else np.nan
        lines.append(f"| {r['shape']} ({r['K']}, {r['d']}, {r['m']}) | {_route(r)} | "
                     f"{r['B']} | {r['config_steps_per_s']:.4g} | "
                     f"{r['adam_bytes_per_s'] / 1e9:.1f} | "
                     f"{r['adam_bytes_per_s'] / copy:.1%} | {ratio:.2f} | "
                     f"{r['ran_all_steps']} |")
    lines += ["", "(The bytes model applies to Adam; for L-BFGS the column is the same bytes "
              "over its step time, for comparison only. Compiled bytes: XLA's cost analysis "
              "of the compiled step, operands and results of every instruction as if "
              "nothing stayed in cache; a step that moves r times the model's bytes reaches "
              "at most 1/r of the copy if bandwidth-bound. \"one kernel\": the same loop "
              "with each Adam step one Pallas kernel, ``ncjax.fused``, whose traffic is the "
              "model's; XLA's cost analysis does not see into it.)", ""]
    lines += _fused_table(res)
    lines += ["",
              "## Against one configuration at a time (Adam step, config-steps/s)", "",
              "| shape | ncjax vmapped (best B) | jitted step, Python loop | jitted scan "
              "| PyTorch loop | vmapped / loop | vmapped / scan | vmapped / PyTorch |",
              "|---|---|---|---|---|---|---|---|"]
    for b in res["step_baselines"]:
        best = max(r["config_steps_per_s"] for r in res["throughput"]
                   if r["shape"] == b["shape"] and r["optimizer"] == "adam")
        tor = b.get("torch")
        lines.append(f"| {b['shape']} ({b['K']}, {b['d']}, {b['m']}) | {best:.4g} | "
                     f"{b['jitted_loop']:.4g} | {b['jitted_scan']:.4g} | "
                     f"{'—' if tor is None else f'{tor:.4g}'} | "
                     f"{_ratio(best, b['jitted_loop'])} | {_ratio(best, b['jitted_scan'])} | "
                     f"{'—' if tor is None else _ratio(best, tor)} |")
    t = res["time_to_solution"]
    lines += ["", f"## Time to solution: {t['configurations']} configurations of "
              f"sweeps/{t['spec']}", "",
              "| route | configurations | converged | seconds | converged/s | "
              "ncjax ufm / route |", "|---|---|---|---|---|---|"]
    ref = t["ncjax"][0]["converged_per_s"]
    for r in t["ncjax"]:
        lines.append(f"| ncjax, method {r['method']} (compile {r['compile_s']:.1f} s apart) | "
                     f"{r['configurations']} | {r['converged']} | {r['solve_s']:.2f} | "
                     f"{r['converged_per_s']:.4g} | {_ratio(ref, r['converged_per_s'])} |")
    for b in t["baselines"]:
        lines.append(f"| {b['route']} | {b['sample']} (sample) | {b['converged']} | "
                     f"{b['seconds']:.2f} | {b['converged_per_s']:.4g} | "
                     f"{_ratio(ref, b['converged_per_s']) if b['converged'] else '∞'} |")
    lines += ["", "## Growth (Adam, float32): step time per configuration against the work",
              "", "Relative cost = (time per config-step / work) over its value at the "
              "largest size; ≠ 1 ± 0.25 is marked *not linear*.", ""]
    xla_adam = [r for r in res["throughput"]
                if r["optimizer"] == "adam" and not r.get("kernel")]
    lines += _growth_table(res, "B", [r for r in xla_adam if r["shape"] == "reference"]
                           or xla_adam)
    lines += _growth_table(res, "N", res["growth"]["N"])
    lines += _growth_table(res, "K", res["growth"]["K"])
    return "\n".join(lines) + "\n"


def _route(r) -> str:
    """A throughput row's step: the optimizer, and the one-kernel launch if it has one."""
    k = r.get("kernel")
    if not k:
        return r["optimizer"]
    return (f"{r['optimizer']}, one kernel ({k['rows'] or 'default'} rows, {k['per']} a "
            f"program, {k['num_warps']} warps, {k['num_stages']} stages, {k['precision']}"
            f"{', interpreted' if k['interpret'] else ''})")


def _fused_table(res) -> list[str]:
    """The one-kernel launches compared at one B, and the fastest one's agreement."""
    sec = res.get("fused")
    if not sec:
        return []
    copy = res["copy"]["bandwidth"]
    out = ["", f"### One-kernel Adam step: launches at B = {sec['B']} ({sec['shape']} shape)",
           "", "| launch | config-steps/s | of copy |", "|---|---|---|"]
    for r in sec["launches"]:
        if "error" in r:
            out.append(f"| {_route({'optimizer': 'adam', **r})} | failed: "
                       f"{r['error'].splitlines()[0][:80]} | |")
        else:
            out.append(f"| {_route(r)} | {r['config_steps_per_s']:.4g} | "
                       f"{r['adam_bytes_per_s'] / copy:.1%} |")
    a = sec.get("agreement")
    if a:
        out += ["", f"The fastest launch against XLA's loop, {a['B']} configurations, "
                f"{a['steps']} steps from the same starts (float32): largest relative "
                f"difference of F {a['F']:.2g}, of ‖∇F‖ {a['grad_norm']:.2g}, of V "
                f"{a['x.V']:.2g}, U {a['x.U']:.2g}, b {a['x.b']:.2g}; all ran: "
                f"{a['all_ran']}."]
    return out


def _growth_table(res, axis, rows) -> list[str]:
    if not rows:
        return []
    per = lambda r: r["step_s"] / r["B"]
    if axis == "B":
        work = lambda r: 1.0
        head = ["| B | s per config-step | relative cost | |", "|---|---|---|---|"]
    else:
        work = lambda r: adam_bytes(r["K"], r["d"], r["m"], 4) + 0 * step_flops(
            r["K"], r["d"], r["m"])
        head = [f"| {'N = K m' if axis == 'N' else 'K'} (K, d, m) | B | s per config-step "
                "| bytes model | flops | GB/s | GFLOP/s | relative cost (bytes) "
                "| relative cost (flops) | |", "|---|---|---|---|---|---|---|---|---|---|"]
    last = rows[-1]
    out = [f"### against {axis}", ""] + head
    for r in rows:
        rel = (per(r) / work(r)) / (per(last) / work(last))
        flag = "" if abs(rel - 1) <= 0.25 else "*not linear*"
        if axis == "B":
            out.append(f"| {r['B']} | {per(r):.3g} | {rel:.2f} | {flag} |")
        else:
            fl = step_flops(r["K"], r["d"], r["m"])
            relf = (per(r) / fl) / (per(last) / step_flops(last["K"], last["d"], last["m"]))
            flag = "" if abs(rel - 1) <= 0.25 or abs(relf - 1) <= 0.25 else "*not linear*"
            size = r["N"] if axis == "N" else r["K"]
            out.append(f"| {size} ({r['K']}, {r['d']}, {r['m']}) | {r['B']} | {per(r):.3g} | "
                       f"{adam_bytes(r['K'], r['d'], r['m'], 4)} | {fl} | "
                       f"{r['adam_bytes_per_s'] / 1e9:.1f} | {r['flops_per_s'] / 1e9:.1f} | "
                       f"{rel:.2f} | {relf:.2f} | {flag} |")
    return out + [""]


def plot(res: dict, path) -> Path:
    """Configuration-steps per second against B per shape, the one-at-a-time baselines as
    horizontal lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), constrained_layout=True)
    for i, name in enumerate(dict.fromkeys(r["shape"] for r in res["throughput"])):
        colour = f"C{i}"
        rows = [r for r in res["throughput"] if r["shape"] == name]
        for label in dict.fromkeys(_route(r) for r in rows):
            pts = [r for r in rows if _route(r) == label]
            style = "--s" if label == "lbfgs" else ("-^" if "kernel" in label else "-o")
            ax.plot([r["B"] for r in pts], [r["config_steps_per_s"] for r in pts], style,
                    color=colour, ms=4, label=f"{name} {tuple(SHAPES[name])}, ncjax {label}")
        for b in res["step_baselines"]:
            if b["shape"] == name:
                ax.axhline(b["jitted_loop"], color=colour, ls=":", lw=1)
                if "torch" in b:
                    ax.axhline(b["torch"], color=colour, ls="-.", lw=1)
    ax.plot([], [], "k:", lw=1, label="jitted step, Python loop (Adam)")
    if any("torch" in b for b in res["step_baselines"]):
        ax.plot([], [], "k-.", lw=1, label="PyTorch loop (Adam)")
    ax.set(xscale="log", yscale="log", xlabel="configurations per batch $B$",
           ylabel="configuration-steps per second",
           title=f"ncjax solver step, {res['device']['name']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def from_args(a) -> int:
    """Run the benchmark from parsed options."""
    if a.repeats < 1:
        raise InputError(f"--repeats must be >= 1, got {a.repeats}")
    run(tiny=a.tiny, repeats=a.repeats, out=a.out)
    return 0


def main(argv=None) -> int:
    from ncjax.cli import add_bench_arguments
    p = add_bench_arguments(argparse.ArgumentParser(prog="ncjax bench",
                                                    description=__doc__.split("\n\n")[0]))
    return from_args(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
