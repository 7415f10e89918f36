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
