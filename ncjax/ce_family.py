"""The cross-entropy family: label smoothing, class weights, logit adjustment and the VS
loss as one parameterised loss, with its conjugate, free-bias repair and bounds.

For a logit vector u (K,) and a label k every member is (docs/losses.md)

    ℓ(u, k) = ω_k [ lse(w) − ⟨y_k, w⟩ ],    w = Δ ⊙ u + s,    y_k = (1 − α) e_k + (α/K) 1,

lse the log-sum-exp, with per configuration ω (K,) > 0 class weights, Δ (K,) > 0 a logit
scale, s (K,) a logit shift and α ∈ [0, 1) the smoothing:

    label_smoothing(α)       α
    weighted_ce(ω)           ω
    logit_adjusted(τ)        s = τ log π                        (Menon et al. 2021)
    vs(γ, τ)                 Δ_j = (n_j/n_max)^γ, s = τ log π   (Kini et al. 2021)

and the defaults ω = 1, Δ = 1, s = 0, α = 0 give CE. ℓ is convex in u (lse is convex,
composed with an affine map). With p = softmax(w):

    ∇ℓ = ω_k Δ ⊙ (p − y_k),    ∇²ℓ = ω_k diag(Δ) (diag(p) − p pᵀ) diag(Δ) ≼ ½ ω_k max_j Δ_j² I.

Conjugate: f(w) = lse(w) − ⟨y, w⟩ has f*(a) = −Ent(a + y) on a + y ∈ simplex; with
u = (w − s)/Δ, ℓ*(v, k) = ω_k f*(v/(ω_k Δ)) − ⟨v/Δ, s⟩, so the dual variable is
v_k = ω_k Δ ⊙ (q_k − y_k), q_k in the simplex, and

    −ℓ*(v_k, k) = ω_k [ Ent(q_k) + ⟨q_k − y_k, s⟩ ].

0 is in the domain (q_k = y_k) and t v_k, t ∈ [0, 1], stays in it (q = y + t (q_k − y)).
Free bias: r(V) = Σ_k π_k v_k = Δ ⊙ Σ_k π_k ω_k (q_k − y_k) = 0 iff Σ_k ρ_k q_k = t with
ρ = π ω / Σ π ω and t = Σ_k ρ_k y_k = (1 − α) ρ + α/K (``balance``). ℓ(u + c/Δ, k) =
ℓ(u, k): ``null_direction`` 1/Δ (1 unless the VS γ ≠ 0).

The raw parameters (``Problem.theta``: alpha, weights, gamma, tau, whichever the loss
has) become these arrays in ``prepare``, inside the compiled program, from the counts.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy


def entropy(q: jax.Array) -> jax.Array:
    """Ent(q) = −Σ_j q_j log q_j over the last axis (0 log 0 = 0)."""
    return -jnp.sum(xlogy(q, q), axis=-1)


def prepare(theta: dict, counts: jax.Array) -> dict:
    """The family's arrays of one configuration from its raw parameters and counts (K,):
    omega (K,), Delta (K,), s (K,) and alpha (); parameters absent take the CE values."""
    n = counts
    pi = n / jnp.sum(n)
    one = jnp.ones_like(pi)
    omega = theta["weights"] * one if "weights" in theta else one
    alpha = theta["alpha"] * one[0] if "alpha" in theta else 0.0 * one[0]
    s = theta["tau"] * jnp.log(pi) if "tau" in theta else 0.0 * one
    # Δ = (n/n_max)^γ as exp(γ log(n/n_max)): exactly 1 where n = n_max, and γ = 0 gives 1
    Delta = jnp.exp(theta["gamma"] * jnp.log(n / jnp.max(n))) if "gamma" in theta else one
    return {"omega": omega, "Delta": Delta, "s": s, "alpha": alpha}


def _hot(k, K):
    return jnp.asarray(k)[..., None] == jnp.arange(K)


def _pick(x, hot):
    """x_k by a mask (a select, not a gather: see ``losses.cross_entropy``)."""
    return jnp.sum(jnp.where(hot, x, 0.0), axis=-1)


def _target(k, K, th, dtype):
    """y_k = (1 − α) e_k + α/K: (K,)."""
    return (1 - th["alpha"]) * _hot(k, K).astype(dtype) + th["alpha"] / K


def value(u, k, th):
    """ℓ(u, k): u (..., K), k (...) broadcast against u's leading axes → (...)."""
    K = u.shape[-1]
    hot = _hot(k, K)
    w = th["Delta"] * u + th["s"]
    yw = (1 - th["alpha"]) * _pick(w, hot) + th["alpha"] * jnp.mean(w, axis=-1)
    return _pick(jnp.broadcast_to(th["omega"], w.shape), hot) * (
        jax.nn.logsumexp(w, axis=-1) - yw)


def grad(u, k, th):
    """ω_k Δ ⊙ (softmax(w) − y_k): (K,), k → (K,)."""
    K = u.shape[-1]
    p = jax.nn.softmax(th["Delta"] * u + th["s"])
    return th["omega"][k] * th["Delta"] * (p - _target(k, K, th, u.dtype))


