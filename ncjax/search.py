"""The compiled, certified search of ``ncjax.thresholds`` (``ncjax.phases``, whose docstring
states the method): lanes of searches, each moving one variable y of a problem
(``Line``: counts a + s·y (K,), λ = u·y + v + w/N(y)) and deciding a phase at certified
float64 convex solves; ``run`` takes every lane to its end in one jitted while_loop whose
body is one round of ``convex.round_`` vmapped over the lanes, a lane moving on
(``advance``: the decision, the bracket, the next point by ``next_point``, the warm start
``warm``) as its solve finishes. ``zero_root`` bisects the exact Z = 0 condition along y.
Shapes: S lanes, K classes; every per-lane array has a leading axis S.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ncjax import convex, metrics, stopping, theory
from ncjax.problem import Problem
from ncjax.tolerances import SEARCH_GAP_RTOL, rounding

__all__ = ["Line", "Lane", "at", "advance", "decide", "next_point", "run", "warm", "width",
           "zero_root"]

GTOL = 1e-13          # the convex solver's own stopping tolerance for the deciding solves
SOLVE_STEPS = 20_000  # a solve that has not met GTOL by then decides nothing
CHECK_EVERY = 10      # proximal-gradient steps between certificates
TOL = rounding("float64")
# the kinds of search, and the stages of one
COLLAPSE, VANISH, ZERO = 0, 1, 2
AT_LO, AT_HI, BISECT, AT_EDGE, DONE = 0, 1, 2, 3, 4
UNDECIDED = -1
# a secant step aims this fraction of its way short of the root it predicts (on the side
# where the phase does not hold, so that the next secant is nearer), at least rtol/2
SHORT = 0.1
MAX_STREAK = 8  # secant steps in a row at most, then a bisection step
ZERO_BISECT = 80  # steps of the exact Z = 0 condition: floating resolution from any bracket


class Line(NamedTuple):
    """How one search's problem moves with y: counts a + s·y (K,), λ = u·y + v + w/N(y);
    λ_b, the loss and its parameters those of ``problem``."""

    problem: Problem
    a: jax.Array
    s: jax.Array
    u: jax.Array
    v: jax.Array
    w: jax.Array


def at(line: Line, y) -> Problem:
    counts = line.a + line.s * y
    lam = line.u * y + line.v + line.w / jnp.sum(counts)
    return line.problem._replace(counts=counts, lam_W=lam, lam_H=lam)


class Lane(NamedTuple):
    """One search (a lane of ``run``): the solve in progress at y; the ends lo, hi;
    the bracket (out: the phase does not hold, inn: it does), its gaps, and the measure f
    at out; the point where it did not hold before out and f there (for the secant);
    decision, gap and f at lo; the stage; ok (no undecided point); found; steps after
    the ends; streak, the secant steps in a row that chose y (0: a bisection or an end);
    warm, whether the solve at y started from the previous point."""

    solver: convex.State
    y: jax.Array
    lo: jax.Array
    hi: jax.Array
    out: jax.Array
    inn: jax.Array
    gap_out: jax.Array
    gap_in: jax.Array
    f_out: jax.Array
    prev: jax.Array
    f_prev: jax.Array
    first: jax.Array
    gap_first: jax.Array
    f_first: jax.Array
    stage: jax.Array
    ok: jax.Array
    found: jax.Array
    steps: jax.Array
    streak: jax.Array
    warm: jax.Array


def decide(s: convex.State, prob: Problem, same, members, kind):
    """(decision, gap, f) of a finished solve: the decision 1 where the search's phase
    holds, 0 where it does not, UNDECIDED where the solve is not certified or (kind ZERO)
    neither Z = 0 nor Z ≠ 0 is shown (module docstring); f the measure the phase's rule
    compares with TOL, minus TOL (> 0 where a collapse or vanish does not hold: the
    group's spread, or its largest ‖z_k‖ over max_j ‖z_j‖; NaN for kind ZERO)."""
    r = convex.result(s, prob)
    cert = (r.status == stopping.CONVERGED) & stopping.certified(r.gap, r.P, SEARCH_GAP_RTOL)
    P0 = metrics.zero_point_objective(prob)
    zero = metrics.is_zero(r.Z, r.P, P0, zero_atol=TOL)
    ph = metrics.phase(r.Z, same, zero, collapse_tol=TOL, vanish_rtol=TOL)
    code = jnp.max(jnp.where(members, ph.code, -1))
    level = jnp.where(kind == COLLAPSE, metrics.COLLAPSED, metrics.VANISHED)
    small = jnp.max(jnp.linalg.norm(r.Z, axis=0)) <= TOL
    below = P0 - r.P > metrics.objective_rounding(P0, r.Z.shape[0])
    holds = jnp.where(kind == ZERO, small, code >= level)
    fails = jnp.where(kind == ZERO, below & ~small, code < level)
    d = jnp.where(cert & holds, 1, jnp.where(cert & fails, 0, UNDECIDED))
    m = jnp.max(jnp.where(members, jnp.where(kind == COLLAPSE, ph.spread, ph.size), -jnp.inf))
    return d, r.gap, jnp.where(kind == ZERO, jnp.nan, m - TOL)


def next_point(out, inn, f_out, prev, f_prev, log_rtol, allow):
    """The next point inside the bracket (out, inn): in t = log y, the secant root t_s of
    f through the last two points where the phase did not hold (f > 0 and falling toward
    inn), tried short of it by SHORT of its distance from out (at least log(1 + rtol)/2:
    f is about linear there, so the point lands where the phase does not hold yet and the
    next secant is better), or, where t_s lies within log(1 + rtol) of out, the point
    that closes the bracket at that width; the bisection point where there is no such
    secant, it falls outside the bracket, or ``allow`` is False. (point, secant?)"""
    t_out, t_in = jnp.log(out), jnp.log(inn)
    width = t_in - t_out
    sgn = jnp.sign(width)
    t_prev = jnp.log(prev)
    slope = jnp.isfinite(t_prev) & jnp.isfinite(f_prev) & (f_prev > f_out) & (f_out > 0)
    t_s = t_out + (t_out - t_prev) * f_out / jnp.where(slope, f_prev - f_out, 1.0)
    ahead = slope & ((t_s - t_out) * sgn > 0)
    close = ahead & (jnp.abs(t_s - t_out) <= log_rtol)
    t_try = t_s - jnp.maximum(0.5 * log_rtol, SHORT * jnp.abs(t_s - t_out)) * sgn
    frac = (t_try - t_out) / width
    secant = allow & ahead & (frac > 0) & (frac < 1)
    close = allow & close
    t = jnp.where(close, t_out + 0.999 * log_rtol * sgn,
                  jnp.where(secant, t_try, 0.5 * (t_out + t_in)))
    return jnp.exp(t), close | secant


def advance(c: Lane, line: Line, same, members, kind, edge, log_rtol, log_check,
             max_bisect):
    """The search after its solve at c.y finished: the decision recorded, the bracket
    narrowed, the next point chosen (``next_point``) and its solve started. Where the phase
    holds at neither end and ``edge`` (hi is the Z = 0 check's point on the side of
    Z ≠ 0), the next point is across the onset of Z = 0, where every phase holds (module
    docstring)."""
    prob = at(line, c.y)
    d, g, f = decide(c.solver, prob, same, members, kind)
    # a warm start that did not converge decides nothing: the point is solved again from 0
    retry = c.warm & (c.solver.status != stopping.CONVERGED)
    at_lo, at_hi = c.stage == AT_LO, c.stage == AT_HI
    bis, at_edge = c.stage == BISECT, c.stage == AT_EDGE
    checked = kind == ZERO  # a Z = 0 check: its two ends only
    to_edge = at_hi & edge & ~checked & (c.first == 0) & (d == 0)
    # at hi, both ends known: out where the phase does not hold (lo unless it holds there)
    swap = (c.first == 1) | to_edge
    went_out, went_in = bis & (d == 0), (bis | at_edge) & (d == 1)
    out = jnp.where(at_hi, jnp.where(swap, c.hi, c.lo), jnp.where(went_out, c.y, c.out))
    inn = jnp.where(at_hi, jnp.where(swap, c.lo, c.hi), jnp.where(went_in, c.y, c.inn))
    gap_out = jnp.where(at_hi, jnp.where(swap, g, c.gap_first), jnp.where(went_out, g, c.gap_out))
    gap_in = jnp.where(at_hi, jnp.where(swap, c.gap_first, g), jnp.where(went_in, g, c.gap_in))
    f_out = jnp.where(at_hi, jnp.where(swap, f, c.f_first), jnp.where(went_out, f, c.f_out))
    prev = jnp.where(went_out, c.out, jnp.where(at_hi, jnp.nan, c.prev))
    f_prev = jnp.where(went_out, c.f_out, jnp.where(at_hi, jnp.nan, c.f_prev))
    ok = c.ok & (d != UNDECIDED) & ~(at_hi & (c.first == UNDECIDED))
    cross = bis | (at_hi & (c.first != d)) | (at_edge & (d == 1))
    narrow = jnp.abs(jnp.log(out / inn)) <= log_rtol
    steps = c.steps + bis
    done = (~ok | at_edge | (at_hi & ((~cross & ~to_edge) | checked)) | (bis & narrow)
            | (at_hi & cross & narrow) | (bis & (steps >= max_bisect)))
    found = ok & cross & (narrow | checked | at_edge)
    # the safeguard: bisect after a secant step that overshot, or after MAX_STREAK of them
    allow = ~((c.streak > 0) & (d == 1)) & (c.streak < MAX_STREAK)
    y, secant = next_point(out, inn, f_out, prev, f_prev, log_rtol, allow)
    across = c.hi * jnp.exp(0.999 * log_check * jnp.sign(jnp.log(c.hi / c.lo)))
    y = jnp.where(at_lo, c.hi, jnp.where(to_edge, across, y))
    nxt = at(line, y)
    r = convex.result(c.solver, prob)
    solver = stopping.select(at_lo, convex.init(nxt), warm(nxt, prob, r.Z, r.b))
    stage = jnp.where(at_lo, AT_HI, jnp.where(to_edge, AT_EDGE, BISECT))
    new = c._replace(solver=solver, y=jnp.where(done, c.y, y), out=out, inn=inn,
                     gap_out=gap_out, gap_in=gap_in, f_out=f_out, prev=prev, f_prev=f_prev,
                     first=jnp.where(at_lo, d, c.first),
                     gap_first=jnp.where(at_lo, g, c.gap_first),
                     f_first=jnp.where(at_lo, f, c.f_first),
                     stage=jnp.where(done, DONE, stage), ok=ok, found=found & done,
                     steps=steps, streak=jnp.where(secant & bis & ~done, c.streak + 1, 0),
                     warm=~at_lo)
    again = c._replace(solver=convex.init(prob), warm=jnp.zeros_like(c.warm))
    return stopping.select(retry, again, new)


def warm(problem: Problem, before: Problem, Z, b) -> convex.State:
    """The solver's start at ``problem`` from the solution (Z, b) of the same search's
    previous point ``before``, the bias moved as the loss's bias start moves with π (for
    CE, log π: a free bias absorbs the log prior; along λ π does not move): from the
    bias of the previous π, Newton's steps on the bias can overshoot far when π_B
    changes by a large factor."""
    def start(p):
        return p.loss.bias_start(p.counts / jnp.sum(p.counts), p.loss_args).astype(b.dtype)
    return convex.start(problem, Z, b + start(problem) - start(before))


@functools.partial(jax.jit, static_argnames=("max_bisect",))
def run(lines: Line, same, members, kind, edge, active, lo, hi, log_rtol, log_check, *,
            max_bisect: int):
    """Every search (S lanes: lines, same (S, K, K), members (S, K), kind, edge, active
    (S,), ends lo, hi (S,)) to its end, in one while_loop over solver rounds: the final
    ``Lane`` (a lane not active is never started)."""
    nan = jnp.full_like(lo, jnp.nan)
    no, zero = jnp.zeros(lo.shape, bool), jnp.zeros(lo.shape, int)
    c = Lane(jax.vmap(convex.init)(jax.vmap(at)(lines, lo)), lo, lo, hi, lo, hi, nan,
                nan, nan, nan, nan, jnp.full(lo.shape, UNDECIDED), nan, nan,
                jnp.where(active, AT_LO, DONE), ~no, no, zero, zero, no)
    gtol = jnp.asarray(GTOL, lo.dtype)
    one_round = jax.vmap(functools.partial(convex.round_, max_steps=SOLVE_STEPS,
                                           check_every=CHECK_EVERY), in_axes=(0, 0, None))
    move = jax.vmap(functools.partial(advance, log_rtol=log_rtol, log_check=log_check,
                                      max_bisect=max_bisect))

    def body(c):
        live = c.stage != DONE
        s = stopping.select(live, one_round(c.solver, jax.vmap(at)(lines, c.y), gtol),
                            c.solver)
        c = c._replace(solver=s)
        fin = live & (s.status >= 0)
        return jax.lax.cond(jnp.any(fin), lambda c: stopping.select(
            fin, move(c, lines, same, members, kind, edge), c), lambda c: c, c)

    return jax.lax.while_loop(lambda c: jnp.any(c.stage != DONE), body, c)


@jax.jit
def zero_root(lines: Line, lo, hi):
    """Per line, where Z = 0 begins in [lo, hi] by the exact condition
    λ(y) ≥ ‖G(V₀(y))‖_op (``theory.zero_threshold``), bisected in log y:
    (y_out, y_in, found), Z = 0 optimal at y_in, not at y_out."""
    def zero_at(line, y):
        p = at(line, y)
        return p.lam >= theory.zero_threshold(p)

    z_lo, z_hi = jax.vmap(zero_at)(lines, lo), jax.vmap(zero_at)(lines, hi)
    out, inn = jnp.where(z_lo, hi, lo), jnp.where(z_lo, lo, hi)

    def step(_, oi):
        out, inn = oi
        mid = jnp.sqrt(out * inn)
        z = jax.vmap(zero_at)(lines, mid)
        return jnp.where(z, out, mid), jnp.where(z, mid, inn)

    out, inn = jax.lax.fori_loop(0, ZERO_BISECT, step, (out, inn))
    return out, inn, z_lo != z_hi


def width(S: int) -> int:
    """The lanes a search of S is compiled for: the next power of two up to 64, then the
    next multiple of 64."""
    return max(1, 1 << (S - 1).bit_length()) if S <= 64 else -(-S // 64) * 64
