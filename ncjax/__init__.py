"""ncjax: where neural collapse happens in the Unconstrained Feature Model, in JAX.

The public names, re-exported here from the modules that own them (docs/architecture.md):
a problem (``Problem``, ``losses``), the solve (``solve``, ``Result``), sweeps (``load``),
and ``configure_cpu`` (XLA's CPU flags, called explicitly; importing ncjax changes no
environment).
"""

from ncjax import losses, metrics, model, problem, profiles, spec, sweep, theory
from ncjax.problem import Problem
from ncjax.solver import Result, solve
from ncjax.store import load
from ncjax.validate import InputError, NCJaxWarning
from ncjax.xla import configure_cpu

__version__ = "0.1.0"
__all__ = ["InputError", "NCJaxWarning", "Problem", "Result", "configure_cpu", "load",
           "losses", "metrics", "model", "problem", "profiles", "solve", "spec", "sweep",
           "theory", "__version__"]
