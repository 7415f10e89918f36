"""``ncjax.solve``: problems in, certified results out, in one jitted program a method.

A call validates its inputs into one batched ``Problem`` (``ncjax.problem.make``) and the
per-configuration solver settings (``prepare``), lays the batch out on the devices
(``ncjax.batching``) and runs one compiled program: each device's shard of the batch by
the batched form of the functional solve (``ncjax.functional``: ``ufm_batch`` for method
"ufm", the optimiser's batched loop in groups; ``convex_batch`` for "convex", the convex
form vmapped or through a pool of slots), so that a configuration's result is that of
``functional.solve`` alone, with its metrics and theory. On a CPU a large batch is split
over this process and helper processes, one a core (``ncjax.cores``; ``solve_part`` in
each), since XLA's CPU runtime runs a program on one core.

Every configuration is certified in float64 (``functional.certificate``: F of the point
minus the dual value of ``ncjax.dual.dual_point``; valid for d ≥ K − 1 and a convex loss):
in the solve's program for a float64 solve; for a float32 one in a second program
(``certify``), since a float32 program runs without x64, where no float64 array exists.
"converged" means certified: a configuration whose optimiser stopped but whose gap
exceeds gap_tol·F (``functional.certified_status``), or whose inputs its dtype cannot
represent, is finished on the host by the certified convex route in float64 (``finished``),
and reported "uncertified" if even that fails. For d < K − 1 or a loss not convex in the
logits there is no certificate and the optimiser's status stands.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ncjax import (batching, compilation, convex, cores, functional, natural, optimizers,
                   stopping)
from ncjax import problem as problem_
from ncjax.dtypes import DTYPES, precise, x64
from ncjax.names import METHODS  # noqa: F401 - re-exported
from ncjax.problem import Problem
from ncjax.tolerances import GAP_RTOL
from ncjax.validate import InputError, as_counts, as_int, as_lam, as_seeds, warn_small_d


class Result(NamedTuple):
    """Per-configuration results as numpy arrays with a leading batch axis (B, ...), dropped
    when every input was unbatched. λ's are in the half convention.

    objective: F at the solution; gap: certified bound on F − F* (float64, ``certify``;
    valid for d ≥ K − 1); grad_norm: ‖∇F‖ in natural coordinates (NaN for the convex
    route); steps; status: "converged" (certified: gap ≤ gap_tol·F) | "max_steps" |
    "diverged" | "uncertified"; converged: status == "converged"; finished: the
    configuration was finished by the float64 convex route (its certificate had failed);
    W (K, d), H (K, m, d), b (K,) (0 without a bias), class_means (K, d), Z (K, K) with
    column k = W h̄_k; metrics, theory: dicts (``ncjax.metrics.compute``,
    ``ncjax.theory.predict``); counts (K,), lam_W, lam_H, lam_b, seed: the configuration;
    loss: the loss's name; bias: whether the model has a bias; loss_params: the loss's
    parameters per configuration, name → (B,) or, per class, (B, K) (empty for CE and MSE;
    ``ncjax.losses``).
    """

    objective: np.ndarray
    gap: np.ndarray
    grad_norm: np.ndarray
    steps: np.ndarray
    status: np.ndarray
    converged: np.ndarray
    finished: np.ndarray
    W: np.ndarray
    H: np.ndarray
    b: np.ndarray
    class_means: np.ndarray
    Z: np.ndarray
    metrics: dict
    theory: dict
    counts: np.ndarray
    lam_W: np.ndarray
    lam_H: np.ndarray
    lam_b: np.ndarray
    seed: np.ndarray
    loss: str
    bias: bool
    loss_params: dict


def prepare(counts, lam_W, lam_H, lam_b=0.0, *, loss=None, bias=True, d=None, m=1, seed=0,
            convention="half", optimizer="lbfgs", learning_rate=None,
            max_steps=stopping.DEFAULT_MAX_STEPS, gtol=None, ftol=None, dtype="float32",
            memory_size=10, key_index=0, method="ufm", gap_tol=None, pool=None):
    """Validate ``solve``'s arguments: (problem, per, static, batched). ``problem`` the
    batched numpy ``Problem`` (half convention), ``per`` the other (B,) inputs (seed,
    key_index, learning_rate, gtol, ftol), ``static`` the settings a program is compiled
    for, ``batched`` whether any input had a batch axis. Raises InputError."""
    n = as_counts(counts)
    K = n.shape[-1]
    d = K if d is None else as_int("d", d, minimum=1)
    m = as_int("m", m, minimum=1)
    max_steps = as_int("max_steps", max_steps, minimum=1)
    memory_size = as_int("memory_size", memory_size, minimum=1)
    optimizers.check(optimizer)
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    pool = None if pool is None else as_int("pool", pool, minimum=1)
    try:
        dtype = np.dtype(dtype).name
    except TypeError:
        pass
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if method == "convex" and d < K - 1:
        raise InputError(f"method 'convex' needs d >= K - 1 = {K - 1}, got d = {d}")
    warn_small_d(d, K)
    default_lr = optimizers.DEFAULT_LR.get(optimizer, 1.0) if isinstance(optimizer, str) else 1.0
    lr = as_lam("learning_rate", default_lr if learning_rate is None else learning_rate)
    default_gtol = (convex.GTOL if method == "convex" else stopping.GTOL)[dtype]
    gt = as_lam("gtol", default_gtol if gtol is None else gtol)
    if method == "convex" and np.unique(gt).size > 1:
        raise InputError("method 'convex' takes one gtol for the batch")
    ft = as_lam("ftol", stopping.FTOL[dtype] if ftol is None else ftol)
    gap_tol = float(as_lam("gap_tol", GAP_RTOL[dtype] if gap_tol is None else gap_tol,
                           positive=True))
    prob, batched, per = problem_.make(
        n, lam_W, lam_H, lam_b, loss=loss, bias=bias, convention=convention,
        seed=as_seeds(seed), key_index=as_seeds(key_index, "key_index"), learning_rate=lr,
        gtol=gt, ftol=ft)
    if method == "convex" and not prob.loss.convex:
        raise InputError(f"method 'convex' needs a loss convex in the logits; "
                         f"{prob.loss.name!r} is not")
    static = dict(d=d, m=m, optimizer=optimizer, max_steps=max_steps,
                  memory_size=memory_size, dtype=dtype, method=method, gap_tol=gap_tol,
                  pool=pool)
    return prob, per, static, batched


def _ufm_local(seeds, key_index, problems, learning_rate, gtol, ftol, max_steps, gap_tol=None,
               *, d, m, optimizer, memory_size, dtype, chunk):
    keys = jax.vmap(natural.start_key)(seeds, key_index)
    return functional.ufm_batch(keys, problems, learning_rate, gtol, ftol, max_steps, gap_tol,
                                d=d, m=m, optimizer=optimizer, memory_size=memory_size,
                                dtype=dtype, chunk=chunk)


@functools.partial(jax.jit, static_argnames=("d", "m", "optimizer", "memory_size", "dtype",
                                             "chunk", "mesh"))
def ufm_program(seeds, key_index, problems, learning_rate, gtol, ftol, max_steps, gap_tol=None,
                *, d, m, optimizer, memory_size, dtype, chunk, mesh):
    """The compiled factored solve: each device's shard of the configuration axis solved
    from fold_in(key(seed), key_index) and measured by ``functional.ufm_batch`` (in groups
    of ``chunk``). Arrays (B, ...); max_steps a traced scalar (a new value does not
    recompile); gap_tol None, or a traced scalar: the certificate computed in the program
    ("gap" among the outputs, the status certified)."""
    f = functools.partial(_ufm_local, d=d, m=m, optimizer=optimizer,
                          memory_size=memory_size, dtype=dtype, chunk=chunk)
    args = (seeds, key_index, problems, learning_rate, gtol, ftol, max_steps)
    if gap_tol is None:
        return batching.shard_map(f, mesh, 6, 1)(*args)
    return batching.shard_map(f, mesh, 6, 2)(*args, gap_tol)


def _convex_local(problems, gtol, gap_tol=None, *, d, m, max_steps, pool):
    return functional.convex_batch(problems, gtol[0], gap_tol, d=d, m=m, max_steps=max_steps,
                                   pool=pool)


@functools.partial(jax.jit, static_argnames=("d", "m", "max_steps", "pool", "mesh"))
def convex_program(problems, gtol, gap_tol=None, *, d, m, max_steps, pool, mesh):
    """The compiled convex route: each device's shard certified-solved by
    ``convex.solve_many`` (its pool refills from its own configurations), factorised and
    measured (``functional.convex_batch``); gap_tol as ``ufm_program``'s."""
    f = functools.partial(_convex_local, d=d, m=m, max_steps=max_steps, pool=pool)
    if gap_tol is None:
        return batching.shard_map(f, mesh, 2)(problems, gtol)
    return batching.shard_map(f, mesh, 2, 1)(problems, gtol, gap_tol)


