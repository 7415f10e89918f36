"""Wall time of the commands that need only a run's index, on a finished run (issue 19:
a no-op resume and ``show`` of a 10^4-chunk run in ≤ 2 s).

Each command runs in a fresh process (``python -m ncjax …``, the interpreter's start and
the imports included), ``--repeat`` times; the median and the range are printed, with the
run's size. The run directory must be finished (every cell done): then ``resume`` has
nothing to solve and ``show`` prints the grid's numbers. The quick check's record is taken
when a chunk is committed; a run copied with new inodes (``cp -a``) is verified in full by
its first resume, which records it anew, so run ``ncjax resume DIR`` once before timing a
copy.

    python benchmarks/index_read.py DIR [--repeat 3] [--tree PATH] [--verify]

``--tree``: another checkout to time (its ncjax on PYTHONPATH), e.g. the code before.
``--verify``: also time ``resume --verify`` (every chunk read and checksummed), once.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def timed(argv: list[str], env: dict) -> tuple[float, int, str]:
    t = time.perf_counter()
    p = subprocess.run(argv, env=env, capture_output=True, text=True)
    return time.perf_counter() - t, p.returncode, (p.stdout + p.stderr).strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tree", default=None)
    ap.add_argument("--verify", action="store_true")
    a = ap.parse_args()
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    if a.tree:
        env["PYTHONPATH"] = a.tree
    index = a.dir / "index"
    chunks = len([p for p in index.iterdir() if p.suffix == ".json"]) if index.is_dir() else 0
    cells = json.loads((a.dir / "manifest.json").read_text())["cells"]
    print(f"{a.dir}: {cells} cells in {chunks} chunks; load average "
          f"{os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs")
    cmds = {"resume": ["resume", str(a.dir)], "show": ["show", str(a.dir)]}
    if a.verify:
        cmds["resume --verify"] = ["resume", str(a.dir), "--verify"]
    out = {}
    for name, args in cmds.items():
        runs = [timed([sys.executable, "-m", "ncjax", *args], env)
                for _ in range(1 if name.endswith("--verify") else a.repeat)]
        bad = [r for r in runs if r[1] != 0]
        if bad:
            print(f"ncjax {name}: exit {bad[0][1]}\n{bad[0][2]}")
            return 1
        t = [r[0] for r in runs]
        out[name] = t
        print(f"ncjax {name:16s} median {statistics.median(t):6.2f} s "
              f"(min {min(t):.2f}, max {max(t):.2f}, {len(t)} runs)")
    imp = timed([sys.executable, "-c", "import ncjax.cli"], env)[0]
    print(f"python -c 'import ncjax.cli'   {imp:.2f} s (the start every command pays)")
    print(runs[-1][2].splitlines()[-1] if runs[-1][2] else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
