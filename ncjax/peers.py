"""The peers a researcher would write: ncjax's convex algorithm rewritten in numpy (and in
torch, when it is importable), batched over configurations, and the factored F for scipy.

The convex form (DESIGN.md §1, half convention, cross-entropy, a free or penalised bias;
π = n/N, λ = sqrt(λ_W λ_H)) in the variables Y' = Z diag(sqrt(π)) and b,

    P = f(Y', b) + μ ‖Y'‖_*,   f = Σ_k π_k CE(y'_k/sqrt(π_k) + b, k) + (λ_b/2)‖b‖²,
    μ = λ sqrt(N),

is solved exactly as ``ncjax.convex.step``/``round_`` do it, with their constants
(DECREASE, INCREASE, NEWTON_STEPS, CHECK_NEWTON_STEPS, GTOL imported, so the rule has one
copy) and the arithmetic written here in plain array code: accelerated proximal gradient
from (Y', b) = 0, step 1/L with L adapted (a step kept iff the Bregman term of f is at most
(L/2)‖x₊ − y‖², or L = L_MAX = ½; a kept step tries L·DECREASE next, a failed one
min(L·INCREASE, L_MAX)), gradient restart, NEWTON_STEPS damped Newton steps on the centred
bias per step (warm-started), and every ``check_every`` steps the certificate of
``ncjax.dual``: b refined by CHECK_NEWTON_STEPS Newton steps, P(Z, b) minus the dual
value of the feasible V that ``dual.from_bias`` builds (softmax(z_k + b) − e_k, balanced to
r(V) = 0 for a free bias, pulled toward 0 until ‖G(V)‖_op ≤ λ); a configuration stops when
gap ≤ gtol·|P|.

The proximal step is the singular-value thresholding SVT(A, τ) = U max(S − τ, 0) Vᵀ, by
one of

    "svd"   the batched SVD A = U S Vᵀ (LAPACK gesdd through ``linalg.svd``);
    "eigh"  the batched eigendecomposition of the Gram matrix AᵀA = V diag(w) Vᵀ,
            S = sqrt(max(w, 0)), SVT(A) = A V diag(max(1 − τ/S, 0)) Vᵀ (cheaper; S is
            accurate to about sqrt(eps)·σ_max, which only moves singular values near 0,
            thresholded away anyway).

The certificate's singular values (‖Y‖_* in P and σ_max(G(V))) are the SVD's in both
variants: sqrt of the Gram eigenvalues would put an error of ~sqrt(eps)·σ_max ≈ 1e-8·σ_max
on every small singular value of ‖Y‖_*, more than the 1e-9 certificate allows.

Batches run through a refilled pool (``solve``): ``pool`` slots, the state of the slots in
flight held compacted (arrays over the running configurations only, so finished ones cost
nothing); every round advances them ``check_every`` steps, and the configurations that
finished hand back their results and are replaced by the next ones of the queue. Every
operation acts on each configuration's own slice, so a configuration's result does not
depend on the pool size or the batch around it.

Shapes: counts (B, K), λ, λ_b (B,); a state's Y (S, K, K) over S slots, column k the
class-k logits; results Z (B, K, K), b (B, K), P, gap (B,), steps, status (B,) (the codes
of ``ncjax.stopping``).

``ufm_objective`` is the factored F(W, H, b) with m = 1 and its gradient in numpy, for
``scipy.optimize.minimize(method="L-BFGS-B")`` one configuration at a time
(``ufm_lbfgsb``).
"""

from __future__ import annotations

import importlib.util
from typing import Callable, NamedTuple

import numpy as np

from ncjax.convex import CHECK_NEWTON_STEPS, DECREASE, GTOL, INCREASE, NEWTON_STEPS
from ncjax.names import CONVERGED, DIVERGED, MAX_STEPS, RUNNING