def program(problem: Problem, per: dict, static: dict, devices):
    """The solve's compiled program and its device inputs, (fn, args, kwargs), so that
    ``fn(*args, **kwargs)`` is the solve (benchmarks lower and compile it apart from
    running it); the batch padded by ``batching.layout``. A float64 solve certifies in the
    program (its last argument is gap_tol; without it the program leaves the certificate
    to ``certify``, as a float32 one does: a float32 program has no float64 arrays)."""
    dtype, method = static["dtype"], static["method"]
    B = problem.counts.shape[0]
    B_pad, pool = batching.layout(B, devices, method, static["pool"])
    mesh = batching.mesh(devices)
    put = lambda a, t: jax.device_put(np.asarray(batching.pad(a, B_pad), t),
                                      batching.sharded(mesh))
    whole = lambda a: (jax.device_put(a, batching.replicated(mesh)),)
    fused = whole(np.float64(static["gap_tol"])) if dtype == "float64" else ()
    probs = jax.tree.map(lambda a: put(a, dtype), problem)
    if method == "convex":
        return convex_program, (probs, put(per["gtol"], dtype)) + fused, dict(
            d=static["d"], m=static["m"], max_steps=static["max_steps"], pool=pool, mesh=mesh)
    args = (put(per["seed"], np.uint32), put(per["key_index"], np.uint32), probs) + tuple(
        put(per[k], dtype) for k in ("learning_rate", "gtol", "ftol")) + whole(
        np.int32(static["max_steps"])) + fused
    return ufm_program, args, dict(d=static["d"], m=static["m"],
                                   optimizer=static["optimizer"],
                                   memory_size=static["memory_size"], dtype=dtype,
                                   chunk=pool, mesh=mesh)


