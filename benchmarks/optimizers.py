"""How L-BFGS, Adam and gradient descent reach a gradient tolerance on the UFM, side by side.

Measured, in one run on the current machine (the basis of ncjax's default, L-BFGS):

* Problems: two clusters, K_A = 5 classes of n_A = 500 and K_B = 5 classes of n_B = 100
  (N = 3000, minority threshold λ* = sqrt(n_B)/N = 0.003333), d = K = 10, m = 1, float64,
  λ_b = 0, λ_W = 0.01 and λ_H = λ²/λ_W so that sqrt(λ_W λ_H) = λ, for
  λ/λ* ∈ {0.5, 0.9, 0.99, 1.01, 1.1, 2.0} and several seeds (random starts).
* Stopping: only the gradient. The absolute target is ‖∇F‖ ≤ 1e-7 in natural coordinates;
  ncjax's gtol is relative to the initial gradient norm ‖∇₀‖ (≈ 0.3), so each configuration
  gets gtol = 1e-7/‖∇₀‖, with ‖∇₀‖ measured by a zero-learning-rate step. ftol = 0.
  "reached" below means final ‖∇F‖ ≤ 1e-7, checked here from the returned gradient norm.
* Optimizers: lbfgs (no learning rate), adam and gd over a learning-rate grid; the best
  rate per optimizer is the one that reaches the target in the most configurations, then in
  the fewest steps (worst configuration, then median).
* Per (optimizer, rate): one batched ``ncjax.solve`` call over all ratios × seeds (steps,
  final ‖∇F‖, status; wall time of that whole batch). At each optimizer's best rate: one
  call per ratio, batched over seeds, for the per-ratio wall time. Each call is made once to
  compile, then timed (time.perf_counter) over ``--repeats`` identical calls; the median
  is reported (``solve`` returns numpy arrays, so a call is synchronous).
* GD near the threshold: median gd steps at λ = 0.99λ* over those at 0.9λ*.

Outputs OUT/optimizers.json (every raw number, date, machine, versions, command) and
OUT/optimizers.md (the tables, also printed).

Command:  python benchmarks/optimizers.py [--quick] [--out DIR] [--repeats R]
          (--quick: 2000 steps, λ/λ* ∈ {0.9, 0.99}, 1 seed; under a minute on a laptop CPU)
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import jax
import optax

import ncjax

N_A, K_A, N_B, K_B = 500, 5, 100, 5
LAM_W = 0.01
GRAD_TARGET = 1e-7
FULL = dict(ratios=(0.5, 0.9, 0.99, 1.01, 1.1, 2.0), seeds=(0, 1, 2, 3), max_steps=20000)
QUICK = dict(ratios=(0.9, 0.99), seeds=(0,), max_steps=2000)
GRIDS = {"lbfgs": (None,), "adam": (1e-3, 1e-2, 1e-1, 0.3, 1.0, 3.0),
         "gd": (0.1, 1.0, 3.0, 10.0, 15.0, 20.0, 30.0, 100.0)}


# ----------------------------------------------------------------------------- problems

def counts() -> np.ndarray:
    """n_k: K_A classes of N_A, then K_B classes of N_B."""
    return np.array([N_A] * K_A + [N_B] * K_B, dtype=float)


def lam_star() -> float:
    """Minority-collapse threshold λ* = sqrt(n_B)/N (DESIGN.md §1)."""
    return float(np.sqrt(N_B) / counts().sum())


def problems(ratios, seeds) -> dict:
    """The batch: every (ratio, seed), ratio-major; arrays shaped (B,) and counts (B, K)."""
    r, s = (a.ravel() for a in np.meshgrid(np.asarray(ratios, float), np.asarray(seeds),
                                           indexing="ij"))
    lam = r * lam_star()
    return {"ratio": r, "seed": s.astype(int), "counts": np.tile(counts(), (r.size, 1)),
            "lam_W": np.full(r.size, LAM_W), "lam_H": lam**2 / LAM_W}


def subset(prob: dict, mask: np.ndarray) -> dict:
    return {k: v[mask] for k, v in prob.items()}


# ----------------------------------------------------------------------------- solving

def solve(prob: dict, optimizer: str, lr, gtol, max_steps: int) -> ncjax.Result:
    """One batched ncjax.solve call: float64, d = K, m = 1, λ_b = 0, ftol = 0."""
    return ncjax.solve(prob["counts"], prob["lam_W"], prob["lam_H"], 0.0, d=counts().size,
                       m=1, seed=prob["seed"], optimizer=optimizer, learning_rate=lr,
                       max_steps=max_steps, gtol=gtol, ftol=0.0, dtype="float64")


def timed_solve(prob, optimizer, lr, gtol, max_steps, repeats):
    """Call once (compile), then ``repeats`` identical timed calls: (result, [seconds])."""
    solve(prob, optimizer, lr, gtol, max_steps)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = solve(prob, optimizer, lr, gtol, max_steps)
        times.append(time.perf_counter() - t0)
    return res, times


def initial_grad_norm(prob: dict) -> np.ndarray:
    """‖∇₀‖ per configuration: one gd step with learning rate 0 leaves the start unchanged."""
    return solve(prob, "gd", 0.0, 0.0, 1).grad_norm


# ----------------------------------------------------------------------------- summaries

def steps_to_target(res: ncjax.Result) -> np.ndarray:
    """Steps where the run reached ‖∇F‖ ≤ GRAD_TARGET, +inf where it did not."""
    reached = res.grad_norm <= GRAD_TARGET * (1 + 1e-9)
    return np.where(reached, res.steps, np.inf)


def status_fractions(status: np.ndarray) -> dict:
    return {name: float(np.mean(status == name)) for name in ("converged", "max_steps",
                                                              "diverged")}


def summary(res: ncjax.Result, mask=None) -> dict:
    """Median steps to target (inf if most missed), median ‖∇F‖, fraction reached, status."""
    mask = np.ones(res.steps.shape, bool) if mask is None else mask
    st = steps_to_target(res)[mask]
    return {"median_steps": float(np.median(st)), "max_steps": float(np.max(st)),
            "median_grad_norm": float(np.median(res.grad_norm[mask])),
            "frac_reached": float(np.mean(np.isfinite(st))),
            "status": status_fractions(res.status[mask])}


def raw(res: ncjax.Result) -> dict:
    return {"steps": res.steps.tolist(), "grad_norm": res.grad_norm.tolist(),
            "objective": res.objective.tolist(), "status": res.status.tolist()}


def best_run(runs: list) -> dict:
    """The rate that reaches the target most often, then in the fewest (max, median) steps."""
    return min(runs, key=lambda r: (-r["all"]["frac_reached"], r["all"]["max_steps"],
                                    r["all"]["median_steps"]))


# ----------------------------------------------------------------------------- measuring

def measure_grid(prob, gtol, max_steps, repeats) -> dict:
    """Every (optimizer, rate): one batch over all ratios × seeds, summarised per ratio."""
    out = {}
    for optimizer, grid in GRIDS.items():
        runs = []
        for lr in grid:
            res, times = timed_solve(prob, optimizer, lr, gtol, max_steps, repeats)
            per_ratio = {str(r): summary(res, prob["ratio"] == r)
                         for r in np.unique(prob["ratio"])}
            runs.append({"lr": lr, "batch_seconds": times, "all": summary(res),
                         "per_ratio": per_ratio, "raw": raw(res)})
            print(f"  {optimizer:5s} lr={lr}: reached {runs[-1]['all']['frac_reached']:.2f},"
                  f" median steps {runs[-1]['all']['median_steps']:.0f},"
                  f" {statistics.median(times):.3f} s", flush=True)
        out[optimizer] = {"runs": runs, "best_lr": best_run(runs)["lr"]}
    return out


def measure_per_ratio_times(prob, gtol, max_steps, repeats, grid: dict) -> None:
    """At each optimizer's best rate, time one call per ratio (batched over seeds)."""
    for optimizer, entry in grid.items():
        best = best_run(entry["runs"])
        for r in np.unique(prob["ratio"]):
            mask = prob["ratio"] == r
            _, times = timed_solve(subset(prob, mask), optimizer, best["lr"], gtol[mask],
                                   max_steps, repeats)
            best["per_ratio"][str(r)]["seconds"] = times


