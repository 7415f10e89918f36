"""The harness's output: the markdown tables of a run (``tables``) and its plot
(``plot``: throughput against B)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.measure import SHAPES, adam_bytes, step_flops
from ncjax.bench import ratio


def tables(res: dict) -> str:
    """The markdown tables of a run's results."""
    copy = res["copy"]["bandwidth"]
    dev = res["device"]
    lines = [f"# ncjax bench — {dev['name']} ({dev['platform']}), jax {dev['jax']}, "
             f"{res['date']}", "", f"Command: `{res['command']}`", "",
             (f"Copy (y = x + 1, {res['copy']['bytes'] / 2**20:.0f} MiB, in a loop, timed "
              f"by difference as the steps are): {copy / 1e9:.1f} GB/s (read + write); one "
              f"call timed alone: {res['copy']['single_call_bandwidth'] / 1e9:.1f} GB/s."
              if "single_call_bandwidth" in res["copy"] else  # runs before 95156fb
              f"Copy (y = x + 1, {res['copy']['bytes'] / 2**20:.0f} MiB, one call timed "
              f"alone): {copy / 1e9:.1f} GB/s (read + write)."), "",
             "## Solver step throughput (float32)", "",
             "| shape (K, d, m) | optimizer | B | config-steps/s | Adam bytes model, GB/s "
             "| of copy | compiled bytes / model | ran all steps |",
             "|---|---|---|---|---|---|---|---|"]
    for r in res["throughput"]:
        traffic = r["compiled_bytes"] / r["model_bytes"] if "compiled_bytes" in r else np.nan
        lines.append(f"| {r['shape']} ({r['K']}, {r['d']}, {r['m']}) | {label(r)} | "
                     f"{r['B']} | {r['config_steps_per_s']:.4g} | "
                     f"{r['adam_bytes_per_s'] / 1e9:.1f} | "
                     f"{r['adam_bytes_per_s'] / copy:.1%} | {traffic:.2f} | "
                     f"{r['ran_all_steps']} |")
    lines += ["", "(The bytes model applies to Adam; for L-BFGS the column is the same bytes "
              "over its step time, for comparison only. Compiled bytes: XLA's cost analysis "
              "of the compiled step, operands and results of every instruction as if "
              "nothing stayed in cache; a step that moves r times the model's bytes reaches "
              "at most 1/r of the copy if bandwidth-bound. \"one kernel\": the same loop "
              "with each Adam step one Pallas kernel, ``benchmarks.experiments.fused``, whose traffic is the "
              "model's; XLA's cost analysis does not see into it.)", ""]
    lines += fused_table(res)
    lines += ["",
              "## Against one configuration at a time (Adam step, config-steps/s)", "",
              "| shape | ncjax vmapped (best B) | jitted step, Python loop | jitted scan "
              "| PyTorch loop | vmapped / loop | vmapped / scan | vmapped / PyTorch |",
              "|---|---|---|---|---|---|---|---|"]
    for b in res["step_baselines"]:
        best = max(r["config_steps_per_s"] for r in res["throughput"]
                   if r["shape"] == b["shape"] and r["optimizer"] == "adam")
        tor = b.get("torch")
        lines.append(f"| {b['shape']} ({b['K']}, {b['d']}, {b['m']}) | {best:.4g} | "
                     f"{b['jitted_loop']:.4g} | {b['jitted_scan']:.4g} | "
                     f"{'—' if tor is None else f'{tor:.4g}'} | "
                     f"{ratio(best, b['jitted_loop'])} | {ratio(best, b['jitted_scan'])} | "
                     f"{'—' if tor is None else ratio(best, tor)} |")
    t = res["time_to_solution"]
    lines += ["", f"## Time to solution: {t['configurations']} configurations of the "
              "minority-collapse grid (``ncjax.bench``)", "",
              "| route | configurations | converged | seconds | compile, s | converged/s | "
              "ncjax ufm / route |", "|---|---|---|---|---|---|---|"]
    ref = t["routes"][0]["converged_per_s"]
    for r in t["routes"]:
        lines.append(f"| {r['route']} | {r['configurations']} | {r['converged']} | "
                     f"{r['seconds']:.4g} | {r['compile_s']:.1f} | "
                     f"{r['converged_per_s']:.4g} | {ratio(ref, r['converged_per_s'])} |")
    lines += ["", "## Growth (Adam, float32): step time per configuration against the work",
              "", "Relative cost = (time per config-step / work) over its value at the "
              "largest size; ≠ 1 ± 0.25 is marked *not linear*.", ""]
    xla_adam = [r for r in res["throughput"]
                if r["optimizer"] == "adam" and not r.get("kernel")]
    lines += growth_table(res, "B", [r for r in xla_adam if r["shape"] == "reference"]
                           or xla_adam)
    lines += growth_table(res, "N", res["growth"]["N"])
    lines += growth_table(res, "K", res["growth"]["K"])
    return "\n".join(lines) + "\n"


