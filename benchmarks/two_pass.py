"""An Adam step of the UFM in two Pallas kernels (an experiment of ``step_probe.py``).

The bytes model of an Adam step reads and writes x = (V, U, b) and both moments once:
6 passes over the features U (K, m, d). XLA's step makes about 15 (the logits, ∇_V and
∇_U each a product over U, ∇_U materialised, the update, the selects). Here, per
configuration, in natural coordinates (``solver.natural_objective``; w_k = n_k/m,
s_k = w_k^{-1/2}, λ = sqrt(λ_W λ_H)), with the rows u of U (K m rows of d):

* kernel A (reads U once): per block of rows, z = s_k V u + b, R_z = (w_k/N)(softmax(z)
  − e_k), r = s_k R_z, ∇_u = Vᵀ r + λu; accumulates ∇_V = Σ r uᵀ, ∇_b = Σ R_z, Σ ‖∇_u‖²,
  Σ (w_k/N) CE(z, k) and Σ ‖u‖²; so F and ‖∇F‖ at x come out exactly, before any update;
* the stopping decision and the small updates of V and b (XLA);
* kernel B (reads U and both moments, writes them once; skipped for a stopped
  configuration): recomputes ∇_u from u as in kernel A and applies optax.adam's update.

7 passes over U: at most 6/7 of the copy if bandwidth-bound. The classes are padded to
KP = 16 (Triton's smallest product), the padded logits masked. The iterates are
optax.adam's on F (checked in float64 in interpret mode against the probe's ``bare``).
``ncjax.fused`` (the solver's loop with each step in one kernel, 6 passes) shares the
per-row terms.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from ncjax import fused

KP, _dot, _row_terms = fused.KP, fused._dot, fused.row_terms
_pad, _blocks = fused.pad_classes, fused.blocks


def _kernel_a(U, Vp, cb, nk, lamv, S_o, gV_o, gb_o, *, K, m, Rb, per, precision):
    """Program (b, j): blocks j·per … j·per + per − 1 of configuration b; its partial sums
    go to S_o[b, j], gV_o[b, j], gb_o[b, j] (summed over j by ``evaluate``)."""
    b, j = pl.program_id(0), pl.program_id(1)
    Vb, cbb, nkb = Vp[b], cb[b], nk[b]
    N = jnp.sum(nkb)
    lam = lamv[b]
    d = Vb.shape[1]

    def body(i, acc):
        ce, u2, g2, gV, gb = acc
        first = (j * per + i) * Rb
        u = U[b, pl.ds(first, Rb), :]
        Rz, r, g, ce_rows = _row_terms(u, Vb, cbb, nkb, first, K=K, m=m, N=N, lam=lam,
                                       precision=precision)
        return (ce + jnp.sum(ce_rows), u2 + jnp.sum(u * u), g2 + jnp.sum(g * g),
                gV + _dot(r, u, (0, 0), precision), gb + jnp.sum(Rz, axis=0))

    z = jnp.zeros((), U.dtype)
    ce, u2, g2, gV, gb = jax.lax.fori_loop(
        0, per, body, (z, z, z, jnp.zeros((KP, d), U.dtype), jnp.zeros((KP,), U.dtype)))
    S_o[b, j, 0] = ce
    S_o[b, j, 1] = u2
    S_o[b, j, 2] = g2
    S_o[b, j, 3] = z
    gV_o[b, j] = gV
    gb_o[b, j] = gb


def _kernel_b(U, mU, vU, Vp, cb, nk, P, U_o, mU_o, vU_o, *, K, m, Rb, per, precision,
              b1=0.9, b2=0.999, eps=1e-8):
    """Program (b, j): optax.adam's update of blocks j·per … j·per + per − 1 of
    configuration b, if it runs."""
    b, j = pl.program_id(0), pl.program_id(1)
    lr, c1, c2, lam, run = P[b, 0], P[b, 1], P[b, 2], P[b, 3], P[b, 4]

    @pl.when(run > 0)
    def _():
        nkb = nk[b]
        Vb, cbb, N = Vp[b], cb[b], jnp.sum(nkb)

        def body(i, carry):
            first = (j * per + i) * Rb
            rows = pl.ds(first, Rb)
            u, mo, ve = U[b, rows, :], mU[b, rows, :], vU[b, rows, :]
            _, _, g, _ = _row_terms(u, Vb, cbb, nkb, first, K=K, m=m, N=N, lam=lam,
                                    precision=precision)
            mo = b1 * mo + (1 - b1) * g
            ve = b2 * ve + (1 - b2) * g * g
            U_o[b, rows, :] = u - lr * (mo / c1) / (jnp.sqrt(ve / c2) + eps)
            mU_o[b, rows, :] = mo
            vU_o[b, rows, :] = ve
            return carry

        jax.lax.fori_loop(0, per, body, 0)


def evaluate(U, V, cb, n_k, lam, *, interpret=False, num_warps=4, precision="ieee",
             rows=None, per=None, num_stages=2):
    """Kernel A on a batch: U (B, K m, d), V (B, K, d), cb (B, K), n_k (B, K), λ (B,).
    Returns (Σ weighted CE, ‖U‖², ‖∇_U F‖²) (B, 3) and the data parts of ∇_V F (B, K, d)
    and ∇_b F (B, K) (without λV, λ_b b). ``rows``: rows of U per block (default
    ``fused.rows_per_block``); ``per``: blocks per program (default all: one program per
    configuration; fewer spread a configuration over K m/(rows·per) programs whose partial
    sums are added here, in a fixed order); num_warps, num_stages: Triton's."""
    B, KM, d = U.shape
    K = V.shape[1]
    m = KM // K
    Rb, per, n = _blocks(K, m, rows, per)
    dt = U.dtype
    S, gV, gb = pl.pallas_call(
        functools.partial(_kernel_a, K=K, m=m, Rb=Rb, per=per, precision=precision),
        out_shape=(jax.ShapeDtypeStruct((B, n, 4), dt),
                   jax.ShapeDtypeStruct((B, n, KP, d), dt),
                   jax.ShapeDtypeStruct((B, n, KP), dt)),
        grid=(B, n), interpret=interpret,
        compiler_params=None if interpret else plgpu.CompilerParams(num_warps=num_warps,
                                                                     num_stages=num_stages),
    )(U, _pad(V, 1), _pad(cb, 1), _pad(n_k, 1), lam)
    return jnp.sum(S, axis=1)[:, :3], jnp.sum(gV, axis=1)[:, :K], jnp.sum(gb, axis=1)[:, :K]


