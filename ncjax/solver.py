"""One jitted, batched solve of the UFM for a batch of configurations.

The optimiser works in *natural coordinates* (V, U, b), an exact change of variables
that removes the two bad scalings of the UFM (DESIGN.md §1):

    W = a V,    h_{k,i} = u_{k,i} / (a sqrt(w_k)),    a = (λ_H/λ_W)^{1/4},  w_k = n_k/m,

so that (λ_W/2)‖W‖² = (λ/2)‖V‖², (λ_H/2) w_k ‖h_{k,i}‖² = (λ/2)‖u_{k,i}‖² and
W h_{k,i} = V u_{k,i}/sqrt(w_k), with λ = sqrt(λ_W λ_H). The Hessian of the feature
block is then V^T S V / N for every class, whatever n_k: minority features no longer see
gradients n_k/(mN) times smaller, and the ratio λ_W/λ_H drops out. The objective is
still exactly F, written in these coordinates (``natural_objective``: equal to
``model.ufm_objective`` composed with the map), so the optimum is the same;
``grad_norm`` is the norm of the gradient in these coordinates.

Each configuration runs its own ``lax.while_loop``, batched (on a CPU in groups of
``UFM_POOL`` configurations, one group after another): a configuration that has stopped
is frozen (the batched loop keeps its iterate and stopping state, ``FREEZE``) while the
others go on, and a NaN in one configuration only stops that one. Every step evaluates
F and ∇F once: adam/gd (optax) at their new iterate, L-BFGS (``ncjax.lbfgs``) at its line
search's next trial point.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ncjax import convex as _convex
from ncjax import lbfgs as _lbfgs
from ncjax import metrics as _metrics
from ncjax import model, theory
from ncjax.dtypes import DTYPES, precise, x64
from ncjax.validate import (InputError, as_counts, as_int, as_lam, as_seeds,
                             broadcast_batch, warn_small_d)

# Status codes, in the order of ``STATUS_NAMES``. "uncertified": the optimiser stopped
# but the certified gap exceeds the ``gap_tol`` asked for.
CONVERGED, MAX_STEPS, DIVERGED, UNCERTIFIED = 0, 1, 2, 3
STATUS_NAMES = ("converged", "max_steps", "diverged", "uncertified")
OPTIMIZERS = ("lbfgs", "adam", "gd")
# "ufm": optax on (W, H, b) (natural coordinates); "convex": the convex form by
# ``ncjax.convex`` (K × K per configuration, stops on the certified gap), then factorised.
METHODS = ("ufm", "convex")
# Slots of the convex solver's pool per device (``convex.solve_many``): measured on the
# 2-core CPU, 10^4 configurations: pool 500 12.6 s, 1000 13.8 s, 2000 20.1 s, none 58.8 s.
CONVEX_POOL = 512
# Configurations the factored solver (method "ufm") runs together per device, by platform,
# in groups one after another (``_optimise``'s chunk); absent: all of them in one batched
# loop. Measured on the 2-core CPU, 2,048 configurations of sweeps/bench_16384.toml
# (L-BFGS of ``ncjax.lbfgs``, float32), converged/s in three rounds: groups of 32:
# 457-538, 16: 655-684, 8: 782-830, 6: 754-947, 4: 958-1,165, 2: 778-1,068, 1: 392-443
# (benchmarks/RESULTS.md). A GPU needs the width: all of them.
UFM_POOL = {"cpu": 4}


# Default stopping rule per dtype (measured: benchmarks/optimizers.py, README):
# gtol is relative to the gradient norm at the random start; ftol is the relative objective
# decrease over WINDOW steps below which the objective has stopped moving (float32 reaches
# its rounding floor near a gradient norm of 1e-8 and then wanders; this stops it there).
GTOL = {"float32": 1e-6, "float64": 1e-9}
FTOL = {"float32": 1e-7, "float64": 1e-14}
WINDOW = 50
DEFAULT_MAX_STEPS = 5000
DEFAULT_LR = {"lbfgs": 1.0, "adam": 1e-2, "gd": 1.0}


class Natural(NamedTuple):
    """Optimisation variables: V (K, d), U (K, m, d), b (K,); see the module docstring."""

    V: jax.Array
    U: jax.Array
    b: jax.Array


def from_natural(x: Natural, n_k, lam_W, lam_H) -> model.Params:
    """Map natural coordinates to the UFM variables (W, H, b)."""
    m = x.U.shape[1]
    a = (lam_H / lam_W) ** 0.25
    w_k = n_k / m
    return model.Params(a * x.V, x.U / (a * jnp.sqrt(w_k))[:, None, None], x.b)


def natural_objective(x: Natural, n_k, lam_W, lam_H, lam_b) -> jax.Array:
    """F(W, H, b) of ``model.ufm_objective`` at (W, H, b) = ``from_natural(x, ...)``,
    written in the natural coordinates:

        F = (1/N) Σ_k w_k Σ_i CE(V u_{k,i}/sqrt(w_k) + b, k)
            + (λ/2)(‖V‖² + ‖U‖²) + (λ_b/2)‖b‖²,    λ = sqrt(λ_W λ_H), w_k = n_k/m.

    The same number as the composition, but the scaling by a sqrt(w_k) acts on the
    (K, m, K) logits instead of the (K, m, d) features: the step's gradient makes one pass
    over U fewer each way. Shapes as ``Natural``; a scalar.
    """
    V, U, b = x
    w_k = n_k / U.shape[1]
    logits = jnp.einsum("kid,cd->kic", U, V) * jax.lax.rsqrt(w_k)[:, None, None] + b
    lam = theory.effective_lam(lam_W, lam_H)
    return (model.data_loss(logits, n_k) + 0.5 * lam * (jnp.sum(V**2) + jnp.sum(U**2))
            + 0.5 * lam_b * jnp.sum(b**2))


def init_natural(key, n_k, *, d: int, m: int, dtype) -> Natural:
    """Random initial point with class-mean logits of unit scale and balanced blocks.

    V ~ N(0, σ_V²), u_{k,i} ~ sqrt(w_k) N(0, σ²), σ_V = σ sqrt(N/K), σ² = 1/sqrt(N d/K):
    then ‖V‖² ≈ ‖U‖² and the logits V u/sqrt(w_k) have standard deviation ≈ 1. Equivalently
    every h_{k,i} and every row of W is i.i.d. Gaussian, independent across features.
    """
    K = n_k.shape[0]
    N = jnp.sum(n_k)
    sigma = (N * d / K) ** -0.25
    kV, kU = jax.random.split(key)
    V = sigma * jnp.sqrt(N / K) * jax.random.normal(kV, (K, d), dtype)
    U = sigma * jnp.sqrt(n_k / m)[:, None, None] * jax.random.normal(kU, (K, m, d), dtype)
    return Natural(V, U, jnp.zeros((K,), dtype))


def _optimizer(name: str, learning_rate):
    """The optax transformation for adam or gd (L-BFGS is ``ncjax.lbfgs``)."""
    return {"adam": optax.adam, "gd": optax.sgd}[name](learning_rate)


def start_key(seed, key_index):
    """The key of a configuration's random start: fold_in(key(seed), key_index). A sweep
    passes each cell's flat grid index as key_index, so a start never depends on the batch
    around it. Scalars; vmap it for arrays."""
    return jax.random.fold_in(jax.random.key(seed), key_index)


def _step(opt, optimizer, value_and_grad, x, opt_state, value, grad):
    """One optimiser step from x, where F(x) = value and ∇F(x) = grad: one evaluation of
    F and ∇F; returns (x', opt_state', F(x'), ∇F(x')). L-BFGS evaluates at its line
    search's trial point and moves there only if it is accepted (``ncjax.lbfgs.step``);
    adam/gd step and evaluate F there. The body of ``_loop``."""
    if optimizer == "lbfgs":
        return _lbfgs.step(value_and_grad, x, value, grad, opt_state)
    updates, opt_state = opt.update(grad, opt_state, x)
    x = optax.apply_updates(x, updates)
    value, grad = value_and_grad(x)
    return x, opt_state, value, grad


class _Carry(NamedTuple):
    x: Natural
    opt_state: optax.OptState
    value: jax.Array
    grad: Natural  # ∇F at the last step's point (not finite once a step diverged)
    gnorm: jax.Array  # ‖∇F(x)‖, x the kept iterate
    step: jax.Array
    status: jax.Array  # -1 while running, then a status code
    value_ref: jax.Array  # objective WINDOW steps ago (at the last multiple of WINDOW)
    gtol_abs: jax.Array  # gtol·‖∇₀‖, the gradient norm that ends the run


def _loop(key, n_k, lam_W, lam_H, lam_b, learning_rate, gtol, ftol, *,
          d, m, optimizer, max_steps, memory_size, dtype):
    """The solver's iteration for one configuration as (carry₀, body), pure.

    ``body`` takes one optimiser step and applies the stopping rule: status becomes
    converged at the first step where ‖∇‖ ≤ gtol·‖∇₀‖ or the objective moved by at most
    ftol·max(|F|, 1) over the last WINDOW steps (ftol = 0 turns this off), diverged where F
    or ∇ is not finite, max_steps at max_steps; it runs while status < 0. A diverged
    step keeps the last finite iterate x with its F and ‖∇F‖ and nothing else: the step
    ends the run, so the optimiser state and ∇F are never read again, while a select over
    them would cost every step of every configuration a pass over memory. ``_solve_group``
    runs it in a batched ``lax.while_loop``; ``ncjax.trace`` in a ``lax.scan`` that
    records every step (after a divergence, the kept values); the benchmarks step it from
    Python.
    """
    def f(x):
        return natural_objective(x, n_k, lam_W, lam_H, lam_b)

    value_and_grad = jax.value_and_grad(f)
    opt = None if optimizer == "lbfgs" else _optimizer(optimizer, learning_rate)
    x0 = init_natural(key, n_k, d=d, m=m, dtype=dtype)
    v0, g0 = value_and_grad(x0)
    # ‖∇₀‖ rides in the carry: a body applied on its own (the benchmarks' Python loop)
    # then never recomputes the start's gradient
    gnorm0 = optax.tree.norm(g0)
    state0 = _lbfgs.init(g0, memory_size) if opt is None else opt.init(x0)
    carry = _Carry(x0, state0, v0, g0, gnorm0, jnp.asarray(0), jnp.asarray(-1), v0,
                   gtol * gnorm0)

    def body(c):
        x, opt_state, value, grad = _step(opt, optimizer, value_and_grad, c.x,
                                          c.opt_state, c.value, c.grad)
        step = c.step + 1
        gnorm = optax.tree.norm(grad)
        finite = jnp.isfinite(value) & jnp.isfinite(gnorm)
        checkpoint = step % WINDOW == 0
        flat = checkpoint & (ftol > 0) & (
            jnp.abs(c.value_ref - value) <= ftol * jnp.maximum(jnp.abs(value), 1.0))
        status = jnp.where(
            ~finite, DIVERGED,
            jnp.where((gnorm <= c.gtol_abs) | flat, CONVERGED,
                      jnp.where(step >= max_steps, MAX_STEPS, -1)))
        keep = lambda new, old: jnp.where(finite, new, old)
        value = keep(value, c.value)
        return _Carry(jax.tree.map(keep, x, c.x), opt_state, value, grad, keep(gnorm, c.gnorm),
                      step, status, jnp.where(checkpoint, value, c.value_ref), c.gtol_abs)

    return carry, body


# The carried fields a stopped configuration keeps in the batched loop (``_batched``): the
# iterate and its stopping state. The optimiser state and ∇F go on changing, never read,
# where a select over them would cost every step of every configuration more passes over
# memory (2-core CPU, reference shape, Adam, both moments and ∇F: 1.3-1.45× the
# config-steps/s; benchmarks/RESULTS.md). No optimizer has an inner loop that a stopped
# configuration could keep running (``ncjax.lbfgs``: one evaluation a step).
FREEZE = ("x", "value", "gnorm", "step", "status", "value_ref")


def _batched(**static):
    """The solver's loop for a batch, (init, advance): init(keys, n_k, ...) the (B, ...)
    carry₀ of ``_loop``, advance(carry, keys, n_k, ...) one step of every configuration in
    which a stopped one (status ≥ 0 before the step) keeps the carried fields named in
    ``FREEZE``; ``static``: ``_loop``'s keywords."""
    init = jax.vmap(lambda *a: _loop(*a, **static)[0])
    body = jax.vmap(lambda c, *a: _loop(*a, **static)[1](c))

    def advance(c, *args):
        new = body(c, *args)
        running = c.status < 0
        keep = lambda n, o: jnp.where(running.reshape(running.shape + (1,) * (n.ndim - 1)),
                                      n, o)
        return new._replace(**{f: jax.tree.map(keep, getattr(new, f), getattr(c, f))
                               for f in FREEZE})
    return init, advance


