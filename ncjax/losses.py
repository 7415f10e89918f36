"""Per-sample losses ℓ(u, k) of a logit vector u (K,) and a label k, as values of pure
functions: everything the factored objective, the convex solver and the certificate need.

For a loss convex in u, the UFM with d ≥ K − 1 has the convex form (DESIGN.md §1b)

    P(Z, b) = Σ_k π_k ℓ(z_k + b, k) + λ ‖Z D^{1/2}‖_* + (λ_b/2)‖b‖²,

and, writing ℓ(u, k) = max_v ⟨v, u⟩ − ℓ*(v, k), its Fenchel dual

    D(V) = −Σ_k π_k ℓ*(v_k, k) − ‖r(V)‖²/(2λ_b),   r(V) = Σ_k π_k v_k,
    s.t. ‖[(sqrt(n_k)/N) v_k]_k‖_op ≤ λ,  v_k ∈ dom ℓ*(·, k),

(r(V) = 0 a constraint for a free bias, λ_b = 0; no r-term at all without a bias). At the
optimum v_k = ∇ℓ(z_k + b, k). The losses served (π = n/N; docs/losses.md):

    ce()                  CE(u, k) = logsumexp(u) − u_k
    label_smoothing(α)    logsumexp(u) − (1 − α) u_k − (α/K) Σ_j u_j,  α ∈ [0, 1)
    weighted_ce(ω)        ω_k CE(u, k),  ω (K,) > 0
    logit_adjusted(τ)     CE(u + τ log π, k)
    vs(γ, τ)              CE(Δ ⊙ u + τ log π, k),  Δ_j = (n_j/n_max)^γ
    mse()                 ½‖u − e_k‖²

(the four between CE and MSE are one family, ``ncjax.ce_family``). A loss's parameters are
values, not part of what a program is compiled for: ``problem.make`` moves them into the
``Problem``'s array leaf ``theta`` (name → (B,) or, per class, (B, K)) and keeps the loss
without them (``Loss.stripped``) as its static part, so a sweep over τ or α compiles once.
Every function of a ``Loss`` takes ``th``, the configuration's prepared parameters
(``prepare(theta, counts)``, inside the compiled program; ``Problem.loss_args``):

    name        its name (``LOSSES`` lists the names the engine serves)
    value       ℓ(u, k): u (..., K), k (...) integer labels broadcast against u's leading
                axes, th → (...)
    grad        ∇_u ℓ(u, k): u (K,), k, th → (K,); the dual point v of u
    hess        the weighted sum of Hessians Σ_k w_k ∇²_u ℓ(u_k, k) of the columns of U
                (column k = u_k, label k): U (K, K), w (K,), th → (K, K)
    dual_value  −ℓ*(v, k) for v ∈ dom ℓ*(·, k): (K,), k, th → ()
    balance     the free-bias repair: V (K, K) with column k = v_k ∈ dom ℓ*(·, k), π (K,),
                th → V' in the domain with r(V') = Σ_k π_k v'_k = 0, V' = V where r(V) = 0
    bregman     ℓ(u + δ, k) − ℓ(u, k) − ⟨∇ℓ(u, k), δ⟩ computed without cancellation:
                (K,), (K,), k, th → ()
    curvature   th → a bound on the largest eigenvalue of ∇²ℓ over all u
    bias_start  π (K,), th → the bias from which the bias of the zero point Z = 0 is sought
    shift_invariant  whether ℓ(u + c·1, k) = ℓ(u, k) for every c (then only b's part
                orthogonal to 1 matters, and the bias is kept centred)
    convex      whether ℓ is convex in u (no certificate otherwise)
    params      ((name, value), ...): the values the factory was given (None once
                stripped); a scalar parameter a float or a (B,) tuple, a per-class one
                (``per_class``) a (K,) or (B, K) tuple
    per_class   the names of the parameters with one value per class
    prepare     (theta, counts (K,)) → th: raw parameters (name → array) to what the
                functions read
    null_direction  None, or th → e (K,) with ℓ(u + c e, k) = ℓ(u, k) for every c when
                that holds for an e other than 1 (then the bias is kept orthogonal to e)
    ce_like     (th, free_bias) → whether ℓ is CE up to what the bias absorbs (the
                thresholds of ``ncjax.theory`` are derived for those only)

Scaling V toward 0 keeps it in the domain (0 ∈ dom ℓ* for a loss bounded below), which is
how the certificate meets the operator-norm constraint (``ncjax.dual``).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ncjax import ce_family
from ncjax.ce_family import entropy  # noqa: F401 - re-exported: CE's conjugate
from ncjax.names import LOSS_PARAMETERS
from ncjax.validate import InputError


def _no_params(theta, counts):
    return {}


def _never(th, free_bias):
    return False


def _always(th, free_bias):
    return True


class Loss(NamedTuple):
    """A per-sample loss and what the solvers and the certificate need of it (module
    docstring). Hashable: its functions are module-level, its parameters tuples."""

    name: str
    value: Callable
    grad: Callable
    hess: Callable
    dual_value: Callable
    balance: Callable
    bregman: Callable
    curvature: Callable
    bias_start: Callable
    shift_invariant: bool
    convex: bool = True
    params: tuple = ()
    per_class: tuple = ()
    prepare: Callable = _no_params
    null_direction: Callable | None = None
    ce_like: Callable = _never

    def stripped(self) -> "Loss":
        """The loss without its parameter values (the static part of a ``Problem``)."""
        return self._replace(params=tuple((n, None) for n, _ in self.params))

    def constants(self) -> dict:
        """Its parameter values as arrays (theta of a ``Problem`` built without one)."""
        if any(v is None for _, v in self.params):
            raise InputError(f"loss {self.name!r} has no parameter values (stripped): "
                             "pass theta, or use problem.make")
        return {n: jnp.asarray(v) for n, v in self.params}

    @property
    def label(self) -> str:
        """e.g. "vs(gamma=0.5, tau=1.0)"; "ce" for a loss without parameters."""
        if not self.params:
            return self.name
        return f"{self.name}({', '.join(f'{n}={v}' for n, v in self.params)})"


def _one_hot(k, K, dtype):
    return (jnp.arange(K) == k).astype(dtype)


def cross_entropy(u: jax.Array, k: jax.Array) -> jax.Array:
    """CE(u, k) = logsumexp(u) − u_k over the last axis, computed stably: u (..., K), k
    integer labels broadcastable to u.shape[:-1] → (...)."""
    # u_k picked by a mask, not a gather: its gradient is then a select that fuses with
    # the softmax's, where a gather's is a scatter-add (one more pass on a GPU)
    hot = jnp.asarray(k)[..., None] == jnp.arange(u.shape[-1])
    return jax.nn.logsumexp(u, axis=-1) - jnp.sum(jnp.where(hot, u, 0.0), axis=-1)


# CE's functions ignore th (it has no parameters): the same operations as before the loss
# took any, so a solve with ``ce()`` is bit-for-bit the one without ``loss=``

def _ce_value(u, k, th=None):
    return cross_entropy(u, k)


def _ce_grad(u, k, th=None):
    return jax.nn.softmax(u) - _one_hot(k, u.shape[-1], u.dtype)


def _ce_hess(U, w, th=None):
    """Σ_k w_k (diag(p_k) − p_k p_kᵀ) = diag(P w) − P diag(w) Pᵀ, P = softmax of U's
    columns."""
    P = jax.nn.softmax(U, axis=0)
    return jnp.diag(P @ w) - (P * w[None, :]) @ P.T


def _ce_dual_value(v, k, th=None):
    """−CE*(v, k) = Ent(v + e_k): the dual variable of CE is q − e_k with q ∈ Δ."""
    return entropy(v + _one_hot(k, v.shape[-1], v.dtype))


def _ce_balance(V, pi, th=None):
    """With q_k = v_k + e_k ∈ Δ: q_k' = (1 − s) q_k + s w for one distribution w and the
    smallest s ∈ [0, 1] making Σ_k π_k q_k' = π, i.e. w = (π − (1 − s) q̄)/s ≥ 0 with
    q̄ = Σ_k π_k q_k: s = max(0, 1 − min_j π_j/q̄_j). Then r(V') = Σ_k π_k (q_k' − e_k) = 0."""
    E = jnp.eye(V.shape[0], dtype=V.dtype)
    q = V + E
    qbar = q @ pi
    s = jnp.clip(1 - jnp.min(pi / qbar), 0.0, 1.0)
    s_safe = jnp.where(s > 0, s, 1.0)
    w = jnp.where(s > 0, jnp.maximum(pi - (1 - s) * qbar, 0.0) / s_safe, pi)
    return (1 - s) * q + s * w[:, None] - E


def _ce_bregman(u, du, k, th=None):
    """log(1 + Σ_j p_j (expm1(w_j) − w_j)), w = δ − ⟨p, δ⟩, p = softmax(u) (Σ_j p_j w_j = 0):
    no O(1) terms cancel, where the direct difference is pure rounding once
    ‖δ‖² < eps·|ℓ|."""
    p = jax.nn.softmax(u)
    w = du - jnp.sum(p * du)
    return jnp.log1p(jnp.sum(p * (jnp.expm1(w) - w)))


def _ce_curvature(th=None):
    return 0.5  # a Python float: the step-size arithmetic of ``ncjax.convex`` unchanged


def _ce_bias_start(pi, th=None):
    return jnp.log(pi)


@functools.cache
def ce() -> Loss:
    """Cross-entropy CE(u, k) = logsumexp(u) − u_k (Hong & Ling's model). Its Hessian
    diag(p) − p pᵀ is ≼ ½ I."""
    return Loss("ce", _ce_value, _ce_grad, _ce_hess, _ce_dual_value, _ce_balance,
                _ce_bregman, _ce_curvature, _ce_bias_start, True, ce_like=_always)


def _family(name, params, *, shift_invariant=True, per_class=()) -> Loss:
    f = ce_family
    return Loss(name, f.value, f.grad, f.hess, f.dual_value, f.balance, f.bregman,
                f.curvature, f.bias_start, shift_invariant, True, tuple(params), per_class,
                f.prepare, None if shift_invariant else f.null_direction, f.ce_like)


def _values(name, value, *, ndim, what):
    """``value`` as float64 of at most ``ndim`` axes, finite; an InputError names it."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be {what}, got {value!r}") from None
    if arr.ndim > ndim or arr.size == 0:
        raise InputError(f"{name} must be {what}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} must be finite, got {arr.tolist()}")
    return arr


