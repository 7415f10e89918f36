"""The remedies figure drawn from arrays (``matplotlib.figure.Figure``, no pyplot; saved by
``draw.save``): per loss one column, its thresholds along λ against the remedy's strength
on top, the minority-majority cosine at a fixed λ below. The numbers are
``ncjax.remedies``'s; ``plot.remedies`` reads them off loaded runs.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ncjax import draw

RATIO_COLORS = ("C0", "C3", "C2", "C1", "C4")


def _errorbar(ax, x, lo, hi, colour, marker, label, filled=True):
    """A bracket [lo, hi] (a threshold between two grid points) per x, drawn at its
    geometric midpoint; NaN brackets are left out."""
    ok = np.isfinite(lo) & np.isfinite(hi)
    if not ok.any():
        return
    mid = np.sqrt(lo[ok] * hi[ok])
    ax.errorbar(x[ok], mid, yerr=[mid - lo[ok], hi[ok] - mid], fmt=marker, ms=5,
                color=colour, mfc=colour if filled else "none", capsize=2, lw=1,
                label=label)


def remedies(panels, *, title="", out=None):
    """One column per panel (a loss, or a loss and a bias mode), two rows.

    Each panel a dict: title, xlabel, log_x, x (S,) strengths, ratios (R,), predicted
    (R, S) the theory's μ_B, measured (R, S) the measured collapse threshold (spread's
    zero or tolerance crossing), lo, hi (R, S) its bracket on the grid, v_lo, v_hi (R, S)
    the bracket where the minority vanishes, zero (R, S) the exact Z = 0 threshold, cos
    (R, S) cos_Z_AB at lam_cos ({ratio: λ}). Top: λ (log) against strength — theory
    lines, measured collapse (filled), vanishing (open), Z = 0 (dotted). Bottom: cos_Z_AB.
    Returns the figure; saved to ``out`` when given.
    """
    P = len(panels)
    fig = Figure(figsize=(3.3 * P, 7.2), layout="constrained")
    axs = fig.subplots(2, P, squeeze=False, sharex="col")
    for c, pn in enumerate(panels):
        top, bot = axs[0, c], axs[1, c]
        x = np.asarray(pn["x"], float)
        for i, r in enumerate(pn["ratios"]):
            col = RATIO_COLORS[i % len(RATIO_COLORS)]
            top.plot(x, pn["predicted"][i], "-", color=col, lw=1.2,
                     label=rf"theory $\mu_B$, ratio {r:g}")
            top.plot(x, pn["zero"][i], ":", color=col, lw=1.0,
                     label=f"exact $Z=0$, ratio {r:g}")
            meas = pn["measured"][i]
            ok = np.isfinite(meas)
            top.plot(x[ok], meas[ok], "o", color=col, ms=5,
                     label=f"measured collapse, ratio {r:g}")
            _errorbar(top, x, pn["v_lo"][i], pn["v_hi"][i], col, "s",
                      f"measured vanishing, ratio {r:g}", filled=False)
            lc = pn["lam_cos"].get(float(r))
            bot.plot(x, pn["cos"][i], "o-", color=col, ms=4, lw=1,
                     label=(rf"ratio {r:g}, $\lambda$ = {lc:.3g}" if lc else f"ratio {r:g}"))
        top.set_yscale("log")
        top.set_title(pn["title"], fontsize=9)
        top.set_ylabel(draw.AXIS_LABELS["lam"] if c == 0 else "")
        bot.axhline(0.0, color="k", lw=0.6)
        bot.set_ylabel(r"mean $\cos(z_A, z_B)$" if c == 0 else "")
        bot.set_xlabel(pn["xlabel"])
        if pn["log_x"]:
            bot.set_xscale("log")
        bot.legend(fontsize=6)
    handles, labels = axs[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=7)
    fig.suptitle(title, fontsize=10)
    if out is not None:
        draw.save(fig, out)
    return fig
