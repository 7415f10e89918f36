"""The solver's Adam loop as one Pallas kernel a step (GPU; ``interpret=True`` anywhere).

The vmapped ``lax.while_loop`` of ``solver._solve_one`` moves every array of the state
several times a step: the gradient is materialised, the freeze-select of the batched loop
and the keep-if-finite select read and write x and both moments again. Here one program
per configuration does the whole step in two passes over its features:

  pass A (read U once): for each block of R rows u_i of class k (R divides m), the
    logits ℓ_i = V u_i/sqrt(w_k) + b, r_i = softmax(ℓ_i) − e_k, and accumulates
      F   = Σ (w_k/N) CE(ℓ_i, k) + (λ/2)(‖V‖² + ‖U‖²) + (λ_b/2)‖b‖²,
      ∇_V = Σ (sqrt(w_k)/N) r_i u_iᵀ + λV,    ∇_b = Σ (w_k/N) r_i + λ_b b,
      ‖∇_U‖² with ∇_{u_i} = (sqrt(w_k)/N) Vᵀ r_i + λ u_i,
    (natural coordinates, ``solver`` module docstring; w_k = n_k/m, λ = sqrt(λ_W λ_H));
    then the stopping rule of ``solver._loop`` on (F, ‖∇‖) at this iterate;
  pass B (only if still running; read U and both moments, write them once): recomputes
    ∇_{u_i} block by block and applies optax.adam's update (b1 = 0.9, b2 = 0.999,
    eps = 1e-8, bias-corrected with the step count), then the same update of V and b.

So a step reads U twice and reads and writes both moments once: 7 passes over the
features against the bytes model's 6 (``bench.adam_bytes``). The iterates are those of
optax.adam on the same F from the same start (tests/test_fused.py checks it against
``solver._solve_one``). One difference: where an update would make a block non-finite it
is not applied to that block and the configuration ends "diverged" (the XLA loop keeps
the whole previous iterate instead).

Applies to K ≤ MAX_K classes (the class loop is unrolled) and d a power of two (Triton's
block shapes); ``solver`` uses it for optimizer "adam" on a GPU when ``applies``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu  # the Triton backend's parameters

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8  # optax.adam's defaults
MAX_K = 32
MAX_ROWS = 64
RUNNING, CONVERGED, MAX_STEPS, DIVERGED = -1, 0, 1, 2  # solver's status codes


def applies(K: int, d: int, m: int, platform: str) -> bool:
    """Whether the fused kernel serves this shape on this platform."""
    return platform == "gpu" and K <= MAX_K and d >= 16 and d & (d - 1) == 0


def rows_per_block(m: int) -> int:
    """R: the largest power of two ≤ MAX_ROWS dividing m (blocks never straddle classes)."""
    return math.gcd(m, MAX_ROWS)


def _kernel(U, mU, vU, V, mV, vV, c, mc, vc, nk, P, I, F,
            U_o, mU_o, vU_o, V_o, mV_o, vV_o, c_o, mc_o, vc_o, I_o, F_o, *, K, m, R, window):
    """One Adam step of configuration b = program_id(0); module docstring. Refs: U, mU, vU
    (B, K m, d); V, mV, vV (B, K, d); c, mc, vc (B, K) (the bias b); nk (B, K); P (B, 8):
    λ, λ_b, learning rate, gtol, ftol; I (B, 4) int32: steps, status, max_steps; F (B, 4):
    F, ‖∇‖, F at the last window, gtol·‖∇₀‖. Outputs alias the inputs."""
    b = pl.program_id(0)
    t, status, max_steps = I[b, 0], I[b, 1], I[b, 2]

    @pl.when(status < 0)
    def _():
        dt = F.dtype
        lam, lam_b, lr, gtol, ftol = (P[b, i] for i in range(5))
        N = functools.reduce(lambda a, j: a + nk[b, j], range(1, K), nk[b, 0])
        Vj = [V[b, j, :] for j in range(K)]
        cj = [c[b, j] for j in range(K)]
        per_class = m // R
        nblk = K * per_class

        def forward(u, k):
            """(w_k, r (K × (R,)), CE (R,)) of the rows u (R, d) of class k."""
            w = nk[b, k] / m
            s = 1.0 / jnp.sqrt(w)
            z = [jnp.sum(u * Vj[j][None, :], axis=1) * s + cj[j] for j in range(K)]
            mx = functools.reduce(jnp.maximum, z)
            e = [jnp.exp(zj - mx) for zj in z]
            se = functools.reduce(jnp.add, e)
            lse = mx + jnp.log(se)
            zk = functools.reduce(jnp.add, [jnp.where(k == j, z[j], 0.0) for j in range(K)])
            r = [jnp.where(k == j, e[j] / se - 1.0, e[j] / se) for j in range(K)]
            return w, r, lse - zk

        def grad_u(u, w, r):
            gs = jnp.sqrt(w) / N
            return lam * u + gs * functools.reduce(
                jnp.add, [r[j][:, None] * Vj[j][None, :] for j in range(K)])

        def pass_a(blk, acc):
            loss, u2, g2, gV, gb = acc
            k = blk // per_class
            u = U[b, pl.ds(blk * R, R), :]
            w, r, ce = forward(u, k)
            g = grad_u(u, w, r)
            gs = jnp.sqrt(w) / N
            return (loss + (w / N) * jnp.sum(ce), u2 + jnp.sum(u * u), g2 + jnp.sum(g * g),
                    [gV[j] + gs * jnp.sum(r[j][:, None] * u, axis=0) for j in range(K)],
                    [gb[j] + (w / N) * jnp.sum(r[j]) for j in range(K)])

        zero = jnp.zeros((), dt)
        loss, u2, g2, gV, gb = jax.lax.fori_loop(
            0, nblk, pass_a, (zero, zero, zero, [jnp.zeros_like(v) for v in Vj],
                              [zero] * K))
        gV = [gV[j] + lam * Vj[j] for j in range(K)]
        gb = [gb[j] + lam_b * cj[j] for j in range(K)]
        v2 = functools.reduce(jnp.add, [jnp.sum(v * v) for v in Vj])
        c2 = functools.reduce(jnp.add, [x * x for x in cj])
        value = loss + 0.5 * lam * (v2 + u2) + 0.5 * lam_b * c2
        gnorm = jnp.sqrt(g2 + functools.reduce(jnp.add, [jnp.sum(g * g) for g in gV])
                         + functools.reduce(jnp.add, [g * g for g in gb]))

        # the stopping rule of solver._loop, on this iterate (no test at the start)
        first = t == 0
        gtol_abs = jnp.where(first, gtol * gnorm, F[b, 3])
        value_ref = F[b, 2]
        finite = jnp.isfinite(value) & jnp.isfinite(gnorm)
        checkpoint = (t % window == 0) & ~first
        flat = checkpoint & (ftol > 0) & (
            jnp.abs(value_ref - value) <= ftol * jnp.maximum(jnp.abs(value), 1.0))
        code = lambda v: jnp.full((), v, jnp.int32)
        new = jnp.where(first, code(RUNNING), jnp.where(
            ~finite, code(DIVERGED), jnp.where(
                (gnorm <= gtol_abs) | flat, code(CONVERGED),
                jnp.where(t >= max_steps, code(MAX_STEPS), code(RUNNING)))))
        F_o[b, 0] = value
        F_o[b, 1] = gnorm
        F_o[b, 2] = jnp.where(first | checkpoint, value, value_ref)
        F_o[b, 3] = gtol_abs
        I_o[b, 1] = new

        @pl.when(new < 0)
        def _():
            t1 = (t + 1).astype(dt)
            bc1 = 1.0 - jnp.exp(t1 * math.log(BETA1))
            bc2 = 1.0 - jnp.exp(t1 * math.log(BETA2))

            def adam(x, g, mo, ve):
                mo = BETA1 * mo + (1.0 - BETA1) * g
                ve = BETA2 * ve + (1.0 - BETA2) * g * g
                return x - lr * (mo / bc1) / (jnp.sqrt(ve / bc2) + EPS), mo, ve

            def finite_all(*xs):  # Σ (x − x) is 0 if every x is finite, else NaN
                return functools.reduce(jnp.add, [jnp.sum(x - x) for x in xs]) == 0

            def pass_b(blk, refused):
                k = blk // per_class
                rows = pl.ds(blk * R, R)
                u, mo, ve = U[b, rows, :], mU[b, rows, :], vU[b, rows, :]
                w, r, _ = forward(u, k)
                u1, mo1, ve1 = adam(u, grad_u(u, w, r), mo, ve)
                ok = finite_all(u1, mo1, ve1)
                U_o[b, rows, :] = jnp.where(ok, u1, u)
                mU_o[b, rows, :] = jnp.where(ok, mo1, mo)
                vU_o[b, rows, :] = jnp.where(ok, ve1, ve)
                return refused | ~ok

            refused = jax.lax.fori_loop(0, nblk, pass_b, jnp.zeros((), jnp.bool_))
            for j in range(K):
                v1, mo1, ve1 = adam(Vj[j], gV[j], mV[b, j, :], vV[b, j, :])
                c1, mc1, vc1 = adam(cj[j], gb[j], mc[b, j], vc[b, j])
                ok = finite_all(v1, mo1, ve1, c1, mc1, vc1)
                refused = refused | ~ok
                V_o[b, j, :] = jnp.where(ok, v1, Vj[j])
                mV_o[b, j, :] = jnp.where(ok, mo1, mV[b, j, :])
                vV_o[b, j, :] = jnp.where(ok, ve1, vV[b, j, :])
                c_o[b, j] = jnp.where(ok, c1, cj[j])
                mc_o[b, j] = jnp.where(ok, mc1, mc[b, j])
                vc_o[b, j] = jnp.where(ok, vc1, vc[b, j])
            I_o[b, 0] = t + 1
            I_o[b, 1] = jnp.where(refused, code(DIVERGED), code(RUNNING))


def adam_loop(V, U, c, n_k, lam, lam_b, learning_rate, gtol, ftol, max_steps, *, window,
              interpret=False):
    """Adam from (V (B, K, d), U (B, K, m, d), c (B, K)) until every configuration has
    stopped (``solver._loop``'s rule); the per-configuration arrays n_k (B, K), λ, λ_b,
    learning_rate, gtol, ftol (B,), max_steps a scalar. Returns ((V, U, c), F, ‖∇‖, steps,
    status) like ``jax.vmap(solver._solve_one)``."""
    B, K, m, d = U.shape
    dt = U.dtype
    zeros = jnp.zeros_like
    Uf = U.reshape(B, K * m, d)
    P = jnp.stack([lam, lam_b, learning_rate, gtol, ftol] + [jnp.zeros_like(lam)] * 3,
                  axis=1).astype(dt)
    I = jnp.stack([jnp.zeros(B, jnp.int32), jnp.full(B, RUNNING, jnp.int32),
                   jnp.broadcast_to(jnp.asarray(max_steps, jnp.int32), (B,)),
                   jnp.zeros(B, jnp.int32)], axis=1)
    F = jnp.zeros((B, 4), dt)
    state = (Uf, zeros(Uf), zeros(Uf), V, zeros(V), zeros(V), c, zeros(c), zeros(c), I, F)
    step = pl.pallas_call(
        functools.partial(_kernel, K=K, m=m, R=rows_per_block(m), window=window),
        out_shape=tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in state),
        grid=(B,), interpret=interpret,
        compiler_params=None if interpret else plgpu.CompilerParams(num_warps=4, num_stages=1),
        input_output_aliases={**{i: i for i in range(9)}, 11: 9, 12: 10})
    nk = n_k.astype(dt)
    state = jax.lax.while_loop(lambda s: jnp.any(s[9][:, 1] < 0),
                               lambda s: step(*s[:9], nk, P, s[9], s[10]), state)
    Uf, _, _, V, _, _, c, _, _, I, F = state
    return (V, Uf.reshape(B, K, m, d), c), F[:, 0], F[:, 1], I[:, 0], I[:, 1]
