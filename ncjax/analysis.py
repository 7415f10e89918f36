"""Measured figures read off a loaded grid: where a spread crosses the collapse tolerance,
where it reaches zero. Pure numpy over 1-d curves; used by ``ncjax plot`` and the tests.
"""

from __future__ import annotations

import numpy as np


def collapse_threshold(lam, spread, tol):
    """Measured collapse threshold of one curve: the smallest λ above which ``spread``
    stays ≤ ``tol``, located between grid points by linear interpolation of the spread in
    log λ (the spread falls about linearly to 0 as λ rises to a group's threshold).

    Args:
      lam: (L,) increasing λ values; spread: (L,) spread at each, NaN where not known
        (those points are left out); tol: the collapse tolerance.
    Returns:
      (estimate, lo, hi): lo < hi the bracketing known grid points (spread > tol at lo,
      ≤ tol from hi on). Collapsed at every known point: (nan, nan, lam_min); never at
      the largest known λ: (nan, lam_max, nan); no known point: all NaN.
    """
    lam, spread = np.asarray(lam, float), np.asarray(spread, float)
    ok = np.isfinite(spread)
    lam, spread = lam[ok], spread[ok]
    if lam.size == 0:
        return np.nan, np.nan, np.nan
    above = np.flatnonzero(spread > tol)
    if above.size == 0:
        return np.nan, np.nan, float(lam[0])
    i = above[-1]
    if i == lam.size - 1:
        return np.nan, float(lam[-1]), np.nan
    s0, s1 = spread[i], spread[i + 1]
    t = (s0 - tol) / (s0 - s1)
    est = np.exp(np.log(lam[i]) + t * (np.log(lam[i + 1]) - np.log(lam[i])))
    return float(est), float(lam[i]), float(lam[i + 1])


def spread_zero(lam, spread, *, eps=1e-8, points=3):
    """Where the spread itself reaches 0: the straight line through the last ``points``
    known points with spread > ``eps`` (the ones just below the threshold), extrapolated
    in λ to spread 0. Sharper than ``collapse_threshold`` (which stops at the tolerance, a
    little before the threshold) where the spread falls linearly to 0; NaN where the zero
    does not fall between the last point with spread > eps and the next (a spread that
    jumps to 0, as the largest group's does when Z vanishes) or too few points are known.
    lam: (L,) increasing; spread: (L,), NaN where not known."""
    lam, spread = np.asarray(lam, float), np.asarray(spread, float)
    ok = np.isfinite(spread)
    lam, spread = lam[ok], spread[ok]
    big = np.flatnonzero(spread > eps)
    if big.size == 0 or big[-1] == lam.size - 1 or big[-1] + 1 < points:
        return np.nan
    i = big[-1]
    slope, icpt = np.polyfit(lam[i + 1 - points:i + 1], spread[i + 1 - points:i + 1], 1)
    if not slope < 0:
        return np.nan
    z0 = -icpt / slope
    return float(z0) if lam[i] < z0 <= lam[i + 1] else np.nan


# Per-cell decision of a phase diagram against the theory (``decision_categories``).
AGREE_COLLAPSED, AGREE_NOT, FALSE_COLLAPSE, MISSED_COLLAPSE, NEAR, UNSOLVED = range(6)
DECISION_NAMES = ("agree: collapsed", "agree: not collapsed",
                  "measured collapsed, theory not", "measured not collapsed, theory collapsed",
                  "near the boundary (not scored)", "no converged solve")


def decision_categories(frac, predicted, near):
    """Per cell, the measured minority-collapse decision against the theory's, as codes.

    Args:
      frac: (...) fraction of the cell's converged solves (one per seed) whose minority
        collapsed, NaN where none converged. The measured decision is the majority:
        collapsed iff frac > 1/2 (a tie counts as not collapsed).
      predicted: (...) bool, the theory's decision (λ ≥ λ*).
      near: (...) bool, the cell lies near the theory's boundary (|λ/λ* − 1| ≤ 2% in the
        report), where the decision is not scored.
    Returns:
      (...) int: UNSOLVED where frac is NaN, else NEAR where ``near``, else
      AGREE_COLLAPSED / AGREE_NOT where the majority equals the prediction, FALSE_COLLAPSE
      (measured collapsed, theory not) or MISSED_COLLAPSE (measured not, theory collapsed).
    """
    frac = np.asarray(frac, float)
    predicted = np.asarray(predicted, bool)
    measured = frac > 0.5
    code = np.where(measured == predicted,
                    np.where(predicted, AGREE_COLLAPSED, AGREE_NOT),
                    np.where(measured, FALSE_COLLAPSE, MISSED_COLLAPSE))
    code = np.where(np.asarray(near, bool), NEAR, code)
    return np.where(np.isfinite(frac), code, UNSOLVED).astype(int)


def spread_root(lam, spread, tol, *, points=3):
    """Where the spread reaches 0, read from the uncollapsed side: the root of the
    polynomial of degree ``points`` − 1 through the last ``points`` known points with
    spread > tol (in log λ) nearest to the bracket [λ_i, λ_{i+1}] (λ_i the last of those
    points, λ_{i+1} the next known one, the first collapsed), if it lies within one
    bracket width of it, moved into the bracket (the measurements say the threshold is
    there: spread > tol at λ_i, collapsed at λ_{i+1}); if there is none, the same with the
    straight line through the last two. NaN when no such root, no bracket (see
    ``collapse_threshold``) or too few points.

    The spread is a smooth function of λ on the uncollapsed side that vanishes at the
    threshold, so this root is a second-order estimate of it: unlike the tolerance
    crossing (``collapse_threshold``), which sits next to the first collapsed grid point
    and so up to one grid step from the threshold, its error shrinks with the square of
    the step. lam: (L,) increasing; spread: (L,), NaN where not known.
    """
    lam, spread = np.asarray(lam, float), np.asarray(spread, float)
    ok = np.isfinite(spread)
    lam, spread = lam[ok], spread[ok]
    _, lo, hi = collapse_threshold(lam, spread, tol)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return np.nan
    i = int(np.flatnonzero(lam == lo)[0])
    a, b = np.log(lam[i]), np.log(lam[i + 1])
    for deg in range(points - 1, 0, -1):
        if i + 1 < deg + 1:
            continue
        u, s = np.log(lam[i - deg:i + 1]), spread[i - deg:i + 1]
        roots = np.roots(np.polyfit(u - a, s, deg)) + a
        roots = roots[np.isreal(roots)].real
        if roots.size:
            inside = np.clip(roots, a, b)
            j = int(np.argmin(np.abs(roots - inside)))
            if abs(roots[j] - inside[j]) <= b - a:
                return float(np.exp(inside[j]))
    return np.nan
