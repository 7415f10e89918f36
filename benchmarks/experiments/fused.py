"""The solver's Adam loop with each step in one Pallas kernel (GPUs; interpret mode on CPUs).

The bytes model of an Adam step (``benchmarks.measure``) reads and writes the features U
and both moments once: 6 passes over U (B, K m, d). XLA's step of ``ncjax.loop.batched``
makes about 15 (the logits, ∇_V and ∇_U each a product over U, ∇_U kept between steps, the update, the
selects). This step makes the 6, in one kernel per step, and is the same iteration as
``ncjax.loop.iteration`` with optimizer "adam": from x_t, where F(x_t), ∇_V F, ∇_b F are known,

* V, b: optax.adam's update from their gradients at x_t (XLA; (B, K, d) and smaller);
* kernel, per block of rows u of U (natural coordinates, ``ncjax.natural.objective``;
  w_k = n_k/m, s_k = w_k^{-1/2}, λ = sqrt(λ_W λ_H)):
  ∇_u F(x_t) = Vᵀ r + λu recomputed from u_t and (V_t, b_t), where z = s_k V u + b,
  R_z = (w_k/N)(softmax(z) − e_k), r = s_k R_z; optax.adam's update of u and its moments;
  then, at the new point (u_{t+1}, V_{t+1}, b_{t+1}) still in registers, the same terms
  again, summed over the block: Σ (w_k/N) CE(z, k), ‖u‖², ‖∇_u F‖², ∇_V F = Σ r uᵀ (data
  part), ∇_b F = Σ R_z (data part);
* F(x_{t+1}), ‖∇F(x_{t+1})‖ from those sums (added in a fixed order), then
  the stopping rule (``ncjax.stopping.status``) and the freeze of ``ncjax.loop.FREEZE`` (a
  stopped configuration's kernel programs do nothing).

It solves the cross-entropy problem with a bias (``Problem``'s defaults) only. A diverged
step keeps the last finite iterate, as ``ncjax.loop`` does, without a select
over U: U lives in two buffers (B, 2, K m, d), a configuration's step reads one and writes
the other, and its parity flips only when the new point is finite. The moments are updated
in place (a diverged configuration never reads them again). The classes are padded to
KP = 16 (Triton's smallest product), the padded logits masked.

The kernel is written for Pallas's Triton backend, which jax 0.11 marks deprecated (still
present in 0.12; Mosaic GPU is its successor): on those versions lowering it warns.
Moved here from the package (``ncjax/fused.py`` until issue 18); its H200 figures are in
benchmarks/RESULTS.md. ``solve`` is ``ncjax.loop.solve`` with this step.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from ncjax import loop, stopping
from ncjax.natural import Natural
from ncjax.problem import Problem
from ncjax.validate import InputError

KP = 16
# the products' precision: float32 arithmetic (Triton's "ieee"), or three TF32 products on
# the tensor cores (about float32's accuracy)
PRECISIONS = {"ieee": jax.lax.Precision.HIGHEST,
              "tf32x3": jax.lax.DotAlgorithmPreset.TF32_TF32_F32_X3}
B1, B2, EPS = 0.9, 0.999, 1e-8  # optax.adam's defaults, as the solver uses it

# launches (``Settings``: rows a block, blocks a program, num_warps, num_stages, precision)
# the GPU benchmark compares for the reference shape (K m = 320 rows: 16, 32 or 64 a
# block); the fastest is then run against B. A program writes a (16, d) partial ∇_V: at 16
# rows a program those partials are as large as U (two passes more than the model), at 64
# a quarter, at 320 (one program a configuration) a twentieth, but each configuration's
# rows are then one program's loop.
LAUNCHES = tuple(
    (rows, per, warps, stages, precision)
    for precision in ("ieee", "tf32x3")
    # warps in proportion to the rows: 16 floats of each (rows, d = 64) block a thread
    for rows, per, warps, stages in ((16, 1, 2, 1), (64, 1, 8, 1), (16, 4, 2, 2),
                                     (32, 2, 4, 2), (16, 20, 2, 2), (32, 10, 4, 2),
                                     (64, 5, 8, 2)))


def _dot(a, b, contract, precision):
    """a·b contracting axis ``contract`` = (of a, of b), 2-D, as Triton's dot."""
    return jax.lax.dot_general(a, b, ((contract[:1], contract[1:]), ((), ())),
                               precision=PRECISIONS[precision])


def rows_per_block(K: int, m: int) -> int:
    """Rows of U per block: the largest power of two ≤ 64 dividing K m (≥ 16 on a GPU)."""
    r = 64
    while (K * m) % r:
        r //= 2
    return r