def _solve_group(keys, n_k, lam_W, lam_H, lam_b, learning_rate, gtol, ftol, kernel=None,
                 **static):
    """Minimise F for a batch (B, ...) of configurations, each from its own random start:
    ``_loop`` of all of them in one ``lax.while_loop`` that runs while any runs, a stopped
    one frozen (``FREEZE``), so that each result is its own loop's run alone. ``kernel``
    (optimizer "adam" only): None for XLA's step, or the ``ncjax.fused.Settings`` of the
    same loop with each step in one Pallas kernel. Returns (x, F, ‖∇‖, steps, status),
    (B, ...)."""
    args = (keys, n_k, lam_W, lam_H, lam_b, learning_rate, gtol, ftol)
    if kernel is None:
        init, advance = _batched(**static)
        result = lambda c: (c.x, c.value, c.gnorm, c.step, c.status)
    else:
        if static["optimizer"] != "adam":
            raise InputError(f"a fused kernel is an Adam step; optimizer is "
                             f"{static['optimizer']!r}")
        from ncjax import fused
        init, advance, result = fused.batched(d=static["d"], m=static["m"],
                                              max_steps=static["max_steps"],
                                              dtype=static["dtype"], settings=kernel)
    c = jax.lax.while_loop(lambda c: jnp.any(c.status < 0), lambda c: advance(c, *args),
                           init(*args))
    return result(c)


