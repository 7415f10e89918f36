"""Figures of a threshold grid drawn from arrays (``ncjax.threshold_study.panels``; drawing
from a loaded grid is ``ncjax.plot.thresholds``).

The arrays: x (nx,) the axis the curves run along (a heatmap's columns), lines (L,) the
other axis's values or None (one curve; a heatmap's rows), and per entry (a threshold of
one group) measured, theory (L, nx) in the searched axis's units, theory NaN where it has
none. ``curves``: one panel per group, its thresholds as curves against x, one per line,
the theory beside each (``style.theory``, under the measurement), and with one line the
phase regions between them (none, collapsed, vanished, Z = 0). ``heatmaps``: per entry the
measured threshold (log colour; NaN cells, no onset in the bracket or not certified, in
the flat ``NONE_COLOR``) with the theory's contour lines over the measured ones at the same
levels, beside |measured/theory − 1|.
"""

from __future__ import annotations

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ncjax import draw, style
from ncjax.style import Figure

__all__ = ["curves", "heatmaps"]

KIND_STYLES = {"collapse": "-", "vanish": "--", "zero": ":"}
KIND_WORDS = {"collapse": "collapse", "vanish": "vanishing", "zero": "Z = 0"}
# the phase regions of one curve: before the first threshold, then from each on
PHASE_OF = {"collapse": "collapsed", "vanish": "vanished", "zero": "Z = 0"}
REGIONS = {"none": "#ffffff", "collapsed": "#cfe3f7", "vanished": "#f9dcc0",
           "Z = 0": "#bdbdbd"}
NONE_COLOR = "#eeeeee"  # a heatmap's cell without a threshold
ERROR_FLOOR = 1e-12     # relative errors below are drawn at it (float64's search limit)
MARKS = 16              # markers on a measured curve at most (one a cell up to this)
LOG_SPAN = 3.0          # a curve's y axis is logarithmic where its values span this factor
# one curve: each threshold's theory in its own colour (several: a colour a line)
KIND_COLOURS = {"collapse": "C0", "vanish": "C1", "zero": "C3"}


def _axes_scale(ax, x, y, log_x, log_y):
    if log_x:
        ax.set_xscale("log")
        draw.log_ticks(ax.xaxis, x)
    y = np.asarray(y)[np.isfinite(y)]
    if log_y and y.size and y.min() > 0 and y.max() >= LOG_SPAN * y.min():
        ax.set_yscale("log")
        draw.log_ticks(ax.yaxis, y)


def _shade(ax, x, bounds: list, above: bool, lo, hi):
    """The phase regions of one curve: ``bounds`` [(kind, values (nx,))] in phase order,
    each phase holding ``above`` its curve (else below); lo, hi the y range. A region ends
    where the next phase begins (the edge where none does)."""
    far, near = (lo, hi) if above else (hi, lo)
    levels = [np.full(x.size, far)] + [v for _, v in bounds]
    for i, word in enumerate(["none"] + [PHASE_OF[k] for k, _ in bounds]):
        end = np.full(x.size, near)
        for v in levels[i + 1:][::-1]:
            end = np.where(np.isfinite(v), v, end)
        ax.fill_between(x, levels[i], end, where=np.isfinite(levels[i]), color=REGIONS[word],
                        lw=0, zorder=0, interpolate=True)


