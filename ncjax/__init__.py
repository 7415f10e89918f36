"""ncjax: where neural collapse happens in the Unconstrained Feature Model, in JAX."""

import os as _os

# XLA's CPU runtime can wedge (idle threads, no result, forever) on vmapped programs that
# mix batched linear-algebra calls, e.g. SVD and eigh in one batch of 64 solves; seen on
# jax 0.10.2, and reported upstream by others. Single-threaded Eigen avoids it. Set here,
# before JAX creates its CPU client, unless the user chose a value themselves.
if "xla_cpu_multi_thread_eigen" not in _os.environ.get("XLA_FLAGS", ""):
    _os.environ["XLA_FLAGS"] = (
        _os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()

from ncjax import metrics, model, profiles, spec, sweep, theory
from ncjax._validate import InputError, NCJaxWarning
from ncjax.solver import Result, solve
from ncjax.sweep import load

__version__ = "0.1.0"
__all__ = ["InputError", "NCJaxWarning", "Result", "load", "metrics", "model", "profiles",
           "solve", "spec", "sweep", "theory", "__version__"]