def _hashable(arr):
    return arr.item() if arr.ndim == 0 else tuple(map(_hashable, arr))


def _scalar(name, value, lo=None, hi=None, desc=""):
    arr = _values(name, value, ndim=1, what="a number or a (B,) sequence of numbers")
    if (lo is not None and np.any(arr < lo)) or (hi is not None and np.any(arr >= hi)):
        raise InputError(f"{name} must be in {desc}, got {arr.tolist()}")
    return name, _hashable(arr)


def label_smoothing(alpha) -> Loss:
    """Label smoothing: CE against the target (1 − α) e_k + α/K,
    logsumexp(u) − (1 − α) u_k − (α/K) Σ_j u_j, α ∈ [0, 1) (a float or (B,))."""
    return _family("label_smoothing", [_scalar("alpha", alpha, 0.0, 1.0, "[0, 1)")])


def weighted_ce(weights) -> Loss:
    """Class-weighted CE ω_k CE(u, k): weights ω > 0, (K,) or (B, K)."""
    w = _values("weights", weights, ndim=2, what="a (K,) or (B, K) array of class weights")
    if w.ndim == 0:
        raise InputError(f"weights must have one value per class, got {w.tolist()}")
    if np.any(w <= 0):
        raise InputError(f"weights must be > 0, got {w.tolist()}")
    return _family("weighted_ce", [("weights", _hashable(w))], per_class=("weights",))


