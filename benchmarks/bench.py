"""The benchmark's entry point (the same as ``ncjax bench``): throughput, bandwidth against
a copy, time to solution and growth, side by side with the baselines, in one run on the
current device. See ``ncjax/bench.py`` for what is measured and how.

Command:  python benchmarks/bench.py [--tiny] [--out DIR] [--repeats R]
"""

import sys

from ncjax.bench import main

if __name__ == "__main__":
    sys.exit(main())