def update(U, mU, vU, V, cb, n_k, P, *, interpret=False, num_warps=4, precision="ieee",
           rows=None, per=1, num_stages=1):
    """Kernel B on a batch: optax.adam's update of U, mU, vU (B, K m, d), in place, where
    P (B, 5) = (learning rate, 1 − β₁ᵗ, 1 − β₂ᵗ, λ, running ∈ {0, 1}); ``rows``,
    ``per`` (default 1 block a program), num_warps, num_stages as ``evaluate``."""
    B, KM, d = U.shape
    K = V.shape[1]
    m = KM // K
    Rb, per, n = _blocks(K, m, rows, per)
    shape = jax.ShapeDtypeStruct(U.shape, U.dtype)
    return pl.pallas_call(
        functools.partial(_kernel_b, K=K, m=m, Rb=Rb, per=per, precision=precision),
        out_shape=(shape, shape, shape), grid=(B, n), interpret=interpret,
        input_output_aliases={0: 0, 1: 1, 2: 2},
        compiler_params=None if interpret else plgpu.CompilerParams(num_warps=num_warps,
                                                                     num_stages=num_stages),
    )(U, mU, vU, _pad(V, 1), _pad(cb, 1), _pad(n_k, 1), P)


def step(c, n_k, lam_W, lam_H, lam_b, lr, gtol_abs, *, interpret=False, num_warps=4,
         precision="ieee", a=None, b=None, b1=0.9, b2=0.999, eps=1e-8):
    """One step of a batch, the carry c = (V, U, b, mV, mU, mb, vV, vU, vb, t, F, g2, run):
    F and ‖∇F‖² at x (kernel A and the small terms), the stopping decision (‖∇F‖ ≤
    gtol_abs; F, ‖∇F‖ finite), then optax.adam's step of the running configurations
    (kernel B for U; V, b here). U is (B, K m, d); t (B,) int32 counts the updates.
    ``a``, ``b``: keywords of kernel A's and B's call (rows, per, num_warps, num_stages)."""
    ka = {"num_warps": num_warps} | (a or {})
    kb = {"num_warps": num_warps} | (b or {})
    V, U, cb, mV, mU, mb, vV, vU, vb, t, _, _, run = c
    lam = jnp.sqrt(lam_W * lam_H)
    S, gVd, gbd = evaluate(U, V, cb, n_k, lam, interpret=interpret, precision=precision,
                           **ka)
    gV = gVd + lam[:, None, None] * V
    gb = gbd + lam_b[:, None] * cb
    F = S[:, 0] + 0.5 * lam * (jnp.sum(V ** 2, axis=(1, 2)) + S[:, 1]) \
        + 0.5 * lam_b * jnp.sum(cb ** 2, axis=1)
    g2 = S[:, 2] + jnp.sum(gV ** 2, axis=(1, 2)) + jnp.sum(gb ** 2, axis=1)
    run = run & jnp.isfinite(F) & jnp.isfinite(g2) & (g2 > gtol_abs ** 2)
    t1 = t + run.astype(t.dtype)
    tf = t1.astype(U.dtype)
    c1, c2 = 1 - b1 ** tf, 1 - b2 ** tf
    P = jnp.stack([lr, c1, c2, lam, run.astype(U.dtype)], axis=1)
    U, mU, vU = update(U, mU, vU, V, cb, n_k, P, interpret=interpret, precision=precision,
                       **kb)
    sel = lambda new, old: jnp.where(run.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)

    def small(x, g, mo, ve):
        bc = lambda a: a.reshape((-1,) + (1,) * (x.ndim - 1))
        mo1 = b1 * mo + (1 - b1) * g
        ve1 = b2 * ve + (1 - b2) * g * g
        x1 = x - bc(lr) * (mo1 / bc(c1)) / (jnp.sqrt(ve1 / bc(c2)) + eps)
        return sel(x1, x), sel(mo1, mo), sel(ve1, ve)

    V1, mV, vV = small(V, gV, mV, vV)
    cb1, mb, vb = small(cb, gb, mb, vb)
    return (V1, U, cb1, mV, mU, mb, vV, vU, vb, t1, F, g2, run)