def hess(U, w, th):
    """Σ_k w_k ω_k diag(Δ)(diag(p_k) − p_k p_kᵀ) diag(Δ), p_k = softmax(Δ ⊙ u_k + s): U
    (K, K) column k = u_k (label k), w (K,) → (K, K); one matmul, no (K, K, K) stack."""
    D = th["Delta"]
    P = jax.nn.softmax(D[:, None] * U + th["s"][:, None], axis=0)
    c = w * th["omega"]
    return (jnp.diag(P @ c) - (P * c[None, :]) @ P.T) * jnp.outer(D, D)


def dual_value(v, k, th):
    """−ℓ*(v, k) = ω_k [Ent(q) + ⟨q − y_k, s⟩], q = y_k + v/(ω_k Δ): (K,), k → ().

    q is clipped at 0: the rounding of v = ω_k Δ (p − y_k) can leave q_j = −eps·y_j where
    p_j = 0 (a label-smoothed target), whose log is undefined; the change is within
    rounding of the value."""
    K = v.shape[-1]
    a = v / (th["omega"][k] * th["Delta"])  # q − y_k
    q = jnp.maximum(_target(k, K, th, v.dtype) + a, 0.0)
    return th["omega"][k] * (entropy(q) + jnp.sum(a * th["s"]))


def balance(V, pi, th):
    """The free-bias repair: V (K, K) (column k = v_k in the domain), π (K,) → V' with
    r(V') = 0. With Q = [q_k] and ρ, t of the module docstring: q_k' = (1 − σ) q_k + σ w
    for one distribution w and the smallest σ ∈ [0, 1] making Σ_k ρ_k q_k' = t, i.e.
    w = (t − (1 − σ) q̄)/σ ≥ 0, q̄ = Σ_k ρ_k q_k: σ = max(0, 1 − min_j t_j/q̄_j) (CE's
    repair with ρ = t = π). V' = V where r(V) = 0 (σ = 0)."""
    K = V.shape[0]
    scale = th["Delta"][:, None] * th["omega"][None, :]  # column k: ω_k Δ
    Y = (1 - th["alpha"]) * jnp.eye(K, dtype=V.dtype) + th["alpha"] / K
    Q = Y + V / scale
    rho = pi * th["omega"] / jnp.sum(pi * th["omega"])
    qbar, t = Q @ rho, Y @ rho
    sig = jnp.clip(1 - jnp.min(t / qbar), 0.0, 1.0)
    sig_safe = jnp.where(sig > 0, sig, 1.0)
    w = jnp.where(sig > 0, jnp.maximum(t - (1 - sig) * qbar, 0.0) / sig_safe, t)
    return ((1 - sig) * Q + sig * w[:, None] - Y) * scale


def lse_bregman(w, dw):
    """lse(w + δ) − lse(w) − ⟨softmax(w), δ⟩ = log(1 + Σ_j p_j (expm1(x_j) − x_j)),
    x = δ − ⟨p, δ⟩, p = softmax(w): no O(1) terms cancel."""
    p = jax.nn.softmax(w)
    x = dw - jnp.sum(p * dw)
    return jnp.log1p(jnp.sum(p * (jnp.expm1(x) - x)))


def bregman(u, du, k, th):
    """ℓ(u + δ, k) − ℓ(u, k) − ⟨∇ℓ(u, k), δ⟩ = ω_k (lse Bregman at w in direction Δ ⊙ δ):
    the terms linear in w cancel. (K,), (K,), k → ()."""
    D = th["Delta"]
    return th["omega"][k] * lse_bregman(D * u + th["s"], D * du)


def curvature(th):
    """½ max_k ω_k max_j Δ_j² ≥ the largest eigenvalue of every ∇²ℓ: ()."""
    return 0.5 * jnp.max(th["omega"]) * jnp.max(th["Delta"]) ** 2


def bias_start(pi, th):
    """argmin_b Σ_k π_k ℓ(b, k) (λ_b = 0): with w = Δ ⊙ b + s common to all classes the
    sum is (Σ π ω)(lse(w) − ⟨t, w⟩), minimal at softmax(w) = t: b = (log t − s)/Δ (CE:
    log π). (K,)."""
    K = pi.shape[-1]
    rho = pi * th["omega"] / jnp.sum(pi * th["omega"])
    t = (1 - th["alpha"]) * rho + th["alpha"] / K
    return (jnp.log(t) - th["s"]) / th["Delta"]


def null_direction(th):
    """1/Δ: ℓ(u + c/Δ, k) = ℓ(u, k) for every c (w moves by c·1). (K,)."""
    return 1.0 / th["Delta"]


def ce_like(th, free_bias):
    """Whether ℓ is CE up to a shift the bias absorbs: α = 0, ω = Δ = 1, and s = 0 or a
    free bias (then b' = b + s turns ℓ(z + b, k) into CE(z + b', k) at no cost, so the
    optimum's Z and value are CE's). A bool (per configuration)."""
    plain = (th["alpha"] == 0) & jnp.all(th["omega"] == 1) & jnp.all(th["Delta"] == 1)
    return plain & (jnp.all(th["s"] == 0) | free_bias)
