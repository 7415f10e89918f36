"""A certified solver of the convex form, and the way back to (W, H, b).

For one ``Problem`` (DESIGN.md §1, half convention; π_k = n_k/N, λ = sqrt(λ_W λ_H)) the
solver minimises

    P(Z, b) = Σ_k π_k ℓ(z_k + b, k) + λ ‖Z D^{1/2}‖_* + (λ_b/2)‖b‖²

directly, K × K per configuration whatever N, in the variables Y' = Z diag(sqrt(π_k)) and
b, in which P = f(Y', b) + μ ‖Y'‖_* with μ = λ sqrt(N) and
f = Σ_k π_k ℓ(y'_k/sqrt(π_k) + b, k) + (λ_b/2)‖b‖²: n_k enters only through π and μ, and
the curvature of f in Y' is at most the loss's bound whatever the imbalance.

Accelerated proximal gradient (``step``, its prox ``svt.prox``) from (Y', b) = 0 with b
minimised out (Newton steps, ``dual.refine_bias``; b = 0 without a bias); every
``check_every`` steps the certificate of ``ncjax.dual`` is evaluated (``round_``) and a
configuration stops when it holds, gap ≤ gtol·|P| (``stopping.certified``). ``solve`` is one configuration, ``solve_many``
a batch (vmapped, or through a refilled pool of slots, which costs Σ steps instead of
B·max steps), ``solve_batch`` the jitted batch. ``factorize`` maps (Z, b) back to a
balanced (W, H, b) with F(W, H, b) = P(Z, b).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ncjax import dual, model, stopping, svt
from ncjax.problem import Problem

# Default relative certificate tolerance per dtype (the certificate is computed in that
# dtype: float32 rounding alone is ~1e-7·|P|).
GTOL = {"float32": 1e-5, "float64": 1e-9}

# Newton steps on the bias per proximal-gradient step, warm-started from the previous one.
NEWTON_STEPS = 1
# Newton steps on the bias at a check, from the b the steps have tracked: that b is
# already close to b*(Z), and any b gives a feasible dual point (``dual.from_bias``), so a
# short refinement costs no rigour, only (where it is not enough) a later stop.
CHECK_NEWTON_STEPS = 1

# Step-size control of ``step``: the loss's curvature bound L_MAX is never rejected; a
# step that passes tries L·DECREASE next, one that fails L·INCREASE (at most L_MAX).
DECREASE = 0.95
INCREASE = 2.0


class State(NamedTuple):
    Y: jax.Array       # Y' = Z diag(sqrt(π)) at the iterate x_k, (K, K)
    Y_prev: jax.Array  # x_{k-1}
    b: jax.Array       # bias (K,): ≈ argmin_b f(Y'_y, b) at the last extrapolated point
    t: jax.Array       # momentum parameter t_k (1 right after a restart)
    L: jax.Array       # the curvature of the next trial step (step 1/L)
    L_acc: jax.Array   # the curvature of the last accepted step
    value: jax.Array   # P at the last check
    gap: jax.Array     # certificate at the last check
    step: jax.Array
    status: jax.Array  # stopping.RUNNING while running, then a status code


def _smooth(Yp, b, problem: Problem, sqrt_pi):
    """(∂f/∂y'_k, the logits U): column k of the gradient is sqrt(π_k) ∇ℓ(u_k, k) with
    u_k = y'_k/sqrt(π_k) + b; both (K, K)."""
    K = Yp.shape[0]
    U = Yp / sqrt_pi[None, :] + model.bias_of(b, problem)[:, None]
    G = jax.vmap(problem.loss.grad, in_axes=(1, 0, None), out_axes=-1)(
        U, jnp.arange(K), problem.loss_args)
    return G * sqrt_pi[None, :], U


def step(s: State, problem: Problem, sqrt_pi, mu) -> State:
    """One step of accelerated proximal gradient on φ(Y') + μ‖Y'‖_*, φ(Y') = min_b f(Y', b).

    φ is convex with ∇φ(Y') = ∂f/∂Y'(Y', b*(Y')) and ∇²φ ≼ ∂²f/∂Y'² ≼ L_MAX I (the loss's
    curvature bound: the logits of class k are y'_k/sqrt(π_k), weighted by π_k). b*(y) is
    tracked by NEWTON_STEPS Newton steps warm-started from the previous b. Step 1/L with L
    adapted (Scheinberg–Goldfarb–Bai): the step is kept iff
    f(x₊, b) ≤ f(y, b) + ⟨∇, x₊ − y⟩ + (L/2)‖x₊ − y‖² (the Bregman term computed stably by
    the loss), which bounds φ(x₊) since φ ≤ f(·, b), or L = L_MAX; a kept step tries
    L·DECREASE next, a failed one leaves x and tries min(L·INCREASE, L_MAX), so L_MAX, the
    true curvature of some problems (K = 2 at Z = 0), is always reached. Momentum
    t_{k+1} = (1 + sqrt(1 + 4 (L/L_acc) t_k²))/2 with gradient restart (O'Donoghue &
    Candès 2015): t = 1 when ⟨y − x₊, x₊ − x_k⟩ > 0.
    """
    K = s.Y.shape[0]
    pi = sqrt_pi**2
    L_max = problem.loss.curvature(problem.loss_args)
    L = s.L
    t_next = 0.5 * (1 + jnp.sqrt(1 + 4 * (L / s.L_acc) * s.t**2))
    beta = (s.t - 1) / t_next
    Yy = s.Y + beta * (s.Y - s.Y_prev)
    b = dual.refine_bias(Yy / sqrt_pi[None, :], s.b, problem, NEWTON_STEPS)
    gY, U = _smooth(Yy, b, problem, sqrt_pi)
    Y = svt.prox(Yy - gY / L, mu / L)
    dY = Y - Yy
    breg = jax.vmap(problem.loss.bregman, in_axes=(1, 1, 0, None))(
        U, dY / sqrt_pi[None, :], jnp.arange(K), problem.loss_args)
    ok = (jnp.sum(pi * breg) <= 0.5 * L * jnp.sum(dY**2)) | (L >= L_max)
    restart = jnp.vdot(Yy - Y, Y - s.Y) > 0
    return s._replace(
        Y=jnp.where(ok, Y, s.Y), Y_prev=jnp.where(ok, s.Y, s.Y_prev), b=b,
        t=jnp.where(ok, jnp.where(restart, 1.0, t_next), s.t),
        L=jnp.where(ok, L * DECREASE, jnp.minimum(L * INCREASE, L_max)),
        L_acc=jnp.where(ok, L, s.L_acc), step=s.step + 1)


class ConvexResult(NamedTuple):
    """Per configuration (leading batch axis for a batch):

    Z (K, K) column k = z_k; b (K,) (0 without a bias); P = P(Z, b); gap: the certificate
    of (Z, b), ≥ P − P* (up to rounding); steps: proximal-gradient steps (each one SVD;
    rejected steps included); status: a ``stopping`` code — converged (gap ≤ gtol·|P|),
    max_steps, diverged (a non-finite value; the last finite check point is returned).
    """

    Z: jax.Array
    b: jax.Array
    P: jax.Array
    gap: jax.Array
    steps: jax.Array
    status: jax.Array


def init(problem: Problem) -> State:
    """The start (Y', b) = 0, not yet checked, for one problem."""
    dt = problem.counts.dtype
    K = problem.counts.shape[0]
    zero = jnp.zeros((K, K), dt)
    scalar = lambda x: jnp.asarray(x, dt)
    L_max = problem.loss.curvature(problem.loss_args)
    return State(zero, zero, jnp.zeros((K,), dt), scalar(1.0), scalar(L_max * DECREASE),
                 scalar(L_max), scalar(jnp.inf), scalar(jnp.inf), jnp.asarray(0),
                 jnp.asarray(stopping.RUNNING))


def start(problem: Problem, Z: jax.Array, b: jax.Array) -> State:
    """``init`` from the point (Z, b) instead of 0 (a warm start, e.g. from the solution of
    a nearby problem): Y' = Z diag(sqrt(π)) with this problem's π; Z (K, K), b (K,)."""
    s = init(problem)
    Y = (Z * jnp.sqrt(problem.counts / jnp.sum(problem.counts))[None, :]).astype(s.Y.dtype)
    return s._replace(Y=Y, Y_prev=Y, b=model.bias_of(b, problem).astype(s.b.dtype))


def round_(s: State, problem: Problem, gtol, *, max_steps: int, check_every: int) -> State:
    """``check_every`` steps of ``step``, then the check: b refined by CHECK_NEWTON_STEPS
    Newton steps (``dual.refine_bias``), P and the certificate at (Z, b), status set
    (converged if gap ≤ gtol·|P|; max_steps; diverged on a non-finite value, in which case
    the state before the round is kept)."""
    n_k = problem.counts
    N = jnp.sum(n_k)
    sqrt_pi = jnp.sqrt(n_k / N)
    mu = problem.lam * jnp.sqrt(N)
    new = jax.lax.fori_loop(0, check_every, lambda _, x: step(x, problem, sqrt_pi, mu), s)
    Z = new.Y / sqrt_pi[None, :]
    b = dual.refine_bias(Z, new.b, problem, CHECK_NEWTON_STEPS)
    value = model.convex_objective(Z, b, problem)
    g = value - dual.dual_objective(dual.from_bias(Z, b, problem), problem)
    finite = jnp.isfinite(value) & jnp.isfinite(g)
    status = jnp.where(~finite, stopping.DIVERGED,
                       jnp.where(stopping.certified(g, value, gtol), stopping.CONVERGED,
                                 jnp.where(new.step >= max_steps, stopping.MAX_STEPS,
                                           stopping.RUNNING)))
    new = new._replace(b=b, value=value, gap=g)
    kept = jax.tree.map(lambda a, o: jnp.where(finite, a, o), new, s)
    return kept._replace(step=new.step, status=status)


def result(s: State, problem: Problem) -> ConvexResult:
    """The ``ConvexResult`` of a state."""
    sqrt_pi = jnp.sqrt(problem.counts / jnp.sum(problem.counts))
    return ConvexResult(s.Y / sqrt_pi[None, :], s.b, s.value, s.gap, s.step, s.status)


def solve(problem: Problem, gtol, *, max_steps: int = 20000,
          check_every: int = 10) -> ConvexResult:
    """Minimise P(Z, b) for one problem (counts (K,), scalar λ's; gtol a scalar); pure,
    vmappable: rounds (``round_``) from (Y', b) = 0 until the certificate holds, max_steps
    (rounded up to a multiple of check_every) or a non-finite value. Computed in the dtype
    of the problem's arrays."""
    body = functools.partial(round_, problem=problem, gtol=gtol, max_steps=max_steps,
                             check_every=check_every)
    s = jax.lax.while_loop(lambda s: s.status < 0, body, init(problem))
    return result(s, problem)


def _take(problems: Problem, idx):
    B = problems.counts.shape[0]
    return jax.tree.map(lambda a: a[jnp.minimum(idx, B - 1)], problems)


def solve_pooled(problems: Problem, gtol, *, pool: int, max_steps: int, check_every: int):
    """``solve`` for B problems through a pool of ``pool`` slots: every round (vmapped over
    the slots, finished slots frozen) the finished slots hand their result back and take the
    next unstarted problems. The work is then about Σ_i steps_i instead of B·max_i steps_i;
    each problem sees exactly the steps of ``solve``. problems (B, ...), gtol scalar."""
    B = problems.counts.shape[0]
    one_round = jax.vmap(functools.partial(round_, max_steps=max_steps,
                                           check_every=check_every), in_axes=(0, 0, None))
    idx0 = jnp.arange(pool)  # slot -> problem (B: empty)
    s0 = jax.vmap(init)(_take(problems, idx0))
    dummy = jax.vmap(result)(jax.vmap(init)(problems), problems)
    out0 = jax.tree.map(lambda a: jnp.concatenate([a, a[:1]]), dummy)  # row B: discarded

    def body(c):
        s, idx, nxt, out = c
        mine = _take(problems, idx)
        s = stopping.select(s.status < 0, one_round(s, mine, gtol), s)
        done = (s.status >= 0) & (idx < B)
        res = jax.vmap(result)(s, mine)
        out = jax.tree.map(lambda o, r: o.at[jnp.where(done, idx, B)].set(r), out, res)
        new_idx = nxt + jnp.cumsum(done) - 1
        refill = done & (new_idx < B)
        idx = jnp.where(done, jnp.where(refill, new_idx, B), idx)
        s = stopping.select(refill, jax.vmap(init)(_take(problems, idx)), s)
        return s, idx, jnp.minimum(nxt + jnp.sum(done), B), out

    _, _, _, out = jax.lax.while_loop(lambda c: jnp.any(c[1] < B), body,
                                      (s0, idx0, jnp.asarray(pool), out0))
    return jax.tree.map(lambda a: a[:B], out)


def solve_many(problems: Problem, gtol, *, max_steps: int = 20000, check_every: int = 10,
               pool: int | None = None) -> ConvexResult:
    """``solve`` for a batch (B, ...) inside a caller's jit (e.g. per device under
    ``shard_map``): pool None (or ≥ B): ``vmap``, each problem in its own ``while_loop`` (a
    finished one is frozen, so the batch costs B × the slowest one's steps); pool P < B:
    ``solve_pooled`` (about Σ steps). Same per-problem results. gtol a scalar."""
    if pool is not None and pool < problems.counts.shape[0]:
        return solve_pooled(problems, gtol, pool=pool, max_steps=max_steps,
                            check_every=check_every)
    one = functools.partial(solve, max_steps=max_steps, check_every=check_every)
    return jax.vmap(one, in_axes=(0, None))(problems, gtol)


@functools.partial(jax.jit, static_argnames=("gtol", "max_steps", "check_every", "dtype",
                                             "pool"))
def solve_batch(problems: Problem, *, gtol: float | None = None, max_steps: int = 20000,
                check_every: int = 10, dtype: str = "float64",
                pool: int | None = None) -> ConvexResult:
    """``solve_many`` jitted, the problems (B, ...) cast to ``dtype`` (float64 needs
    ``ncjax.dtypes.x64``); gtol defaults to ``GTOL[dtype]``."""
    dt = jnp.dtype(dtype)
    gtol = jnp.asarray(GTOL[dt.name] if gtol is None else gtol, dt)
    return solve_many(problems.astype(dt), gtol, max_steps=max_steps,
                      check_every=check_every, pool=pool)


@functools.partial(jax.jit, static_argnames=("d", "m"))
def factorize(Z: jax.Array, b: jax.Array, problem: Problem, *, d: int | None = None,
              m: int = 1) -> model.Params:
    """The balanced UFM point (W, H, b) with W H̄ᵀ = Z and F(W, H, b) = P(Z, b).

    Y = Z D^{1/2} = U S Vᵀ (SVD), a = (λ_H/λ_W)^{1/4} (``problem.balance``):

        W = a U S^{1/2}  (K, d),    h̄_k = (V S^{1/2})_k / (a sqrt(n_k)),    H[k, i] = h̄_k,

    so W H̄ᵀ = Y D^{-1/2} = Z, (λ_W/2)‖W‖² = (λ_W a²/2) tr S = (λ/2) tr S and
    (λ_H/2) Σ_k (n_k/m) Σ_i ‖h_{k,i}‖² = (λ_H/(2a²)) tr S = (λ/2) tr S: the penalties add up
    to λ‖Y‖_* and the loss term is P's, i.e. F = P (``model.ufm_objective``, m equal
    features per class). d > K pads with zero columns; d < K keeps the d largest singular
    values, exact only when rank Y ≤ d. Z (K, K) column k = z_k; b (K,); returns
    ``model.Params`` W (K, d), H (K, m, d), b (K,) (0 without a bias).
    """
    n_k = problem.counts
    K = Z.shape[0]
    d = K if d is None else d
    U, S, Vt = jnp.linalg.svd(Z * jnp.sqrt(n_k)[None, :], full_matrices=False)
    a = problem.balance
    root = jnp.sqrt(S)
    W = a * U * root[None, :]
    Hbar = Vt.T * root[None, :] / (a * jnp.sqrt(n_k))[:, None]
    width = min(d, K)
    pad = ((0, 0), (0, d - width))
    W, Hbar = jnp.pad(W[:, :width], pad), jnp.pad(Hbar[:, :width], pad)
    return model.Params(W, jnp.broadcast_to(Hbar[:, None, :], (K, m, d)),
                        model.bias_of(b, problem))
