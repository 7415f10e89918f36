"""``ncjax.thresholds`` against an earlier version of it, side by side in one process
(issue 21, item 1): each profile's call three times with each version, alternating, the
first call compiling. Before: the host loop of f7f6eff (one ``ncjax.solve`` of every
search per bisection step, each from 0). After: this tree's compiled search.

    git show f7f6eff:ncjax/phases.py > /tmp/phases_before.py
    python benchmarks/thresholds.py /tmp/phases_before.py
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np

import ncjax

PROFILES = {
    "3x500 + 3x50": (np.array([500.0] * 3 + [50.0] * 3), 0.0),
    "5x1000 + 5x1000/r, r = 2.5, 10, 100, lam_b = 0, 0.02 (B = 6)": (
        np.array([[1000.0] * 5 + [1000.0 / r] * 5 for r in (2.5, 10, 100) for _ in (0, 1)]),
        np.array([0.0, 0.02] * 3)),
    "5x1000 + 5x1000/r, 24 ratios 2-100 (B = 24)": (
        np.array([[1000.0] * 5 + [1000.0 / r] * 5 for r in np.geomspace(2, 100, 24)]), 0.0),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("before", help="the phases.py of the version to compare with")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    ncjax.configure_cpu()
    spec = importlib.util.spec_from_file_location("phases_before", args.before)
    before = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(before)
    from ncjax import phases
    versions = {"before": before.thresholds, "after": phases.thresholds}
    ncjax.thresholds([2.0, 2.0, 1.0], rtol=0.5)  # JAX started before any timing
    print("| profile | before: first, then (s) | after: first, then (s) | ratio first | "
          "ratio then | largest difference |")
    print("|---|---|---|---|---|---|")
    for name, (counts, lam_b) in PROFILES.items():
        times = {k: [] for k in versions}
        out = {}
        for _ in range(args.repeat):
            for k, f in versions.items():
                t0 = time.perf_counter()
                out[k] = f(counts, lam_b)
                times[k].append(time.perf_counter() - t0)
        diff = max(np.nanmax(np.abs(np.asarray(getattr(out["after"], f))
                                    / np.asarray(getattr(out["before"], f)) - 1))
                   for f in ("collapse", "vanish", "zero"))
        tb, ta = times["before"], times["after"]
        then_b, then_a = np.median(tb[1:]), np.median(ta[1:])
        print(f"| {name} | {tb[0]:.1f}, {then_b:.2f} | {ta[0]:.1f}, {then_a:.3f} | "
              f"{tb[0] / ta[0]:.1f}x | {then_b / then_a:.0f}x | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
