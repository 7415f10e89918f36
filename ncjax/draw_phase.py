"""The phase diagram drawn from arrays (``matplotlib.figure.Figure``, no pyplot; saved by
``style.save``): over a grid x (nx,) by y (ny,), the minority spread of Z, fields (ny, nx),
on a log colour scale whose floor is the solves' rounding (``tolerances.rounding``: below
it the flat zero colour; a solution counting as Z = 0 in ``style.Z0_COLOR``), the theory's
boundaries in broad colour and the measured ones in black over them; beside it the per-cell
decision against the theory (``diagram.decision_categories``). ``plot.phase`` reads the
fields off a loaded grid (``diagram.phase_map``).
"""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap, LogNorm
from matplotlib.patches import Patch

from ncjax import draw, style
from ncjax.diagram import DECISION_NAMES
from ncjax.style import Figure, ZERO_COLOR, Z0_COLOR
from ncjax.tolerances import rounding

# Colours of the per-cell decision codes of ``diagram.decision_categories``, in order:
# agree collapsed, agree not collapsed, measured collapsed / theory not, measured not /
# theory collapsed, near the boundary, no converged solve.
DECISION_COLORS = ("#2166ac", "#c6dbef", "#b2182b", "#f4a582", "#9e9e9e", "#ffffff")


def _theory_boundary(ax, x, y, y_line, field, props, label):
    """The theory's boundary: the line y_line(x) when given (thresholds in y units, one per
    column), else the zero contour of ``field`` (ny, nx) over the grid (linear
    interpolation between cells). Adds one legend entry."""
    if y_line is not None:
        ax.plot(x, y_line, label=label, **props)
    elif field is not None and np.nanmin(field) < 0 < np.nanmax(field):
        p = dict(props)
        ax.contour(x, y, field, levels=[0.0], colors=[p.pop("color")], linewidths=p.pop("lw"),
                   linestyles=[p.pop("ls")], alpha=p.pop("alpha"), zorder=p.pop("zorder"))
        ax.plot([], [], label=label, **props)


def _measured_boundary(ax, x, y, mask, props, label):
    """The boundary of a measured bool field (ny, nx) as its 0.5 contour, over everything."""
    if mask is None or not 0 < np.sum(mask) < np.size(mask):
        return
    p = dict(props)
    cs = ax.contour(x, y, np.asarray(mask, float), levels=[0.5], colors=[p.pop("color")],
                    linewidths=p.pop("lw"), linestyles=[p.pop("ls")], zorder=p.pop("zorder"))
    cs.set(path_effects=p.pop("path_effects"))
    ax.plot([], [], label=label, **props)