_certify = jax.jit(jax.vmap(functional.certificate))


def certify(W, H, b, problem: Problem):
    """(F, gap) per configuration in float64 for a batch (B, ...) of solutions: gap ≥
    F − F* (up to rounding), the certificate of ``ncjax.dual`` at (W H̄ᵀ, b)
    (``functional.certificate``)."""
    with x64(True):
        return _certify(W, H, b, problem.astype(jnp.float64))


def unrepresentable(problem: Problem, dtype: str) -> np.ndarray:
    """Per configuration (B,), whether ``dtype`` cannot hold the problem's numbers: its
    counts, N, λ_W, λ_H, λ_b > 0, λ, the balance factor a (and 1/a) and the loss's nonzero
    parameters within dtype's normal range."""
    fi = np.finfo(dtype)
    lw, lh = np.asarray(problem.lam_W, float), np.asarray(problem.lam_H, float)
    n = np.asarray(problem.counts, float)
    vals = [n.min(-1), n.max(-1), n.sum(-1), lw, lh, np.sqrt(lw) * np.sqrt(lh),
            lh**0.25 / lw**0.25, lw**0.25 / lh**0.25]
    lb = np.asarray(problem.lam_b, float)
    vals.append(np.where(lb > 0, lb, 1.0))
    for a in (problem.theta or {}).values():
        a = np.abs(np.asarray(a, float)).reshape(lw.shape[0], -1)
        nz = np.where(a > 0, a, 1.0)
        vals += [nz.min(-1), nz.max(-1)]
    return ~np.all([(v >= fi.tiny) & (v <= fi.max) for v in vals], axis=0)


