"""Time and peak memory of validating and planning a large grid (issue 19, item 3).

Each size runs in a fresh process: ``spec.loads`` and ``solvable.check`` (every check, one
expansion) → ``expand``
→ ``blocks`` → ``sweep.plan`` (chunks of 96, nothing done), on quick.toml's problem with
larger axes (n_B × λ). Peak memory is ``ru_maxrss``, after the imports and at the end.

    python benchmarks/scale.py                       # this tree, 10^4 … 10^7 cells
    python benchmarks/scale.py --tree /tmp/old       # another checkout (e.g. the code
                                                     # before, from `git archive HEAD`)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

SIZES = {10**4: (100, 100), 10**5: (250, 400), 10**6: (1000, 1000), 10**7: (2500, 4000)}
SPEC = """
[problem]
profile = "two_cluster"
K_A = 5
n_A = 500
K_B = 5
lam_W = 0.01
lam_b = 0.0
[axes]
n_B = {{ lin = [20, 400, {a}] }}
lam = {{ log = [1e-3, 8e-3, {b}] }}
[run]
chunk_size = 96
"""

CHILD = r"""
import json, resource, sys, time
import numpy as np
from ncjax import spec, sweep
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
base = rss()
text = sys.stdin.read()
t = [time.perf_counter()]
sp = spec.loads(text, "scale.toml")
if hasattr(sweep, "solvable"):  # the engine's checks, in spec.loads before they moved
    sweep.solvable.check(sp)
t.append(time.perf_counter())
grid = spec.expand(sp); t.append(time.perf_counter())
blocks = grid.blocks(); t.append(time.perf_counter())
done = np.zeros(int(np.prod(grid.shape)), bool)
chunks = sweep.plan(grid, 96, done); t.append(time.perf_counter())
d = np.diff(t)
print(json.dumps({"module": spec.__file__, "loads": d[0], "expand": d[1], "blocks": d[2],
                  "plan": d[3], "chunks": len(chunks), "rss_base": base, "rss_peak": rss()}))
"""


def measure(cells: int, tree: str | None, timeout: float) -> dict:
    a, b = SIZES[cells]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    if tree:
        env["PYTHONPATH"] = tree
    try:
        out = subprocess.run([sys.executable, "-c", CHILD], input=SPEC.format(a=a, b=b),
                             capture_output=True, text=True, env=env, timeout=timeout,
                             cwd=tree or Path(__file__).resolve().parents[1])
    except subprocess.TimeoutExpired:
        return {"cells": cells, "error": f"timed out after {timeout:.0f} s"}
    if out.returncode:
        return {"cells": cells, "error": out.stderr.strip().splitlines()[-1]}
    return {"cells": cells, **json.loads(out.stdout)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", help="a checkout to import ncjax from (default this one)")
    ap.add_argument("--sizes", type=int, nargs="*", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per size")
    args = ap.parse_args()
    print("| cells | loads s | expand s | blocks s | plan s | total s | peak RSS MiB "
          "(after imports) |")
    print("|---|---|---|---|---|---|---|")
    for cells in args.sizes:
        r = measure(cells, args.tree, args.timeout)
        if "error" in r:
            print(f"| {cells:,} | {r['error']} | | | | | |", flush=True)
            continue
        total = r["loads"] + r["expand"] + r["blocks"] + r["plan"]
        print(f"| {cells:,} | {r['loads']:.3f} | {r['expand']:.3f} | {r['blocks']:.3f} | "
              f"{r['plan']:.3f} | {total:.2f} | {r['rss_peak']:.0f} ({r['rss_base']:.0f}) |",
              flush=True)
    print(f"\nncjax from {r.get('module', '?')}", file=sys.stderr)


if __name__ == "__main__":
    main()