def blocks(K: int, m: int, rows: int | None, per: int | None):
    """(rows per block, blocks per program, programs per configuration) for K m rows;
    ``rows`` None: ``rows_per_block``; ``per`` None: every block in one program."""
    Rb = rows or rows_per_block(K, m)
    nblk = K * m // Rb
    per = nblk if per is None else per
    if (K * m) % Rb or nblk % per:
        raise ValueError(f"{rows} rows a block and {per} blocks a program do not tile "
                         f"K m = {K * m} rows")
    return Rb, per, nblk // per


def pad_classes(a, axis):
    """``a`` zero-padded to KP along ``axis``."""
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, KP - a.shape[axis])
    return jnp.pad(a, pad)


def row_terms(u, Vp, cb, nk, first_row, *, K, m, N, lam, precision):
    """Per-row quantities of a block u (R, d) of one configuration whose first row is
    ``first_row`` (row i of U is feature i mod m of class i // m): R_z (R, KP), r (R, KP),
    ∇_u F (R, d) and the weighted CE (R,), as the module docstring; Vp (KP, d), cb (KP,),
    nk (KP,) padded with zeros, N = Σ n_k, λ = sqrt(λ_W λ_H)."""
    R = u.shape[0]
    rows = first_row + jax.lax.broadcasted_iota(jnp.int32, (R, KP), 0)
    cls = jax.lax.broadcasted_iota(jnp.int32, (R, KP), 1)
    hot = cls == rows // m
    valid = cls < K
    w_row = jnp.sum(jnp.where(hot, nk[None, :], 0.0), axis=1, keepdims=True) / m  # (R, 1)
    s_row = jax.lax.rsqrt(w_row)
    z = s_row * _dot(u, Vp, (1, 1), precision) + cb[None, :]
    z = jnp.where(valid, z, -jnp.inf)
    zmax = jnp.max(z, axis=1, keepdims=True)
    e = jnp.where(valid, jnp.exp(z - zmax), 0.0)
    se = jnp.sum(e, axis=1, keepdims=True)
    lse = zmax + jnp.log(se)
    coef = w_row / N
    Rz = coef * (e / se - jnp.where(hot, 1.0, 0.0))
    r = s_row * Rz
    g = _dot(r, Vp, (1, 0), precision) + lam * u
    ce = coef[:, 0] * (lse[:, 0] - jnp.sum(jnp.where(hot, z, 0.0), axis=1))
    return Rz, r, g, ce


def _kernel(U2, mU, vU, V0, c0, V1, c1, nk, P, par, U2_o, mU_o, vU_o, S_o, gV_o, gb_o, *,
            K, m, Rb, per, precision):
    """Program (b, j): blocks j·per … j·per + per − 1 of configuration b, if it runs: reads
    U2[b, par[b]] and the moments, writes U2[b, 1 − par[b]] and the moments, and its
    partial sums at the new point to S_o[b, j] = (CE, ‖u‖², ‖∇_u F‖², 0), gV_o[b, j],
    gb_o[b, j]; zeros there if it does not run. P (B, 5) = (learning rate, 1 − β₁ᵗ,
    1 − β₂ᵗ, λ, running ∈ {0, 1}), t the update's count."""
    b, j = pl.program_id(0), pl.program_id(1)
    lr, bc1, bc2, lam, run = P[b, 0], P[b, 1], P[b, 2], P[b, 3], P[b, 4]
    src = par[b]
    d = V0.shape[2]
    dt = S_o.dtype

    def write(ce, u2, g2, gV, gb):
        S_o[b, j, 0] = ce
        S_o[b, j, 1] = u2
        S_o[b, j, 2] = g2
        S_o[b, j, 3] = jnp.zeros((), dt)
        gV_o[b, j] = gV
        gb_o[b, j] = gb

    zero = jnp.zeros((), dt)
    zV, zb = jnp.zeros((KP, d), dt), jnp.zeros((KP,), dt)

    @pl.when(run > 0)
    def _():
        nkb = nk[b]
        N = jnp.sum(nkb)
        terms = functools.partial(row_terms, nk=nkb, K=K, m=m, N=N, lam=lam,
                                  precision=precision)
        V0b, c0b, V1b, c1b = V0[b], c0[b], V1[b], c1[b]

        def body(i, acc):
            ce, u2, g2, gV, gb = acc
            first = (j * per + i) * Rb
            rows = pl.ds(first, Rb)
            u, mo, ve = U2[b, src, rows, :], mU[b, rows, :], vU[b, rows, :]
            g = terms(u, V0b, c0b, first_row=first)[2]
            mo = B1 * mo + (1 - B1) * g
            ve = B2 * ve + (1 - B2) * g * g
            u = u - lr * (mo / bc1) / (jnp.sqrt(ve / bc2) + EPS)
            U2_o[b, 1 - src, rows, :] = u
            mU_o[b, rows, :] = mo
            vU_o[b, rows, :] = ve
            Rz, r, g, ce_rows = terms(u, V1b, c1b, first_row=first)
            return (ce + jnp.sum(ce_rows), u2 + jnp.sum(u * u), g2 + jnp.sum(g * g),
                    gV + _dot(r, u, (0, 0), precision), gb + jnp.sum(Rz, axis=0))

        write(*jax.lax.fori_loop(0, per, body, (zero, zero, zero, zV, zb)))

    @pl.when(run == 0)
    def _():
        write(zero, zero, zero, zV, zb)


