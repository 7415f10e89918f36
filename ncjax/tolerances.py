"""The tolerances with which ncjax decides what it measured, one copy each.

ZERO_ATOL     Z counts as zero (everything collapsed) when max_k ‖z_k‖ is at most this
              (logit units), or when the solution's convex objective cannot be told from
              the zero point's at the dtype's rounding (``metrics.is_zero``).
COLLAPSE_TOL  a group counts as collapsed when its relative spread of Z (the largest
              distance between two of its z_k over max_k ‖z_k‖) is at most this. The
              spread grows about linearly below a group's threshold, so this places a
              measured boundary within ~0.1% of the true one while staying 10-100× above
              what float32 solves leave in collapsed cells (benchmarks/RESULTS.md).
GAP_TOL       a cell enters a threshold study only if certified to this absolute duality
              gap F − F* (every objective there is O(1)).
GAP_RTOL      per solve dtype, the default certificate tolerance of ``ncjax.solve``: a
              configuration is "converged" only where its float64 duality gap is at most
              GAP_RTOL·F (relative to F itself, never to max(1, |F|), which is absolute
              for small F). The certificate is linear in the distance to the
              optimum: float32 points reach ~1e-5 by their rounding alone, float64
              factored solves stopped by their gradient test ~1e-7.
FAR           a cell is scored against a predicted boundary λ* only when |λ/λ* − 1| > FAR;
              nearer, the decision is left unscored.
rounding(dtype)
              sqrt(eps) of the dtype (1.5e-8 in float64, 3.5e-4 in float32): a vector
              counts as 0 ("vanished") when its norm is at most this times the largest
              of its kind (``metrics.vanished``), half the digits being the most a solve
              stopped on a first-order test resolves. A threshold search
              (``ncjax.thresholds``, float64) takes it for all three of its decisions:
              a group's mean logits coincide when their spread (relative, as
              COLLAPSE_TOL's) is at most it, vanish as above, and Z = 0 when
              max_k ‖z_k‖ is at most it (logit units). Certified float64 solves leave
              ~1e-16 where the phase holds, and the measures grow about linearly from
              the threshold (the two-cluster spread as ~7-11·(1 − λ/λ*)), so a search to
              rtol ≥ ~1e-8 is set by its bracket, not by this.
SEARCH_GAP_RTOL
              the certificate every deciding solve of a threshold search must meet,
              gap ≤ SEARCH_GAP_RTOL·|P| (float64: ~4500 eps).
"""

import numpy as np

ZERO_ATOL = 1e-5
COLLAPSE_TOL = 1e-2
GAP_TOL = 1e-8
FAR = 0.02
GAP_RTOL = {"float32": 1e-4, "float64": 1e-6}
SEARCH_GAP_RTOL = 1e-12


def rounding(dtype) -> float:
    """sqrt(eps) of ``dtype`` (module docstring)."""
    return float(np.sqrt(np.finfo(dtype).eps))