def _finish(out: dict, problem: Problem, rows: np.ndarray, static: dict, devices) -> dict:
    """``out`` (host arrays) with ``rows`` replaced by the float64 convex route's certified
    solution, cast to the solve's dtypes and certified again at the cast point."""
    sub = jax.tree.map(lambda a: np.asarray(a)[rows], problem)
    st = dict(static, method="convex", dtype="float64", max_steps=20000, pool=None)
    with x64(True), precise():
        fn, args, kw = program(sub, {"gtol": np.full(rows.size, convex.GTOL["float64"])},
                               st, devices)
        new = jax.tree.map(lambda a: np.asarray(a)[:rows.size], jax.device_get(fn(*args, **kw)))
    new = jax.tree.map(lambda n, o: n.astype(o.dtype), new, {k: out[k] for k in new})
    F, g = certify(new["W"], new["H"], new["b"], sub)
    new["objective"], new["gap"] = np.asarray(F).astype(out["objective"].dtype), np.asarray(g)
    with x64(True):
        ok = np.asarray(stopping.certified(g, F, static["gap_tol"]))
    new["status"] = np.where(ok, stopping.CONVERGED, stopping.UNCERTIFIED).astype(
        out["status"].dtype)
    merged = jax.tree.map(lambda o, n: _put_rows(o, rows, n), {k: out[k] for k in new}, new)
    out.update(merged)
    out["finished"] = _put_rows(out["finished"], rows, True)
    return out


def _put_rows(a, rows, v):
    a = np.array(a)
    a[rows] = v
    return a


def _certified(out: dict, problem: Problem, static: dict, devices):
    """(gap, status) of a program's outputs that it did not certify (a float32 one): the
    float64 certificate (``certify``) in a second program, the status certified where
    there is a certificate (``functional.certified_status``)."""
    with x64(True):
        placed = jax.tree.map(lambda a: jax.device_put(
            np.asarray(a, np.float64), batching.sharded(batching.mesh(devices))), problem)
        F, gap = certify(out["W"], out["H"], out["b"], placed)
        if not functional.has_certificate(problem, static["d"]):
            return gap, out["status"]  # no certificate: the optimiser's status stands
        return gap, functional.certified_status(out["status"], F, gap, static["gap_tol"])


def run(problem: Problem, per: dict, static: dict, devices) -> dict:
    """The solve of validated inputs on ``devices``, certified, with failed certificates
    finished (module docstring): a dict of (B_pad, ...) arrays, on the devices unless a
    finish fetched them (one process only; with several the failures stay "uncertified")."""
    fn, args, kwargs = program(problem, per, static, devices)
    with precise():
        out = fn(*args, **kwargs)
    B_pad = out["status"].shape[0]
    full = jax.tree.map(lambda a: batching.pad(np.asarray(a), B_pad), problem)
    if "gap" not in out:
        out["gap"], out["status"] = _certified(out, full, static, devices)
    out["finished"] = jnp.zeros(B_pad, bool)
    if not functional.has_certificate(problem, static["d"]):
        return out
    bad = batching.pad(unrepresentable(problem, static["dtype"]), B_pad)
    if jax.process_count() > 1:
        return out
    rows = np.flatnonzero((np.asarray(out["status"]) == stopping.UNCERTIFIED) | bad)
    if rows.size == 0:
        return out
    out = jax.tree.map(np.asarray, jax.device_get(out))
    return _finish(out, full, rows, static, devices)


