"""Kernel A and kernel B of ``two_pass.py`` timed apart, over their block and launch
settings, on the current GPU; with the copy measured two ways and the solver step's
kernels profiled. For the next step toward the Adam step at 75% of a copy.

* copy: ``bench.copy_bandwidth``, both ways (one jitted y = x + 1 per call, host-timed
  median; and the same copy in a ``lax.fori_loop`` timed by difference, as the steps are);
* kernel A (reads U once) and kernel B (reads U, mU, vU, writes them) alone, each in a
  fori_loop (A's input V nudged every iteration so that it is not hoisted), over rows per
  block, blocks per program, warps and pipeline stages; bandwidth = bytes of U moved /
  time;
* the whole two-pass step with the fastest A and B, against the probe's bytes model, and
  its iterates against optax.adam over 20 steps;
* the device time per kernel of the solver's step (``step_probe._kernel_times``);
* with ``--growth-K``, rows of the bench's growth table against K (``bench._growth``).

Command:  python benchmarks/two_pass_study.py [--B 8192] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from ncjax import bench, solver

import step_probe  # noqa: E402  (beside this file)
import two_pass  # noqa: E402

# (rows per block, blocks per program, warps, pipeline stages); the first of each list is
# the best of the first study on the H200 (RESULTS.md: A one program a configuration, 16
# rows, 1 warp: 877 GB/s; B 16 rows, 2 warps: 2,713 GB/s), the rest spread kernel A over
# several programs a configuration and give kernel B several blocks a program
A_SETTINGS = [(16, 20, 1, 2), (16, 4, 1, 2), (16, 1, 1, 1), (16, 2, 2, 2), (32, 1, 2, 1),
              (32, 2, 2, 2), (32, 5, 2, 2), (64, 1, 4, 1)]
B_SETTINGS = [(16, 1, 2, 1), (32, 1, 2, 1), (16, 2, 2, 2), (16, 4, 2, 2), (16, 4, 2, 3),
              (32, 2, 2, 2), (16, 2, 1, 2), (64, 1, 4, 1)]


def _loop_time(body, c0, device, repeats=3, target_s=0.05):
    """Seconds per iteration of ``body`` in a fori_loop (``step_probe._time``)."""
    return step_probe._time(c0, body, repeats=repeats, target_s=target_s, device=device)[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--B", type=int, default=8192)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--tiny", action="store_true", help="CPU, interpret mode, seconds")
    p.add_argument("--growth-K", default="", help="also the bench's growth rows for these K")
    a = p.parse_args(argv)
    device = jax.devices()[0]
    interpret = device.platform != "gpu"
    K, d, m = bench.SHAPES["reference"] if not a.tiny else (4, 16, 8)
    B = 2 if a.tiny else a.B
    res = {"device": bench._describe(device), "K": K, "d": d, "m": m, "B": B}
    t0 = time.perf_counter()

    def log(line):
        """Print ``line`` and keep study.json as it stands (a run cut short keeps its rows:
        the first study on the H200 stopped at its limit and kept only its log)."""
        print(f"[{time.perf_counter() - t0:6.1f} s] {line}", flush=True)
        if a.out is not None:
            a.out.mkdir(parents=True, exist_ok=True)
            (a.out / "study.json").write_text(json.dumps(res, indent=1, default=float))
    with solver.precise():
        copy = bench.copy_bandwidth((1 << 31) if not interpret else (1 << 22), 3)
        res["copy_single"] = copy["single_call_bandwidth"]
        res["copy_loop"] = copy["bandwidth"]
        log(f"# two-pass study on {res['device']['name']}, B = {B}; copy: one call "
            f"{res['copy_single'] / 1e9:.1f} GB/s, in a loop {res['copy_loop'] / 1e9:.1f} GB/s")

        args, static = step_probe.adam_inputs(K, d, m, B)
        variants = step_probe._variants(args, static)
        c0 = variants["solver"][0]
        n_k, lam_W, lam_H, lam_b, lr = args[1:6]
        lam = jnp.sqrt(lam_W * lam_H)
        V, U, cb = c0.x.V, c0.x.U.reshape(B, K * m, d), c0.x.b
        mU, vU = jnp.zeros_like(U), jnp.full_like(U, 1e-4)
        P = jnp.stack([lr, jnp.full(B, 0.1), jnp.full(B, 1e-3), lam, jnp.ones(B)], axis=1)
        u_bytes = U.size * 4
        res["A"], res["B_kernel"] = [], []
        # TF32x3 has no CPU form: interpret mode studies the float32 products alone
        precs = ["ieee"] if interpret else ["tf32x3", "ieee"]
        fits = lambda settings: [s for s in settings if (K * m) % s[0] == 0
                                 and (K * m // s[0]) % s[1] == 0]

        def body_a(c, kw):
            Vc, acc = c
            S, gV, gb = two_pass.evaluate(U, Vc, cb, n_k, lam, **kw)
            return Vc + 1e-30 * gV, acc + S[:, 0]

        def body_b(c, kw):
            return two_pass.update(*c, V, cb, n_k, P, **kw)

        kernels = [("A", A_SETTINGS, body_a, (V, jnp.zeros(B)), u_bytes),
                   ("B_kernel", B_SETTINGS, body_b, (U, mU, vU), 6 * u_bytes)]
        for prec in precs:
            for name, settings, body, carry, nbytes in kernels:
                for rows, per_, w, st in fits(settings)[:None if prec == precs[0] else 1]:
                    kw = dict(rows=rows, per=per_, num_warps=w, num_stages=st,
                              precision=prec, interpret=interpret)
                    r = {"precision": prec, "rows": rows, "per": per_, "warps": w,
                         "stages": st}
                    try:
                        t = _loop_time(lambda c, kw=kw: body(c, kw), carry, device)
                        r |= {"s": t, "GB/s": nbytes / t / 1e9}
                    except Exception as e:
                        r["error"] = f"{type(e).__name__}: {e}"[:500]
                    res[name].append(r)
                    log(f"{name[0]} {r}")

        best = lambda rs: min((r for r in rs if "s" in r and r["precision"] == precs[0]),
                              key=lambda r: r["s"])
        ba, bb = best(res["A"]), best(res["B_kernel"])
        pick = lambda r: {"rows": r["rows"], "per": r["per"], "num_warps": r["warps"],
                          "num_stages": r["stages"]}
        ka, kb = pick(ba), pick(bb)
        tp0, _ = variants["two_pass"]
        stepf = lambda c: two_pass.step(c, n_k, lam_W, lam_H, lam_b, lr, c0.gtol_abs,
                                        interpret=interpret, precision=precs[0], a=ka, b=kb)
        t = _loop_time(stepf, tp0, device)
        model = bench.adam_bytes(K, d, m, 4)
        res["step"] = {"a": ka, "b": kb, "s": t, "config_steps_per_s": B / t,
                       "of_copy_single": B * model / t / res["copy_single"],
                       "of_copy_loop": B * model / t / res["copy_loop"]}
        res["agree"] = step_probe._agree(variants["bare"], (tp0, stepf), device)
        log(f"step (A {ka}, B {kb}): {B / t:.4g} config-steps/s, "
            f"{res['step']['of_copy_single']:.1%} of the one-call copy, "
            f"{res['step']['of_copy_loop']:.1%} of the loop copy; against optax.adam: "
            f"{res['agree']}")
        sol, sc0 = variants["solver"][1], variants["solver"][0]
        ts = _loop_time(sol, sc0, device)
        res["solver"] = {"s": ts, "of_copy_loop": B * model / ts / res["copy_loop"]}
        log(f"solver step: {B / ts:.4g} config-steps/s, {res['solver']['of_copy_loop']:.1%} "
            f"of the loop copy")
        loop = jax.jit(lambda c, n: jax.lax.fori_loop(0, n, lambda i, c: sol(c), c))
        try:
            res["kernels"] = [{"name": k, "s_per_step": s, "launches_per_step": n}
                              for k, s, n in step_probe._kernel_times(loop, sc0, 10, device)]
        except Exception as e:
            res["kernels"] = []
            log(f"profile failed: {type(e).__name__}: {e}"[:400])
        for r in res["kernels"][:25]:
            log(f"  {r['s_per_step'] * 1e6:8.1f} µs x{r['launches_per_step']:.2g} "
                f"{r['name'][:100]}")
        if a.growth_K:  # rows of the bench's growth table (against K), as ``bench._growth``
            cfg = {"n_grid": [], "K_grid": [int(k) for k in a.growth_K.split(",")],
                   "growth_elems": 1 << 27, "target_s": 0.1}
            res["growth"] = bench._growth(cfg, device, 3, log)
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
