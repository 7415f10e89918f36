"""One protocol for every optimiser of the factored loop: optax's and ncjax.lbfgs alike.

An ``Optimizer`` is a pair of pure functions over pytrees of parameters x:

    init(x, grad) -> state
    step(value_and_grad, x, state, value, grad) -> (x', state', F(x'), ∇F(x'))

where ``value`` = F(x) and ``grad`` = ∇F(x) are known, and ``step`` evaluates F and ∇F
exactly once. ``from_optax`` wraps any ``optax.GradientTransformation`` (a user's own
included): update, apply, evaluate at the new point. ``lbfgs`` is ``ncjax.lbfgs``, whose
evaluation is its line search's next trial point and which moves there only if the trial
is accepted. ``build`` turns what a caller passed to ``ncjax.solve`` into an Optimizer;
a named optimiser is built inside the loop, so its learning rate may be a traced,
per-configuration array.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import optax

from ncjax import lbfgs as lbfgs_
from ncjax.names import OPTIMIZERS  # noqa: F401 - re-exported
from ncjax.validate import InputError

DEFAULT_LR = {"lbfgs": 1.0, "adam": 1e-2, "gd": 1.0}


class Optimizer(NamedTuple):
    """init(x, grad) -> state; step(value_and_grad, x, state, value, grad) -> (x, state,
    value, grad) with one evaluation of F and ∇F (module docstring)."""

    init: Callable
    step: Callable


def from_optax(tx: optax.GradientTransformation) -> Optimizer:
    """An optax transformation as an Optimizer: x' = x + update(∇F(x)), then F, ∇F at x'."""
    def step(value_and_grad, x, state, value, grad):
        updates, state = tx.update(grad, state, x)
        x = optax.apply_updates(x, updates)
        value, grad = value_and_grad(x)
        return x, state, value, grad

    return Optimizer(lambda x, grad: tx.init(x), step)


def lbfgs(memory_size: int = 10) -> Optimizer:
    """``ncjax.lbfgs``: L-BFGS whose line search is the outer loop, ``memory_size`` pairs."""
    def step(value_and_grad, x, state, value, grad):
        x, state, value, grad = lbfgs_.step(value_and_grad, x, value, grad, state)
        return x, state, value, grad

    return Optimizer(lambda x, grad: lbfgs_.init(grad, memory_size), step)


def check(optimizer) -> None:
    """Raise InputError unless ``optimizer`` is a name of OPTIMIZERS, an
    ``optax.GradientTransformation`` or an ``Optimizer``."""
    if isinstance(optimizer, (Optimizer, optax.GradientTransformation)):
        return
    if isinstance(optimizer, str) and optimizer in OPTIMIZERS:
        return
    raise InputError(f"optimizer must be one of {OPTIMIZERS}, an optax.GradientTransformation "
                     f"or a ncjax.optimizers.Optimizer, got {optimizer!r}")


def build(optimizer, learning_rate, memory_size: int) -> Optimizer:
    """The Optimizer for ``optimizer``: "lbfgs" (``memory_size`` pairs), "adam" or "gd"
    (optax.adam / optax.sgd at ``learning_rate``, which may be traced), a
    GradientTransformation (its own learning rate) or an Optimizer (as is)."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, optax.GradientTransformation):
        return from_optax(optimizer)
    if optimizer == "lbfgs":
        return lbfgs(memory_size)
    return from_optax({"adam": optax.adam, "gd": optax.sgd}[optimizer](learning_rate))