def logit_adjusted(tau) -> Loss:
    """Logit-adjusted CE(u + τ log π, k) (Menon et al. 2021): τ finite (a float or (B,))."""
    return _family("logit_adjusted", [_scalar("tau", tau)])


def vs(gamma, tau) -> Loss:
    """The VS loss CE(Δ ⊙ u + τ log π, k), Δ_j = (n_j/n_max)^γ (Kini et al. 2021): γ, τ
    finite (floats or (B,)). Invariant along 1/Δ, not along 1 unless γ = 0."""
    return _family("vs", [_scalar("gamma", gamma), _scalar("tau", tau)],
                   shift_invariant=False)


def _mse_value(u, k, th=None):
    hot = jnp.asarray(k)[..., None] == jnp.arange(u.shape[-1])
    return 0.5 * jnp.sum((u - hot.astype(u.dtype)) ** 2, axis=-1)


def _mse_grad(u, k, th=None):
    return u - _one_hot(k, u.shape[-1], u.dtype)


def _mse_hess(U, w, th=None):
    return jnp.sum(w) * jnp.eye(U.shape[0], dtype=U.dtype)


def _mse_dual_value(v, k, th=None):
    """−ℓ*(v, k) = −½‖v‖² − v_k: ℓ*(v, k) = sup_u ⟨v, u⟩ − ½‖u − e_k‖² at u = e_k + v."""
    return -0.5 * jnp.sum(v**2) - v[k]


