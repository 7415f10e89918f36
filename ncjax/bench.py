"""``ncjax bench``: time to solution of the standard minority-collapse grid, beside the
baselines, measured in one run on the current default device.

The problem (the grid of ``sweeps/bench_16384.toml``, generated here): two clusters, 5
classes of n_A = 500 and 5 of n_B, n_B = linspace(20, 400, 128), λ = geomspace(1e-3,
8e-3, 128) (λ = sqrt(λ_W λ_H), half convention), λ_W = 0.01, λ_H = λ²/λ_W; d = K = 10,
m = 1: 16,384 configurations (``--tiny``: the same ranges, 6 × 6).

Routes, each to the engine's own tolerance and counted by its own "converged":

* ``ncjax.solve`` of the whole grid in one call, method "ufm" (its defaults: L-BFGS,
  float32, certified) and method "convex";
* ``ncjax.solve`` of one configuration a call (B = 1), on an evenly spaced sample;
* cvxpy + Clarabel (``ncjax.reference``; problem construction included), on a sample,
  when cvxpy is importable.

The peers, on this grid and on a second one at K = 20: ``ncjax.bench_peers``.

Every timing is the median of ``repeats`` calls after one warm call; the warm call's
excess over that median is reported as the compilation ("compile_s"). Converged
configurations per second = converged / seconds. Writes ``bench.json`` (every raw number,
the machine, the command), ``bench.md`` (the tables, also printed) and ``bench.png``.
The engine's own throughput harness (step rates, bandwidth, growth) lives in the
repository's ``benchmarks/``, not in the package.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import jax
import jaxlib
import numpy as np
import optax

import ncjax
from ncjax import draw, reference
from ncjax.bench_peers import peers_section, peers_table
from ncjax.bench_problem import (FULL, K_A, K_B, LAM, LAM_W, N_A, N_B, SAMPLES, TINY,
                                 devices_of, grid, ratio, route, sample, timed)

__all__ = ["FULL", "TINY", "SAMPLES", "grid", "ratio", "route", "sample", "timed", "run",
           "table", "chart", "main", "arguments", "from_args", "available", "machine",
           "whole_grid", "one_at_a_time", "cvxpy_route"]
from ncjax.validate import InputError

def whole_grid(counts, lam_W, lam_H, *, method, device, repeats) -> dict:
    """Every configuration in one ``ncjax.solve`` call (its defaults)."""
    K = counts.shape[1]
    call = lambda: ncjax.solve(counts, lam_W, lam_H, d=K, m=1, method=method,
                               key_index=np.arange(counts.shape[0]),
                               devices=devices_of(device))
    first, t, times, r = timed(call, repeats)
    return route(f"ncjax.solve, method {method}, all at once", counts.shape[0],
                 r.converged.sum(), first, t, times, method=method,
                 median_steps=float(np.median(r.steps)))


def one_at_a_time(counts, lam_W, lam_H, idx, *, device, repeats) -> dict:
    """The sample ``idx``, one ``ncjax.solve`` call a configuration (B = 1; the same start
    as in the whole grid: key_index = its index); one compilation, by the warm pass."""
    K = counts.shape[1]

    def call():
        return [bool(ncjax.solve(counts[i], lam_W[i], lam_H[i], d=K, m=1, key_index=int(i),
                                 devices=devices_of(device)).converged) for i in idx]
    first, t, times, conv = timed(call, repeats)
    return route("ncjax.solve, one configuration a call", len(idx), sum(conv), first, t,
                 times)


def cvxpy_route(counts, lam_W, lam_H, idx, *, repeats, tol=1e-6) -> dict:
    """The sample ``idx`` by cvxpy + Clarabel (``ncjax.reference``), gap and feasibility
    ``tol``, problem construction included (that is the route's cost)."""
    def call():
        return [reference.solve(reference.problem(counts[i], float(np.sqrt(lam_W[i] * lam_H[i])),
                                                  0.0)[0], tol) == "optimal" for i in idx]
    first, t, times, conv = timed(call, repeats)
    return route(f"cvxpy + Clarabel (convex form), tol {tol:g}", len(idx), sum(conv), first,
                 t, times)


def available(name: str) -> bool:
    try:
        __import__(name)
        return True
    except ImportError:
        return False


def machine(device) -> dict:
    return {"platform": device.platform, "device": getattr(device, "device_kind", str(device)),
            "devices": jax.device_count(), "cpus": os.cpu_count(), "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "optax": optax.__version__, "numpy": np.__version__, "ncjax": ncjax.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "system": platform.platform()}


def run(*, tiny=False, repeats=3, out=None, device=None, command="ncjax bench",
        log=print) -> dict:
    """The benchmark (module docstring); writes its files under ``out`` when given."""
    device = jax.devices()[0] if device is None else device
    counts, lam_W, lam_H = grid(TINY if tiny else FULL)
    B = counts.shape[0]
    n_one, n_cvx = SAMPLES["tiny" if tiny else "full"]
    res = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "command": command,
           "argv": sys.argv, "machine": machine(device), "repeats": repeats,
           "problem": {"K_A": K_A, "n_A": N_A, "K_B": K_B, "lam_W": LAM_W, "n_B": N_B,
                       "lam": LAM, "points": TINY if tiny else FULL, "d": counts.shape[1],
                       "m": 1, "configurations": B}, "routes": []}
    log(f"# ncjax bench on {res['machine']['device']}: {B} configurations")
    steps = [lambda: whole_grid(counts, lam_W, lam_H, method="ufm", device=device,
                                repeats=repeats),
             lambda: whole_grid(counts, lam_W, lam_H, method="convex", device=device,
                                repeats=repeats),
             lambda: one_at_a_time(counts, lam_W, lam_H, sample(B, n_one), device=device,
                                   repeats=repeats)]
    if available("cvxpy"):
        steps.append(lambda: cvxpy_route(counts, lam_W, lam_H, sample(B, n_cvx),
                                         repeats=repeats))
    else:
        log("cvxpy is not installed: its baseline is left out (pip install cvxpy clarabel)")
    for step in steps:
        r = step()
        res["routes"].append(r)
        log(f"{r['route']}: {r['converged']}/{r['configurations']} converged in "
            f"{r['seconds']:.3g} s ({r['converged_per_s']:.4g}/s; compile {r['compile_s']:.1f} s)")
    res["peers"] = peers_section(tiny=tiny, repeats=repeats, device=device,
                                 ufm_rate=res["routes"][0]["converged_per_s"], log=log)
    res["table"] = table(res) + "\n" + peers_table(res)
    log(res["table"])
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(res, indent=1, default=float))
        (out / "bench.md").write_text(res["table"])
        chart(res, out / "bench.png")
    return res


