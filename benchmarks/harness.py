"""Throughput and time to solution, side by side with the ways the UFM is solved today.

One run on the current default device (``python benchmarks/bench.py``; the package's
``ncjax bench`` is the time-to-solution part alone, ``ncjax.bench``) measures, and writes
``bench.json`` (every raw number, the machine, the command), ``bench.md`` (the tables,
also printed) and ``bench.png`` (throughput against B):

* **copy**: a device-to-device copy y = x + 1 of ``copy_bytes`` bytes, repeated in a
  ``lax.fori_loop`` and timed by difference as the step is (``measure.copy_bandwidth``);
  its bandwidth is (bytes read + bytes written)/t, the ceiling the solver's step is
  compared with.
* **throughput**: the solver's own loop (``ncjax.loop.optimise``: every configuration in
  one batched ``lax.while_loop``, stopping rule included) with gtol = ftol = 0 so every
  configuration runs max_steps, for the SHAPES (K, d, m) and batch sizes B = 1, 4, 16, …
  as far as fit. One compiled program per (shape, B); max_steps is traced, so t(S) is
  measured at S = 2 and S = 2 + S' and the step time is [t(2 + S') − t(2)]/S': the start,
  the metrics and the transfers cancel. Configuration-steps per second = B / step time.
  **Bytes model** of an Adam step: it must at least read and write x = (V, U, b) and both
  moments once, 6·P·itemsize bytes per configuration, P = K d + K m d + K; the achieved
  bandwidth B·6·P·itemsize/step time is given as a fraction of the copy's. Next to it,
  the bytes the compiled step moves (``measure.compiled_bytes``: XLA's cost analysis)
  over the model: how far the program is from the model's traffic.
* **one-kernel step** (on a GPU; the tiny mode runs one launch in Pallas's interpreter):
  the same loop with each Adam step one Pallas kernel (``benchmarks.experiments.fused``:
  the bytes model's 6 passes), each launch of ``fused.LAUNCHES`` at B = 8,192, the
  fastest against B (rows of the throughput table), and its iterates, F and ‖∇F‖ against
  XLA's loop after 200 steps from the same starts (``measure.fused_agreement``).
* **step baselines**, the same step for one configuration at a time: the solver's body
  jitted and called from a Python loop; the same body in a jitted ``lax.scan``; the same
  objective and torch.optim.Adam in a PyTorch loop (when torch is installed).
* **time to solution**: the minority-collapse grid of ``ncjax.bench`` (16,384
  configurations) by ``ncjax.solve`` (method "ufm", its defaults: L-BFGS, float32; and
  method "convex"), in converged configurations per second, compilation timed apart; the
  baselines of ``ncjax.bench`` (one configuration a call, cvxpy + Clarabel) and, on an
  evenly spaced sample, the solver's L-BFGS step jitted and called from Python and
  torch.optim.LBFGS (strong Wolfe, history 10) to the same gradient tolerance (when
  installed).
* **growth**: the step time per configuration against B (from the throughput), against N
  for the full UFM (m = n_k = n) and against K, each with its work (bytes model; flops
  ≈ 6·K·(K m)·d of the three K-wide products), and where the time per unit of work
  departs from its value at the largest size by more than 25%.

Every wall time is the median of ``repeats`` calls after one warm call, synchronised
with ``jax.block_until_ready`` (torch: ``torch.cuda.synchronize``).

Command:  python benchmarks/bench.py [--tiny] [--out DIR] [--repeats R]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import jax
import numpy as np

from benchmarks import baselines, measure, tables
from benchmarks.experiments import fused
from benchmarks.measure import SHAPES, fits, solver_step
from ncjax import bench, dtypes
from ncjax.validate import InputError


def run(*, tiny: bool = False, repeats: int = 3, out: Path | None = None,
        device=None, log=print) -> dict:
    """The whole benchmark (module docstring); ``tiny``: seconds, for the tests. Every
    JAX route runs under ``dtypes.precise`` (float32 products in float32, not TF32), as
    the solver does; PyTorch's float32 products are float32 by default."""
    with dtypes.precise():
        return _run(tiny=tiny, repeats=repeats, out=out, device=device, log=log)


