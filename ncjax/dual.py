"""The Fenchel dual of the convex form and the certificate it gives any point.

For one ``Problem`` (counts n_k (K,), π = n/N, λ = sqrt(λ_W λ_H), loss ℓ, bias mode) and
Y = Z D^{1/2}, D = diag(n_k), with ℓ(u, k) = max_v ⟨v, u⟩ − ℓ*(v, k) (DESIGN.md §1b):

    P(Z, b) = max_V  −Σ_k π_k ℓ*(v_k, k) + ⟨G(V), Y⟩ + ⟨r(V), b⟩ + λ‖Y‖_* + (λ_b/2)‖b‖²,
    G(V) = [ (sqrt(n_k)/N) v_k ]_k  (K, K),    r(V) = Σ_k π_k v_k  (K,),

and minimising over (Y, b) first (min_Y ⟨G, Y⟩ + λ‖Y‖_* = 0 if ‖G‖_op ≤ λ, else −∞):

    D(V) = −Σ_k π_k ℓ*(v_k, k) − ‖r(V)‖²/(2λ_b)     s.t. ‖G(V)‖_op ≤ λ,

with r(V) = 0 a constraint instead of the penalty for a free bias (λ_b = 0) and no r-term
at all without a bias (b absent: nothing to minimise over). For cross-entropy
v_k = q_k − e_k with q_k ∈ Δ and −ℓ*(v_k, k) = Ent(q_k). Weak duality: D(V) ≤ P* ≤ F* for
every feasible V (P* = F* for d ≥ K − 1; P(W H̄ᵀ, b) ≤ F(W, H, b) always), so
``value − D(V)`` bounds the suboptimality of any point whose objective is ``value``. At
the optimum v_k = ∇ℓ(z_k + b, k) is feasible and the bound is 0; ``dual_point`` turns any
(Z, b) into a feasible V, so the certificate ``gap`` shrinks to 0 as (Z, b) approaches the
optimum (linearly in the distance, while P − P* shrinks quadratically).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ncjax import model
from ncjax.problem import Problem

# Newton steps on the bias in ``dual_point`` (from the point given).
NEWTON_STEPS = 6


def _columns(f, U, K, th):
    """f(u_k, k, th) for every column u_k of U (K, K), stacked as columns."""
    return jax.vmap(f, in_axes=(1, 0, None), out_axes=-1)(U, jnp.arange(K), th)


def dual_G(V: jax.Array, problem: Problem) -> jax.Array:
    """G(V) (K, K): column k is (sqrt(n_k)/N) v_k; V (K, K) with column k = v_k."""
    n_k = problem.counts
    return V * (jnp.sqrt(n_k) / jnp.sum(n_k))[None, :]


def dual_r(V: jax.Array, problem: Problem) -> jax.Array:
    """r(V) = Σ_k π_k v_k: (K,)."""
    return V @ (problem.counts / jnp.sum(problem.counts))


def dual_objective(V: jax.Array, problem: Problem) -> jax.Array:
    """D(V) = −Σ_k π_k ℓ*(v_k, k) − ‖r(V)‖²/(2λ_b), a scalar; V (K, K) with column k = v_k.

    The r-term is the penalty for λ_b > 0, absent without a bias, and for a free bias
    (λ_b = 0) the constraint r(V) = 0, *not* checked here: the value returned is then
    −Σ_k π_k ℓ*(v_k, k), a lower bound only when r(V) = 0 (as ``dual_point`` makes it, up to
    rounding). Feasibility (‖G(V)‖_op ≤ λ, v_k in the domain) is not checked either.
    """
    K = V.shape[0]
    pi = problem.counts / jnp.sum(problem.counts)
    value = jnp.sum(pi * _columns(problem.loss.dual_value, V, K, problem.loss_args))
    if not problem.bias:
        return value
    lam_b = problem.lam_b
    safe = jnp.where(lam_b > 0, lam_b, 1.0)
    r = dual_r(V, problem)
    return value - jnp.where(lam_b > 0, jnp.sum(r**2) / (2 * safe), 0.0)


def refine_bias(Z: jax.Array, b: jax.Array, problem: Problem,
                steps: int = NEWTON_STEPS) -> jax.Array:
    """``steps`` damped Newton steps from b toward argmin_b P(Z, b) (Z fixed): (K,); 0
    without a bias.

    g(b) = Σ_k π_k ℓ(z_k + b, k) + (λ_b/2)‖b‖² has ∇g = Σ_k π_k ∇ℓ(z_k + b, k) + λ_b b and
    ∇²g = Σ_k π_k ∇²ℓ(z_k + b, k) + λ_b I. For a shift-invariant loss adding c·1 to b
    changes only (λ_b/2)‖b‖², so the minimiser has mean(b) = 0 (any mean if λ_b = 0): b is
    kept centred and the Newton system is solved with 11ᵀ/K added (exact on 1^⊥,
    invertible). A loss invariant along another direction e (``Loss.null_direction``, the
    VS loss's 1/Δ) is treated the same way with ê êᵀ, ê = e/‖e‖: ∇g ⊥ e once ⟨b, e⟩ = 0,
    and e is an eigenvector of ∇²g (eigenvalue λ_b), so the step stays in e^⊥ and is
    Newton's there. Step d/(1 + sqrt(gᵀd)) (the self-concordant damping; full steps near
    the minimiser). Z (K, K) column k = z_k.
    """
    if not problem.bias:
        return jnp.zeros_like(b)
    K = Z.shape[0]
    loss = problem.loss
    th = problem.loss_args
    pi = problem.counts / jnp.sum(problem.counts)
    eye = jnp.eye(K, dtype=Z.dtype)
    centre = loss.shift_invariant
    if centre or loss.null_direction is None:
        e = None
        fix = 1.0 / K if centre else 0.0
        project = (lambda b: b - jnp.mean(b)) if centre else (lambda b: b)
    else:
        e = loss.null_direction(th).astype(Z.dtype)
        e = e / jnp.linalg.norm(e)
        fix = jnp.outer(e, e)
        project = lambda b: b - jnp.vdot(e, b) * e

    def newton(_, b):
        U = Z + b[:, None]
        grad = _columns(loss.grad, U, K, th) @ pi + problem.lam_b * b
        hess = loss.hess(U, pi, th) + problem.lam_b * eye + fix
        d = jnp.linalg.solve(hess, grad)
        d = jnp.where(jnp.all(jnp.isfinite(d)), d, 0.0)
        b = b - d / (1 + jnp.sqrt(jnp.maximum(jnp.vdot(grad, d), 0.0)))
        return project(b)

    return jax.lax.fori_loop(0, steps, newton, project(b))


def pull_to_zero(V: jax.Array, problem: Problem) -> jax.Array:
    """t V with t = min(1, λ/σ_max(G(V))): G(tV) = t G(V), so ‖G(tV)‖_op ≤ λ; r(tV) = t r(V),
    and tV stays in the domain (0 ∈ dom ℓ*). σ_max is inflated by (1 + 8 eps) against
    rounding."""
    eps = jnp.finfo(V.dtype).eps
    smax = jnp.linalg.svd(dual_G(V, problem), compute_uv=False)[0] * (1 + 8 * eps)
    lam = problem.lam
    return V * jnp.where(smax > lam, lam / jnp.where(smax > 0, smax, 1.0), 1.0)


def from_bias(Z: jax.Array, c: jax.Array, problem: Problem) -> jax.Array:
    """The feasible V that ``dual_point`` builds for the bias c (its steps (a)-(c))."""
    K = Z.shape[0]
    th = problem.loss_args
    V = _columns(problem.loss.grad, Z + model.bias_of(c, problem)[:, None], K, th)
    if problem.bias:
        pi = problem.counts / jnp.sum(problem.counts)
        V = jnp.where(problem.lam_b > 0, V, problem.loss.balance(V, pi, th))
    return pull_to_zero(V, problem)


def dual_point(Z: jax.Array, b: jax.Array, problem: Problem) -> jax.Array:
    """A dual-feasible V (K, K), column k = v_k, built from any primal point (Z, b).

    For a bias c:
    (a) v_k = ∇ℓ(z_k + c, k) (the dual optimum when (Z, c) is the primal optimum; for CE
        softmax(z_k + c) − e_k);
    (b) free bias (λ_b = 0) only: r = 0 is enforced exactly by the loss's ``balance``
        (for CE: every q_k = v_k + e_k mixed with one common distribution, with the
        smallest weight that makes the π-average equal to π);
    (c) V is scaled toward 0 by t = min(1, λ/σ_max(G(V))), which makes ‖G‖_op ≤ λ and
        keeps r = 0 (``pull_to_zero``).
    With a bias this is done for c = b and for c = ``refine_bias(Z, b, …)``, and the V with
    the larger D(V) is returned, so the bound is never worse than the plain construction at
    c = b. Why the second: at a point that is not b-stationary, (b) costs first order in the
    residual, amplified by 1/π_min, and for λ_b > 0 the plain point costs
    ‖r + λ_b b‖²/(2λ_b); at the b-optimal bias of Z both vanish (to rounding), leaving only
    the Z-part of the gap. Every V built this way is feasible, so the bound is rigorous
    whatever the Newton steps do. Without a bias, (a) and (c) at c = 0. Vmappable.
    """
    V0 = from_bias(Z, b, problem)
    if not problem.bias:
        return V0
    V1 = from_bias(Z, refine_bias(Z, b, problem), problem)
    better = dual_objective(V1, problem) > dual_objective(V0, problem)  # a NaN keeps V0
    return jnp.where(better, V1, V0)


def gap(Z: jax.Array, b: jax.Array, problem: Problem,
        value: jax.Array | None = None) -> jax.Array:
    """Certified suboptimality bound value − D(V), V = ``dual_point(Z, b, problem)``.

    ``value`` defaults to P(Z, b); pass F(W, H, b) of a factored solution to bound F − F*
    (valid for d ≥ K − 1). By weak duality the result is ≥ value − P* ≥ 0 up to rounding;
    it is returned raw (it may be a rounding-size negative number), not clipped. A scalar.
    """
    if value is None:
        value = model.convex_objective(Z, b, problem)
    return value - dual_objective(dual_point(Z, b, problem), problem)
