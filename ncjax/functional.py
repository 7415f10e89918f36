"""The solve of one configuration as a pure function of arrays, for ``jax.jit``,
``jax.vmap`` and ``jax.shard_map``: a ``Problem`` in, a ``Solution`` of arrays out.

    solve(problem, key, *, method, d, m, optimizer, learning_rate, gtol, ftol, gap_tol,
          max_steps, memory_size) -> Solution

``problem`` is ONE configuration (counts (K,), scalar λ's, the loss's parameters theta:
``ncjax.problem.make`` builds a batch, ``jax.vmap`` maps over it); ``key`` its random start
(method "ufm"; ``ncjax.solve`` uses ``natural.start_key(seed, key_index)``). The settings
that fix the program's shapes or branches (method, d, m, optimizer, memory_size; for
"convex" max_steps) are static; learning_rate, gtol, ftol and gap_tol may be traced.
The dtype is the problem's arrays' (float64 needs x64).

The method (DESIGN.md §1):

* "ufm": the factored UFM from ``key``'s random start by the optimiser's loop
  (``ncjax.loop``, natural coordinates), stopped by ``ncjax.stopping``'s rule;
* "convex": the convex form by ``ncjax.convex`` (certified to gtol·|P| in the dtype),
  factorised back to (W, H, b) (``convex.factorize``);

then, for both, the metrics and the theory of the solution and its certificate: F of the
point minus the dual value of ``ncjax.dual.dual_point`` at (Z, b) = (W H̄ᵀ, b), computed in
the program in float64 where x64 is enabled and otherwise in the solve's dtype (a float32
solve under a user's jit without x64: its float32 rounding alone is ~1e-7·F). For
d ≥ K − 1 and a loss convex in the logits (``has_certificate``) a stopped configuration
whose gap exceeds gap_tol·F is "uncertified" (``certified_status``); otherwise the
optimiser's status stands. Nothing leaves the program: ``ncjax.solve`` is this function's
batched form (``ufm_batch``, ``convex_batch``) sharded over devices, plus what only the
host can do (the float64 certificate of a float32 solve, and the float64 convex finish of
a configuration whose certificate failed or whose dtype cannot hold its inputs).

``ufm_batch`` and ``convex_batch`` take a batch (B, ...) and return a dict of (B, ...)
arrays with the fields of ``Solution``; ``solve`` is either on a batch of one.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ncjax import convex, dual, loop, metrics, model, natural, optimizers, stopping, theory
from ncjax.names import DEFAULT_MAX_STEPS, DTYPES, METHODS
from ncjax.problem import Problem
from ncjax.tolerances import GAP_RTOL
from ncjax.validate import InputError


class Solution(NamedTuple):
    """The solve of one configuration, arrays only (a leading batch axis under vmap); λ's
    in the half convention.

    objective (): F at the solution (the solver's own value: the loop's F, or P of the
    convex route); gap (): the certificate, a bound on F − F* (in float64 with x64, else in
    the solve's dtype; valid for d ≥ K − 1 and a convex loss); grad_norm (): ‖∇F‖ in
    natural coordinates (NaN for "convex"); steps (); status () int32, a code of
    ``ncjax.names`` (``STATUS_NAMES[status]`` names it); W (K, d), H (K, m, d), b (K,)
    (0 without a bias), class_means (K, d), Z (K, K) with column k = W h̄_k; metrics,
    theory: dicts of arrays (``ncjax.metrics.compute``, ``ncjax.theory.predict``).
    """

    objective: jax.Array
    gap: jax.Array
    grad_norm: jax.Array
    steps: jax.Array
    status: jax.Array
    W: jax.Array
    H: jax.Array
    b: jax.Array
    class_means: jax.Array
    Z: jax.Array
    metrics: dict
    theory: dict


def has_certificate(problem: Problem, d: int) -> bool:
    """Whether the certificate bounds F − F*: d ≥ K − 1 and a loss convex in the logits
    (static)."""
    return d >= problem.K - 1 and problem.loss.convex


def certificate(W, H, b, problem: Problem):
    """(F, bound on F(W, H, b) − F*) of one solution in float64 where x64 is enabled, else
    in float32: F of the point minus the dual value of the feasible V that
    ``dual.dual_point`` builds from (Z, b) = (W H̄ᵀ, b). Valid for d ≥ K − 1."""
    dt = jnp.result_type(jnp.float64)  # float64 with x64, float32 without
    W, H, b = (jnp.asarray(a, dt) for a in (W, H, b))
    problem = problem.astype(dt)
    value = model.ufm_objective(model.Params(W, H, b), problem)
    return value, dual.gap(model.mean_logits(W, H), b, problem, value=value)


def certified_status(status, value, gap, gap_tol):
    """The status once certified: a configuration its solver stopped as converged whose
    certificate fails (``stopping.certified(gap, value, gap_tol)``) is UNCERTIFIED; int32."""
    ok = stopping.certified(gap, value, gap_tol)
    return jnp.where((status == stopping.CONVERGED) & ~ok, stopping.UNCERTIFIED,
                     status).astype(jnp.int32)


def _outputs(params: model.Params, class_means, Z, value, grad_norm, steps, status,
             problem: Problem, gap_tol, d: int) -> dict:
    """One configuration's outputs from its solution: the solver's figures, the metrics,
    the theory and, unless gap_tol is None (the caller certifies), the certificate and
    the certified status."""
    W, H, b = params
    out = {"objective": value, "grad_norm": grad_norm, "steps": steps,
           "status": status.astype(jnp.int32), "W": W, "H": H, "b": b,
           "class_means": class_means, "Z": Z, "metrics": metrics.compute(W, H, b, problem),
           "theory": theory.predict(problem)}
    if gap_tol is not None:
        F, out["gap"] = certificate(W, H, b, problem)
        if has_certificate(problem, d):
            out["status"] = certified_status(out["status"], F, out["gap"], gap_tol)
    return out


def ufm_batch(keys, problems: Problem, learning_rate, gtol, ftol, max_steps, gap_tol=None,
              *, d: int, m: int, optimizer, memory_size: int, dtype, chunk=None) -> dict:
    """The factored solve of a batch (B, ...): ``loop.optimise`` from each configuration's
    key (in groups of ``chunk``), then each one's outputs (``Solution``'s fields; "gap" and
    the certified status only where gap_tol is given). keys (B,), learning_rate, gtol,
    ftol (B,); max_steps and gap_tol scalars (may be traced)."""
    s = loop.Settings(d, m, optimizer, max_steps, memory_size, jnp.dtype(dtype))
    x, value, gnorm, steps, status = loop.optimise(keys, problems, learning_rate, gtol, ftol,
                                                   s, chunk)

    def one(x, value, gnorm, steps, status, problem):
        params = natural.to_params(x, problem)
        return _outputs(params, model.class_means(params.H),
                        model.mean_logits(params.W, params.H), value, gnorm, steps, status,
                        problem, gap_tol, d)

    return jax.vmap(one)(x, value, gnorm, steps, status, problems)


def convex_batch(problems: Problem, gtol, gap_tol=None, *, d: int, m: int, max_steps: int,
                 pool=None) -> dict:
    """The convex route for a batch (B, ...): ``convex.solve_many`` (vmapped, or its pool
    of ``pool`` < B slots), factorised (``convex.factorize``), then each configuration's
    outputs as ``ufm_batch``'s (grad_norm NaN). gtol: one scalar for the batch."""
    r = convex.solve_many(problems, gtol, max_steps=max_steps, pool=pool)

    def one(Z, b, P, steps, status, problem):
        params = convex.factorize(Z, b, problem, d=d, m=m)
        return _outputs(params, params.H[:, 0, :], Z, P, jnp.full_like(P, jnp.nan), steps,
                        status, problem, gap_tol, d)

    return jax.vmap(one)(r.Z, r.b, r.P, r.steps, r.status, problems)