def _run(*, tiny, repeats, out, device, log) -> dict:
    device = jax.devices()[0] if device is None else device
    gpu = device.platform == "gpu"
    cfg = dict(
        copy_bytes=(1 << 22) if tiny else (1 << 31 if gpu else 1 << 28),
        b_max=1 if tiny else (1 << 18 if gpu else 1 << 12),
        target_s=0.01 if tiny else (0.1 if gpu else 0.2),
        loop_steps=20 if tiny else 200,
        grid=bench.TINY if tiny else bench.FULL,  # the time-to-solution grid: n × n
        sweep_n=bench.TINY ** 2 if tiny else bench.FULL ** 2,
        sample_n=2 if tiny else 24,
        slow_sample_n=1 if tiny else 8,
        shapes=["tiny"] if tiny else list(SHAPES),
        n_grid=[] if tiny else ([100, 300, 1000, 3000, 10000] if gpu
                                   else [100, 300, 1000, 3000]),
        K_grid=[10] if tiny else [10, 30, 100, 300, 1000],
        growth_elems=(1 << 14) if tiny else (1 << 27 if gpu else 1 << 22),
        fused_B=1 if tiny else 8192,
        fused_agree=(1, 20) if tiny else (256, 200),  # (B, steps)
    )
    res = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
           "command": " ".join(sys.argv), "device": measure.describe(device), "config": cfg}
    log(f"# ncjax bench on {res['device']['name']}")

    res["copy"] = measure.copy_bandwidth(cfg["copy_bytes"], repeats)
    log(f"copy: {res['copy']['bandwidth'] / 1e9:.1f} GB/s (one call timed alone: "
        f"{res['copy']['single_call_bandwidth'] / 1e9:.1f} GB/s)")

    save = (lambda: None) if out is None else (lambda: write_json(res, out))
    save()

    res["throughput"] = []
    for name in cfg["shapes"]:
        K, d, m = SHAPES[name]
        for opt in ["adam", "lbfgs"] if name == "reference" else ["adam"]:
            b_max = min(cfg["b_max"], fits(K, d, m, "float32", device,
                                            memory_size=10 if opt == "lbfgs" else 1))
            # every power of 4 for the reference shape's Adam step, of 16 otherwise; and
            # the largest B that fits
            factor = 4 if (name, opt) == ("reference", "adam") else 16
            sizes = [int(factor ** i) for i in range(20) if factor ** i <= b_max]
            sizes += [b_max] if sizes[-1] < b_max and not tiny else []
            for B in sizes:
                r = solver_step(K, d, m, B, optimizer=opt, dtype="float32", device=device,
                                repeats=repeats, target_s=cfg["target_s"],
                                hlo=out is not None and B == sizes[-1] and opt == "adam"
                                and name == "reference")
                r["shape"] = name
                if "hlo" in r:
                    Path(out).mkdir(parents=True, exist_ok=True)
                    (Path(out) / "step_adam_hlo.txt").write_text(r.pop("hlo"))
                res["throughput"].append(r)
                log(f"{name} {opt} B={B}: {r['config_steps_per_s']:.4g} config-steps/s, "
                    f"{r['adam_bytes_per_s'] / res['copy']['bandwidth']:.1%} of copy")
    save()

    if gpu or tiny:
        fused_section(res, cfg, device, repeats, log, save, tiny=tiny, out=out)

    res["step_baselines"] = []
    for name in cfg["shapes"]:
        K, d, m = SHAPES[name]
        steps = max(5, cfg["loop_steps"] // (10 if m >= 1000 else 1))
        row = {"shape": name, "K": K, "d": d, "m": m,
               "jitted_loop": measure.jitted_loop(K, d, m, steps, dtype="float32",
                                                  repeats=repeats),
               "jitted_scan": measure.jitted_scan(K, d, m, steps, dtype="float32",
                                                  repeats=repeats)}
        if bench.available("torch"):
            row["torch"] = baselines.torch_adam(K, d, m, steps, repeats=repeats)
        res["step_baselines"].append(row)
        log(f"{name} baselines: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()
                                               if isinstance(v, float)))

    save()

    def keep(tts):
        res["time_to_solution"] = tts
        save()
    res["time_to_solution"] = time_to_solution(cfg, device, repeats, log, keep)
    save()
    res["growth"] = growth(cfg, device, repeats, log)
    res["tables"] = tables.tables(res)
    log(res["tables"])
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(res, out)
        (out / "bench.md").write_text(res["tables"])
        tables.plot(res, out / "bench.png")
    return res