def _mse_balance(V, pi, th=None):
    """V' = V − r(V) 1ᵀ: every v_k moved by −r(V), so r(V') = r(V)(1 − Σ_k π_k) = 0 (the
    domain is all of R^K)."""
    return V - (V @ pi)[:, None]


def _mse_bregman(u, du, k, th=None):
    return 0.5 * jnp.sum(du**2)


def _mse_curvature(th=None):
    return 1.0


def _mse_bias_start(pi, th=None):
    return pi  # argmin_b Σ_k π_k ½‖b − e_k‖² (λ_b = 0)


@functools.cache
def mse() -> Loss:
    """Squared error ½‖u − e_k‖²: gradient u − e_k, Hessian I, −ℓ*(v, k) = −½‖v‖² − v_k.
    Not shift-invariant."""
    return Loss("mse", _mse_value, _mse_grad, _mse_hess, _mse_dual_value, _mse_balance,
                _mse_bregman, _mse_curvature, _mse_bias_start, False)


# name -> factory, for the names of ``names.LOSS_PARAMETERS`` (the one list that specs and
# the CLI read), each factory taking exactly its parameters (tests/test_layout.py)
LOSSES = {"ce": ce, "label_smoothing": label_smoothing, "weighted_ce": weighted_ce,
          "logit_adjusted": logit_adjusted, "vs": vs, "mse": mse}


def parameters(name: str) -> tuple:
    """The parameter names of the loss ``name`` (its factory's arguments)."""
    return LOSS_PARAMETERS[name]


def get(loss=None, **params) -> Loss:
    """A ``Loss`` from a loss, or from its name (``LOSSES``) and its parameters as keyword
    arguments (e.g. ``get("vs", gamma=0.5, tau=1.0)``); None is cross-entropy. Raises
    InputError on an unknown name, an unknown or missing parameter, or a bad value."""
    if loss is None and not params:
        return ce()
    if isinstance(loss, Loss):
        if params:
            raise InputError(f"parameters {sorted(params)} given with a Loss value "
                             f"({loss.name!r}): pass them to its factory")
        return loss
    if not (isinstance(loss, str) and loss in LOSSES):
        raise InputError(f"loss must be a ncjax.losses.Loss or one of {sorted(LOSSES)}, "
                         f"got {loss!r}")
    names = parameters(loss)
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise InputError(f"loss {loss!r} takes the parameters {list(names) or 'none'}, "
                         f"got {unknown}")
    missing = [n for n in names if n not in params]
    if missing:
        raise InputError(f"loss {loss!r} needs the parameter(s) {missing}")
    return LOSSES[loss](**params)


def batch_sizes(loss: Loss) -> dict:
    """name → B' for each parameter given per configuration ((B',) a scalar parameter,
    (B', K) a per-class one)."""
    out = {}
    for name, v in loss.params:
        a = np.asarray(v if v is not None else np.nan)
        if a.ndim == (2 if name in loss.per_class else 1):
            out[name] = a.shape[0]
    return out


def theta(loss: Loss, B: int, K: int) -> dict:
    """The loss's parameter values as the ``Problem`` leaf: name → (B,) or, per class,
    (B, K) float64 arrays. A parameter batched over B' ≠ B, or per class of a length other
    than K, is an InputError naming it."""
    out = {}
    for name, v in loss.params:
        if v is None:
            raise InputError(f"loss {loss.name!r} has no value for its parameter {name!r}")
        a = np.asarray(v, np.float64)
        shape = (B, K) if name in loss.per_class else (B,)
        if name in loss.per_class and a.shape[-1] != K:
            raise InputError(f"{name} must have one value per class (K = {K}), got "
                             f"{a.shape[-1]}")
        if a.ndim == len(shape) and a.shape[0] != B:
            raise InputError(f"{name} is batched over {a.shape[0]} configurations, the "
                             f"problem over {B}")
        out[name] = np.broadcast_to(a, shape)
    return out