L_MAX = 0.5  # cross-entropy's curvature bound (losses.ce: its Hessian is ≼ ½ I)
SVT = ("svd", "eigh")


class Ops(NamedTuple):
    """The array library a peer runs on: ``xp`` the namespace of the elementwise functions
    and reductions (numpy's names, ``axis``/``keepdims``, which torch accepts too), and the
    few functions whose names differ."""

    name: str
    xp: object
    asarray: Callable    # numpy array -> the library's float64 / int64 array
    numpy: Callable      # the library's array -> numpy
    clip: Callable       # clip(x, lo, hi), either bound None
    svdvals: Callable    # singular values, descending, (..., K, K) -> (..., K)


NUMPY = Ops("numpy", np, np.asarray, np.asarray, np.clip,
            lambda A: np.linalg.svd(A, compute_uv=False))


def torch_ops() -> Ops | None:
    """The torch CPU ``Ops`` (float64), or None when torch is not importable."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch  # optional: the peer exists only where torch is installed
    return Ops("torch", torch, lambda a: torch.as_tensor(np.asarray(a)),
               lambda a: a.numpy(), lambda x, lo, hi: torch.clamp(x, lo, hi),
               torch.linalg.svdvals)


def numba_available() -> bool:
    return importlib.util.find_spec("numba") is not None


class Data(NamedTuple):
    """The constants of S configurations: sqrt(π) (S, K), n_k (S, K), N, λ, λ_b, μ (S,)."""

    sqrt_pi: object
    counts: object
    N: object
    lam: object
    lam_b: object
    mu: object


class State(NamedTuple):
    """``ncjax.convex.State`` of S slots: Y, Y_prev (S, K, K); b (S, K); t, L, L_acc,
    value, gap (S,); step, status (S,) integers."""

    Y: object
    Y_prev: object
    b: object
    t: object
    L: object
    L_acc: object
    value: object
    gap: object
    step: object
    status: object


class Result(NamedTuple):
    """Per configuration, as ``ncjax.convex.ConvexResult`` (numpy): Z (B, K, K), b (B, K),
    P, gap (B,), steps, status (B,)."""

    Z: np.ndarray
    b: np.ndarray
    P: np.ndarray
    gap: np.ndarray
    steps: np.ndarray
    status: np.ndarray


def data(counts, lam, lam_b, ops: Ops = NUMPY) -> Data:
    """``Data`` from counts (S, K), λ, λ_b (S,) (half convention), float64."""
    n = np.asarray(counts, np.float64)
    N = n.sum(-1)
    lam = np.broadcast_to(np.asarray(lam, np.float64), N.shape)
    lam_b = np.broadcast_to(np.asarray(lam_b, np.float64), N.shape)
    a = ops.asarray
    return Data(a(np.sqrt(n / N[:, None])), a(n), a(N), a(np.array(lam)),
                a(np.array(lam_b)), a(lam * np.sqrt(N)))


def _take(tree, idx):
    return type(tree)(*(x[idx] for x in tree))


def _join(a, b, ops):
    return type(a)(*(ops.xp.concatenate([x, y]) for x, y in zip(a, b)))


def _softmax(U, ops):
    """softmax of each column (over axis −2)."""
    xp = ops.xp
    E = xp.exp(U - xp.amax(U, axis=-2, keepdims=True))
    return E / E.sum(axis=-2, keepdims=True)


def _eye(d: Data, ops):
    K = d.sqrt_pi.shape[-1]
    return ops.asarray(np.eye(K))


def refine_bias(Z, b, d: Data, steps: int, ops: Ops = NUMPY):
    """``dual.refine_bias`` for CE: ``steps`` damped Newton steps on
    g(b) = Σ_k π_k CE(z_k + b, k) + (λ_b/2)‖b‖², b kept centred (CE is shift invariant),
    the Hessian Σ_k π_k (diag p_k − p_k p_kᵀ) + λ_b I + 11ᵀ/K. Z (S, K, K), b (S, K)."""
    xp = ops.xp
    K = Z.shape[-1]
    pi = d.sqrt_pi**2
    eye = _eye(d, ops)
    b = b - b.mean(axis=-1, keepdims=True)
    for _ in range(steps):
        P = _softmax(Z + b[..., :, None], ops)
        grad = ((P - eye) @ pi[..., None])[..., 0] + d.lam_b[:, None] * b
        Pw = P * pi[:, None, :]
        H = eye * (P @ pi[..., None]) - Pw @ P.swapaxes(-1, -2)
        hess = H + d.lam_b[:, None, None] * eye + 1.0 / K
        step = xp.linalg.solve(hess, grad[..., None])[..., 0]
        step = xp.where(xp.isfinite(step).all(axis=-1, keepdims=True), step, 0.0)
        dec = ops.clip((grad * step).sum(axis=-1, keepdims=True), 0.0, None)
        b = b - step / (1 + xp.sqrt(dec))
        b = b - b.mean(axis=-1, keepdims=True)
    return b


def svt_svd(A, tau, ops: Ops = NUMPY):
    """U max(S − τ, 0) Vᵀ by the batched SVD; A (S, K, K), τ (S,)."""
    U, S, Vt = ops.xp.linalg.svd(A, full_matrices=False)
    return (U * ops.clip(S - tau[:, None], 0.0, None)[..., None, :]) @ Vt


def svt_eigh(A, tau, ops: Ops = NUMPY):
    """A V diag(max(1 − τ/S, 0)) Vᵀ from the batched eigh of AᵀA = V diag(S²) Vᵀ."""
    xp = ops.xp
    w, V = xp.linalg.eigh(A.swapaxes(-1, -2) @ A)
    S = xp.sqrt(ops.clip(w, 0.0, None))
    # S = 0 gives 1 − ∞ (clipped to 0), never 0/0: τ > 0
    with np.errstate(divide="ignore"):
        f = ops.clip(1 - tau[:, None] / S, 0.0, None)
    return (A @ (V * f[..., None, :])) @ V.swapaxes(-1, -2)


SVT_OF = {"svd": svt_svd, "eigh": svt_eigh}


def _bregman(p, D, ops):
    """CE's Bregman term of each column (``losses._ce_bregman``), stably:
    log(1 + Σ_j p_j (expm1(w_j) − w_j)), w = δ − ⟨p, δ⟩; p = softmax of the logits U and
    the steps δ = D, both (S, K, K) → (S, K)."""
    xp = ops.xp
    w = D - (p * D).sum(axis=-2, keepdims=True)
    return xp.log1p((p * (xp.expm1(w) - w)).sum(axis=-2))


def step(s: State, d: Data, svt, ops: Ops = NUMPY) -> State:
    """One step of ``ncjax.convex.step`` for every slot (its docstring states the rule)."""
    xp = ops.xp
    sq = d.sqrt_pi[:, None, :]
    pi = d.sqrt_pi**2
    L = s.L
    t_next = 0.5 * (1 + xp.sqrt(1 + 4 * (L / s.L_acc) * s.t**2))
    beta = (s.t - 1) / t_next
    Yy = s.Y + beta[:, None, None] * (s.Y - s.Y_prev)
    b = refine_bias(Yy / sq, s.b, d, NEWTON_STEPS, ops)
    p = _softmax(Yy / sq + b[..., :, None], ops)  # of the logits: for ∇f and the Bregman
    gY = (p - _eye(d, ops)) * sq
    Y = svt(Yy - gY / L[:, None, None], d.mu / L, ops)
    dY = Y - Yy
    breg = _bregman(p, dY / sq, ops)
    ok = ((pi * breg).sum(axis=-1) <= 0.5 * L * (dY**2).sum(axis=(-2, -1))) | (L >= L_MAX)
    restart = ((Yy - Y) * (Y - s.Y)).sum(axis=(-2, -1)) > 0
    ok3 = ok[:, None, None]
    return s._replace(
        Y=xp.where(ok3, Y, s.Y), Y_prev=xp.where(ok3, s.Y, s.Y_prev), b=b,
        t=xp.where(ok, xp.where(restart, 1.0, t_next), s.t),
        L=xp.where(ok, L * DECREASE, ops.clip(L * INCREASE, None, L_MAX)),
        L_acc=xp.where(ok, L, s.L_acc), step=s.step + 1)


def _entropy(Q, ops):
    """Ent(q_k) of each column, 0 log 0 = 0: (S, K, K) → (S, K)."""
    xp = ops.xp
    safe = xp.where(Q > 0, Q, 1.0)
    return -(xp.where(Q > 0, Q * xp.log(safe), 0.0)).sum(axis=-2)


def objective(Z, b, d: Data, ops: Ops = NUMPY):
    """P(Z, b) = Σ_k π_k CE(z_k + b, k) + λ ‖Z D^{1/2}‖_* + (λ_b/2)‖b‖² per slot: (S,)."""
    xp = ops.xp
    pi = d.sqrt_pi**2
    U = Z + b[..., :, None]
    m = xp.amax(U, axis=-2)
    lse = m + xp.log(xp.exp(U - m[..., None, :]).sum(axis=-2))
    ce = lse - xp.diagonal(U, 0, -2, -1)
    nuc = ops.svdvals(Z * d.counts[:, None, :] ** 0.5).sum(axis=-1)
    return (pi * ce).sum(axis=-1) + d.lam * nuc + 0.5 * d.lam_b * (b**2).sum(axis=-1)


def dual_value(Z, c, d: Data, ops: Ops = NUMPY):
    """D(V) at the feasible V of ``dual.from_bias(Z, c)`` (CE): V = softmax(z_k + c) − e_k;
    for λ_b = 0 every q_k = v_k + e_k mixed with one distribution w by the least weight s
    making Σ_k π_k q_k = π (``losses._ce_balance``); then V scaled by
    min(1, λ/σ_max(G(V))), σ_max inflated by 1 + 8 eps; D = Σ_k π_k Ent(q_k) −
    ‖r‖²/(2λ_b) (no r-term for λ_b = 0, where r = 0). (S,)."""
    xp = ops.xp
    pi = d.sqrt_pi**2
    eye = _eye(d, ops)
    Q = _softmax(Z + c[..., :, None], ops)
    qbar = (Q @ pi[..., None])[..., 0]
    s = ops.clip(1 - xp.amin(pi / qbar, axis=-1), 0.0, 1.0)
    s_safe = xp.where(s > 0, s, 1.0)
    w = xp.where((s > 0)[:, None],
                 ops.clip(pi - (1 - s)[:, None] * qbar, 0.0, None) / s_safe[:, None], pi)
    balanced = (1 - s)[:, None, None] * Q + s[:, None, None] * w[..., :, None]
    free = (d.lam_b > 0)[:, None, None]
    V = xp.where(free, Q, balanced) - eye
    G = V * (d.counts**0.5 / d.N[:, None])[:, None, :]
    smax = ops.svdvals(G)[..., 0] * (1 + 8 * np.finfo(np.float64).eps)
    scale = xp.where(smax > d.lam, d.lam / xp.where(smax > 0, smax, 1.0), 1.0)
    V = V * scale[:, None, None]
    value = (pi * _entropy(V + eye, ops)).sum(axis=-1)
    r = (V @ pi[..., None])[..., 0]
    pen = (r**2).sum(axis=-1) / (2 * xp.where(d.lam_b > 0, d.lam_b, 1.0))
    return value - xp.where(d.lam_b > 0, pen, 0.0)


def init(d: Data, ops: Ops = NUMPY) -> State:
    """``ncjax.convex.init`` for S slots: (Y', b) = 0, L = L_MAX·DECREASE, L_acc = L_MAX."""
    S, K = d.sqrt_pi.shape
    zero, one = np.zeros((S, K, K)), np.ones(S)
    a = ops.asarray
    return State(a(zero), a(zero), a(np.zeros((S, K))), a(one), a(one * L_MAX * DECREASE),
                 a(one * L_MAX), a(one * np.inf), a(one * np.inf),
                 a(np.zeros(S, np.int64)), a(np.full(S, RUNNING, np.int64)))


def round_(s: State, d: Data, svt, gtol: float, *, max_steps: int, check_every: int,
           ops: Ops = NUMPY) -> State:
    """``ncjax.convex.round_``: ``check_every`` steps, then b refined, P and the certificate
    at (Z, b) and the status (converged if gap ≤ gtol·|P|, max_steps, diverged on a
    non-finite value, when the state before the round is kept)."""
    xp = ops.xp
    new = s
    for _ in range(check_every):
        new = step(new, d, svt, ops)
    Z = new.Y / d.sqrt_pi[:, None, :]
    with np.errstate(all="ignore"):
        b = refine_bias(Z, new.b, d, CHECK_NEWTON_STEPS, ops)
        value = objective(Z, b, d, ops)
        g = value - dual_value(Z, b, d, ops)
    finite = xp.isfinite(value) & xp.isfinite(g)
    status = xp.where(~finite, DIVERGED,
                      xp.where(g <= gtol * xp.abs(value), CONVERGED,
                               xp.where(new.step >= max_steps, MAX_STEPS, RUNNING)))
    new = new._replace(b=b, value=value, gap=g)
    kept = State(*(xp.where(finite.reshape(finite.shape + (1,) * (a.ndim - 1)), a, o)
                   for a, o in zip(new, s)))
    return kept._replace(step=new.step, status=status)


def solve(counts, lam, lam_b=0.0, *, svt: str = "eigh", pool: int = 512,
          gtol: float = GTOL["float64"], max_steps: int = 20000, check_every: int = 10,
          ops: Ops = NUMPY) -> Result:
    """The convex form of B configurations through a refilled pool of ``pool`` slots
    (module docstring): counts (B, K), λ = sqrt(λ_W λ_H) and λ_b scalars or (B,) (half
    convention); svt "eigh" or "svd"; max_steps rounded up to a multiple of check_every as
    ``ncjax.convex.solve`` does. Returns a ``Result`` in float64."""
    fn = SVT_OF[svt]
    n = np.asarray(counts, np.float64)
    B, K = n.shape
    lam = np.broadcast_to(np.asarray(lam, np.float64), (B,))
    lam_b = np.broadcast_to(np.asarray(lam_b, np.float64), (B,))
    out = Result(np.zeros((B, K, K)), np.zeros((B, K)), np.zeros(B), np.zeros(B),
                 np.zeros(B, np.int64), np.zeros(B, np.int64))

    def start(rows):
        dd = data(n[rows], lam[rows], lam_b[rows], ops)
        return dd, init(dd, ops)

    idx = np.arange(min(pool, B))       # slot -> configuration, compacted
    d, s = start(idx)
    nxt = idx.size
    while idx.size:
        s = round_(s, d, fn, gtol, max_steps=max_steps, check_every=check_every, ops=ops)
        done = ops.numpy(s.status) >= 0
        if done.any():
            rows = idx[done]
            fin = _take(s, ops.asarray(np.flatnonzero(done)))
            sq = ops.numpy(d.sqrt_pi)[done]
            out.Z[rows] = ops.numpy(fin.Y) / sq[:, None, :]
            out.b[rows] = ops.numpy(fin.b)
            out.P[rows], out.gap[rows] = ops.numpy(fin.value), ops.numpy(fin.gap)
            out.steps[rows], out.status[rows] = ops.numpy(fin.step), ops.numpy(fin.status)
            keep = ops.asarray(np.flatnonzero(~done))
            s, d, idx = _take(s, keep), _take(d, keep), idx[~done]
            fresh = np.arange(nxt, min(nxt + int(done.sum()), B))
            if fresh.size:
                d_new, s_new = start(fresh)
                s, d = _join(s, s_new, ops), _join(d, d_new, ops)
                idx = np.concatenate([idx, fresh])
                nxt += fresh.size
    return out


# --- the factored F for scipy ------------------------------------------------------------

def ufm_objective(x, counts, lam_W, lam_H, lam_b=0.0):
    """(F, ∇F) of the UFM with m = 1, d = K, flattened x = (W (K, d), H (K, d), b (K,)):

        F = Σ_k π_k CE(W h_k + b, k) + (λ_W/2)‖W‖² + (λ_H/2) Σ_k n_k ‖h_k‖² + (λ_b/2)‖b‖²,

    (``ncjax.model.ufm_objective``, half convention), ∇_W = Σ_k π_k g_k h_kᵀ + λ_W W,
    ∇_{h_k} = π_k Wᵀ g_k + λ_H n_k h_k, ∇_b = Σ_k π_k g_k + λ_b b, g_k = softmax(u_k) − e_k."""
    n = np.asarray(counts, np.float64)
    K = n.size
    pi = n / n.sum()
    W, H, b = x[:K * K].reshape(K, K), x[K * K:2 * K * K].reshape(K, K), x[2 * K * K:]
    U = H @ W.T + b               # row k: the logits of class k
    m = U.max(axis=1, keepdims=True)
    E = np.exp(U - m)
    Z = E.sum(axis=1, keepdims=True)
    ce = (m + np.log(Z))[:, 0] - np.diagonal(U)
    Gk = E / Z - np.eye(K)        # row k: g_k
    F = (pi @ ce + 0.5 * lam_W * np.sum(W**2) + 0.5 * lam_H * (n @ np.sum(H**2, axis=1))
         + 0.5 * lam_b * b @ b)
    Gw = Gk * pi[:, None]
    gW = Gw.T @ H + lam_W * W
    gH = Gw @ W + lam_H * n[:, None] * H
    gb = Gw.sum(axis=0) + lam_b * b
    return F, np.concatenate([gW.ravel(), gH.ravel(), gb])


def ufm_start(counts, lam_W, lam_H, seed: int):
    """A random start with unit-scale logits and balanced blocks: W = a G₁ K^{-1/4},
    H = G₂ K^{-1/4}/a, a = (λ_H/λ_W)^{1/4}, b = 0 (G standard normal)."""
    K = len(counts)
    rng = np.random.default_rng(seed)
    a = (lam_H / lam_W) ** 0.25
    W = a * rng.standard_normal((K, K)) * K**-0.25
    H = rng.standard_normal((K, K)) * K**-0.25 / a
    return np.concatenate([W.ravel(), H.ravel(), np.zeros(K)])


def ufm_lbfgsb(counts, lam_W, lam_H, lam_b=0.0, *, seed: int = 0, maxiter: int = 20000,
               gtol: float = 1e-10, ftol: float = 1e-15):
    """scipy's L-BFGS-B on ``ufm_objective`` from ``ufm_start``: (W, H (K, 1, K), b, its
    iterations). scipy is a test/bench dependency, imported here."""
    from scipy.optimize import minimize

    K = len(counts)
    r = minimize(ufm_objective, ufm_start(counts, lam_W, lam_H, seed), jac=True,
                 args=(counts, lam_W, lam_H, lam_b), method="L-BFGS-B",
                 options=dict(maxiter=maxiter, gtol=gtol, ftol=ftol, maxcor=10))
    x = r.x
    W, H = x[:K * K].reshape(K, K), x[K * K:2 * K * K].reshape(K, 1, K)
    return W, H, x[2 * K * K:], int(r.nit)