def fused_section(res, cfg, device, repeats, log, save, *, tiny, out=None) -> None:
    """The one-kernel Adam step (``benchmarks.experiments.fused``) for the reference shape (tiny mode: the
    tiny shape, one launch, Pallas's interpreter): each launch of ``fused.LAUNCHES`` at
    B = ``fused_B`` (a launch that fails to compile is logged and skipped), the fastest
    against B as the XLA step is (rows in res["throughput"] with its ``kernel``), and its
    agreement with XLA's loop (``measure.fused_agreement``). With ``out``, the compiled program of
    the largest B goes to step_adam_fused_hlo.txt there, and the copies it holds are
    counted (a copy of the loop's U buffers around the kernel would undo its savings)."""
    name = "tiny" if tiny else "reference"
    K, d, m = SHAPES[name]
    launches = ([fused.Settings(interpret=True)] if tiny else
                [fused.Settings(*s) for s in fused.LAUNCHES])
    sec = res["fused"] = {"shape": name, "B": cfg["fused_B"], "launches": []}
    kw = dict(optimizer="adam", dtype="float32", device=device, repeats=repeats,
              target_s=cfg["target_s"])
    copy = res["copy"]["bandwidth"]
    for s in launches:
        try:
            r = solver_step(K, d, m, cfg["fused_B"], **kw, kernel=s)
        except Exception as e:  # a launch Triton cannot compile; the others go on
            log(f"fused {s}: failed: {type(e).__name__}: {str(e)[:300]}")
            sec["launches"].append({"kernel": s._asdict(), "error": str(e)[:2000]})
            continue
        sec["launches"].append(r)
        log(f"fused {tuple(s)[:5]} B={r['B']}: {r['config_steps_per_s']:.4g} config-steps/s, "
            f"{r['adam_bytes_per_s'] / copy:.1%} of copy")
        save()
    ok = [r for r in sec["launches"] if "error" not in r]
    if not ok:
        return
    best = fused.Settings(**max(ok, key=lambda r: r["config_steps_per_s"])["kernel"])
    b_max = min(cfg["b_max"], fits(K, d, m, "float32", device))
    # B of the agreement check first: its programs are then compiled once
    sizes = [cfg["fused_agree"][0]] + [B for B in (4 ** i for i in range(5, 10))
                                       if B <= b_max] + [b_max]
    for B in sorted(set(sizes)):
        hlo = out is not None and B == max(sizes)
        try:
            r = solver_step(K, d, m, B, **kw, kernel=best, hlo=hlo) | {"shape": name}
        except Exception as e:  # e.g. out of memory at the largest B; the run goes on
            log(f"{name} adam, one kernel, B={B}: failed: {type(e).__name__}: "
                f"{str(e)[:300]}")
            sec.setdefault("failed_B", []).append(B)
            continue
        if hlo:
            text = r.pop("hlo")
            Path(out).mkdir(parents=True, exist_ok=True)
            (Path(out) / "step_adam_fused_hlo.txt").write_text(text)
            sec["hlo_copies"] = sum(" copy(" in line or "copy-start" in line
                                    for line in text.splitlines())
            log(f"one-kernel program at B={B}: {sec['hlo_copies']} copy instructions")
        res["throughput"].append(r)
        log(f"{name} adam, one kernel {tuple(best)[:5]}, B={B}: "
            f"{r['config_steps_per_s']:.4g} config-steps/s, "
            f"{r['adam_bytes_per_s'] / copy:.1%} of copy")
        save()
    sec["agreement"] = measure.fused_agreement(K, d, m, *cfg["fused_agree"], best,
                                               device=device)
    log(f"fused vs XLA after {cfg['fused_agree'][1]} steps: " + ", ".join(
        f"{k} {v:.2g}" for k, v in sec["agreement"].items() if isinstance(v, float)))
    save()