def gd_threshold_slowdown(grid: dict) -> dict | None:
    """Median steps at 0.99λ* over those at 0.9λ*, per optimizer at its best rate."""
    out = {}
    for optimizer, entry in grid.items():
        pr = best_run(entry["runs"])["per_ratio"]
        if "0.9" in pr and "0.99" in pr:
            a, b = pr["0.9"]["median_steps"], pr["0.99"]["median_steps"]
            out[optimizer] = {"steps_0.9": a, "steps_0.99": b, "ratio": b / a}
    return out or None


# ----------------------------------------------------------------------------- reporting

def fmt_steps(x: float, max_steps: int) -> str:
    return f">{max_steps}" if not np.isfinite(x) else f"{x:.0f}"


def fmt_lr(lr) -> str:
    return "—" if lr is None else f"{lr:g}"


def fmt_ratio(v: dict, max_steps: int) -> str:
    """steps(0.99)/steps(0.9); a lower bound where 0.99 missed the target."""
    if np.isfinite(v["ratio"]):
        return f"{v['ratio']:.1f}x"
    return f">{max_steps / v['steps_0.9']:.1f}x" if np.isfinite(v["steps_0.9"]) else "n/a"


def fmt_status(s: dict) -> str:
    return "/".join(f"{s[k]:.2f}" for k in ("converged", "max_steps", "diverged"))