class Settings(NamedTuple):
    """The kernel's launch: ``rows`` of U a block (None: ``rows_per_block``), ``per`` blocks
    a program, Triton's num_warps and num_stages, the products' ``precision``
    (``PRECISIONS``), ``interpret`` (Pallas's interpreter: any backend, slow)."""

    rows: int | None = None
    per: int | None = 1
    num_warps: int = 4
    num_stages: int = 1
    precision: str = "ieee"
    interpret: bool = False


def kernel_step(U2, mU, vU, par, V0, c0, V1, c1, n_k, P, settings: Settings = Settings()):
    """The kernel on a batch: U2 (B, 2, K m, d) and the moments mU, vU (B, K m, d), par
    (B,) int32 (the buffer holding U), V0, V1 (B, K, d) and c0, c1 (B, K) the classifier
    and bias at x_t and x_{t+1}, n_k (B, K), P (B, 5) as ``_kernel``. Returns U2, mU, vU
    (updated in place where P[:, 4] = 1) and, at the new point, (Σ weighted CE, ‖U‖²,
    ‖∇_U F‖²) (B, 3) and the data parts of ∇_V F (B, K, d) and ∇_b F (B, K)."""
    B, _, KM, d = U2.shape
    K = V0.shape[1]
    Rb, per, n = blocks(K, KM // K, settings.rows, settings.per)
    dt = U2.dtype
    pad = lambda a: pad_classes(a, 1)
    params = None if settings.interpret else plgpu.CompilerParams(
        num_warps=settings.num_warps, num_stages=settings.num_stages)
    U2, mU, vU, S, gV, gb = pl.pallas_call(
        functools.partial(_kernel, K=K, m=KM // K, Rb=Rb, per=per,
                          precision=settings.precision),
        out_shape=(jax.ShapeDtypeStruct(U2.shape, dt), jax.ShapeDtypeStruct(mU.shape, dt),
                   jax.ShapeDtypeStruct(vU.shape, dt),
                   jax.ShapeDtypeStruct((B, n, 4), dt),
                   jax.ShapeDtypeStruct((B, n, KP, d), dt),
                   jax.ShapeDtypeStruct((B, n, KP), dt)),
        grid=(B, n), interpret=settings.interpret,
        input_output_aliases={0: 0, 1: 1, 2: 2}, compiler_params=params,
    )(U2, mU, vU, pad(V0), pad(c0), pad(V1), pad(c1), pad(n_k), P, par)
    return (U2, mU, vU, jnp.sum(S, axis=1)[:, :3], jnp.sum(gV, axis=1)[:, :K],
            jnp.sum(gb, axis=1)[:, :K])


class Carry(NamedTuple):
    """The batched loop's state, (B, ...): V, b, U2 (two buffers of U, ``par`` says which
    holds it), the moments and the update count (optax.adam's), ∇_V F and ∇_b F at x, and
    the stopping fields of ``ncjax.loop.Carry``."""

    V: jax.Array
    U2: jax.Array
    b: jax.Array
    par: jax.Array
    mV: jax.Array
    mU: jax.Array
    mb: jax.Array
    vV: jax.Array
    vU: jax.Array
    vb: jax.Array
    count: jax.Array
    gV: jax.Array
    gb: jax.Array
    value: jax.Array
    gnorm: jax.Array
    step: jax.Array
    status: jax.Array
    value_ref: jax.Array
    gtol_abs: jax.Array


def features(c: Carry) -> jax.Array:
    """U (B, K m, d) of the carry: the buffer of ``c.U2`` that ``c.par`` names."""
    return jnp.take_along_axis(c.U2, c.par[:, None, None, None], axis=1)[:, 0]


def check(s: loop.Settings, problems: Problem) -> None:
    """Raise InputError unless the kernel can run this loop: Adam on cross-entropy with a
    bias."""
    if s.optimizer != "adam":
        raise InputError(f"a fused kernel is an Adam step; optimizer is {s.optimizer!r}")
    if problems.loss.name != "ce" or not problems.bias:
        raise InputError("the fused kernel solves cross-entropy with a bias only")


def batched(s: loop.Settings, kernel: Settings = Settings()):
    """(init, advance, result) of the Adam loop for a batch, as ``ncjax.loop.batched``
    gives (init, advance): init(keys, problems, lr, gtol, ftol) the carry₀ (the same start,
    F and ∇F as ``loop.iteration``), advance(carry, keys, problems, lr, gtol, ftol) one
    step of every running configuration (module docstring), result(carry) = (x, F, ‖∇F‖,
    steps, status) as ``loop.solve`` returns them."""
    d, m = s.d, s.m
    loop0 = loop.batched(s._replace(memory_size=1))[0]

    def init(keys, problems, lr, gtol, ftol):
        check(s, problems)
        c = loop0(keys, problems, lr, gtol, ftol)
        B, K = problems.counts.shape
        U = c.x.U.reshape(B, K * m, d)
        zero = jnp.zeros_like
        return Carry(c.x.V, jnp.stack([U, zero(U)], axis=1), c.x.b,
                     jnp.zeros(B, jnp.int32), zero(c.x.V), zero(U), zero(c.x.b),
                     zero(c.x.V), zero(U), zero(c.x.b), jnp.zeros(B, jnp.int32),
                     c.grad.V, c.grad.b, c.value, c.gnorm, c.step, c.status, c.value_ref,
                     c.gtol_abs)

    def advance(c, keys, problems, lr, gtol, ftol):
        running = c.status < 0
        bc = lambda a, x: a.reshape(a.shape + (1,) * (x.ndim - 1))
        sel = lambda new, old: stopping.select(running, new, old)
        count = c.count + running.astype(c.count.dtype)
        t = count.astype(c.V.dtype)
        bc1, bc2 = 1 - B1 ** t, 1 - B2 ** t

        def adam(x, g, mo, ve):  # optax.adam's update of a small leaf
            mo = B1 * mo + (1 - B1) * g
            ve = B2 * ve + (1 - B2) * g * g
            x = x - bc(lr, x) * (mo / bc(bc1, x)) / (jnp.sqrt(ve / bc(bc2, x)) + EPS)
            return x, mo, ve

        V1, mV, vV = (sel(a, o) for a, o in zip(adam(c.V, c.gV, c.mV, c.vV),
                                                 (c.V, c.mV, c.vV)))
        b1, mb, vb = (sel(a, o) for a, o in zip(adam(c.b, c.gb, c.mb, c.vb),
                                                 (c.b, c.mb, c.vb)))
        lam, lam_b = problems.lam, problems.lam_b
        P = jnp.stack([lr, bc1, bc2, lam, running.astype(c.V.dtype)], axis=1)
        U2, mU, vU, S, gVd, gbd = kernel_step(c.U2, c.mU, c.vU, c.par, c.V, c.b, V1, b1,
                                              problems.counts, P, kernel)
        gV = gVd + bc(lam, V1) * V1
        gb = gbd + lam_b[:, None] * b1
        value = (S[:, 0] + 0.5 * lam * (jnp.sum(V1 ** 2, axis=(1, 2)) + S[:, 1])
                 + 0.5 * lam_b * jnp.sum(b1 ** 2, axis=1))
        gnorm = jnp.sqrt(S[:, 2] + jnp.sum(gV ** 2, axis=(1, 2)) + jnp.sum(gb ** 2, axis=1))
        step = c.step + 1
        finite = jnp.isfinite(value) & jnp.isfinite(gnorm)
        status = stopping.status(step, value, gnorm, c.value_ref, c.gtol_abs, ftol,
                                 s.max_steps)
        checkpoint = step % stopping.WINDOW == 0
        moved = running & finite  # the new point is kept
        keep = lambda new, old: stopping.select(moved, new, old)
        value = keep(value, c.value)
        return Carry(keep(V1, c.V), U2, keep(b1, c.b), c.par ^ moved.astype(c.par.dtype),
                     mV, mU, mb, vV, vU, vb, count, gV, gb, value, keep(gnorm, c.gnorm),
                     sel(step, c.step), sel(status, c.status),
                     sel(jnp.where(checkpoint, value, c.value_ref), c.value_ref),
                     c.gtol_abs)

    def result(c):
        B, K = c.b.shape
        return (Natural(c.V, features(c).reshape(B, K, m, d), c.b), c.value, c.gnorm,
                c.step, c.status)

    return init, advance, result


def solve(keys, problems: Problem, learning_rate, gtol, ftol, s: loop.Settings,
          kernel: Settings = Settings()):
    """``ncjax.loop.solve`` with each Adam step the kernel's: (x, F, ‖∇F‖, steps, status),
    (B, ...), in one ``lax.while_loop`` that runs while any configuration runs."""
    init, advance, result = batched(s, kernel)
    args = (keys, problems, learning_rate, gtol, ftol)
    c = jax.lax.while_loop(lambda c: jnp.any(c.status < 0), lambda c: advance(c, *args),
                           init(*args))
    return result(c)