def label(r) -> str:
    """A throughput row's step: the optimizer, and the one-kernel launch if it has one."""
    k = r.get("kernel")
    if not k:
        return r["optimizer"]
    return (f"{r['optimizer']}, one kernel ({k['rows'] or 'default'} rows, {k['per']} a "
            f"program, {k['num_warps']} warps, {k['num_stages']} stages, {k['precision']}"
            f"{', interpreted' if k['interpret'] else ''})")


def fused_table(res) -> list[str]:
    """The one-kernel launches compared at one B, and the fastest one's agreement."""
    sec = res.get("fused")
    if not sec:
        return []
    copy = res["copy"]["bandwidth"]
    out = ["", f"### One-kernel Adam step: launches at B = {sec['B']} ({sec['shape']} shape)",
           "", "| launch | config-steps/s | of copy |", "|---|---|---|"]
    for r in sec["launches"]:
        if "error" in r:
            out.append(f"| {label({'optimizer': 'adam', **r})} | failed: "
                       f"{r['error'].splitlines()[0][:80]} | |")
        else:
            out.append(f"| {label(r)} | {r['config_steps_per_s']:.4g} | "
                       f"{r['adam_bytes_per_s'] / copy:.1%} |")
    a = sec.get("agreement")
    if a:
        out += ["", f"The fastest launch against XLA's loop, {a['B']} configurations, "
                f"{a['steps']} steps from the same starts (float32): largest relative "
                f"difference of F {a['F']:.2g}, of ‖∇F‖ {a['grad_norm']:.2g}, of V "
                f"{a['x.V']:.2g}, U {a['x.U']:.2g}, b {a['x.b']:.2g}; all ran: "
                f"{a['all_ran']}."]
    return out


def growth_table(res, axis, rows) -> list[str]:
    if not rows:
        return []
    per = lambda r: r["step_s"] / r["B"]
    if axis == "B":
        work = lambda r: 1.0
        head = ["| B | s per config-step | relative cost | |", "|---|---|---|---|"]
    else:
        work = lambda r: adam_bytes(r["K"], r["d"], r["m"], 4) + 0 * step_flops(
            r["K"], r["d"], r["m"])
        head = [f"| {'N = K m' if axis == 'N' else 'K'} (K, d, m) | B | s per config-step "
                "| bytes model | flops | GB/s | GFLOP/s | relative cost (bytes) "
                "| relative cost (flops) | |", "|---|---|---|---|---|---|---|---|---|---|"]
    last = rows[-1]
    out = [f"### against {axis}", ""] + head
    for r in rows:
        rel = (per(r) / work(r)) / (per(last) / work(last))
        flag = "" if abs(rel - 1) <= 0.25 else "*not linear*"
        if axis == "B":
            out.append(f"| {r['B']} | {per(r):.3g} | {rel:.2f} | {flag} |")
        else:
            fl = step_flops(r["K"], r["d"], r["m"])
            relf = (per(r) / fl) / (per(last) / step_flops(last["K"], last["d"], last["m"]))
            flag = "" if abs(rel - 1) <= 0.25 or abs(relf - 1) <= 0.25 else "*not linear*"
            size = r["N"] if axis == "N" else r["K"]
            out.append(f"| {size} ({r['K']}, {r['d']}, {r['m']}) | {r['B']} | {per(r):.3g} | "
                       f"{adam_bytes(r['K'], r['d'], r['m'], 4)} | {fl} | "
                       f"{r['adam_bytes_per_s'] / 1e9:.1f} | {r['flops_per_s'] / 1e9:.1f} | "
                       f"{rel:.2f} | {relf:.2f} | {flag} |")
    return out + [""]


def plot(res: dict, path) -> Path:
    """Configuration-steps per second against B per shape, the one-at-a-time baselines as
    horizontal lines."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for i, name in enumerate(dict.fromkeys(r["shape"] for r in res["throughput"])):
        colour = f"C{i}"
        rows = [r for r in res["throughput"] if r["shape"] == name]
        for text in dict.fromkeys(label(r) for r in rows):
            pts = [r for r in rows if label(r) == text]
            style = "--s" if text == "lbfgs" else ("-^" if "kernel" in text else "-o")
            ax.plot([r["B"] for r in pts], [r["config_steps_per_s"] for r in pts], style,
                    color=colour, ms=4, label=f"{name} {tuple(SHAPES[name])}, ncjax {text}")
        for b in res["step_baselines"]:
            if b["shape"] == name:
                ax.axhline(b["jitted_loop"], color=colour, ls=":", lw=1)
                if "torch" in b:
                    ax.axhline(b["torch"], color=colour, ls="-.", lw=1)
    ax.plot([], [], "k:", lw=1, label="jitted step, Python loop (Adam)")
    if any("torch" in b for b in res["step_baselines"]):
        ax.plot([], [], "k-.", lw=1, label="PyTorch loop (Adam)")
    ax.set(xscale="log", yscale="log", xlabel="configurations per batch $B$",
           ylabel="configuration-steps per second",
           title=f"ncjax solver step, {res['device']['name']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120)
    return Path(path)
