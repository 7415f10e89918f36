"""The remedies figure drawn from arrays (``matplotlib.figure.Figure``, no pyplot; saved by
``style.save``, built at a size preset, ``style.SIZES``): per loss one panel, its
thresholds along λ against the remedy's strength on top (the theory's μ_B broad, in the
ratio's colour; the measurements as markers over it), the minority-majority cosine at a
fixed λ below; panels in rows of as many as fit the width. The numbers are
``ncjax.remedies``'s; ``plot.remedies`` reads them off loaded runs.
"""

from __future__ import annotations

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ncjax import draw, style
from ncjax.style import Figure

RATIO_COLORS = ("C0", "C3", "C2", "C1", "C4")
PANEL_WIDTH = 2.2  # in: the narrowest panel whose ticks and title stay readable


def _errorbar(ax, s, x, lo, hi, colour, marker, filled=True):
    """A bracket [lo, hi] (a threshold between two grid points) per x, drawn at its
    geometric midpoint; NaN brackets are left out."""
    ok = np.isfinite(lo) & np.isfinite(hi)
    if not ok.any():
        return
    mid = np.sqrt(lo[ok] * hi[ok])
    ax.errorbar(x[ok], mid, yerr=[mid - lo[ok], hi[ok] - mid], fmt=marker, ms=3.5 * s.line,
                color=colour, mfc=colour if filled else "none", capsize=1.5 * s.line,
                lw=0.8 * s.line, zorder=5)


def remedies(panels, *, title="", size=style.DEFAULT_SIZE, out=None):
    """One panel per entry of ``panels`` (a loss, or a loss and a bias mode), each two
    axes: thresholds over cosines.

    Each panel a dict: title, xlabel, log_x, x (S,) strengths, ratios (R,), predicted
    (R, S) the theory's μ_B, measured (R, S) the measured collapse threshold (spread's
    zero or tolerance crossing), lo, hi (R, S) its bracket on the grid, v_lo, v_hi (R, S)
    the bracket where the minority vanishes, zero (R, S) the exact Z = 0 threshold, cos
    (R, S) cos_Z_AB at lam_cos ({ratio: λ}). Top: λ (log) against strength — theory
    lines, measured collapse (filled), vanishing (open), Z = 0 (dotted). Bottom: cos_Z_AB.
    Colour is the ratio, the mark the quantity (one legend for the figure).
    """
    out = style.check(size, out)
    with style.sized(size) as s:
        fig = _draw(panels, title, s)
    if out is not None:
        style.save(fig, out)
    return fig


def _draw(panels, title, s):
    """The figure of ``remedies`` at the preset ``s``."""
    P = len(panels)
    cols = min(P, max(2, int(s.width // PANEL_WIDTH)))
    blocks = -(-P // cols)
    w = s.width / cols
    fig = Figure(figsize=(s.width, blocks * 1.6 * w + 0.16 * s.width), layout="constrained")
    axs = fig.subplots(2 * blocks, cols, squeeze=False)
    lam_cos = {}
    for c, pn in enumerate(panels):
        top, bot = axs[2 * (c // cols), c % cols], axs[2 * (c // cols) + 1, c % cols]
        bot.sharex(top)
        x = np.asarray(pn["x"], float)
        for i, r in enumerate(pn["ratios"]):
            col = RATIO_COLORS[i % len(RATIO_COLORS)]
            top.plot(x, pn["predicted"][i], **style.theory(s, col))
            top.plot(x, pn["zero"][i], ":", color=col, lw=0.8 * s.line)
            meas = pn["measured"][i]
            ok = np.isfinite(meas)
            top.plot(x[ok], meas[ok], "o", color=col, ms=3.5 * s.line, mec="k", mew=0.4,
                     zorder=5)
            _errorbar(top, s, x, pn["v_lo"][i], pn["v_hi"][i], col, "s", filled=False)
            bot.plot(x, pn["cos"][i], "o-", color=col, ms=3 * s.line, lw=0.8 * s.line)
            lam_cos.setdefault(float(r), pn["lam_cos"].get(float(r)))
        top.set_yscale("log")
        top.set_title(pn["title"])
        top.tick_params(labelbottom=False)
        bot.axhline(0.0, color="k", lw=0.5 * s.line)
        bot.set_xlabel(pn["xlabel"])
        if pn["log_x"]:
            bot.set_xscale("log")
        if c % cols == 0:
            top.set_ylabel(draw.AXIS_LABELS["lam"])
            bot.set_ylabel(r"mean $\cos(z_A, z_B)$ at $\lambda_{\cos}$")
    for c in range(P, blocks * cols):
        for row in (0, 1):
            axs[2 * (c // cols) + row, c % cols].set_axis_off()
    ratios = [Patch(color=RATIO_COLORS[i % len(RATIO_COLORS)],
                    label=f"ratio {r:g}" + (rf", $\lambda_{{\cos}}$ = {v:.3g}" if v else ""))
              for i, (r, v) in enumerate(lam_cos.items())]
    keys = [Line2D([], [], label=r"theory $\mu_B$", **style.theory(s, "0.5")),
            Line2D([], [], color="0.3", ls=":", lw=0.8 * s.line, label="exact $Z=0$"),
            Line2D([], [], color="0.6", marker="o", mec="k", mew=0.4, ls="none",
                   label="measured collapse"),
            Line2D([], [], color="0.3", marker="s", mfc="none", ls="none",
                   label="measured vanishing (bracket)")]
    handles = ratios + keys
    fig.legend(handles=handles, loc="outside lower center", frameon=False,
               ncol=style.columns([h.get_label() for h in handles], s))
    fig.suptitle(style.wrap(title, s))
    return fig