def table(res: dict) -> str:
    """The markdown table of a run."""
    mc, p = res["machine"], res["problem"]
    ref = res["routes"][0]["converged_per_s"]
    lines = [f"# ncjax bench: {mc['device']} ({mc['platform']}), jax {mc['jax']}, "
             f"{res['date']}", "", f"Command: `{res['command']}`", "",
             f"Time to solution of the minority-collapse grid: {p['points']} × {p['points']} "
             f"= {p['configurations']} configurations (5 classes of {p['n_A']:g}, 5 of n_B "
             f"in [{p['n_B'][0]:g}, {p['n_B'][1]:g}], λ in [{p['lam'][0]:g}, {p['lam'][1]:g}],"
             f" λ_W = {p['lam_W']:g}, d = {p['d']}, m = 1). Seconds: median of "
             f"{res['repeats']} calls after a warm call; compile: the warm call's excess.", "",
             "| route | configurations | converged | seconds | compile (warm call − median), s "
             "| converged/s "
             "| ncjax ufm / route |", "|---|---|---|---|---|---|---|"]
    for r in res["routes"]:
        lines.append(f"| {r['route']} | {r['configurations']} | {r['converged']} | "
                     f"{r['seconds']:.4g} | {r['compile_s']:.1f} | {r['converged_per_s']:.4g} "
                     f"| {ratio(ref, r['converged_per_s'])} |")
    return "\n".join(lines) + "\n"


def chart(res: dict, path) -> Path:
    """Converged configurations per second of each route, a horizontal bar chart."""
    from matplotlib.figure import Figure

    routes = res["routes"]
    fig = Figure(figsize=(7.0, 0.6 + 0.5 * len(routes)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(routes))[::-1]
    rates = np.array([r["converged_per_s"] for r in routes])
    low = 10 ** np.floor(np.log10(rates[rates > 0].min() / 3)) if (rates > 0).any() else 1e-3
    # bars from a fixed decade below the slowest route, the rate written on each
    ax.barh(y, np.maximum(rates, low) - low, left=low, color="C0")
    for yi, rate in zip(y, rates):
        ax.text(max(rate, low), yi, f" {rate:.3g}/s", va="center", fontsize=8)
    ax.set_yticks(y, [r["route"] for r in routes], fontsize=8)
    ax.set(xscale="log", xlim=(low, rates.max() * 5 if rates.max() > 0 else 1),
           xlabel="converged configurations per second (log scale)",
           title=f"ncjax bench, {res['machine']['device']}")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    draw.save(fig, path, dpi=120)
    return Path(path)


def from_args(a) -> int:
    """Run the benchmark from parsed options (``arguments``)."""
    if a.repeats < 1:
        raise InputError(f"--repeats must be >= 1, got {a.repeats}")
    command = " ".join(["ncjax bench"] + (["--tiny"] if a.tiny else [])
                       + [f"--repeats {a.repeats}"] + ([f"--out {a.out}"] if a.out else []))
    run(tiny=a.tiny, repeats=a.repeats, out=a.out, command=command)
    return 0


def arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The benchmark's options (``ncjax bench`` and ``benchmarks/bench.py`` share them)."""
    p.add_argument("--out", default=None, help="folder for bench.json, bench.md, bench.png")
    p.add_argument("--tiny", action="store_true", help="a run of seconds (the tests' mode)")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed calls per measurement, after one warm call (the median)")
    return p


def main(argv=None) -> int:
    p = arguments(argparse.ArgumentParser(prog="ncjax bench",
                                          description=__doc__.split("\n\n")[0]))
    return from_args(p.parse_args(argv))


if __name__ == "__main__":
    ncjax.configure_cpu()
    sys.exit(main())
