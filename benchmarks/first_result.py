"""The first result of a new process: the README's Python example and its CLI solve, each
run as a user runs it (a fresh process, XLA's default flags), with ncjax's compilation
cache cold (an empty folder), warm (the same folder again) and off (NCJAX_CACHE_DIR=off).

Every time is the wall time of the whole process (Python, the imports, the compilation or
the cache's load, the solve, the output), the median of ``--repeats`` processes; the
cold time is one process a repeat, each with a new empty folder. The README's blocks are
read from README.md (the first fenced block after "### Python", and the ``$ ncjax solve``
line after "### Command line"), so the measured code is the printed one.

Command:  python benchmarks/first_result.py [--repeats 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_examples(readme: Path = ROOT / "README.md") -> dict:
    """{"python": the Python example's source, "cli": the CLI solve's argv}."""
    text = readme.read_text()
    py = re.findall(r"^```python\n(.*?)^```$", text[text.index("### Python"):], re.S | re.M)[0]
    cli = re.search(r"^\$ (ncjax solve .*)$", text[text.index("### Command line"):], re.M)
    return {"python": py, "cli": shlex.split(cli.group(1))}


def _env(cache: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR",
                        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")}
    env["NCJAX_CACHE_DIR"] = cache
    env["PYTHONPATH"] = str(ROOT)
    return env


def timed(argv: list[str], cache: str) -> float:
    """Wall seconds of one process ``argv`` with NCJAX_CACHE_DIR=``cache``; it must end
    with status 0."""
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=_env(cache), capture_output=True, text=True, cwd=ROOT)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return dt


def measure(argv: list[str], repeats: int) -> dict:
    """Cold, warm and off: the seconds of each process and their medians."""
    cold, warm, off = [], [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="ncjax-cache-") as d:
            cold.append(timed(argv, d))
            warm.append(timed(argv, d))
            warm.append(timed(argv, d))
        off.append(timed(argv, "off"))
    return {name: {"median_s": statistics.median(v), "seconds": v}
            for name, v in (("cold", cold), ("warm", warm), ("off", off))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=None, help="folder for first_result.json")
    a = p.parse_args(argv)
    ex = readme_examples()
    routes = {"README Python example": [sys.executable, "-c", ex["python"]],
              "README CLI solve": [sys.executable, "-m", "ncjax"] + ex["cli"][1:]}
    res = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv),
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "machine": platform.machine(),
                       "load_before": os.getloadavg()}, "routes": {}}
    print("| route | cache cold, s | warm, s | off, s |\n|---|---|---|---|")
    for name, cmd in routes.items():
        m = res["routes"][name] = measure(cmd, a.repeats)
        print(f"| {name} | {m['cold']['median_s']:.2f} | {m['warm']['median_s']:.2f} | "
              f"{m['off']['median_s']:.2f} |", flush=True)
    res["machine"]["load_after"] = os.getloadavg()
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "first_result.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
