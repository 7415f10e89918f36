"""The factored solve's loop: one configuration as (carry₀, body), and a batch of them in
one ``lax.while_loop``.

``iteration`` builds, for one problem, the start (a random point in natural coordinates,
``ncjax.natural``) and the body: one optimiser step (``ncjax.optimizers``: one evaluation
of F and ∇F) followed by the stopping rule of ``ncjax.stopping``. A diverged step keeps the
last finite iterate x with its F and ‖∇F‖ and nothing else: the step ends the run, so the
optimiser state and ∇F are never read again, while a select over them would cost every
step of every configuration a pass over memory.

``batched`` runs it for a batch (B, ...): every step advances every configuration, and a
stopped one keeps the carried fields named in ``FREEZE`` (its iterate and stopping state)
through ``stopping.select``; the others go on. ``solve`` runs a batch to the end in one
while_loop; ``in_groups`` runs a batch as equal groups one after another (``lax.map``:
one compiled copy), so that a configuration waits only for the slowest of its group.
``ncjax.trace`` runs the same body under ``lax.scan``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from ncjax import natural, optimizers, stopping
from ncjax.natural import Natural
from ncjax.problem import Problem


class Settings(NamedTuple):
    """The static settings of a loop: feature dimension d, features per class m, the
    optimiser (a name of ``optimizers.OPTIMIZERS``, an optax transformation or an
    ``optimizers.Optimizer``), max_steps, L-BFGS's memory_size and the dtype."""

    d: int
    m: int
    optimizer: object
    max_steps: int
    memory_size: int
    dtype: object


class Carry(NamedTuple):
    x: Natural
    opt_state: optax.OptState
    value: jax.Array
    grad: Natural  # ∇F at the last step's point (not finite once a step diverged)
    gnorm: jax.Array  # ‖∇F(x)‖, x the kept iterate
    step: jax.Array
    status: jax.Array  # stopping.RUNNING while running, then a status code
    value_ref: jax.Array  # F at the last multiple of WINDOW steps
    gtol_abs: jax.Array  # gtol·‖∇₀‖, the gradient norm that ends the run


# The carried fields a stopped configuration keeps in a batch: the iterate and its stopping
# state. The optimiser state and ∇F go on changing, never read, where a select over them
# would cost every step of every configuration more passes over memory. No optimiser has
# an inner loop that a stopped configuration could keep running (one evaluation a step).
FREEZE = ("x", "value", "gnorm", "step", "status", "value_ref")


def iteration(key, problem: Problem, learning_rate, gtol, ftol, s: Settings):
    """The loop of one configuration as (carry₀, body), pure: carry₀ from the random start
    ``natural.init(key, ...)``; body(carry) one step and the stopping rule (module
    docstring). gtol is relative to ‖∇F₀‖; max_steps may be traced."""
    def value_and_grad(x):
        return jax.value_and_grad(natural.objective)(x, problem)

    opt = optimizers.build(s.optimizer, learning_rate, s.memory_size)
    x0 = natural.init(key, problem, d=s.d, m=s.m, dtype=s.dtype)
    v0, g0 = value_and_grad(x0)
    gnorm0 = optax.tree.norm(g0)
    carry = Carry(x0, opt.init(x0, g0), v0, g0, gnorm0, jnp.asarray(0),
                  jnp.asarray(stopping.RUNNING), v0, gtol * gnorm0)

    def body(c: Carry) -> Carry:
        x, opt_state, value, grad = opt.step(value_and_grad, c.x, c.opt_state, c.value, c.grad)
        step = c.step + 1
        gnorm = optax.tree.norm(grad)
        status = stopping.status(step, value, gnorm, c.value_ref, c.gtol_abs, ftol,
                                 s.max_steps)
        finite = jnp.isfinite(value) & jnp.isfinite(gnorm)
        keep = lambda new, old: jnp.where(finite, new, old)
        value = keep(value, c.value)
        checkpoint = step % stopping.WINDOW == 0
        return Carry(jax.tree.map(keep, x, c.x), opt_state, value, grad, keep(gnorm, c.gnorm),
                     step, status, jnp.where(checkpoint, value, c.value_ref), c.gtol_abs)

    return carry, body


def batched(s: Settings):
    """The loop of a batch, (init, advance): init(keys, problems, lr, gtol, ftol) the
    (B, ...) carry₀; advance(carry, keys, problems, lr, gtol, ftol) one step of every
    configuration, a stopped one (status ≥ 0 before the step) keeping ``FREEZE``."""
    init = jax.vmap(lambda *a: iteration(*a, s)[0])
    body = jax.vmap(lambda c, *a: iteration(*a, s)[1](c))

    def advance(c, *args):
        new = body(c, *args)
        kept = stopping.select(c.status < 0, {f: getattr(new, f) for f in FREEZE},
                               {f: getattr(c, f) for f in FREEZE})
        return new._replace(**kept)

    return init, advance


def solve(keys, problems: Problem, learning_rate, gtol, ftol, s: Settings):
    """Minimise F for a batch (B, ...) of problems, each from its own random start, in one
    ``lax.while_loop`` that runs while any configuration runs; each result is its own
    loop's run alone. Returns (x, F, ‖∇F‖, steps, status), (B, ...)."""
    init, advance = batched(s)
    args = (keys, problems, learning_rate, gtol, ftol)
    c = jax.lax.while_loop(lambda c: jnp.any(c.status < 0), lambda c: advance(c, *args),
                           init(*args))
    return c.x, c.value, c.gnorm, c.step, c.status


def in_groups(f, args, size: int):
    """f(*args) computed as f on groups of ``size`` along the leading axis, one after
    another (``lax.map``: one compiled copy of f); ``size`` divides the leading axis; f
    maps pytrees of (B, ...) arrays to (B, ...) arrays."""
    B = jax.tree.leaves(args)[0].shape[0]
    if B % size:
        raise ValueError(f"groups of {size} do not divide a batch of {B}")
    head = jax.tree.map(lambda a: a.reshape((B // size, size) + a.shape[1:]), args)
    return jax.tree.map(lambda a: a.reshape((B,) + a.shape[2:]),
                        jax.lax.map(lambda a: f(*a), head))


def optimise(keys, problems: Problem, learning_rate, gtol, ftol, s: Settings, chunk=None):
    """``solve`` over (B, ...) inputs, in one batched loop (``chunk`` None or ≥ B) or in
    groups of ``chunk`` configurations one after another (``in_groups``; chunk divides B).
    Returns (x, F, ‖∇F‖, steps, status)."""
    args = (keys, problems, learning_rate, gtol, ftol)
    group = lambda *a: solve(*a, s)
    if chunk is None or chunk >= keys.shape[0]:
        return group(*args)
    return in_groups(group, args, chunk)
