"""The names that a spec, a run's files and the command line spell, one copy each, without
JAX (so that reading a run's index, ``ncjax show``, starts without the engine):

    RUNNING … UNCERTIFIED, STATUS_NAMES   a solve's status codes and their names, in code
                          order (``ncjax.stopping`` states what each means)
    METHODS               ``ncjax.solve``'s methods (``ncjax.solver``): "ufm", an optimiser on
                          (W, H, b); "convex", the convex form (``ncjax.convex``), factorised
    DTYPES                the dtypes a solve runs in (``ncjax.dtypes``)
    OPTIMIZERS            the factored solver's optimisers (``ncjax.optimizers``)
    DEFAULT_MAX_STEPS     the factored solver's default step budget (``ncjax.stopping``)
    LOSS_PARAMETERS       each loss's name → its parameters' names (``ncjax.losses``,
                          whose factories take exactly these)
    PHASES                the phase of a cell, by its code (``ncjax.metrics.phase``)
    THRESHOLD_AXES, THRESHOLD_HOLDS, THRESHOLDS
                          what a threshold search moves, what it holds along n_B, and
                          what it finds (``ncjax.phases``: AXES, HOLDS, THRESHOLDS)
    THRESHOLD_RTOL        the range of a search's rtol, [lo, hi)

The modules that own each concept re-export their names from here.
"""

from __future__ import annotations

RUNNING, CONVERGED, MAX_STEPS, DIVERGED, UNCERTIFIED = -1, 0, 1, 2, 3
STATUS_NAMES = ("converged", "max_steps", "diverged", "uncertified")

METHODS = ("ufm", "convex")
DTYPES = ("float32", "float64")
OPTIMIZERS = ("lbfgs", "adam", "gd")
DEFAULT_MAX_STEPS = 5000

LOSS_PARAMETERS = {"ce": (), "label_smoothing": ("alpha",), "weighted_ce": ("weights",),
                   "logit_adjusted": ("tau",), "vs": ("gamma", "tau"), "mse": ()}

PHASES = ("none", "minority collapsed", "minority vanished", "Z = 0")

THRESHOLD_AXES = ("lam", "c", "n_B", "ratio")
THRESHOLD_HOLDS = ("counts", "ratios")
THRESHOLDS = ("collapse", "vanish", "zero")
THRESHOLD_RTOL = (1e-12, 1.0)  # a search's bracket's relative width, in [lo, hi)