def _measure(x, value, gnorm, steps, status, n_k, lam_W, lam_H, lam_b):
    """The outputs of one configuration: its solve (x, F, ‖∇‖, steps, status), the
    metrics and the theory of the solution."""
    W, H, b = from_natural(x, n_k, lam_W, lam_H)
    lam = theory.effective_lam(lam_W, lam_H)
    return {
        "objective": value, "grad_norm": gnorm, "steps": steps, "status": status,
        "W": W, "H": H, "b": b, "class_means": model.class_means(H),
        "Z": model.mean_logits(W, H),
        "metrics": _metrics.compute(W, H, b, n_k, lam, lam_b),
        "theory": theory.predict(n_k, lam),
    }


def _in_groups(f, args, size):
    """f(*args) computed as f on groups of ``size`` along the leading axis, one after
    another (``lax.map``: one compiled copy of f); size divides the leading axis
    (``layout`` pads the batch so that it does); f maps (B, ...) arrays to (B, ...)
    arrays."""
    B = args[0].shape[0]
    if B % size:
        raise ValueError(f"groups of {size} do not divide a batch of {B}")
    head = jax.tree.map(lambda a: a.reshape((B // size, size) + a.shape[1:]), args)
    return jax.tree.map(lambda a: a.reshape((B,) + a.shape[2:]),
                        jax.lax.map(lambda a: f(*a), head))


def _optimise(keys, n_k, lam_W, lam_H, lam_b, learning_rate, gtol, ftol, max_steps, *,
              d, m, optimizer, memory_size, dtype, chunk=None, kernel=None):
    """Every configuration's solve (``_solve_group``) over (B, ...) inputs: (x, F, ‖∇‖,
    steps, status) batched. ``chunk`` None: one batched loop over all B, which runs until
    its slowest configuration stops; an integer that divides B: groups of ``chunk``
    configurations, each group one batched loop, one group after another (``_in_groups``:
    a configuration waits only for the slowest of its group). ``kernel``:
    ``_solve_group``'s."""
    group = functools.partial(_solve_group, d=d, m=m, optimizer=optimizer,
                              max_steps=max_steps, memory_size=memory_size,
                              dtype=jnp.dtype(dtype), kernel=kernel)
    args = (keys, n_k, lam_W, lam_H, lam_b, learning_rate, gtol, ftol)
    if chunk is None or chunk >= keys.shape[0]:
        return group(*args)
    return _in_groups(group, args, chunk)


def _solve_local(seeds, key_index, n_k, lam_W, lam_H, lam_b, learning_rate, gtol, ftol,
                 max_steps, **static):
    """The solve of a local batch (B, ...): configuration i starts from the key
    fold_in(key(seeds[i]), key_index[i]); ``_optimise``, then the metrics and the theory
    (``_measure``), vmapped."""
    keys = jax.vmap(start_key)(seeds, key_index)
    solved = _optimise(keys, n_k, lam_W, lam_H, lam_b, learning_rate, gtol, ftol, max_steps,
                       **static)
    return jax.vmap(_measure)(*solved, n_k, lam_W, lam_H, lam_b)


@functools.partial(jax.jit, static_argnames=("d", "m", "optimizer", "memory_size", "dtype",
                                             "chunk", "mesh"))
def _solve_batch(seeds, key_index, n_k, lam_W, lam_H, lam_b, learning_rate, gtol, ftol,
                 max_steps, *, d, m, optimizer, memory_size, dtype, chunk, mesh):
    """The one compiled program: ``_solve_local`` on each device's shard of the
    configuration axis (shard_map over ``mesh``'s axis "cfg"; ``chunk``: the group size
    of ``_optimise`` within a device, None for one group). Arrays are (B, ...) but
    max_steps, a scalar (traced: a new value does not recompile)."""
    f = functools.partial(_solve_local, d=d, m=m, optimizer=optimizer,
                          memory_size=memory_size, dtype=dtype, chunk=chunk)
    spec = jax.sharding.PartitionSpec("cfg")
    return _shard_map(f, mesh, in_specs=(spec,) * 9 + (jax.sharding.PartitionSpec(),),
                      out_specs=spec)(seeds, key_index, n_k, lam_W, lam_H, lam_b,
                                      learning_rate, gtol, ftol, max_steps)


def _convex_local(n_k, lam_W, lam_H, lam_b, gtol, *, d, m, max_steps, pool):
    """The convex route for a local batch (B, ...): certified solve of P, the balanced
    factorisation, then the same metrics and theory as ``_measure``."""
    lam = theory.effective_lam(lam_W, lam_H)
    r = _convex.solve_many(n_k, lam, lam_b, gtol[0], max_steps=max_steps, pool=pool)
    W, H, b = jax.vmap(functools.partial(_convex.factorize, d=d, m=m))(r.Z, r.b, n_k, lam_W,
                                                                      lam_H)
    return {
        "objective": r.P, "grad_norm": jnp.full_like(r.P, jnp.nan), "steps": r.steps,
        "status": r.status, "W": W, "H": H, "b": b, "class_means": H[:, :, 0, :],
        "Z": r.Z, "metrics": jax.vmap(_metrics.compute)(W, H, b, n_k, lam, lam_b),
        "theory": jax.vmap(theory.predict)(n_k, lam),
    }


@functools.partial(jax.jit, static_argnames=("d", "m", "max_steps", "pool", "mesh"))
def _convex_batch(n_k, lam_W, lam_H, lam_b, gtol, *, d, m, max_steps, pool, mesh):
    """``_convex_local`` on each device's shard of the configuration axis (shard_map: the
    pool refills slots from its own device's configurations only)."""
    f = functools.partial(_convex_local, d=d, m=m, max_steps=max_steps, pool=pool)
    spec = jax.sharding.PartitionSpec("cfg")
    return _shard_map(f, mesh, in_specs=(spec,) * 5, out_specs=spec)(
        n_k, lam_W, lam_H, lam_b, gtol)


def _shard_map(f, mesh, in_specs, out_specs):
    if hasattr(jax, "shard_map"):
        return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                             check_vma=False)
    from jax.experimental.shard_map import shard_map  # older JAX
    return shard_map(f, mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)


def _certify_one(W, H, b, n_k, lam_W, lam_H, lam_b):
    """Certified bound on F(W, H, b) − F*, computed in float64 whatever the solve's dtype:
    F of the point (exactly representable in float64) minus the dual value of the feasible
    q that ``convex.dual_point`` builds from (Z, b) = (W H̄ᵀ, b). Valid for d ≥ K − 1."""
    W, H, b = (jnp.asarray(a, jnp.float64) for a in (W, H, b))
    value = model.ufm_objective(model.Params(W, H, b), n_k, lam_W, lam_H, lam_b)
    lam = theory.effective_lam(lam_W, lam_H)
    return _convex.gap(model.mean_logits(W, H), b, n_k, lam, lam_b, value=value)


# Run under ``x64(True)``, on the solve's outputs and float64 copies of its inputs.
_certify_batch = jax.jit(jax.vmap(_certify_one))


class Result(NamedTuple):
    """Per-configuration results as numpy arrays with a leading batch axis (B, ...), dropped
    when every input was unbatched. λ's are in the half convention.

    objective: F at the solution; gap: certified bound on F − F* (float64, see
    ``ncjax.convex``; valid for d ≥ K − 1); grad_norm: ‖∇F‖ in natural coordinates; steps;
    status: "converged" | "max_steps" | "diverged"; converged: status == "converged";
    W (K, d), H (K, m, d), b (K,), class_means (K, d), Z (K, K) with column k = W h̄_k;
    metrics, theory: dicts (``ncjax.metrics.compute``, ``ncjax.theory.predict``);
    counts (K,), lam_W, lam_H, lam_b, seed: the configuration.
    """

    objective: np.ndarray
    gap: np.ndarray
    grad_norm: np.ndarray
    steps: np.ndarray
    status: np.ndarray
    converged: np.ndarray
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


def _inputs(counts, lam_W, lam_H, lam_b, *, d, m, seed, convention, optimizer,
            learning_rate, max_steps, gtol, ftol, dtype, memory_size, key_index, method,
            gap_tol, pool):
    """Validate ``solve``'s arguments; returns (per, static, batched): ``per`` the (B, ...)
    numpy inputs of ``_solve_batch`` (λ's in the half convention), ``static`` its static
    arguments, ``batched`` whether any input had a batch axis."""
    n = as_counts(counts)
    K = n.shape[-1]
    d = K if d is None else as_int("d", d, minimum=1)
    m = as_int("m", m, minimum=1)
    max_steps = as_int("max_steps", max_steps, minimum=1)
    memory_size = as_int("memory_size", memory_size, minimum=1)
    if optimizer not in OPTIMIZERS:
        raise InputError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
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
    lw, lh, lb = theory.to_half(as_lam("lam_W", lam_W, positive=True),
                                as_lam("lam_H", lam_H, positive=True),
                                as_lam("lam_b", lam_b), convention)
    lr = as_lam("learning_rate", DEFAULT_LR[optimizer] if learning_rate is None else learning_rate)
    default_gtol = (_convex.GTOL if method == "convex" else GTOL)[dtype]
    gt = as_lam("gtol", default_gtol if gtol is None else gtol)
    if method == "convex" and np.unique(gt).size > 1:
        raise InputError("method 'convex' takes one gtol for the batch")
    gap_tol = np.nan if gap_tol is None else float(as_lam("gap_tol", gap_tol, positive=True))
    ft = as_lam("ftol", FTOL[dtype] if ftol is None else ftol)
    _, batched, n, per = broadcast_batch(n, lam_W=lw, lam_H=lh, lam_b=lb, seed=as_seeds(seed),
                                         key_index=as_seeds(key_index, "key_index"),
                                         learning_rate=lr, gtol=gt, ftol=ft)
    per = {"counts": np.asarray(n), **{k: np.asarray(v) for k, v in per.items()}}
    static = dict(d=d, m=m, optimizer=optimizer, max_steps=max_steps,
                  memory_size=memory_size, dtype=dtype, method=method, gap_tol=gap_tol,
                  pool=pool)
    return per, static, batched


def layout(B: int, devices, method: str = "ufm", pool: int | None = None):
    """How a batch of B configurations runs on ``devices``: (B_pad, pool).

    Each of the n devices gets L = ⌈B/n⌉ configurations, the batch padded to B_pad = n·L
    by repeating its last configuration. ``pool`` None takes the default of the method
    and platform (``CONVEX_POOL``, ``UFM_POOL``). Method "ufm" with a pool p < L solves
    a device's configurations in g = ⌈L/p⌉ groups of s = ⌈L/g⌉ ≤ p, one after another,
    with L raised to g·s (fewer than g padding rows) so that the groups are equal: a
    smaller last group would be a second compiled copy of the loop (float64 L-BFGS,
    K = 10, this 2-core CPU: a first solve of B = 11 took 14 s, of B = 12 9 s, nearly all
    of it compiling; now 8.7 s for both). Returns B_pad and the pool the program takes
    (s; for "convex" min(p, L) slots; None: one group).
    """
    n = len(devices)
    if pool is None:
        pool = CONVEX_POOL if method == "convex" else UFM_POOL.get(devices[0].platform)
    L = -(-B // n)
    if pool is None:
        return n * L, None
    if method == "ufm" and pool < L:
        groups = -(-L // pool)
        pool = -(-L // groups)
        L = groups * pool
    return n * L, min(pool, L)


def _program(per, static, devices):
    """The solve's compiled program and its device inputs: (fn, args, kwargs, put), so that
    ``fn(*args, **kwargs)`` is the solve of ``_run`` (benchmarks lower and compile it apart
    from running it) and ``put(name, dtype)`` places another input like the others. The
    batch is padded by ``layout``."""
    static = dict(static)
    dtype, method, _, pool = (static.pop(k) for k in ("dtype", "method", "gap_tol", "pool"))
    B = per["counts"].shape[0]
    B_pad, pool = layout(B, devices, method, pool)
    pad = lambda a: np.concatenate([a, np.repeat(a[-1:], B_pad - B, axis=0)])
    sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(np.array(devices), ("cfg",)),
                                          jax.sharding.PartitionSpec("cfg"))
    put = lambda name, t: jax.device_put(np.asarray(pad(per[name]), t), sharding)
    if method == "convex":
        args = tuple(put(k, dtype) for k in ("counts", "lam_W", "lam_H", "lam_b", "gtol"))
        return _convex_batch, args, dict(d=static["d"], m=static["m"],
                                         max_steps=static["max_steps"], pool=pool,
                                         mesh=sharding.mesh), put
    args = (put("seed", np.uint32), put("key_index", np.uint32)) + tuple(
        put(k, dtype) for k in ("counts", "lam_W", "lam_H", "lam_b", "learning_rate", "gtol",
                                "ftol")) + (jax.device_put(
        np.int32(static.pop("max_steps")),
        jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())),)
    return _solve_batch, args, dict(dtype=dtype, chunk=pool, mesh=sharding.mesh,
                                    **static), put


def _run(per, static, devices):
    """``_solve_batch`` on validated inputs, the configuration axis sharded over
    ``devices`` (jax.sharding.Mesh + NamedSharding), the batch padded by ``layout``
    (repeating the last configuration). Returns the raw outputs as jax Arrays of
    (B_pad, ...), not fetched: with several processes they are not all addressable here."""
    fn, args, kwargs, put = _program(per, static, devices)
    with precise():
        out = fn(*args, **kwargs)
    gap_tol = static["gap_tol"]
    with x64(True):
        out["gap"] = _certify_batch(out["W"], out["H"], out["b"], put("counts", np.float64),
                                    put("lam_W", np.float64), put("lam_H", np.float64),
                                    put("lam_b", np.float64))
        if np.isfinite(gap_tol):
            tol = gap_tol * jnp.maximum(1.0, jnp.abs(out["objective"]))
            out["status"] = jnp.where((out["status"] == CONVERGED) & ~(out["gap"] <= tol),
                                      UNCERTIFIED, out["status"]).astype(out["status"].dtype)
    return out


def solve_sharded(counts, lam_W, lam_H, lam_b=0.0, *, devices=None, d: int | None = None,
                  m: int = 1, seed=0, convention: str = "half", optimizer: str = "lbfgs",
                  learning_rate=None, max_steps: int = DEFAULT_MAX_STEPS, gtol=None,
                  ftol=None, dtype: str = "float32", memory_size: int = 10, key_index=0,
                  method: str = "ufm", gap_tol=None, pool=None):
    """``solve`` for callers that keep the results on the devices: the same arguments
    (batched: (B, ...) inputs; ``devices`` default every device of every process), and
    returns the raw outputs, a dict of jax Arrays of (B_pad, ...) sharded over the
    devices, the batch padded by repeating its last configuration (``layout``: to a
    multiple of the device count, and of the group size on a CPU). With several processes
    (``jax.distributed``) each process passes the same inputs and computes its
    addressable shards; nothing is fetched to the host.
    Keys: objective, gap, grad_norm, steps, status (int: ``STATUS_NAMES``), W, H, b,
    class_means, Z, metrics (dict), theory (dict). Call it inside ``x64`` for float64.
    """
    per, static, _ = _inputs(counts, lam_W, lam_H, lam_b, d=d, m=m, seed=seed,
                             convention=convention, optimizer=optimizer,
                             learning_rate=learning_rate, max_steps=max_steps, gtol=gtol,
                             ftol=ftol, dtype=dtype, memory_size=memory_size,
                             key_index=key_index, method=method, gap_tol=gap_tol, pool=pool)
    return _run(per, static, jax.devices() if devices is None else list(devices))


def solve(counts, lam_W, lam_H, lam_b=0.0, *, d: int | None = None, m: int = 1, seed=0,
          convention: str = "half", optimizer: str = "lbfgs", learning_rate=None,
          max_steps: int = DEFAULT_MAX_STEPS, gtol=None, ftol=None, dtype: str = "float32",
          memory_size: int = 10, key_index=0, devices=None, method: str = "ufm",
          gap_tol=None, pool=None) -> Result:
    """Solve the UFM (DESIGN.md §1) for one configuration or a batch, in one jitted program.

    Args:
      counts: class counts n_k, (K,) or (B, K); any positive reals.
      lam_W, lam_H, lam_b: regularisation, scalars or (B,), in ``convention``
        ("half": (λ/2)‖·‖², ncjax's; "paper": λ‖·‖², the authors'). λ_W, λ_H > 0.
      d: feature dimension (default K). m: free features per class, each of weight n_k/m.
      seed: integer or (B,) integers; a configuration's random start depends on its seed
        and its ``key_index`` (integer or (B,); a sweep passes each cell's flat grid
        index) only, never on the batch around it.
      optimizer: "lbfgs" (default, chosen by measurement; ``ncjax.lbfgs``), "adam" or "gd"
        (optax).
      learning_rate: for adam/gd, scalar or (B,) (traced: new values do not recompile);
        L-BFGS takes its steps from a line search and ignores it.
      max_steps, gtol, ftol: stopping rule of ``_loop``; gtol/ftol default per dtype
        (``GTOL``, ``FTOL``) and may be (B,). A step is one evaluation of F and ∇F (for
        L-BFGS one trial of its line search), and steps counts them.
      dtype: "float32" or "float64".
      devices: where to solve (default every local device); the B configurations are
        sharded over them (jax.sharding.Mesh + NamedSharding on the configuration axis).
      memory_size: the pairs L-BFGS keeps (default 10).
      method: "ufm" (default): the optimizer on (W, H, b) as above. "convex": the convex
        form P of DESIGN.md §1 by ``ncjax.convex`` (accelerated proximal gradient, K × K per
        configuration whatever N or m), stopped when the certified gap is at most
        gtol·max(1, |P|) (gtol default ``convex.GTOL``: 1e-9 float64, 1e-5 float32; one
        value per batch), then factorised (``convex.factorize``: W (K, d), H with m equal
        features per class). Needs d ≥ K − 1; seed, optimizer, learning_rate, ftol and
        memory_size are not used, and grad_norm is NaN.
      pool: configurations in flight per device. Method "convex": slots refilled as
        configurations finish (default ``CONVEX_POOL``). Method "ufm": at most this many
        configurations solved together in one batched loop, in equal groups one after
        another (``layout``), each group running until its slowest stops (default
        ``UFM_POOL`` for the platform: 4 on a CPU; on other platforms all of the
        device's configurations at once). Results do not depend on it beyond float
        rounding and the stopping tolerance.
      gap_tol: if given, a configuration whose optimiser stopped but whose certified gap
        exceeds gap_tol·max(1, |F|) gets status "uncertified" instead of "converged".
    Returns:
      a ``Result`` of numpy arrays.
    Raises:
      InputError: on a bad argument (see ``ncjax.validate``).
    """
    per, static, batched = _inputs(counts, lam_W, lam_H, lam_b, d=d, m=m, seed=seed,
                                   convention=convention, optimizer=optimizer,
                                   learning_rate=learning_rate, max_steps=max_steps,
                                   gtol=gtol, ftol=ftol, dtype=dtype, memory_size=memory_size,
                                   key_index=key_index, method=method, gap_tol=gap_tol,
                                   pool=pool)
    B = per["counts"].shape[0]
    with x64(static["dtype"] == "float64"):
        out = _run(per, static, jax.local_devices() if devices is None else list(devices))
        out = jax.tree.map(lambda a: a[:B], jax.device_get(out))
    status = np.asarray(STATUS_NAMES)[out["status"]]
    res = Result(
        objective=out["objective"], gap=out["gap"], grad_norm=out["grad_norm"],
        steps=out["steps"],
        status=status, converged=status == "converged", W=out["W"], H=out["H"], b=out["b"],
        class_means=out["class_means"], Z=out["Z"], metrics=out["metrics"],
        theory=out["theory"], counts=per["counts"], lam_W=per["lam_W"],
        lam_H=per["lam_H"], lam_b=per["lam_b"], seed=per["seed"])
    return res if batched else jax.tree.map(lambda a: a[0], res)
