"""L-BFGS whose line search is the outer loop: one evaluation of F and ∇F a step.

``optax.lbfgs`` searches along each direction in an inner ``while_loop`` (its zoom line
search). Batched over configurations, a group then waits, step after step, for the one
configuration whose search takes longest. Here every step evaluates F and ∇F once, at
the trial point x + t p of each configuration, and the state says what that evaluation
was for (a state machine in the carry):

- Armijo holds, F(x + t p) ≤ F(x) + c₁ t ∇F(x)·p (c₁ = ``C1``), or, where F's rounding
  hides the decrease, its approximate form (``APPROX_ULPS``): the trial point is the
  new iterate; the pair s = t p, y = ∇F(x + t p) − ∇F(x) enters the memory when
  s·y > ε ‖s‖ ‖y‖ (a pair that would not keep the inverse Hessian positive definite is
  skipped: there is no curvature condition to guarantee it); the next direction is
  p = −H ∇F with H the memory's inverse Hessian, and its first trial t = 1 (while the
  memory is empty, p = −∇F from t = min(1, 1/‖∇F‖), as on the first step).
- it fails: the next trial is t ← the minimiser of the quadratic through F(x), ∇F(x)·p
  and F(x + t p), kept within [t/10, t/2] (t/10 when F(x + t p) is not finite).
- ``MAX_TRIALS`` trials failed: the iterate stays, the memory is cleared and the search
  starts again along −∇F, as on the first step.

A trial where F or ∇F is not finite fails like any other, so the iterate stays finite.

H is the limited-memory BFGS inverse Hessian in its compact form (Byrd, Nocedal and
Schnabel, Math. Program. 63, 1994): with the M newest pairs as the rows of S and Y (M, n),
oldest first, R = triu(S Yᵀ), D = diag(S Yᵀ) and γ = s·y / y·y of the newest pair,

    H g = γ g + Sᵀ R⁻ᵀ ((D + γ Y Yᵀ) R⁻¹ S g − γ Y g) − γ Yᵀ R⁻¹ S g,

equal to the two-loop recursion (Nocedal and Wright, Algorithm 7.4) with H₀ = γ I, in two
(M, M) triangular solves and matrix products instead of 2M dependent dot products. The
memory is a shift register (newest last): an empty slot is a zero row with s·y = 0.

The iterate, ∇F and the memory are flat vectors (``jax.flatten_util.ravel_pytree`` of
the parameters); ``step`` takes and returns pytrees. Pure functions of arrays, for
``jax.vmap``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

C1 = 1e-4  # Armijo's sufficient-decrease constant (optax's slope_rtol)
# The approximate Armijo condition (Hager and Zhang, SIAM J. Optim. 16, 2005) accepts a
# trial whose F is within APPROX_ULPS·eps·|F(x)| of F(x) (eps of the dtype) where the
# slope there says Armijo holds (exact for a quadratic): F's rounding hides a decrease of F
# as the iterate nears the optimum, the slope does not (optax's zoom line search accepts
# the same within 1e-6·|F|, its approx_dec_rtol: 8.4 eps in float32).
APPROX_ULPS = 10
MAX_TRIALS = 20  # trials of one line search before it starts again along −∇F


class State(NamedTuple):
    """p (n,): the search direction at the iterate x; t: the step of the trial x + t p;
    slope: ∇F(x)·p (< 0); trials: trials of the current search already failed;
    S, Y (M, n): the memory's pairs, oldest first; sy (M,): s·y of each pair, 0 where
    the slot is empty."""

    p: jax.Array
    t: jax.Array
    slope: jax.Array
    trials: jax.Array
    S: jax.Array
    Y: jax.Array
    sy: jax.Array


def direction(g, S, Y, sy):
    """−H g for the compact-form inverse Hessian of the pairs (S, Y) (module docstring);
    with an empty memory −g. g (n,), S and Y (M, n), sy (M,) with 0 for an empty slot
    (empty slots are zero rows)."""
    valid = sy != 0
    yy = Y[-1] @ Y[-1]
    gamma = jnp.where(valid[-1] & (yy > 0), sy[-1] / jnp.where(yy > 0, yy, 1), 1)
    SY = S @ Y.T
    R = jnp.triu(SY, 1) + jnp.diag(jnp.where(valid, sy, 1))
    r = jax.scipy.linalg.solve_triangular(R, S @ g, lower=False)
    mid = sy * r + gamma * (Y @ (Y.T @ r)) - gamma * (Y @ g)
    top = jax.scipy.linalg.solve_triangular(R, mid, trans=1, lower=False)
    return -(gamma * g + S.T @ top - gamma * (Y.T @ r))


def _restart(g):
    """The first search along −g: (p, t)."""
    return -g, jnp.minimum(1, 1 / jnp.linalg.norm(g)).astype(g.dtype)


def init(grad, memory_size: int) -> State:
    """The state at a start where ∇F = grad (a pytree): an empty memory of
    ``memory_size`` pairs and the first trial along −∇F."""
    g, _ = ravel_pytree(grad)
    p, t = _restart(g)
    z = jnp.zeros((memory_size,) + g.shape, g.dtype)
    return State(p, t, p @ g, jnp.asarray(0), z, z, jnp.zeros(memory_size, g.dtype))


def step(value_and_grad: Callable, x, value, grad, state: State):
    """One evaluation of F and ∇F at the trial x + t p and the state machine's move
    (module docstring). x, grad: pytrees, the iterate and ∇F there; value: F(x).
    Returns (x', state', F(x'), ∇F(x')): x' = x + t p where the trial is accepted, else x."""
    xf, unravel = ravel_pytree(x)
    g, _ = ravel_pytree(grad)
    p, t, slope, trials, S, Y, sy = state
    trial = xf + t * p
    v_t, g_t = value_and_grad(unravel(trial))
    g_t, _ = ravel_pytree(g_t)
    slope_t = g_t @ p
    eps = jnp.finfo(g.dtype).eps
    decrease = (v_t <= value + C1 * t * slope) | (
        (v_t <= value + APPROX_ULPS * eps * jnp.abs(value))
        & (slope_t <= (2 * C1 - 1) * slope))
    ok = jnp.isfinite(v_t) & jnp.all(jnp.isfinite(g_t)) & decrease
    fail = ~ok & (trials + 1 >= MAX_TRIALS)

    s, y = t * p, g_t - g
    s_y = s @ y
    keep_pair = ok & (s_y > eps * jnp.linalg.norm(s) * jnp.linalg.norm(y))
    push = lambda mem, new: jnp.where(keep_pair, jnp.concatenate([mem[1:], new[None]]),
                                      jnp.where(fail, 0, mem))
    S, Y, sy = push(S, s), push(Y, y), push(sy, s_y)

    x_new = jnp.where(ok, trial, xf)
    g_new = jnp.where(ok, g_t, g)
    v_new = jnp.where(ok, v_t, value)
    # the next search from the new iterate: along −H∇F from t = 1, or along −∇F as on
    # the first step (after a failed search, while the memory is empty, or where −H∇F
    # is not a descent direction, as rounding can make it)
    p_new = direction(g_new, S, Y, sy)
    slope_new = p_new @ g_new
    p_rs, t_rs = _restart(g_new)
    again = fail | ~(slope_new < 0) | ~jnp.any(sy != 0)
    p_new = jnp.where(again, p_rs, p_new)
    t_new = jnp.where(again, t_rs, 1).astype(t.dtype)
    slope_new = jnp.where(again, p_rs @ g_new, slope_new)
    # or the next trial of this search: the quadratic's minimiser within [t/10, t/2]
    curv = v_t - value - slope * t
    t_q = -slope * t * t / (2 * curv)
    t_back = jnp.where(jnp.isfinite(t_q) & (curv > 0), jnp.clip(t_q, t / 10, t / 2), t / 10)

    new_search = ok | fail
    state = State(jnp.where(new_search, p_new, p), jnp.where(new_search, t_new, t_back),
                  jnp.where(new_search, slope_new, slope),
                  jnp.where(new_search, 0, trials + 1), S, Y, sy)
    return unravel(x_new), state, v_new, unravel(g_new)
