"""Figures drawn from arrays (matplotlib, no pyplot): each function takes numpy arrays,
returns a ``matplotlib.figure.Figure`` built at a size preset (``size``: "column", "full",
"slide"; ``ncjax.style``) and saves it when given ``out`` (``save``: a file named by one of
``FORMATS``, .png, .pdf or .svg say, written atomically; the name is checked first).

The shapes: a phase diagram over x (nx,) and y (ny,) with fields (ny, nx); curves along x
(L,) with one row per line (P, L) or per group (G, L); Z heatmaps (P, K, K), column k =
z_k; traces (P, S + 1) over the steps 0 … S. ``dtype`` is the solve's: a spread at most
its rounding floor ``tolerances.rounding(dtype)`` (sqrt(eps)) is drawn as 0 in the flat
``style.ZERO_COLOR``, not on the data's log scale. Drawing from a loaded grid is
``ncjax.plot``. The axis labels and symbols of every figure are the tables below.
"""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.colors import ListedColormap, TwoSlopeNorm
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from ncjax import style
from ncjax.style import Figure, FORMATS, ZERO_COLOR, Z0_COLOR, save  # noqa: F401 (draw.save)
from ncjax.tolerances import rounding

# Axis labels of the figures (symbols and units).
AXIS_LABELS = {"n_A": r"majority class size $n_A$ (samples)",
               "n_B": r"minority class size $n_B$ (samples)",
               "n": r"class size $n$ (samples)", "ratio": r"imbalance ratio $n_A/n_B$",
               "lam": r"$\lambda=\sqrt{\lambda_W\lambda_H}$", "c": r"$c=\lambda N$",
               "lam_b": r"$\lambda_b$", "seed": "seed"}
# Axis names as symbols in figure titles and legends.
AXIS_SYMBOLS = {"n_A": "$n_A$", "n_B": "$n_B$", "n": "$n$", "ratio": "$n_A/n_B$",
                "lam": "$\\lambda$", "c": "$c$", "lam_b": "$\\lambda_b$", "lam_W": "$\\lambda_W$",
                "lam_H": "$\\lambda_H$", "K_A": "$K_A$", "K_B": "$K_B$", "K": "$K$"}
# The x labels of the one-axis curves: a symbol for a sample size, the definition for λ, c.
CURVE_LABELS = {"n_A": AXIS_SYMBOLS["n_A"], "n_B": AXIS_SYMBOLS["n_B"], "n": AXIS_SYMBOLS["n"],
                "ratio": "ratio " + AXIS_SYMBOLS["ratio"], "lam": AXIS_LABELS["lam"],
                "c": AXIS_LABELS["c"]}
SPREAD_LABEL = r"minority spread $\max_{j,k\in B}\|z_j-z_k\|/\max_k\|z_k\|$"

def floor_label(dtype) -> str:
    """The legend entry of values at the rounding floor of ``dtype``."""
    return (f"0 to {np.dtype(dtype).name} rounding "
            rf"($\leq\sqrt{{\epsilon}}$ = {rounding(dtype):.1e})")


BAND = 30.0  # the zero band of a log axis spans [floor/BAND, floor]


def _floor_band(ax, floor, lines=1):
    """Shade the log y axis below ``floor`` as the zero band (from floor/BAND, its bottom);
    returns, per line, the height inside it at which its values at the floor are drawn
    (spread across the band, so that lines at zero stay apart; their height there means
    nothing)."""
    ax.axhspan(floor / BAND, floor, color=ZERO_COLOR, lw=0, zorder=0)
    return floor / BAND ** ((np.arange(lines) + 1) / (lines + 1))


def _on_floor(v, floor, at):
    """Values (any shape) with those at most ``floor`` moved to ``at`` (inside the band)."""
    v = np.asarray(v, float)
    return np.where(v <= floor, at, v)


def _one_panel(s, aspect):
    """A one-axes figure at the preset ``s``: ``aspect`` (height/width) at a wide preset,
    taller at a narrow one, whose legend goes below (``_legend``)."""
    fig = Figure(figsize=(s.width, s.width * (aspect if s.width >= 5 else 1.25)),
                 layout="constrained")
    return fig, fig.subplots()


def _legend(fig, ax, s):
    """The axes' legend: beside it at a wide preset, below the figure at a narrow one."""
    if s.width >= 5:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    else:
        h, labels = ax.get_legend_handles_labels()
        fig.legend(h, labels, loc="outside lower center", frameon=False,
                   ncol=style.columns(labels, s, most=2))


def log_ticks(axis, values):
    """Readable ticks on a log axis: plain numbers (%g) for sample sizes and ratios, and
    minor labels at 2·10^e and 5·10^e only (``_minor_label``)."""
    if np.nanmax(values) >= 1:
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(_minor_label))