def solve_sharded(counts, lam_W, lam_H, lam_b=0.0, *, devices=None, **kwargs):
    """``solve`` for callers that keep the results on the devices: the same arguments
    (``devices`` default every device of every process), and returns the raw outputs, a
    dict of arrays of (B_pad, ...) sharded over the devices, the batch padded by
    repeating its last configuration (``batching.layout``). With several processes
    (``jax.distributed``) each process passes the same inputs and computes its
    addressable shards; nothing is fetched to the host. Keys: objective, gap, grad_norm,
    steps, status (int: ``stopping.STATUS_NAMES``), finished, W, H, b, class_means, Z,
    metrics (dict), theory (dict). Call it inside ``dtypes.x64`` for float64."""
    prob, per, static, _ = prepare(counts, lam_W, lam_H, lam_b, **kwargs)
    compilation.use_cache()
    return run(prob, per, static, jax.devices() if devices is None else list(devices))


def _on_host(prob: Problem, per: dict, static: dict, devices, processes) -> dict:
    """``run`` fetched to numpy and unpadded, (B, ...) arrays: split over ``cores.count``
    processes (``solve_part`` in each) when ``devices`` is None in a single-process run,
    else on ``devices`` (default the local ones) here."""
    B = prob.counts.shape[0]
    if processes is not None:
        processes = as_int("processes", processes, minimum=1)
    n = 1
    if devices is None and jax.process_count() == 1:
        n = cores.count(B, jax.local_devices()[0].platform, processes)
    if n == 1:
        with x64(static["dtype"] == "float64"):
            out = run(prob, per, static, jax.local_devices() if devices is None else devices)
            return jax.tree.map(lambda a: np.asarray(a)[:B], jax.device_get(out))
    take = lambda tree, a, b: jax.tree.map(lambda x: x[a:b], tree)
    outs = cores.run(__name__, "solve_part", [(take(prob, a, b), take(per, a, b), static)
                                              for a, b in cores.parts(B, n)])
    return jax.tree.map(lambda *xs: np.concatenate(xs), *outs)


def solve_host(counts, lam_W, lam_H, lam_b=0.0, *, devices=None, processes=None,
               **kwargs) -> dict:
    """``solve``'s raw outputs (the keys of ``solve_sharded``) as numpy (B, ...) arrays,
    unpadded, the batch split over this host's cores as ``solve`` splits it."""
    prob, per, static, _ = prepare(counts, lam_W, lam_H, lam_b, **kwargs)
    compilation.use_cache()
    return _on_host(prob, per, static, None if devices is None else list(devices), processes)


def solve_part(problem: Problem, per: dict, static: dict) -> dict:
    """``run`` of validated inputs on this process's devices, fetched and unpadded: a dict
    of (B, ...) numpy arrays. What ``solve`` runs in each process (``ncjax.cores``)."""
    compilation.use_cache()
    return _on_host(problem, per, static, jax.local_devices(), None)


