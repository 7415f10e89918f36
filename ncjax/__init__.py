"""ncjax: where neural collapse happens in the Unconstrained Feature Model, in JAX."""

from ncjax import metrics, model, profiles, theory
from ncjax._validate import InputError, NCJaxWarning
from ncjax.solve import Result, solve

__version__ = "0.1.0"
__all__ = ["InputError", "NCJaxWarning", "Result", "metrics", "model", "profiles", "solve",
           "theory", "__version__"]
