"""ncjax: where neural collapse happens in the Unconstrained Feature Model, in JAX.

The public names, re-exported here from the modules that own them (docs/architecture.md):
a problem (``Problem``, ``losses``), the solve (``solve``, ``Result``), the solve of one
configuration as a pure function for ``jax.jit`` and ``jax.vmap`` (``functional.solve``,
``Solution``), the phases’ thresholds along λ (``thresholds``), sweeps (``load``), and
``configure_cpu`` (XLA's CPU flags, called explicitly; importing ncjax changes no
environment). They are loaded on first use (PEP 562), so ``import ncjax`` itself costs
nothing: the ``ncjax`` command can then set its signal handlers before JAX is imported.
"""

import importlib

__version__ = "0.1.0"

_OWNERS = {"InputError": "validate", "NCJaxWarning": "validate", "Problem": "problem",
           "Result": "solver", "solve": "solver", "Solution": "functional", "load": "reading",
           "configure_cpu": "xla", "thresholds": "phases", "Thresholds": "phases"}
_MODULES = ("functional", "losses", "metrics", "model", "plot", "problem", "profiles", "spec",
            "sweep", "theory")

__all__ = sorted(_OWNERS) + list(_MODULES) + ["__version__"]


def __getattr__(name):
    if name in _OWNERS:
        return getattr(importlib.import_module(f"ncjax.{_OWNERS[name]}"), name)
    if name in _MODULES:
        return importlib.import_module(f"ncjax.{name}")
    raise AttributeError(f"module 'ncjax' has no attribute {name!r}")


def __dir__():
    return __all__