def markdown(report: dict) -> str:
    """The tables of the report as markdown."""
    ms, grid = report["settings"]["max_steps"], report["grid"]
    lines = [f"# Optimizers on the two-cluster UFM ({report['date']})", "",
             f"`{report['command']}` on {report['machine']}, jax {report['jax']},"
             f" total {report['total_seconds']:.0f} s.",
             f"Target ‖∇F‖ ≤ {GRAD_TARGET:g} (natural coordinates), ftol = 0, "
             f"max_steps = {ms}, {len(report['settings']['seeds'])} seed(s), float64. "
             "Steps: median over seeds of steps to the target (>max: most missed it). "
             "Status: ncjax's converged/max_steps/diverged fractions. Wall s: median "
             "timed call for that ratio, batched over seeds, after a compile call.", "",
             "## Best learning rate per optimizer", "",
             "| optimizer | lr | λ/λ* | median steps | median ‖∇F‖ | reached | status c/m/d |"
             " wall s |", "|---|---|---|---|---|---|---|---|"]
    for optimizer, entry in grid.items():
        best = best_run(entry["runs"])
        for r, s in best["per_ratio"].items():
            lines.append(f"| {optimizer} | {fmt_lr(best['lr'])} | {r} | "
                         f"{fmt_steps(s['median_steps'], ms)} | {s['median_grad_norm']:.1e} |"
                         f" {s['frac_reached']:.2f} | {fmt_status(s['status'])} |"
                         f" {statistics.median(s['seconds']):.3f} |")
    lines += ["", "## Learning-rate grid (one batched call over every ratio and seed)", "",
              "| optimizer | lr | reached | median steps | worst steps | median ‖∇F‖ |"
              " status c/m/d | batch wall s |", "|---|---|---|---|---|---|---|---|"]
    for optimizer, entry in grid.items():
        for run in entry["runs"]:
            a = run["all"]
            lines.append(f"| {optimizer} | {fmt_lr(run['lr'])} | {a['frac_reached']:.2f} | "
                         f"{fmt_steps(a['median_steps'], ms)} | {fmt_steps(a['max_steps'], ms)}"
                         f" | {a['median_grad_norm']:.1e} | {fmt_status(a['status'])} |"
                         f" {statistics.median(run['batch_seconds']):.3f} |")
    slow = report["threshold_slowdown"]
    if slow:
        lines += ["", "## Steps at 0.99λ* over steps at 0.9λ* (best rate)", ""]
        lines += [f"- {o}: {fmt_steps(v['steps_0.99'], ms)} / {fmt_steps(v['steps_0.9'], ms)}"
                  f" = {fmt_ratio(v, ms)}" for o, v in slow.items()]
    return "\n".join(lines) + "\n"


def jsonable(x):
    """Replace inf/nan (invalid JSON) by strings, recursively."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, float) and not np.isfinite(x):
        return str(x)
    return x


# ----------------------------------------------------------------------------- driver

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2000 steps, 2 ratios, 1 seed")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    p.add_argument("--repeats", type=int, default=3, help="timed calls after the compile")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    settings = QUICK if args.quick else FULL
    t_start = time.perf_counter()
    prob = problems(settings["ratios"], settings["seeds"])
    g0 = initial_grad_norm(prob)
    gtol = GRAD_TARGET / g0
    print(f"B = {g0.size} configurations, ‖∇₀‖ in [{g0.min():.3f}, {g0.max():.3f}]",
          flush=True)
    grid = measure_grid(prob, gtol, settings["max_steps"], args.repeats)
    measure_per_ratio_times(prob, gtol, settings["max_steps"], args.repeats, grid)
    report = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["python"] + sys.argv),
        "machine": f"{platform.machine()} {platform.processor() or platform.platform()}",
        "platform": platform.platform(), "processor": platform.processor(),
        "devices": [str(d) for d in jax.devices()], "jax": jax.__version__,
        "optax": optax.__version__, "ncjax": ncjax.__version__,
        "settings": {**settings, "lam_W": LAM_W, "lam_star": lam_star(),
                     "counts": counts().tolist(), "grad_target": GRAD_TARGET,
                     "repeats": args.repeats, "grids": GRIDS},
        "configs": {"ratio": prob["ratio"].tolist(), "seed": prob["seed"].tolist(),
                    "lam_H": prob["lam_H"].tolist(), "initial_grad_norm": g0.tolist()},
        "grid": grid, "threshold_slowdown": gd_threshold_slowdown(grid),
    }
    report["total_seconds"] = time.perf_counter() - t_start
    md = markdown(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "optimizers.json").write_text(json.dumps(jsonable(report), indent=1) + "\n")
    (args.out / "optimizers.md").write_text(md)
    print(md)
    return report


if __name__ == "__main__":
    main()