def phase_diagram(x, y, spread, y_star=None, *, star=None, y_zero=None, zero=None,
                  collapsed=None, zero_measured=None, zero_shown=None, decision=None,
                  split=None, counts=None, seeds=1, xlabel=draw.AXIS_LABELS["n_B"],
                  ylabel=draw.AXIS_LABELS["lam"], log_x=False, log_y=True,
                  star_label=r"theory $\lambda^*=\sqrt{n_B}/N$",
                  zero_label=r"theory $Z=0$: $\lambda=\sqrt{n_A}/N$", title="",
                  dtype="float32", size=style.DEFAULT_SIZE, out=None):
    """Minority spread over a 2-d grid (log colour; at most ``rounding(dtype)``: the flat
    zero colour; a solution counting as Z = 0: ``Z0_COLOR``) with the theory's boundaries
    (broad colour) and the measured ones (black, on top) and, with ``decision``, a second
    panel of the per-cell decision against the theory.

    Args:
      x: (nx,), y: (ny,) axis values (e.g. n_B and λ); spread: (ny, nx) measured minority
        spread of Z (NaN: not solved).
      y_star: optional (nx,) the theory's threshold per column in y units (λ* when y is
        λ), drawn as a line; else ``star`` (ny, nx), e.g. log(λ/λ*), whose zero contour is
        drawn. y_zero / zero: the same for the Z = 0 threshold.
      collapsed: optional (ny, nx) bool, the measured decision, drawn as its boundary
        contour (dashed); zero_measured: optional (ny, nx) bool, where the measured Z counts
        as 0, its boundary drawn dotted; zero_shown: optional (ny, nx) bool, the cells of
        the spread panel whose Z counts as 0 (drawn in Z0_COLOR).
      decision: optional (ny, nx) int codes of ``diagram.decision_categories``, drawn in
        DECISION_COLORS beside the spread panel; split: optional (ny, nx) bool, cells whose
        seeds disagree (black dots); counts: optional (6,) cells per code (legend);
        seeds: seeds per cell (the decision is their majority).
      log_x, log_y: axis scales. dtype: the solves' (the rounding floor). size: a preset
        (``style.SIZES``; "column" stacks the panels). out: a file to save to.
    """
    out = style.check(size, out)
    floor = rounding(dtype)
    with style.sized(size) as s:
        panels = 1 if decision is None else 2
        tall = s.width < 5
        shape = (panels, 1) if tall else (1, panels)
        h = s.width * (0.95 * panels if tall else (0.62 if panels == 2 else 0.9))
        fig = Figure(figsize=(s.width, h), layout="constrained")
        axs = fig.subplots(*shape, squeeze=False).ravel()
        ax = axs[0]
        spread = np.asarray(spread, float)
        top = np.nanmax(spread) if np.isfinite(spread).any() else 1.0
        cmap = matplotlib.colormaps["viridis"].with_extremes(under=ZERO_COLOR)
        shown = np.where(spread <= floor, floor / 10, spread)  # under: the zero colour
        mesh = ax.pcolormesh(x, y, shown, shading="nearest", cmap=cmap, rasterized=True,
                             norm=LogNorm(vmin=floor, vmax=max(top, 10 * floor)))
        handles = [Patch(facecolor=ZERO_COLOR, label=draw.floor_label(dtype))]
        if zero_shown is not None and np.any(zero_shown):
            ax.pcolormesh(x, y, np.ma.masked_where(~np.asarray(zero_shown, bool),
                                                   np.zeros_like(spread)),
                          shading="nearest", cmap=ListedColormap([Z0_COLOR]), rasterized=True)
            handles.append(Patch(facecolor=Z0_COLOR, label=r"$Z=0$ (measured)"))
        fig.colorbar(mesh, ax=ax, pad=0.01, extend="min", label=draw.SPREAD_LABEL)
        _measured_boundary(ax, x, y, collapsed, style.measured(s, "--"),
                           "measured collapse boundary")
        _measured_boundary(ax, x, y, zero_measured, style.measured(s, ":"),
                           r"measured $Z=0$ boundary")
        for a in axs:
            _theory_boundary(a, x, y, y_star, star, style.theory(s, "#e41a1c"), star_label)
            _theory_boundary(a, x, y, y_zero, zero, style.theory(s, "#ff9900", "--"),
                             zero_label)
            a.set_xlim(np.min(x), np.max(x))
            a.set_ylim(np.min(y), np.max(y))
            a.set_xscale("log" if log_x else "linear")
            a.set_yscale("log" if log_y else "linear")
            if log_x:
                draw.log_ticks(a.xaxis, x)
            if log_y:
                draw.log_ticks(a.yaxis, y)
            a.set_xlabel(xlabel)
            a.set_ylabel(ylabel)
        ax.set_title("measured minority spread of $Z$")
        lines, labels = ax.get_legend_handles_labels()
        theory_first = sorted(range(len(lines)), key=lambda i: not labels[i].startswith("theory"))
        handles = [lines[i] for i in theory_first] + handles
        if decision is not None:
            ax2 = axs[1]
            ax2.pcolormesh(x, y, decision, shading="nearest", rasterized=True,
                           cmap=ListedColormap(DECISION_COLORS),
                           norm=BoundaryNorm(np.arange(-0.5, len(DECISION_COLORS)),
                                             len(DECISION_COLORS)))
            if split is not None and np.any(split):
                X, Y = np.meshgrid(x, y)
                ax2.plot(X[split], Y[split], ".", color="k", ms=2 * s.line, ls="none",
                         zorder=6, label=f"seeds disagree ({int(np.sum(split))})")
            handles += [Patch(facecolor=c, edgecolor="0.5", lw=0.5,
                              label=name + ("" if counts is None else f" ({int(counts[i])})"))
                        for i, (c, name) in enumerate(zip(DECISION_COLORS, DECISION_NAMES))
                        if counts is None or counts[i] > 0]
            handles += [h for h, lab in zip(*ax2.get_legend_handles_labels())
                        if lab.startswith("seeds")]
            ax2.set_title("collapse decision per cell")
        fig.legend(handles=handles, loc="outside lower center",
                   ncol=style.columns([h.get_label() for h in handles], s),
                   frameon=False, title=None if decision is None else style.wrap(
                       (f"decision: the majority of {seeds} seeds" if seeds > 1
                        else "decision: one solve per cell")
                       + r" against the theory, $\lambda\geq\lambda^*$; near: "
                       r"$|\lambda/\lambda^*-1|\leq 2\%$", s, 0.9 * s.font))
        fig.suptitle(style.wrap(title, s))
    if out is not None:
        style.save(fig, out)
    return fig
