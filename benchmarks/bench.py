"""The benchmark harness's entry point: throughput, bandwidth against a copy, the
one-kernel step, time to solution and growth, side by side with the baselines, in one run
on the current device. See ``benchmarks/harness.py`` for what is measured and how (the
package's ``ncjax bench`` is its time-to-solution part alone).

Command:  python benchmarks/bench.py [--tiny] [--out DIR] [--repeats R]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root

import ncjax  # noqa: E402
from benchmarks.harness import main  # noqa: E402

if __name__ == "__main__":
    ncjax.configure_cpu()  # before JAX starts its CPU backend (docs/known-issues.md)
    sys.exit(main())