def group_spreads(lam, spreads, n_g, K_g, lam_pred, *, tol, lam_meas=None, lam_zero=None,
                  extra=(), xlabel=AXIS_LABELS["lam"], pred_label=r"\sqrt{n_g}/N", title="",
                  dtype="float64", size=style.DEFAULT_SIZE, out=None):
    """Within-group spread of Z against λ (log-log), one curve per group, with the
    conjectured thresholds as broad vertical lines in each group's colour.

    Args:
      lam: (L,) λ values (or c = λN, with ``xlabel``/``pred_label`` to match);
      spreads: (G, L) per group g, max_{j,k∈g}‖z_j − z_k‖/max_k‖z_k‖ (absolute where
        Z = 0), NaN where a cell is left out; n_g, K_g: (G,) the group's count and number
        of classes; lam_pred: (G,) the conjectured threshold sqrt(n_g)/N (same units as
        lam); tol: the collapse tolerance (horizontal line); lam_meas: optional (G,)
        measured thresholds, marked on the tolerance line; lam_zero: optional λ from
        which the measured Z is 0 (shaded); extra: optional (label, (L,) spread) curves
        drawn thin in grey (e.g. the spread of two groups together, where they merge).
      dtype: the solves' (a spread at most its rounding floor runs in the zero band).
    """
    out = style.check(size, out)
    floor = rounding(dtype)
    lam = np.asarray(lam, float)
    spreads = np.atleast_2d(np.asarray(spreads, float))
    colors = matplotlib.colormaps["tab10"].colors
    with style.sized(size) as s:
        fig, ax = _one_panel(s, 0.56)
        at = _floor_band(ax, floor, spreads.shape[0] + len(extra))
        if lam_zero is not None and np.isfinite(lam_zero):
            ax.axvspan(lam_zero, lam[-1], color=Z0_COLOR, alpha=0.35, lw=0,
                       label=r"measured $Z=0$")
        ax.axhline(tol, color="0.35", lw=0.7 * s.line, ls=":",
                   label=f"collapse tolerance {tol:g}")
        for j, (label, curve) in enumerate(extra):
            ax.plot(lam, _on_floor(curve, floor, at[-1 - j]), color="0.45", lw=0.7 * s.line,
                    ls="-.", label=label if j == 0 else None)
        for g in range(spreads.shape[0]):
            c = colors[g % len(colors)]
            ax.axvline(lam_pred[g], **style.theory(s, c))
            ax.plot(lam, _on_floor(spreads[g], floor, at[g]), color=c, zorder=4,
                    label=rf"$n_g={n_g[g]:g}$, $K_g={int(K_g[g])}$")
            if lam_meas is not None and np.isfinite(lam_meas[g]):
                ax.plot([lam_meas[g]], [tol], marker="v", ms=4 * s.line, color=c, mec="k",
                        mew=0.5, ls="none", zorder=6)
        ax.plot([], [], label=rf"conjecture ${pred_label}$", **style.theory(s, "0.5"))
        ax.plot([], [], marker="v", ms=4 * s.line, color="0.6", mec="k", mew=0.5, ls="none",
                label="measured threshold")
        ax.fill_between([], [], color=ZERO_COLOR, label=floor_label(dtype))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lam[0], lam[-1])
        if s.width >= 5:  # a narrow axis has room for the decades only
            ax.xaxis.set_minor_formatter(FuncFormatter(_minor_label))
        ax.set_ylim(floor / BAND, 10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(r"group spread $s_g=\max_{j,k\in g}\|z_j-z_k\|\,/\,\max_k\|z_k\|$")
        fig.suptitle(style.wrap(title, s))
        _legend(fig, ax, s)
    if out is not None:
        save(fig, out)
    return fig


def _minor_label(v, _pos):
    """Minor log ticks: label 2·10^e and 5·10^e only (no crowding on short axes)."""
    e = np.floor(np.log10(v))
    m = v / 10**e
    if not (np.isclose(m, 2) or np.isclose(m, 5)):
        return ""
    return f"{v:g}" if 0 <= e <= 3 else rf"${m:.0f}\times10^{{{e:.0f}}}$"


_COS_STYLE = {"AA": ("within A", "C0"), "BB": ("within B", "C3"), "AB": ("A-B", "C2")}


def cosines(n, cos, etf, *, line_labels, xlabel=AXIS_LABELS["n_A"], title="",
            size=style.DEFAULT_SIZE, out=None):
    """Mean cosines of the class-mean logits against sample size, with the simplex ETF.

    Args:
      n: (L,) sample sizes (log x axis).
      cos: {"AA" | "BB" | "AB": (P, L)} mean cosines within A, within B, across A–B, one
        row per line of the other axes (e.g. λ_b values); NaN (a vector vanished: no
        direction) is a gap.
      etf: −1/(K−1), drawn as a horizontal line (the theory's, broad).
      line_labels: (P,) labels of the rows (solid, dashed, dotted, … in that order).
    """
    out = style.check(size, out)
    with style.sized(size) as s:
        fig, ax = _one_panel(s, 0.5)
        styles = ["-", "--", ":", "-."]
        ax.axhline(etf, label=rf"ETF $-1/(K-1) = {etf:.4f}$", **style.theory(s, "0.55"))
        for p, lab in enumerate(line_labels):
            for key, (name, colour) in _COS_STYLE.items():
                ax.plot(n, cos[key][p], styles[p % 4], color=colour, zorder=4,
                        label=f"{name}, {lab}")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(r"mean $\cos(z_j, z_k)$")
        fig.suptitle(style.wrap(title, s))
        _legend(fig, ax, s)
    if out is not None:
        save(fig, out)
    return fig


def spread_curve(x, spreads, x_pred, *, line_labels, tol, xlabel, log_x=True, title="",
                 dtype="float32", size=style.DEFAULT_SIZE, out=None):
    """Minority spread of Z along one axis (λ or a sample size), one curve per line of the
    other axes (a spread at most the rounding floor of ``dtype`` runs in the zero band),
    with the theory's crossing x_pred (one per line, NaN: none on the grid) as broad
    vertical lines and the collapse tolerance as a horizontal one.

    x: (L,); spreads: (P, L); x_pred: (P,); line_labels: (P,).
    """
    out = style.check(size, out)
    floor = rounding(dtype)
    with style.sized(size) as s:
        fig, ax = _one_panel(s, 0.6)
        at = _floor_band(ax, floor, len(line_labels))
        for p, lab in enumerate(line_labels):
            c = f"C{p}"
            ax.plot(x, _on_floor(spreads[p], floor, at[p]), color=c, zorder=4, label=lab)
            if np.isfinite(x_pred[p]):
                ax.axvline(x_pred[p], label=f"theory, {lab}: {x_pred[p]:.4g}",
                           **style.theory(s, c))
        ax.axhline(tol, color="k", ls=":", lw=0.7 * s.line, label=f"collapse tolerance {tol:g}")
        ax.fill_between([], [], color=ZERO_COLOR, label=floor_label(dtype))
        ax.set_yscale("log")
        ax.set_ylim(floor / BAND, 10)
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(SPREAD_LABEL)
        fig.suptitle(style.wrap(title, s))
        _legend(fig, ax, s)
    if out is not None:
        save(fig, out)
    return fig


def _groups(counts):
    """Consecutive runs of equal counts: [(first, stop, n_g), …] in class order."""
    counts = np.asarray(counts, float)
    cut = np.flatnonzero(np.diff(counts) != 0) + 1
    starts = np.concatenate([[0], cut])
    stops = np.concatenate([cut, [counts.size]])
    return [(int(a), int(b), float(counts[a])) for a, b in zip(starts, stops)]


def z_heatmaps(Zs, counts, titles, *, vanished=None, title="", size=style.DEFAULT_SIZE,
               out=None, per_row=3):
    """Class-mean logits Z (K × K, column k = z_k = W h̄_k) as heatmaps, one panel per
    chosen cell, on one diverging colour scale centred at 0 (±max|Z| over all panels, one
    colour bar); columns that vanished (``vanished``: 0 to the dtype's rounding,
    ``metrics.vanished``; every column of a Z = 0 cell) in the flat zero colour; class
    groups (runs of equal n_k: A, B for two clusters) marked by lines and labelled with
    their count.

    Zs: (P, K, K); counts: (P, K) class counts of each panel; titles: (P,) strings (the
    panels'; ``title`` the figure's); vanished: optional (P, K) bool.
    """
    out = style.check(size, out)
    Zs = np.asarray(Zs, float)
    P, K = Zs.shape[0], Zs.shape[-1]
    gone = np.zeros((P, K), bool) if vanished is None else np.asarray(vanished, bool)
    vmax = float(np.nanmax(np.abs(np.where(gone[:, None, :], np.nan, Zs)), initial=0.0)) or 1.0
    with style.sized(size) as s:
        cols = min(P, per_row if s.width >= 5 else 2)
        rows = -(-P // cols)
        w = s.width / cols
        fig = Figure(figsize=(s.width, rows * 1.25 * w + 0.1 * s.width), layout="constrained")
        axs = fig.subplots(rows, cols, squeeze=False)
        norm = TwoSlopeNorm(0.0, -vmax, vmax)
        im = None
        for p in range(rows * cols):
            ax = axs[p // cols, p % cols]
            if p >= P:
                ax.set_axis_off()
                continue
            im = ax.imshow(Zs[p], cmap="RdBu_r", norm=norm, interpolation="nearest")
            if gone[p].any():
                ax.imshow(np.ma.masked_where(~np.broadcast_to(gone[p], (K, K)), Zs[p]),
                          cmap=ListedColormap([ZERO_COLOR]), interpolation="nearest")
            groups = _groups(counts[p])
            names = ("A", "B") if len(groups) == 2 else tuple(f"g{i + 1}"
                                                              for i in range(len(groups)))
            ticks, labels = [], []
            for (a, b, n_g), name in zip(groups, names):
                ticks.append((a + b - 1) / 2)
                labels.append(f"{name}\n$n$={n_g:.4g}")
                if a > 0:
                    for line in (ax.axvline, ax.axhline):
                        line(a - 0.5, color="k", lw=0.8 * s.line)
            ax.set_xticks(ticks, labels)
            ax.set_yticks(ticks, [lab.replace("\n", " ") for lab in labels], rotation=90,
                          va="center")
            ax.set_xlabel(r"class $k$ (column $z_k$)")
            ax.set_ylabel(r"logit of class $j$ (row)")
            ax.set_title(titles[p], fontsize=0.85 * s.font)
        fig.colorbar(im, ax=axs, shrink=0.8, format="%.2g", label="$Z_{jk}$")
        if gone.any():
            fig.legend(handles=[Patch(facecolor=ZERO_COLOR, edgecolor="0.5", lw=0.5,
                                      label="$z_k$ = 0 to the solve's rounding")],
                       loc="outside lower center", frameon=False)
        if title:
            fig.suptitle(style.wrap(title, s))
    if out is not None:
        save(fig, out)
    return fig


def traces(step, gaps, nc1, spread, labels, *, gap_floor=None, title="", dtype="float32",
           size=style.DEFAULT_SIZE, out=None):
    """Objective and collapse metrics against optimiser steps, one line per traced cell:
    F − F_final (log; non-positive values not drawn; at most ``gap_floor``, the rounding
    of F, in the zero band), NC1 (when given, m ≥ 2) and the minority spread of Z (at most
    the rounding floor of ``dtype``: in the zero band), each in its own panel.

    step: (S + 1,) step numbers; gaps: (P, S + 1); nc1: (P, S + 1) or None; spread:
    (P, S + 1) max_{j,k∈B}‖z_j − z_k‖/max_k‖z_k‖; labels: (P,).
    """
    out = style.check(size, out)
    panels = [(gaps, r"$F - F_{\mathrm{final}}$", gap_floor)]
    if nc1 is not None:
        panels.append((nc1, r"NC1 $=\mathrm{Tr}(\Sigma_W\Sigma_B^\dagger)/K$", None))
    panels.append((spread, r"minority spread of $Z$", rounding(dtype)))
    with style.sized(size) as s:
        tall = s.width < 5
        shape = (len(panels), 1) if tall else (1, len(panels))
        fig = Figure(figsize=(s.width, s.width * (0.75 * len(panels) if tall else 0.45)),
                     layout="constrained")
        axs = fig.subplots(*shape, squeeze=False).ravel()
        for ax, (vals, ylabel, floor) in zip(axs, panels):
            vals = np.asarray(vals, float)
            at = None if floor is None else _floor_band(ax, floor, vals.shape[0])
            for p in range(vals.shape[0]):
                v = vals[p] if floor is None else _on_floor(vals[p], floor, at[p])
                ax.plot(step, np.where(v > 0, v, np.nan), color=f"C{p}", label=labels[p])
            ax.set_yscale("log")
            ax.set_xlabel("optimiser step")
            ax.set_ylabel(ylabel)
            ax.set_xlim(step[0], step[-1])
        handles, names = axs[0].get_legend_handles_labels()
        zero = floor_label(dtype) + ("" if gap_floor is None else
                                     f"; $F-F_{{\\mathrm{{final}}}}\\leq$ {gap_floor:.1e}")
        fig.legend(handles + [Patch(facecolor=ZERO_COLOR)], names + [zero],
                   loc="outside lower center", ncol=1 if tall else 2, frameon=False)
        fig.suptitle(style.wrap(title, s))
    if out is not None:
        save(fig, out)
    return fig


def is_log_axis(v) -> bool:
    """Whether axis values (n,) are evenly spaced in log (a {log = …} axis), not linearly."""
    v = np.sort(np.asarray(v, float))
    if v.size < 3 or v[0] <= 0:
        return False
    dl, d = np.diff(np.log(v)), np.diff(v)
    return bool(np.allclose(dl, dl[0], rtol=1e-6) and not np.allclose(d, d[0], rtol=1e-6))