def solve(counts, lam_W, lam_H, lam_b=0.0, *, loss=None, bias: bool = True,
          d: int | None = None, m: int = 1, seed=0, convention: str = "half",
          optimizer="lbfgs", learning_rate=None, max_steps: int = stopping.DEFAULT_MAX_STEPS,
          gtol=None, ftol=None, dtype: str = "float32", memory_size: int = 10, key_index=0,
          devices=None, method: str = "ufm", gap_tol=None, pool=None,
          processes: int | None = None) -> Result:
    """Solve the UFM (DESIGN.md §1) for one configuration or a batch, certified.

    Args:
      counts: class counts n_k, (K,) or (B, K); any positive reals.
      lam_W, lam_H, lam_b: regularisation, scalars or (B,), in ``convention``
        ("half": (λ/2)‖·‖², ncjax's; "paper": λ‖·‖², the authors'). λ_W, λ_H > 0.
      loss: a ``ncjax.losses.Loss`` (e.g. ``losses.vs(0.5, 1.0)``; its parameters may be
        given per configuration, (B,) or per class (B, K): they are array leaves, a new
        value does not recompile) or the name of one without parameters
        (``losses.LOSSES``); default cross-entropy.
      bias: True (default) for the model W h + b (λ_b = 0: a free bias); False for W h
        without a bias (λ_b is then unused).
      d: feature dimension (default K). m: free features per class, each of weight n_k/m.
      seed: integer or (B,) integers; a configuration's random start depends on its seed
        and its ``key_index`` (integer or (B,); a sweep passes each cell's flat grid
        index) only, never on the batch around it.
      optimizer: "lbfgs" (default; ``ncjax.lbfgs``), "adam" or "gd" (optax), any
        ``optax.GradientTransformation`` (e.g. ``optax.adamw(1e-2)``), or a
        ``ncjax.optimizers.Optimizer``.
      learning_rate: for "adam"/"gd", scalar or (B,) (traced: new values do not
        recompile); ignored otherwise.
      max_steps, gtol, ftol: the stopping rule of ``ncjax.stopping``; gtol/ftol default per
        dtype and may be (B,). A step is one evaluation of F and ∇F.
      dtype: "float32" or "float64".
      devices: where to solve (default every local device); the configurations are
        sharded over them.
      memory_size: the pairs L-BFGS keeps (default 10).
      method: "ufm" (default) or "convex" (``ncjax.convex``: certified to
        gtol·|P|, gtol default ``convex.GTOL``, one value per batch, then factorised; needs
        d ≥ K − 1; seed, optimizer, learning_rate, ftol, memory_size unused; grad_norm NaN).
      gap_tol: the certificate tolerance: "converged" needs gap ≤ gap_tol·F (default
        ``tolerances.GAP_RTOL`` of the dtype); a failed certificate is finished in float64
        by the convex route, else "uncertified".
      pool: configurations in flight per device (``batching.layout``); results do not
        depend on it beyond float rounding and the stopping tolerance.
      processes: how many processes share the batch (``ncjax.cores``: this one and
        helpers, each a contiguous part). Default: on a CPU with ``devices`` not given,
        every core for a batch of at least ``cores.MIN_PER_PROCESS`` configurations a
        core (``NCJAX_PROCESSES`` overrides the core count); else 1. Results do not
        depend on it.
    Returns:
      a ``Result`` of numpy arrays.
    Raises:
      InputError: on a bad argument (``ncjax.validate``).
    """
    prob, per, static, batched = prepare(
        counts, lam_W, lam_H, lam_b, loss=loss, bias=bias, d=d, m=m, seed=seed,
        convention=convention, optimizer=optimizer, learning_rate=learning_rate,
        max_steps=max_steps, gtol=gtol, ftol=ftol, dtype=dtype, memory_size=memory_size,
        key_index=key_index, method=method, gap_tol=gap_tol, pool=pool)
    compilation.use_cache()
    out = _on_host(prob, per, static, None if devices is None else list(devices), processes)
    status = np.asarray(stopping.STATUS_NAMES)[out["status"]]
    res = Result(
        objective=out["objective"], gap=out["gap"], grad_norm=out["grad_norm"],
        steps=out["steps"], status=status, converged=status == "converged",
        finished=out["finished"], W=out["W"], H=out["H"], b=out["b"],
        class_means=out["class_means"], Z=out["Z"], metrics=out["metrics"],
        theory=out["theory"], counts=prob.counts, lam_W=prob.lam_W, lam_H=prob.lam_H,
        lam_b=prob.lam_b, seed=per["seed"], loss=prob.loss.name, bias=prob.bias,
        loss_params=dict(prob.theta))
    if batched:
        return res
    return res._replace(**{k: jax.tree.map(lambda a: a[0], getattr(res, k))
                           for k in res._fields if k not in ("loss", "bias")})