def write_json(res, out) -> None:
    """bench.json as it stands (written after every section: a run cut short keeps them)."""
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "bench.json").write_text(json.dumps(res, indent=1, default=float))


def time_to_solution(cfg, device, repeats, log, keep=lambda tts: None) -> dict:
    """The minority-collapse grid (``ncjax.bench.grid``; ``sweep_n`` configurations of it,
    evenly spaced) by ncjax (methods ufm and convex) and the baselines on samples of it
    (module docstring), each a row of ``ncjax.bench.route``; ``keep(tts)`` after each, so
    that a run cut short keeps those done."""
    counts, lam_W, lam_H = bench.grid(cfg["grid"])
    idx_all = bench.sample(counts.shape[0], cfg["sweep_n"])
    counts, lam_W, lam_H = counts[idx_all], lam_W[idx_all], lam_H[idx_all]
    lam = np.sqrt(lam_W * lam_H)
    B, d, m = counts.shape[0], counts.shape[1], 1
    tts = {"grid": cfg["grid"], "configurations": B, "routes": []}
    idx = bench.sample(B, cfg["sample_n"])
    slow = bench.sample(B, cfg["slow_sample_n"])

    def python_loop():
        conv, t = baselines.loop_to_tolerance(counts, lam, slow, d=d, m=m)
        return bench.route("jitted step, Python loop (L-BFGS)", len(slow), conv, t, t, [t])

    def torch_lbfgs():
        conv, t = baselines.torch_lbfgs_to_tolerance(counts, lam_W, lam_H, slow, d=d, m=m)
        return bench.route("torch.optim.LBFGS loop", len(slow), conv, t, t, [t])

    routes = [lambda method=method: bench.whole_grid(counts, lam_W, lam_H, method=method,
                                                     device=device, repeats=repeats)
              for method in ("ufm", "convex")]
    routes += [python_loop, lambda: bench.one_at_a_time(counts, lam_W, lam_H, idx,
                                                        device=device, repeats=repeats)]
    if bench.available("cvxpy"):
        routes.append(lambda: bench.cvxpy_route(counts, lam_W, lam_H, idx, repeats=repeats))
    if bench.available("torch"):
        routes.append(torch_lbfgs)
    for fn in routes:  # each logged and kept as it ends
        r = fn()
        tts["routes"].append(r)
        keep(tts)
        log(f"time to solution, {r['route']}: {r['converged']}/{r['configurations']} in "
            f"{r['seconds']:.3g} s ({r['converged_per_s']:.4g}/s; compile "
            f"{r['compile_s']:.1f} s)")
    return tts


def growth(cfg, device, repeats, log) -> dict:
    """Step time of the Adam solver against N (full UFM) and K, B filling the device."""
    g = {"N": [], "K": []}
    for axis, sizes in (("N", cfg["n_grid"]), ("K", cfg["K_grid"])):
        for s in sizes:
            K, d, m = (10, 64, s) if axis == "N" else (s, 64, 1)
            P = K * d + K * m * d + K
            B = max(1, min(1 << int(np.log2(max(1, cfg["growth_elems"] // P))),
                           fits(K, d, m, "float32", device)))
            r = solver_step(K, d, m, B, optimizer="adam", dtype="float32", device=device,
                            repeats=repeats, target_s=cfg["target_s"])
            r["N"] = K * m if axis == "N" else None
            g[axis].append(r)
            log(f"growth {axis}: K={K} m={m} B={B}: {r['step_s'] / B:.3g} s per config-step")
    return g


def from_args(a) -> int:
    """Run the harness from parsed options (``ncjax.bench.arguments``)."""
    if a.repeats < 1:
        raise InputError(f"--repeats must be >= 1, got {a.repeats}")
    run(tiny=a.tiny, repeats=a.repeats, out=a.out)
    return 0


def main(argv=None) -> int:
    p = bench.arguments(argparse.ArgumentParser(prog="benchmarks/bench.py",
                                                description=__doc__.split("\n\n")[0]))
    return from_args(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
