"""Where the Adam step's time goes: the solver's batched step taken apart, side by side.

``benchmarks/bench.py`` measures the solver's Adam step against the bytes model (read and
write x = (V, U, b) and both moments once: 6·P·itemsize bytes per configuration-step) and a
copy. This probe says why a step reaches the fraction it does, by timing, for one shape
and batch size B in one process, steps that leave parts out (each in a ``lax.fori_loop``
over a traced number of steps S, step time = [t(2 + S') − t(2)]/S', as the bench does):

* ``solver``: ``ncjax.loop.batched``'s advance, the step the solver runs (optax.adam, F and
  ∇F at the new iterate, the stopping rule, keep-if-finite and the freeze of stopped
  configurations);
* ``no_freeze``: the same without the freeze (the vmapped body of ``loop.iteration``);
* ``bare``: optax.adam's update and F, ∇F at the new iterate, nothing else;
* ``grad``: F and ∇F at x, then x ← x − 1e-30·∇F (so XLA cannot hoist the gradient out
  of the loop): the gradient plus one read-read-write pass;
* ``update``: optax.adam's update with a fixed ∇F (the moments and x change): the update
  alone, 7 passes (∇F, m, v, x read; m, v, x written);
* ``copy6``: x, m, v ← x + 1, m + 1, v + 1: exactly the bytes model's traffic, in the
  same loop: the most a step with the model's bytes reaches at this B;
* ``factored``: optax.adam's step with ∇_U F = λU + Σ_c R[..., c] V_c written from the
  small factor R = ∂F/∂(V u) (K, m, K), so that the update is one elementwise pass over U
  and its moments; then R, ∇_V F, F and ‖∇F‖² at the new point (logits, ∇_V and ‖∇_U‖²:
  three more passes over U), no selects: 9 passes, XLA alone;
* ``fused``, ``fused_tf32x3``: the advance of ``benchmarks.experiments.fused`` (the loop with each
  step one Pallas kernel: 6 passes, the model's; the stopping rule and the freeze outside
  the kernel), default launch, products in float32 or as three TF32 products; on a CPU
  only for tiny problems, in Pallas's interpreter. ``fused`` is checked against ``bare``
  over 20 steps from the same start. (Until the commit that added ``fused`` here, the
  probe held ``two_pass``: two kernels, 7 passes; its figures are in RESULTS.md.)

Each row gives config-steps/s and the bytes model over the step time as a fraction of a
plain copy's bandwidth measured in the same run. Then a profile of a few ``solver`` steps
(``jax.profiler``): the device time per kernel, summed per step, the largest first (on a
CPU there is no device plane and this part is skipped).

Command:  python benchmarks/experiments/step_probe.py [--B 8192] [--out DIR] [--tiny]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

if __package__ in (None, ""):  # run as a script: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import measure  # noqa: E402
from benchmarks.experiments import fused  # noqa: E402
from ncjax import dtypes, loop, natural  # noqa: E402
from ncjax.problem import Problem  # noqa: E402


def variants(per_args, s: loop.Settings):
    """{name: (carry₀, step)} of the module docstring, on the batched inputs ``per_args``
    (keys, problems, learning rate, gtol, ftol; (B, ...)) of the loop of settings ``s``."""
    init, advance = loop.batched(s)
    body = jax.vmap(lambda c, *a: loop.iteration(*a, s)[1](c))
    c0 = jax.jit(init)(*per_args)  # jitted: op by op, the start takes seconds
    problems, lr = per_args[1], per_args[2]
    vg = jax.vmap(jax.value_and_grad(natural.objective))
    opt = optax.adam(lr[0])  # the same rate for every configuration of the probe
    sub = lambda a, b: jax.tree.map(jnp.subtract, a, b)

    def bare(c):  # ∇F carried from the last step, as the solver does
        x, s, g = c
        u, s = jax.vmap(opt.update)(g, s, x)
        x = optax.apply_updates(x, u)
        _, g = vg(x, problems)
        return x, s, g

    def grad(c):
        x, g = c
        _, g = vg(x, problems)
        return sub(x, jax.tree.map(lambda a: 1e-30 * a, g)), g

    def update(c):
        x, s, g = c
        u, s = jax.vmap(opt.update)(g, s, x)
        return optax.apply_updates(x, u), s, g

    def copy6(c):
        return jax.tree.map(lambda a: a + 1.0, c)

    vfactors = jax.jit(jax.vmap(factors))
    vrest = jax.vmap(adam_from_factors, in_axes=(0, 0, 0, None, 0, 0, 0, 0, 0))

    def factored(c):
        x, mu, nu, t, R, gV, gb, _, _ = c
        t = t + 1
        x, mu, nu = vrest(x, mu, nu, t, R, gV, gb, problems.lam, lr)
        return (x, mu, nu, t) + vfactors(x, problems)

    s0 = jax.jit(jax.vmap(opt.init))(c0.x)
    B, K, m, d = c0.x.U.shape
    gpu = jax.devices()[0].platform == "gpu"

    def one_kernel(precision):  # never stops: max_steps beyond any loop here
        f_init, f_advance, _ = fused.batched(
            s._replace(max_steps=1 << 30),
            fused.Settings(precision=precision, interpret=not gpu))
        return jax.jit(f_init)(*per_args), lambda c: f_advance(c, *per_args)

    pallas = ({"fused": one_kernel("ieee"), "fused_tf32x3": one_kernel("tf32x3")} if gpu
              else {"fused": one_kernel("ieee")} if B * K * m * d <= 4096 else {})
    return {
        "solver": (c0, lambda c: advance(c, *per_args)),
        "no_freeze": (c0, lambda c: body(c, *per_args)),
        "bare": ((c0.x, s0, c0.grad), bare),
        "grad": ((c0.x, c0.grad), grad),
        "update": ((c0.x, s0, c0.grad), update),
        "copy6": ((c0.x.V, c0.x.U, c0.x.b, s0[0].mu, s0[0].nu), copy6),
        "factored": ((c0.x, s0[0].mu, s0[0].nu, jnp.zeros((), jnp.int32))
                     + vfactors(c0.x, problems), factored),
    } | pallas


def factors(x, problem: Problem):
    """∇F at x in factored form (one configuration, cross-entropy with a bias): R = ∂F/∂(V u) (K, m, K), ∇_V F,
    ∇_b F and F, ‖∇F‖², so that ∇_U F = λU + Σ_c R[..., c] V_c is elementwise given R.
    Passes over U: the logits, ∇_V F (Rᵀ U) and ‖∇_U F‖² (recomputed elementwise)."""
    V, U, b = x
    K, m, _ = U.shape
    n_k, lam, lam_b = problem.counts, problem.lam, problem.lam_b
    w = n_k / m
    s = jax.lax.rsqrt(w)[:, None, None]
    N = jnp.sum(n_k)
    zr = jnp.einsum("kid,cd->kic", U, V)
    z = zr * s + b
    lse = jax.nn.logsumexp(z, axis=-1)
    hot = jnp.arange(K)[:, None, None] == jnp.arange(K)
    coef = (w / N)[:, None, None]
    Rz = coef * (jnp.exp(z - lse[..., None]) - hot)  # ∂F/∂z
    R = Rz * s
    gV = jnp.einsum("kic,kid->cd", R, U) + lam * V
    gb = jnp.sum(Rz, axis=(0, 1)) + lam_b * b
    gU = grad_U(U, V, R, lam)
    ce = lse - jnp.sum(jnp.where(hot, z, 0.0), axis=-1)
    F = (jnp.sum(coef[..., 0] * ce) + 0.5 * lam * (jnp.sum(V ** 2) + jnp.sum(U ** 2))
         + 0.5 * lam_b * jnp.sum(b ** 2))
    return R, gV, gb, F, jnp.sum(gU ** 2) + jnp.sum(gV ** 2) + jnp.sum(gb ** 2)


def grad_U(U, V, R, lam):
    """∇_U F = λU + Σ_c R[..., c] V_c, unrolled over the K classes: elementwise in U."""
    g = lam * U
    for c in range(V.shape[0]):
        g = g + R[..., c, None] * V[c]
    return g


def adam_from_factors(x, mu, nu, t, R, gV, gb, lam, lr, b1=0.9, b2=0.999, eps=1e-8):
    """optax.adam's step t (1-based) on x = (V, U, b) with ∇_U F from the factors (λ =
    sqrt(λ_W λ_H)), the update of U one elementwise pass over U and both moments."""
    V, U, b = x
    g = natural.Natural(gV, grad_U(U, V, R, lam), gb)
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, mu, g)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, nu, g)
    c1, c2 = 1 - b1 ** t.astype(U.dtype), 1 - b2 ** t.astype(U.dtype)
    x = jax.tree.map(lambda x, m, v: x - lr * (m / c1) / (jnp.sqrt(v / c2) + eps), x, mu, nu)
    return x, mu, nu


def step_time(c0, step, *, repeats, target_s, device):
    """Step time of ``step`` in a fori_loop over a traced count: see the module docstring."""
    looped = jax.jit(lambda c, n: jax.lax.fori_loop(0, n, lambda i, c: step(c), c))
    c0 = jax.device_put(c0, device)
    run = lambda n: looped(c0, jax.device_put(np.int32(n), device))
    t_lo = measure.median(lambda: run(2), repeats)
    steps = 4
    while True:
        t_hi = measure.median(lambda: run(2 + steps), repeats)
        if t_hi - t_lo >= target_s or steps >= 4096:
            break
        steps *= 4
    return max(t_hi - t_lo, 1e-12) / steps, steps, looped, c0


AGREE_STEPS = 20


def agree(bare, one, device) -> dict:
    """Relative differences of (V, U, b) after AGREE_STEPS steps of optax.adam (the
    ``bare`` variant) and of the ``fused`` variant from the same start, on ``device``;
    and whether every element of the fused iterate is finite."""
    (cb, fb), (ct, ft) = bare, one
    cb, ct = jax.device_put((cb, ct), device)
    run = lambda f, c: jax.jit(lambda c: jax.lax.fori_loop(0, AGREE_STEPS,
                                                           lambda i, c: f(c), c))(c)
    try:
        xb, c = run(fb, cb)[0], run(ft, ct)
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"[:2000]}
    xt = (c.V, fused.features(c).reshape(xb.U.shape), c.b)
    rel = lambda a, b: float(jnp.linalg.norm(a - b) / jnp.linalg.norm(a))
    return {"V": rel(xb.V, xt[0]), "U": rel(xb.U, xt[1]), "b": rel(xb.b, xt[2]),
            "finite": bool(all(jnp.isfinite(a).all() for a in xt))}


def kernel_times(loop, c0, steps, device) -> list[tuple[str, float, int]]:
    """Device time per kernel name over ``steps`` steps of ``loop`` (jax.profiler), as
    (name, seconds per step, launches per step), the largest first; [] where the trace
    holds no device plane (CPU)."""
    from jax.profiler import ProfileData
    n = jax.device_put(np.int32(steps), device)
    jax.block_until_ready(loop(c0, n))
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp):
            jax.block_until_ready(loop(c0, n))
        files = sorted(Path(tmp).rglob("*.xplane.pb"))
        if not files:
            return []
        prof = ProfileData.from_file(str(files[-1]))
    total, count = collections.Counter(), collections.Counter()
    lines = set()
    for plane in prof.planes:
        if not plane.name.startswith("/device:GPU"):
            continue
        for line in plane.lines:
            lines.add(line.name)
            # kernels (and copies) are on the stream lines, e.g. "Stream #14(MemcpyD2H,
            # Compute,MemcpyD2D)"; "XLA Ops"/"XLA Modules" lines summarise them
            if "stream" not in line.name.lower():
                continue
            for ev in line.events:
                total[ev.name] += ev.duration_ns * 1e-9
                count[ev.name] += 1
    if lines and not total:
        print(f"no kernel events on the device lines {sorted(lines)}")
    return [(k, v / steps, count[k] / steps) for k, v in total.most_common()]


def adam_inputs(K, d, m, B):
    """The harness's B Adam configurations of shape (K, d, m), float32: (args, s), args
    the batched (keys, problems, learning rate, gtol, ftol) of ``loop.batched``, s its
    ``loop.Settings``."""
    problem, per, static = measure.batch(K, d, m, B, optimizer="adam", dtype="float32")
    args = measure.device_inputs(problem, per, np.float32, jax.devices()[0])
    return args, loop.Settings(d, m, "adam", static["max_steps"], static["memory_size"],
                               jnp.dtype("float32"))


def run(*, K, d, m, B, repeats, target_s, profile_steps, log=print) -> dict:
    device = jax.devices()[0]
    with dtypes.precise():
        args, s = adam_inputs(K, d, m, B)
        copy = measure.copy_bandwidth(1 << 31 if device.platform == "gpu" else 1 << 26,
                                      repeats)
        model = measure.adam_bytes(K, d, m, 4)
        res = {"device": measure.describe(device), "K": K, "d": d, "m": m, "B": B,
               "copy_bandwidth": copy["bandwidth"], "model_bytes": model, "rows": []}
        log(f"# step probe on {res['device']['name']}, (K, d, m) = {(K, d, m)}, B = {B}; "
            f"copy {copy['bandwidth'] / 1e9:.1f} GB/s")
        kept = None
        steps = variants(args, s)
        if "fused" in steps:
            res["fused_vs_optax"] = agree(steps["bare"], steps["fused"], device)
            log(f"fused against optax.adam (bare), {AGREE_STEPS} steps: "
                f"{res['fused_vs_optax']}")
        for name, (c0, step) in steps.items():
            t0 = time.perf_counter()
            try:
                dt, n, compiled, c = step_time(c0, step, repeats=repeats,
                                               target_s=target_s, device=device)
            except Exception as e:  # a variant that does not compile here: say so, go on
                res["rows"].append({"variant": name, "error": f"{type(e).__name__}: {e}"[:2000]})
                log(f"{name:>10}: failed, {type(e).__name__}: {str(e)[:300]}")
                continue
            row = {"variant": name, "step_s": dt, "steps": n,
                   "config_steps_per_s": B / dt,
                   "of_copy": B * model / dt / copy["bandwidth"],
                   "wall_s": time.perf_counter() - t0}
            res["rows"].append(row)
            log(f"{name:>10}: {row['config_steps_per_s']:.4g} config-steps/s, "
                f"{row['of_copy']:.1%} of copy (step {dt * 1e6:.1f} µs; {row['wall_s']:.1f} s)")
            if name == "solver":
                kept = (compiled, c)
        try:
            res["kernels"] = [{"name": k, "s_per_step": t, "launches_per_step": n}
                              for k, t, n in kernel_times(*kept, profile_steps, device)]
        except Exception as e:  # no profiler here: the timings above stand
            res["kernels"] = []
            log(f"profile failed: {type(e).__name__}: {str(e)[:300]}")
    step = res["rows"][0].get("step_s", np.nan)
    for r in res["kernels"][:20]:
        log(f"  {r['s_per_step'] * 1e6:8.1f} µs ({r['s_per_step'] / step:5.1%}) "
            f"x{r['launches_per_step']:.2g}  {r['name'][:90]}")
    return res


def table(res: dict) -> str:
    """The probe's markdown table."""
    lines = [f"# Adam step taken apart — {res['device']['name']}, jax {res['device']['jax']}",
             "", f"(K, d, m) = ({res['K']}, {res['d']}, {res['m']}), B = {res['B']}; copy "
             f"{res['copy_bandwidth'] / 1e9:.1f} GB/s; bytes model "
             f"{res['model_bytes']} bytes per config-step.", "",
             "| variant | µs per step | config-steps/s | bytes model / copy |",
             "|---|---|---|---|"]
    for r in res["rows"]:
        if "error" in r:
            lines.append(f"| {r['variant']} | failed: {r['error'][:100]} | | |")
            continue
        lines.append(f"| {r['variant']} | {r['step_s'] * 1e6:.1f} | "
                     f"{r['config_steps_per_s']:.4g} | {r['of_copy']:.1%} |")
    if res["kernels"]:
        lines += ["", "Kernels of the `solver` step (jax.profiler), device time per step:", "",
                  "| µs per step | launches per step | kernel |", "|---|---|---|"]
        lines += [f"| {r['s_per_step'] * 1e6:.1f} | {r['launches_per_step']:.2g} | "
                  f"`{r['name'][:80]}` |" for r in res["kernels"][:25]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--B", type=int, default=8192, help="configurations per batch")
    p.add_argument("--shape", default="reference", choices=sorted(measure.SHAPES))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="writes probe.json, probe.md")
    p.add_argument("--tiny", action="store_true", help="seconds: B = 2, tiny shape")
    a = p.parse_args(argv)
    K, d, m = measure.SHAPES["tiny" if a.tiny else a.shape]
    res = run(K=K, d=d, m=m, B=2 if a.tiny else a.B, repeats=1 if a.tiny else a.repeats,
              target_s=0.002 if a.tiny else 0.1, profile_steps=2 if a.tiny else 20)
    text = table(res)
    print(text)
    if a.out is not None:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "probe.json").write_text(json.dumps(res, indent=1, default=float))
        (a.out / "probe.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