def curves(x, lines, entries, *, xlabel, ylabel, line_label, log_x=True, log_y=True,
           title="", size=style.DEFAULT_SIZE, out=None):
    """One panel per group (module docstring). ``entries``: dicts of kind, group, name,
    measured, theory (L, nx) and above (the phase holds above its curve); ``line_label``
    names a line's value (L > 1)."""
    with style.sized(size) as s:
        groups = sorted({e["group"] for e in entries if e["group"] is not None}) or [None]
        fig = Figure(figsize=(s.width, s.width * (0.42 if len(groups) > 1 else 0.55)),
                     layout="constrained")
        axs = np.atleast_1d(fig.subplots(1, len(groups), squeeze=False)[0])
        L = entries[0]["measured"].shape[0]
        colours = [f"C{i % 10}" for i in range(L)]
        colour = lambda kind, i: KIND_COLOURS[kind] if L == 1 else colours[i]
        for ax, grp in zip(axs, groups):
            mine = [e for e in entries if e["group"] in (grp, None)]
            allv = np.concatenate([np.r_[e["measured"].ravel(), e["theory"].ravel()]
                                   for e in mine])
            for e in mine:
                for i in range(L):
                    if np.isfinite(e["theory"][i]).any():
                        ax.plot(x, e["theory"][i], **style.theory(s, colour(e["kind"], i),
                                                                  KIND_STYLES[e["kind"]]))
                    ax.plot(x, e["measured"][i], marker="o", ms=2.2 * s.line,
                            markevery=max(1, x.size // MARKS),
                            **style.measured(s, KIND_STYLES[e["kind"]]))
            _axes_scale(ax, x, allv, log_x, log_y)
            if L == 1:
                lo, hi = ax.get_ylim()
                order = [e for k in KIND_STYLES for e in mine if e["kind"] == k]
                _shade(ax, x, [(e["kind"], e["measured"][0]) for e in order],
                       order[0]["above"], lo, hi)
                ax.set_ylim(lo, hi)
            ax.set_xlabel(xlabel)
            ax.set_title(mine[0]["name"].split(" of the ")[-1] if grp is not None else "Z = 0",
                         fontsize=s.font)
        axs[0].set_ylabel(ylabel)
        handles = [Line2D([], [], **style.measured(s, KIND_STYLES[k]), marker="o",
                          ms=2.2 * s.line, label=f"measured: {KIND_WORDS[k]}")
                   for k in KIND_STYLES if any(e["kind"] == k for e in entries)]
        theory = [k for k in KIND_STYLES if any(np.isfinite(e["theory"]).any()
                                                for e in entries if e["kind"] == k)]
        if L == 1:
            handles += [Line2D([], [], **style.theory(s, KIND_COLOURS[k], KIND_STYLES[k]),
                               label=f"theory: {KIND_WORDS[k]}") for k in theory]
        elif theory:
            handles.append(Line2D([], [], **style.theory(s, "C0"), label="theory"))
        if L > 1:
            handles += [Line2D([], [], color=c, lw=2 * s.line, alpha=0.7,
                               label=line_label(i)) for i, c in enumerate(colours)]
        else:
            handles += [Patch(color=c, label=f"phase: {w}") for w, c in REGIONS.items()]
        return _finish(fig, handles, s, title, out, most=4)


def _edges(v, log):
    """Cell edges of centres ``v`` (geometric midpoints on a log axis)."""
    t = np.log(v) if log else np.asarray(v, float)
    if t.size == 1:
        e = np.array([t[0] - 0.5, t[0] + 0.5])
    else:
        mid = 0.5 * (t[1:] + t[:-1])
        e = np.r_[2 * t[0] - mid[0], mid, 2 * t[-1] - mid[-1]]
    return np.exp(e) if log else e


def heatmaps(x, y, entries, *, xlabel, ylabel, clabel, log_x=True, log_y=True, title="",
             size=style.DEFAULT_SIZE, out=None):
    """Per entry a row: the measured threshold over (x, y) (rows y) with the theory's
    contours over the measured ones, and |measured/theory − 1| where the theory has one
    (module docstring). ``entries``: dicts of name, measured, theory, error (ny, nx)."""
    with style.sized(size) as s:
        R = len(entries)
        fig = Figure(figsize=(s.width, s.width * 0.4 * R + 0.5), layout="constrained")
        axs = fig.subplots(R, 2, squeeze=False)
        ex, ey = _edges(x, log_x), _edges(y, log_y)
        for (ax, ax_err), e in zip(axs, entries):
            m, t = e["measured"], e["theory"]
            vals = np.r_[m[np.isfinite(m)], t[np.isfinite(t)]]
            vals = vals[vals > 0]
            ax.set_facecolor(NONE_COLOR)
            if vals.size:
                norm = LogNorm(vals.min(), vals.max())
                im = ax.pcolormesh(ex, ey, np.ma.masked_invalid(m), norm=norm,
                                   cmap="viridis", shading="flat")
                fig.colorbar(im, ax=ax, label=clabel, shrink=0.9)
                levels = np.geomspace(vals.min(), vals.max(), 8)[1:-1]
                if np.isfinite(t).sum() > 3:
                    ax.contour(x, y, t, levels=levels, colors="C3", alpha=0.7, zorder=3,
                               linewidths=2.6 * s.line)
                if np.isfinite(m).sum() > 3:
                    ax.contour(x, y, m, levels=levels, colors="k", linewidths=0.8 * s.line,
                               linestyles="--", zorder=5)
            ax.set_title(e["name"], fontsize=s.font)
            err = np.abs(e["error"])
            if np.isfinite(err).any():
                im = ax_err.pcolormesh(ex, ey, np.ma.masked_invalid(np.maximum(err,
                                                                               ERROR_FLOOR)),
                                       norm=LogNorm(ERROR_FLOOR, max(np.nanmax(err), 1e-9)),
                                       cmap="magma", shading="flat")
                fig.colorbar(im, ax=ax_err, label=r"$|$measured/theory $-1|$", shrink=0.9)
                ax_err.set_facecolor(NONE_COLOR)
                ax_err.set_title(f"against the theory: max {np.nanmax(err):.1e}",
                                 fontsize=s.font)
            else:
                ax_err.set_axis_off()
                ax_err.text(0.5, 0.5, "no theory for this threshold", ha="center",
                            va="center", transform=ax_err.transAxes)
            for a in (ax, ax_err):
                if log_x:
                    a.set_xscale("log")
                    draw.log_ticks(a.xaxis, x)
                if log_y:
                    a.set_yscale("log")
                    draw.log_ticks(a.yaxis, y)
                a.set_xlabel(xlabel)
                a.set_ylabel(ylabel)
        handles = [Line2D([], [], color="C3", lw=2.6 * s.line, alpha=0.7,
                          label="theory (contours)"),
                   Line2D([], [], color="k", lw=0.8 * s.line, ls="--",
                          label="measured (same levels)"),
                   Patch(color=NONE_COLOR, label="no threshold in the bracket")]
        return _finish(fig, handles, s, title, out, most=3)


def _finish(fig, handles, s, title, out, *, most: int):
    """The figure-level legend below the panels, the title, the file."""
    fig.legend(handles=handles, loc="outside lower center", frameon=False,
               ncol=style.columns([h.get_label() for h in handles], s, most=most))
    if title:
        fig.suptitle(style.wrap(title, s))
    if out is not None:
        style.save(fig, out)
    return fig
