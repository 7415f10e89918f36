"""ncjax: where neural collapse happens in the Unconstrained Feature Model, in JAX."""

import os as _os

# XLA's CPU runtime can wedge (idle threads, no result, forever) on vmapped programs that
# mix batched linear-algebra calls with the solver's loop; seen on jax 0.10.2 (README,
# "Known issue"). Two flags avoid every wedge we met: single-threaded Eigen (SVD and eigh in
# one batch of 64 solves), and the scheduler that does not reorder a program for
# concurrency (the L-BFGS solve with its metrics, from its second call on: 2 of 2 sweeps of
# 2,048 configurations, every call series of 24 float64 ones). Both flags exist in jax 0.10
# and 0.11. Set here, before JAX creates its CPU client, unless the user chose a value.
_FLAGS = {"xla_cpu_multi_thread_eigen": "false",
          "xla_cpu_enable_concurrency_optimized_scheduler": "false"}
for _name, _value in _FLAGS.items():
    if _name not in _os.environ.get("XLA_FLAGS", ""):
        _os.environ["XLA_FLAGS"] = (
            _os.environ.get("XLA_FLAGS", "") + f" --{_name}={_value}").strip()
del _name, _value

from ncjax import metrics, model, profiles, spec, sweep, theory
from ncjax.validate import InputError, NCJaxWarning
from ncjax.solver import Result, solve
from ncjax.sweep import load

__version__ = "0.1.0"
__all__ = ["InputError", "NCJaxWarning", "Result", "load", "metrics", "model", "profiles",
           "solve", "spec", "sweep", "theory", "__version__"]
