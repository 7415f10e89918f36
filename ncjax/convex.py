"""The convex form of the UFM, its Fenchel dual, a certified solver and the way back to (W, H, b).

Conventions of DESIGN.md §1, half convention: K classes with counts n_k (K,), N = Σ n_k,
π_k = n_k/N, λ = sqrt(λ_W λ_H), Z (K, K) with column k = z_k (class-k mean logits), b (K,),
D = diag(n_k), Y = Z D^{1/2}:

    P(Z, b) = Σ_k π_k CE(z_k + b, k) + λ ‖Y‖_* + (λ_b/2)‖b‖²            (``model.convex_objective``)

**Dual.** CE(u, k) = max_{q ∈ Δ} ⟨q − e_k, u⟩ + Ent(q), Ent(q) = −Σ_j q_j log q_j, so

    P(Z, b) = max_q  Σ_k π_k Ent(q_k) + ⟨G(q), Y⟩ + ⟨r(q), b⟩ + λ‖Y‖_* + (λ_b/2)‖b‖²,
    G(q) = [ (sqrt(n_k)/N)(q_k − e_k) ]_k  (K, K),    r(q) = Σ_k π_k (q_k − e_k)  (K,),

and minimising over (Y, b) first (min_Y ⟨G, Y⟩ + λ‖Y‖_* = 0 if ‖G‖_op ≤ λ, else −∞):

    D(q) = Σ_k π_k Ent(q_k) − ‖r(q)‖²/(2λ_b)      s.t. q_k ∈ Δ, ‖G(q)‖_op ≤ λ,

with r(q) = 0 a constraint instead of the penalty when λ_b = 0. Weak duality: D(q) ≤ P* ≤ F*
for every feasible q (P* = F* for d ≥ K − 1; P(W H̄ᵀ, b) ≤ F(W, H, b) always), so
``value − D(q)`` bounds the suboptimality of any point whose objective is ``value``. At the
optimum q_k = softmax(z_k + b) is feasible and the bound is 0; ``dual_point`` turns any (Z, b)
into a feasible q, so the certificate ``gap`` shrinks to 0 as (Z, b) approaches the optimum
(linearly in the distance, while P − P* shrinks quadratically).

**Solver.** ``solve_convex`` minimises P directly, K × K per configuration whatever N, by
accelerated proximal gradient on Y' = Z diag(sqrt(π_k)) with b minimised out; it stops on the
certificate. ``solve_convex_batch`` runs B configurations (vmapped, or through a refilled
pool of slots, which costs Σ steps instead of B·max steps). ``factorize`` maps (Z, b) back
to a balanced (W, H, b) with F(W, H, b) = P(Z, b).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

from ncjax import model

# Status codes as in ncjax.solver.
CONVERGED, MAX_STEPS, DIVERGED = 0, 1, 2

# Default relative certificate tolerance per dtype (the certificate is computed in that dtype:
# float32 rounding alone is ~1e-7·|P|).
GTOL = {"float32": 1e-5, "float64": 1e-9}

# Newton steps on the bias: per FISTA step (warm-started from the previous one) and in
# ``dual_point`` (from the point given).
NEWTON_STEPS_FISTA = 2
NEWTON_STEPS_DUAL = 6

# Step-size control of ``_fista_step``: L_MAX = 1/2 bounds the curvature of the smooth part in
# Y' everywhere; the local estimate L is tried at L·DECREASE each step, and a step that fails
# the sufficient-decrease test is undone with L·INCREASE.
L_MAX = 0.5
DECREASE = 0.95
INCREASE = 2.0


# --------------------------------------------------------------------------- the dual


def entropy(q: jax.Array) -> jax.Array:
    """Ent(q) = −Σ_j q_j log q_j over the first axis (0 log 0 = 0): (K, ...) -> (...)."""
    return -jnp.sum(xlogy(q, q), axis=0)


def dual_G(q: jax.Array, n_k: jax.Array) -> jax.Array:
    """G(q) (K, K): column k is (sqrt(n_k)/N)(q_k − e_k); q (K, K) with column k = q_k."""
    K = q.shape[0]
    return (q - jnp.eye(K, dtype=q.dtype)) * (jnp.sqrt(n_k) / jnp.sum(n_k))[None, :]


def dual_r(q: jax.Array, n_k: jax.Array) -> jax.Array:
    """r(q) = Σ_k π_k (q_k − e_k) = Σ_k π_k q_k − π: (K,)."""
    pi = n_k / jnp.sum(n_k)
    return q @ pi - pi


def dual_objective(q: jax.Array, n_k: jax.Array, lam_b: jax.Array) -> jax.Array:
    """D(q) = Σ_k π_k Ent(q_k) − ‖r(q)‖²/(2λ_b), a scalar; q (K, K) with column k = q_k.

    For λ_b = 0 the r-term is the constraint r(q) = 0 and is *not* checked here: the value
    returned is Σ_k π_k Ent(q_k), a valid lower bound only when r(q) = 0 (as ``dual_point``
    makes it, up to rounding). Feasibility (‖G(q)‖_op ≤ λ, q_k ∈ Δ) is not checked either.
    """
    pi = n_k / jnp.sum(n_k)
    r = dual_r(q, n_k)
    safe = jnp.where(lam_b > 0, lam_b, 1.0)
    penalty = jnp.where(lam_b > 0, jnp.sum(r**2) / (2 * safe), 0.0)
    return jnp.sum(pi * entropy(q)) - penalty


def refine_bias(Z: jax.Array, b: jax.Array, n_k: jax.Array, lam_b: jax.Array,
                steps: int = NEWTON_STEPS_DUAL) -> jax.Array:
    """``steps`` damped Newton steps from b toward argmin_b P(Z, b) (Z fixed): (K,).

    g(b) = Σ_k π_k CE(z_k + b, k) + (λ_b/2)‖b‖² has ∇g = p̄ − π + λ_b b, p̄ = Σ_k π_k p_k, and
    ∇²g = Σ_k π_k (diag p_k − p_k p_kᵀ) + λ_b I. Adding c·1 to b changes only (λ_b/2)‖b‖², so
    the minimiser has mean(b) = 0 (any mean if λ_b = 0): b is kept centred and the Newton
    system is solved with 11ᵀ/K added (exact on 1^⊥, invertible). Step d/(1 + sqrt(gᵀd))
    (the self-concordant damping; full steps near the minimiser, where r(p) + λ_b b → 0
    quadratically). Z (K, K) column k = z_k, n_k (K,), λ_b scalar.
    """
    K = Z.shape[0]
    pi = n_k / jnp.sum(n_k)
    eye = jnp.eye(K, dtype=Z.dtype)

    def newton(_, b):
        p = jax.nn.softmax(Z + b[:, None], axis=0)  # column k = softmax(z_k + b)
        pbar = p @ pi
        grad = pbar - pi + lam_b * b
        hess = jnp.diag(pbar) - (p * pi[None, :]) @ p.T + lam_b * eye + 1.0 / K
        d = jnp.linalg.solve(hess, grad)
        d = jnp.where(jnp.all(jnp.isfinite(d)), d, 0.0)
        b = b - d / (1 + jnp.sqrt(jnp.maximum(jnp.vdot(grad, d), 0.0)))
        return b - jnp.mean(b)

    return jax.lax.fori_loop(0, steps, newton, b - jnp.mean(b))


def _balance_marginal(p, pi):
    """The λ_b = 0 repair: q_k = (1 − s) p_k + s v with one distribution v and the smallest
    s ∈ [0, 1] making Σ_k π_k q_k = π, i.e. v = (π − (1 − s) p̄)/s ≥ 0 with p̄ = Σ_k π_k p_k:
    s = max(0, 1 − min_j π_j / p̄_j). Then r(q) = 0. s = 0 (p̄ = π) returns p."""
    pbar = p @ pi
    s = jnp.clip(1 - jnp.min(pi / pbar), 0.0, 1.0)
    s_safe = jnp.where(s > 0, s, 1.0)
    v = jnp.where(s > 0, jnp.maximum(pi - (1 - s) * pbar, 0.0) / s_safe, pi)
    return (1 - s) * p + s * v[:, None]


def _pull_to_labels(q, n_k, lam):
    """q_k(t) = e_k + t (q_k − e_k) with t = min(1, λ/σ_max(G(q))): G(q(t)) = t G(q), so
    ‖G(q(t))‖_op ≤ λ; r(q(t)) = t r(q). σ_max is inflated by (1 + 8 eps) against rounding."""
    K = q.shape[0]
    eps = jnp.finfo(q.dtype).eps
    smax = jnp.linalg.svd(dual_G(q, n_k), compute_uv=False)[0] * (1 + 8 * eps)
    t = jnp.where(smax > lam, lam / jnp.where(smax > 0, smax, 1.0), 1.0)
    E = jnp.eye(K, dtype=q.dtype)
    return E + t * (q - E)


def _dual_from_bias(Z, b, n_k, lam, lam_b):
    """Steps (a)-(c) of ``dual_point`` for the bias b."""
    pi = n_k / jnp.sum(n_k)
    p = jax.nn.softmax(Z + b[:, None], axis=0)  # column k = softmax(z_k + b)
    q = jnp.where(lam_b > 0, p, _balance_marginal(p, pi))
    return _pull_to_labels(q, n_k, lam)


def dual_point(Z: jax.Array, b: jax.Array, n_k: jax.Array, lam: jax.Array,
               lam_b: jax.Array) -> jax.Array:
    """A dual-feasible q (K, K), column k = q_k ∈ Δ, built from any primal point (Z, b).

    For a bias c:
    (a) p_k = softmax(z_k + c) (the dual optimum when (Z, c) is the primal optimum);
    (b) λ_b = 0 only: r = 0 is enforced exactly by ``_balance_marginal``: every p_k is mixed
        with one common distribution v with the smallest weight s that makes the π-average
        equal to π (s = max(0, 1 − min_j π_j/p̄_j));
    (c) every q_k is pulled toward e_k by the common factor t = min(1, λ/σ_max(G(q))), which
        makes ‖G‖_op ≤ λ and keeps r = 0.
    This is done for c = b and for c = ``refine_bias(Z, b, …)``, and the q with the larger
    D(q) is returned, so the bound is never worse than the plain construction at c = b.
    Why the second: at a point that is not b-stationary (r(p) + λ_b b ≠ 0), (b) costs
    s·Σπ_k(Ent(p_k) − Ent(v)) with s ≈ max_j |r_j(p)|/π_j, *first* order in the residual and
    amplified by 1/π_min (ratio 1000: ~5e-6 for |r| ~ 1e-9), and for λ_b > 0 the plain point
    costs ‖r + λ_b b‖²/(2λ_b); at the b-optimal bias of Z both vanish (to rounding), leaving
    only the Z-part of the gap. Every q built this way is feasible, so the bound is rigorous
    whatever the Newton steps do.
    Z (K, K) column k = z_k, b (K,), n_k (K,), λ, λ_b scalars. Vmappable.
    """
    q0 = _dual_from_bias(Z, b, n_k, lam, lam_b)
    q1 = _dual_from_bias(Z, refine_bias(Z, b, n_k, lam_b), n_k, lam, lam_b)
    d0 = dual_objective(q0, n_k, lam_b)
    d1 = dual_objective(q1, n_k, lam_b)
    return jnp.where(d1 > d0, q1, q0)  # a NaN d1 keeps q0


def gap(Z: jax.Array, b: jax.Array, n_k: jax.Array, lam: jax.Array, lam_b: jax.Array,
        value: jax.Array | None = None) -> jax.Array:
    """Certified suboptimality bound value − D(q), q = ``dual_point(Z, b, n_k, λ, λ_b)``.

    ``value`` defaults to P(Z, b); pass F(W, H, b) of a factored solution to bound F − F*
    (valid for d ≥ K − 1). By weak duality the result is ≥ value − P* ≥ 0 up to rounding;
    it is returned raw (it may be a rounding-size negative number), not clipped. A scalar.
    """
    if value is None:
        value = model.convex_objective(Z, b, n_k, lam, lam_b)
    return value - dual_objective(dual_point(Z, b, n_k, lam, lam_b), n_k, lam_b)


# --------------------------------------------------------------------------- the solver


def _grad_Y(Yp, b, sqrt_pi):
    """∂f/∂y'_k = sqrt(π_k)(p_k − e_k) for f(Y', b) = Σ_k π_k CE(y'_k/sqrt(π_k) + b, k): (K, K);
    also the logits U (K, K), column k = y'_k/sqrt(π_k) + b."""
    K = Yp.shape[0]
    U = Yp / sqrt_pi[None, :] + b[:, None]
    R = jax.nn.softmax(U, axis=0) - jnp.eye(K, dtype=U.dtype)
    return R * sqrt_pi[None, :], U


def _bregman(U, dU, pi):
    """f(u + δu) − f(u) − ⟨∇f(u), δu⟩ for f = Σ_k π_k CE(u_k, k) (columns u_k), computed as
    Σ_k π_k log(1 + Σ_j p_kj (expm1(w_kj) − w_kj)), w_k = δu_k − ⟨p_k, δu_k⟩ (Σ_j p_kj w_kj = 0).
    No O(1) terms cancel: the relative error is ~eps/‖w‖, where f(u + δu) − f(u) − ⟨∇f, δu⟩
    computed directly is pure rounding once ‖δu‖² < eps·|f| (‖δu‖ ~ 1e-8 in float64)."""
    p = jax.nn.softmax(U, axis=0)
    w = dU - jnp.sum(p * dU, axis=0, keepdims=True)
    return jnp.sum(pi * jnp.log1p(jnp.sum(p * (jnp.expm1(w) - w), axis=0)))


def _svt(A, tau):
    """prox of τ‖·‖_*: singular-value soft-thresholding U max(S − τ, 0) Vᵀ."""
    U, S, Vt = jnp.linalg.svd(A, full_matrices=False)
    return (U * jnp.maximum(S - tau, 0.0)[None, :]) @ Vt


class _State(NamedTuple):
    Y: jax.Array       # Y' = Z diag(sqrt(π)) at the iterate x_k, (K, K)
    Y_prev: jax.Array  # x_{k-1}
    b: jax.Array       # bias (K,): ≈ argmin_b f(Y'_y, b) at the last extrapolated point
    t: jax.Array       # momentum parameter t_k (1 right after a restart)
    L: jax.Array       # current curvature estimate (step 1/L)
    value: jax.Array   # P at the last check
    gap: jax.Array     # certificate at the last check
    step: jax.Array
    status: jax.Array  # -1 while running, then a status code


def _fista_step(s: _State, sqrt_pi, mu, lam_b) -> _State:
    """One step of accelerated proximal gradient on φ(Y') + μ‖Y'‖_*, φ(Y') = min_b f(Y', b).

    φ is convex with ∇φ(Y') = ∂f/∂Y'(Y', b*(Y')) and ∇²φ ≼ ∂²f/∂Y'² ≼ ½ I: the softmax-CE
    Hessian is ≼ ½ I and the logits of class k are y'_k/sqrt(π_k), weighted by π_k (= L_MAX).
    b*(y) is tracked by NEWTON_STEPS_FISTA Newton steps warm-started from the previous b.
    Step 1/L with L adapted (Scheinberg–Goldfarb–Bai): L_try = min(L·DECREASE, L_MAX); the step
    is kept iff f(x₊, b) ≤ f(y, b) + ⟨∇, x₊ − y⟩ + (L_try/2)‖x₊ − y‖² (the Bregman term computed
    stably), which bounds φ(x₊) since φ ≤ f(·, b); otherwise x stays and L = L_try·INCREASE
    (L_MAX always passes). Momentum t_{k+1} = (1 + sqrt(1 + 4 (L_try/L) t_k²))/2 with gradient
    restart (O'Donoghue & Candès 2015): t = 1 when ⟨y − x₊, x₊ − x_k⟩ > 0.
    """
    pi = sqrt_pi**2
    L_try = jnp.minimum(s.L * DECREASE, L_MAX)
    t_next = 0.5 * (1 + jnp.sqrt(1 + 4 * (L_try / s.L) * s.t**2))
    beta = (s.t - 1) / t_next
    Yy = s.Y + beta * (s.Y - s.Y_prev)
    b = refine_bias(Yy / sqrt_pi[None, :], s.b, pi, lam_b, NEWTON_STEPS_FISTA)
    gY, U = _grad_Y(Yy, b, sqrt_pi)
    Y = _svt(Yy - gY / L_try, mu / L_try)
    dY = Y - Yy
    ok = (_bregman(U, dY / sqrt_pi[None, :], pi) <= 0.5 * L_try * jnp.sum(dY**2)) | (
        L_try >= L_MAX)
    restart = jnp.vdot(Yy - Y, Y - s.Y) > 0
    return s._replace(
        Y=jnp.where(ok, Y, s.Y), Y_prev=jnp.where(ok, s.Y, s.Y_prev), b=b,
        t=jnp.where(ok, jnp.where(restart, 1.0, t_next), s.t),
        L=jnp.where(ok, L_try, jnp.minimum(L_try * INCREASE, L_MAX)), step=s.step + 1)


class ConvexResult(NamedTuple):
    """Per configuration (leading batch axis under ``solve_convex_batch``):

    Z (K, K) column k = z_k; b (K,); P = P(Z, b); gap: the certificate of (Z, b), ≥ P − P*
    (up to rounding); steps: proximal-gradient steps (each one SVD; rejected steps
    included); status: 0 converged (gap ≤ gtol·max(1, |P|)), 1 max_steps, 2 diverged (a
    non-finite value; the last finite check point is returned).
    """

    Z: jax.Array
    b: jax.Array
    P: jax.Array
    gap: jax.Array
    steps: jax.Array
    status: jax.Array


def _init(n_k: jax.Array) -> _State:
    """The start (Y', b) = 0, L = L_MAX, not yet checked, for counts n_k (K,)."""
    K = n_k.shape[0]
    zero = jnp.zeros((K, K), n_k.dtype)
    scalar = lambda x: jnp.asarray(x, n_k.dtype)
    return _State(zero, zero, jnp.zeros((K,), n_k.dtype), scalar(1.0), scalar(L_MAX),
                  scalar(jnp.inf), scalar(jnp.inf), jnp.asarray(0), jnp.asarray(-1))


def _round(s: _State, n_k, lam, lam_b, gtol, *, max_steps: int, check_every: int) -> _State:
    """``check_every`` steps of ``_fista_step``, then the check: b refined
    (``refine_bias``), P and the certificate at (Z, b), status set (converged if
    gap ≤ gtol·max(1, |P|); max_steps; diverged on a non-finite value, in which case the
    state before the round is kept)."""
    N = jnp.sum(n_k)
    sqrt_pi = jnp.sqrt(n_k / N)
    mu = lam * jnp.sqrt(N)
    new = jax.lax.fori_loop(0, check_every, lambda _, x: _fista_step(x, sqrt_pi, mu, lam_b), s)
    Z = new.Y / sqrt_pi[None, :]
    b = refine_bias(Z, new.b, n_k, lam_b)
    value = model.convex_objective(Z, b, n_k, lam, lam_b)
    g = value - dual_objective(_dual_from_bias(Z, b, n_k, lam, lam_b), n_k, lam_b)
    finite = jnp.isfinite(value) & jnp.isfinite(g)
    status = jnp.where(~finite, DIVERGED,
                       jnp.where(g <= gtol * jnp.maximum(1.0, jnp.abs(value)), CONVERGED,
                                 jnp.where(new.step >= max_steps, MAX_STEPS, -1)))
    new = new._replace(b=b, value=value, gap=g)
    kept = jax.tree.map(lambda a, o: jnp.where(finite, a, o), new, s)
    return kept._replace(step=new.step, status=status)


def _result(s: _State, n_k) -> ConvexResult:
    sqrt_pi = jnp.sqrt(n_k / jnp.sum(n_k))
    return ConvexResult(s.Y / sqrt_pi[None, :], s.b, s.value, s.gap, s.step, s.status)


def solve_convex(n_k: jax.Array, lam: jax.Array, lam_b: jax.Array, gtol: jax.Array, *,
                 max_steps: int = 20000, check_every: int = 10) -> ConvexResult:
    """Minimise P(Z, b) for one configuration (n_k (K,), λ, λ_b, gtol scalars); pure, vmappable.

    Variables Y' = Z diag(sqrt(π_k)) = Z D^{1/2}/sqrt(N) and b, in which

        P = f(Y', b) + μ ‖Y'‖_*,   f = Σ_k π_k CE(y'_k/sqrt(π_k) + b, k) + (λ_b/2)‖b‖²,
        μ = λ sqrt(N):

    n_k enters only through π and μ, and the curvature of f in Y' is ≤ ½ whatever the
    imbalance. ``_fista_step`` from (Y', b) = 0; every ``check_every`` steps b is refined
    (``refine_bias``) and the certificate of (Z, b) is evaluated (``_round``); the
    configuration stops when gap ≤ gtol·max(1, |P|) (converged), at max_steps (rounded up to
    a multiple of check_every) or on a non-finite value (diverged). Computed in the dtype
    of n_k.
    """
    body = functools.partial(_round, n_k=n_k, lam=lam, lam_b=lam_b, gtol=gtol,
                             max_steps=max_steps, check_every=check_every)
    s = jax.lax.while_loop(lambda s: s.status < 0, body, _init(n_k))
    return _result(s, n_k)


def _solve_pooled(n_k, lam, lam_b, gtol, *, pool: int, max_steps: int, check_every: int):
    """``solve_convex`` for B configurations through a pool of ``pool`` slots: every round
    (``_round``, vmapped over the slots, finished slots frozen) the finished slots hand
    their result back and take the next unstarted configurations. The work is then about
    Σ_i steps_i instead of B·max_i steps_i; each configuration sees exactly the steps of
    ``solve_convex``. n_k (B, K), λ, λ_b (B,), gtol scalar."""
    B = n_k.shape[0]
    one_round = jax.vmap(functools.partial(_round, max_steps=max_steps,
                                           check_every=check_every),
                         in_axes=(0, 0, 0, 0, None))
    take = lambda idx: (n_k[jnp.minimum(idx, B - 1)], lam[jnp.minimum(idx, B - 1)],
                        lam_b[jnp.minimum(idx, B - 1)])
    idx0 = jnp.arange(pool)  # slot -> configuration (B: empty)
    s0 = jax.vmap(_init)(take(idx0)[0])
    dummy = jax.vmap(_result)(jax.vmap(_init)(n_k), n_k)
    out0 = jax.tree.map(lambda a: jnp.concatenate([a, a[:1]]), dummy)  # row B: discarded

    def body(c):
        s, idx, nxt, out = c
        counts, l, lb = take(idx)
        new = one_round(s, counts, l, lb, gtol)
        s = jax.tree.map(lambda a, o: jnp.where(
            jnp.reshape(s.status < 0, (-1,) + (1,) * (a.ndim - 1)), a, o), new, s)
        done = (s.status >= 0) & (idx < B)
        res = jax.vmap(_result)(s, counts)
        out = jax.tree.map(lambda o, r: o.at[jnp.where(done, idx, B)].set(r), out, res)
        new_idx = nxt + jnp.cumsum(done) - 1
        refill = done & (new_idx < B)
        idx = jnp.where(done, jnp.where(refill, new_idx, B), idx)
        fresh = jax.vmap(_init)(take(idx)[0])
        s = jax.tree.map(lambda f, a: jnp.where(
            jnp.reshape(refill, (-1,) + (1,) * (a.ndim - 1)), f, a), fresh, s)
        return s, idx, jnp.minimum(nxt + jnp.sum(done), B), out

    _, _, _, out = jax.lax.while_loop(lambda c: jnp.any(c[1] < B), body,
                                      (s0, idx0, jnp.asarray(pool), out0))
    return jax.tree.map(lambda a: a[:B], out)


@functools.partial(jax.jit, static_argnames=("gtol", "max_steps", "check_every", "dtype",
                                             "pool"))
def solve_convex_batch(n_k: jax.Array, lam: jax.Array, lam_b: jax.Array, *,
                       gtol: float | None = None, max_steps: int = 20000,
                       check_every: int = 10, dtype: str = "float64",
                       pool: int | None = None) -> ConvexResult:
    """``solve_convex`` for B configurations in one jitted program: n_k (B, K), λ (B,),
    λ_b (B,) (half convention). Inputs are cast to ``dtype``; float64 needs x64 enabled by
    the caller (``ncjax.dtypes.x64``). gtol defaults to ``GTOL[dtype]``.

    pool None (or ≥ B): ``vmap`` over the configurations, each in its own ``while_loop`` (a
    finished configuration is frozen, so the batch costs B × the slowest one's steps).
    pool P < B: ``_solve_pooled`` (P slots refilled as configurations finish; costs about
    Σ steps, the better choice when the steps vary a lot). Same per-configuration results.
    Returns a ``ConvexResult`` of (B, ...) arrays."""
    dt = jnp.dtype(dtype)
    gtol = jnp.asarray(GTOL[dt.name] if gtol is None else gtol, dt)
    n_k, lam, lam_b = (jnp.asarray(a, dt) for a in (n_k, lam, lam_b))
    return solve_many(n_k, lam, lam_b, gtol, max_steps=max_steps, check_every=check_every,
                      pool=pool)


def solve_many(n_k, lam, lam_b, gtol, *, max_steps: int = 20000, check_every: int = 10,
               pool: int | None = None) -> ConvexResult:
    """``solve_convex_batch`` without the jit and the casts (for use inside a caller's
    jit, e.g. per device under ``shard_map``): n_k (B, K), λ, λ_b (B,), gtol scalar."""
    if pool is not None and pool < n_k.shape[0]:
        return _solve_pooled(n_k, lam, lam_b, gtol, pool=pool, max_steps=max_steps,
                             check_every=check_every)
    one = functools.partial(solve_convex, max_steps=max_steps, check_every=check_every)
    return jax.vmap(one, in_axes=(0, 0, 0, None))(n_k, lam, lam_b, gtol)


# --------------------------------------------------------------------------- back to the UFM


@functools.partial(jax.jit, static_argnames=("d", "m"))
def factorize(Z: jax.Array, b: jax.Array, n_k: jax.Array, lam_W: jax.Array, lam_H: jax.Array,
              *, d: int | None = None, m: int = 1) -> model.Params:
    """The balanced UFM point (W, H, b) with W H̄ᵀ = Z and F(W, H, b) = P(Z, b) (half convention).

    Y = Z D^{1/2} = U S Vᵀ (SVD), a = (λ_H/λ_W)^{1/4}:

        W = a U S^{1/2}  (K, d),    h̄_k = (V S^{1/2})_k / (a sqrt(n_k)),    H[k, i] = h̄_k,

    so W H̄ᵀ = Y D^{-1/2} = Z, (λ_W/2)‖W‖² = (λ_W a²/2) tr S = (λ/2) tr S and
    (λ_H/2) Σ_k (n_k/m) Σ_i ‖h_{k,i}‖² = (λ_H/(2a²)) tr S = (λ/2) tr S: the penalties add up to
    λ‖Y‖_* and the loss is Σ_k π_k CE(z_k + b, k), i.e. F = P (``model.ufm_objective``, m
    equal features per class). d > K pads with zero columns; d < K keeps the d largest
    singular values, exact only when rank Y ≤ d. Z (K, K) column k = z_k; b (K,); n_k (K,);
    returns ``model.Params`` W (K, d), H (K, m, d), b (K,).
    """
    K = Z.shape[0]
    d = K if d is None else d
    U, S, Vt = jnp.linalg.svd(Z * jnp.sqrt(n_k)[None, :], full_matrices=False)
    a = (lam_H / lam_W) ** 0.25
    root = jnp.sqrt(S)
    W = a * U * root[None, :]
    Hbar = Vt.T * root[None, :] / (a * jnp.sqrt(n_k))[:, None]
    width = min(d, K)
    pad = ((0, 0), (0, d - width))
    W, Hbar = jnp.pad(W[:, :width], pad), jnp.pad(Hbar[:, :width], pad)
    return model.Params(W, jnp.broadcast_to(Hbar[:, None, :], (K, m, d)), b)