def _floating(problem: Problem) -> Problem:
    """The problem with its arrays in one solve dtype: its counts' dtype if floating (as
    this JAX holds it), else the default float."""
    dt = jnp.asarray(problem.counts).dtype
    if not jnp.issubdtype(dt, jnp.floating):
        dt = jnp.result_type(float)
    if jnp.dtype(dt).name not in DTYPES:
        raise InputError(f"the problem's dtype must be one of {DTYPES}, got {dt}")
    return problem.astype(dt)


def solve(problem: Problem, key=None, *, method: str = "ufm", d: int | None = None,
          m: int = 1, optimizer="lbfgs", learning_rate=None, gtol=None, ftol=None,
          gap_tol=None, max_steps=DEFAULT_MAX_STEPS, memory_size: int = 10) -> Solution:
    """Solve the UFM for ONE configuration, traceably (module docstring).

    Args:
      problem: a ``Problem`` of one configuration: counts (K,), scalar λ's (half
        convention), theta (the loss's parameters). Its arrays' dtype is the solve's
        (float32 or float64; integer counts take the default float).
      key: the random start of method "ufm" (a ``jax.random`` key); default
        ``natural.start_key(0, 0)``, the start of ``ncjax.solve``'s seed 0, key_index 0.
        Unused by "convex".
      method: "ufm" or "convex" (needs d ≥ K − 1 and a convex loss). Static.
      d: feature dimension (default K); m: features per class. Static.
      optimizer: as ``ncjax.solve``'s (a name, an optax transformation, an
        ``optimizers.Optimizer``). Static; memory_size (L-BFGS) too.
      learning_rate, gtol, ftol: the optimiser's step and ``ncjax.stopping``'s rule
        (for "convex", gtol is its certificate tolerance, ``convex.GTOL``); gap_tol: the
        certificate's (``tolerances.GAP_RTOL``). Defaults per dtype, as ``ncjax.solve``'s;
        scalars, traced or not.
      max_steps: the step budget; an int (for "ufm" it may be traced).
    Returns:
      a ``Solution`` of arrays. No host-side finish: where ``ncjax.solve`` would finish a
      failed certificate by the float64 convex route, this returns "uncertified".
    Raises:
      InputError: on a bad static setting.
    """
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    problem = _floating(problem)
    dt = problem.counts.dtype
    K = problem.K
    d = K if d is None else d
    if method == "convex" and not has_certificate(problem, d):
        raise InputError(f"method 'convex' needs d >= K - 1 = {K - 1} and a loss convex in "
                         f"the logits; got d = {d}, loss {problem.loss.name!r}")
    scalar = lambda v, default: jnp.asarray(default[dt.name] if v is None else v, dt)
    gap_tol = scalar(gap_tol, GAP_RTOL)
    one = jax.tree.map(lambda a: a[None], problem)  # the batch of one
    if method == "convex":
        out = convex_batch(one, scalar(gtol, convex.GTOL), gap_tol, d=d, m=m,
                           max_steps=max_steps)
    else:
        optimizers.check(optimizer)
        lr = learning_rate
        if lr is None:
            lr = optimizers.DEFAULT_LR.get(optimizer, 1.0) if isinstance(optimizer, str) else 1.0
        key = natural.start_key(0, 0) if key is None else key
        row = lambda v: jnp.asarray(v, dt)[None]
        out = ufm_batch(key[None], one, row(lr), row(scalar(gtol, stopping.GTOL)),
                        row(scalar(ftol, stopping.FTOL)), max_steps, gap_tol, d=d, m=m,
                        optimizer=optimizer, memory_size=memory_size, dtype=dt)
    return Solution(**jax.tree.map(lambda a: a[0], out))

