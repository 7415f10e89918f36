"""Figures drawn from arrays (matplotlib, no pyplot): each function takes numpy arrays,
returns a ``matplotlib.figure.Figure`` and saves it when given ``out`` (``save``: a file
named by one of ``FORMATS``, .png or .pdf say, written atomically).

Figures are built with ``Figure()``, which needs no backend and touches no pyplot state
(a notebook shows a returned Figure inline; a script saves it). The shapes: a phase
diagram over x (nx,) and y (ny,) with fields (ny, nx); curves along x (L,) with one row
per line (P, L) or per group (G, L); Z heatmaps (P, K, K), column k = z_k; traces
(P, S + 1) over the steps 0 … S. Drawing from a loaded grid is ``ncjax.plot``.

The axis labels and symbols of every figure are the tables below (one copy).
"""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.colors import BoundaryNorm, ListedColormap, LogNorm, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from ncjax.diagram import DECISION_NAMES
from ncjax.validate import as_out_path, replacing

# The file formats ``save`` writes (matplotlib's, named by the file's extension).
FORMATS = tuple(sorted(FigureCanvasBase.get_supported_filetypes()))

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

# Colours of the per-cell decision codes of ``diagram.decision_categories``, in order:
# agree collapsed, agree not collapsed, measured collapsed / theory not, measured not /
# theory collapsed, near the boundary, no converged solve.
DECISION_COLORS = ("#2166ac", "#c6dbef", "#b2182b", "#f4a582", "#9e9e9e", "#ffffff")


def save(fig, out, dpi: int = 150) -> None:
    """Save ``fig`` to ``out`` (checked by ``validate.as_out_path``: its extension one of
    ``FORMATS``), atomically: an interrupted save leaves the file as it was."""
    out = as_out_path(out, formats=FORMATS)
    with replacing(out) as tmp:
        fig.savefig(tmp, dpi=dpi, format=out.suffix.lower().lstrip("."))


def _theory_boundary(ax, x, y, y_line, field, *, color, ls, label):
    """The theory's boundary: the line y_line(x) when given (thresholds in y units, one per
    column), else the zero contour of ``field`` (ny, nx) over the grid (linear
    interpolation between cells). Adds one legend entry."""
    if y_line is not None:
        ax.plot(x, y_line, color=color, lw=1.5, ls=ls, label=label)
    elif field is not None and np.nanmin(field) < 0 < np.nanmax(field):
        ax.contour(x, y, field, levels=[0.0], colors=[color], linewidths=1.5, linestyles=[ls])
        ax.plot([], [], color=color, lw=1.5, ls=ls, label=label)


def _log_ticks(axis, values):
    """Readable ticks on a log axis: plain numbers (%g) for sample sizes and ratios, and
    minor labels at 2·10^e and 5·10^e only (``_minor_label``)."""
    if np.nanmax(values) >= 1:
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(_minor_label))


def phase_diagram(x, y, spread, y_star=None, *, star=None, y_zero=None, zero=None,
                  collapsed=None, zero_measured=None, decision=None, split=None, counts=None,
                  seeds=1, xlabel=AXIS_LABELS["n_B"], ylabel=AXIS_LABELS["lam"], log_x=False,
                  log_y=True,
                  star_label=r"theory $\lambda^*=\sqrt{n_B}/N$",
                  zero_label=r"theory $Z=0$: $\lambda=\sqrt{n_A}/N$", title="", out=None,
                  floor=1e-6):
    """Minority spread over a 2-d grid (log colour) with the theory's boundary on top and,
    with ``decision``, a second panel of the per-cell decision against the theory.

    Args:
      x: (nx,), y: (ny,) axis values (e.g. n_B and λ); spread: (ny, nx) measured minority
        spread of Z (NaN: not solved).
      y_star: optional (nx,) the theory's threshold per column in y units (λ* when y is
        λ), drawn as a line; else ``star`` (ny, nx), e.g. log(λ/λ*), whose zero contour is
        drawn. y_zero / zero: the same for the Z = 0 threshold (dotted).
      collapsed: optional (ny, nx) bool, the measured decision, drawn as its boundary
        contour (white dashes) on the spread panel; zero_measured: optional (ny, nx) bool,
        where the measured Z counts as 0, its boundary drawn dotted in white.
      decision: optional (ny, nx) int codes of ``diagram.decision_categories``, drawn in
        DECISION_COLORS beside the spread panel; split: optional (ny, nx) bool, cells whose
        seeds disagree (black dots); counts: optional (6,) cells per code (legend);
        seeds: seeds per cell (the decision is their majority).
      log_x, log_y: axis scales. out: path (.png/.pdf) to save to; the figure is returned.
    """
    panels = 1 if decision is None else 2
    fig = Figure(figsize=(5.0 * panels, 4.9 if panels == 2 else 4.3), layout="constrained")
    axs = fig.subplots(1, panels, squeeze=False)
    ax = axs[0, 0]
    vmax = max(float(np.nanmax(spread)) if np.isfinite(spread).any() else 1.0, 10 * floor)
    mesh = ax.pcolormesh(x, y, np.clip(spread, floor, None), shading="nearest",
                         norm=LogNorm(vmin=floor, vmax=vmax), cmap="viridis", rasterized=True)
    fig.colorbar(mesh, ax=ax, pad=0.01,
                 label=r"minority spread $\max_{j,k\in B}\|z_j-z_k\|/\max_k\|z_k\|$")
    for mask, ls, label in ((collapsed, "--", "measured boundary"),
                            (zero_measured, ":", r"measured $Z=0$ boundary")):
        if mask is not None and 0 < np.sum(mask) < np.size(mask):
            ax.contour(x, y, np.asarray(mask, float), levels=[0.5], colors="white",
                       linewidths=1.1, linestyles=[ls])
            ax.plot([], [], color="white", lw=1.1, ls=ls, label=label)
    for a in axs[0]:
        _theory_boundary(a, x, y, y_star, star, color="red", ls="-", label=star_label)
        _theory_boundary(a, x, y, y_zero, zero, color="orange", ls=":", label=zero_label)
        a.set_xlim(np.min(x), np.max(x))
        a.set_ylim(np.min(y), np.max(y))
        a.set_xscale("log" if log_x else "linear")
        a.set_yscale("log" if log_y else "linear")
        if log_x:
            _log_ticks(a.xaxis, x)
        if log_y:
            _log_ticks(a.yaxis, y)
        a.set_xlabel(xlabel)
        a.set_ylabel(ylabel)
    ax.set_title("measured minority spread of $Z$", fontsize=9)
    leg = ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=7.5,
                    framealpha=1.0)
    leg.get_frame().set_facecolor("0.8")
    if decision is not None:
        ax2 = axs[0, 1]
        ax2.pcolormesh(x, y, decision, shading="nearest", rasterized=True,
                       cmap=ListedColormap(DECISION_COLORS),
                       norm=BoundaryNorm(np.arange(-0.5, len(DECISION_COLORS)),
                                         len(DECISION_COLORS)))
        if split is not None and np.any(split):
            X, Y = np.meshgrid(x, y)
            ax2.plot(X[split], Y[split], ".", color="k", ms=2.5, ls="none",
                     label=f"seeds disagree ({int(np.sum(split))})")
        handles = [Patch(facecolor=c, edgecolor="0.5", lw=0.5,
                         label=name + ("" if counts is None else f" ({int(counts[i])})"))
                   for i, (c, name) in enumerate(zip(DECISION_COLORS, DECISION_NAMES))
                   if counts is None or counts[i] > 0]
        h, _ = ax2.get_legend_handles_labels()
        ax2.legend(handles=handles + h, loc="upper center", bbox_to_anchor=(0.5, -0.14),
                   ncol=2, fontsize=7.5, frameon=False,
                   title=("measured: majority of %d seeds" % seeds if seeds > 1
                          else "measured: one solve per cell") + "; theory: λ ≥ λ*",
                   title_fontsize=7.5)
        ax2.set_title(r"collapse decision per cell (near: $|\lambda/\lambda^*-1|\leq 2\%$)",
                      fontsize=9)
    fig.suptitle(title, fontsize=9)
    if out is not None:
        save(fig, out)
    return fig


def group_spreads(lam, spreads, n_g, K_g, lam_pred, *, tol, lam_meas=None, lam_zero=None,
                  extra=(), xlabel=AXIS_LABELS["lam"],
                  pred_label=r"\sqrt{n_g}/N", title="", out=None, floor=1e-5):
    """Within-group spread of Z against λ (log-log), one curve per group, with the
    conjectured thresholds as vertical lines in each group's colour.

    Args:
      lam: (L,) λ values (or c = λN, with ``xlabel``/``pred_label`` to match);
      spreads: (G, L) per group g, max_{j,k∈g}‖z_j − z_k‖/max_k‖z_k‖ (absolute where
        Z = 0), NaN where a cell is left out; n_g, K_g: (G,) the group's count and number
        of classes; lam_pred: (G,) the conjectured threshold sqrt(n_g)/N (same units as
        lam); tol: the collapse tolerance (horizontal line); lam_meas: optional (G,)
        measured thresholds, marked on the tolerance line; lam_zero: optional λ from
        which the measured Z is 0 (shaded); extra: optional (label, (L,) spread) curves
        drawn thin in grey (e.g. the spread of two groups together, where they merge).
      out: path (.png/.pdf) to save to; the figure is returned either way.
    The y axis starts at ``floor``: a collapsed group (spread ~1e-15) leaves through the
    bottom.
    """
    lam = np.asarray(lam, float)
    spreads = np.atleast_2d(np.asarray(spreads, float))
    colors = matplotlib.colormaps["tab10"].colors
    fig = Figure(figsize=(7.0, 3.9), layout="constrained")
    ax = fig.subplots()
    if lam_zero is not None and np.isfinite(lam_zero):
        ax.axvspan(lam_zero, lam[-1], color="0.88", lw=0, label=r"measured $Z=0$")
    ax.axhline(tol, color="0.35", lw=0.9, ls=":", label=f"collapse tolerance {tol:g}")
    below = floor * 1e-3  # drawn under the axis: the curve drops out of view
    for j, (label, curve) in enumerate(extra):
        ax.plot(lam, np.clip(curve, below, None), color="0.45", lw=0.9, ls="-.",
                label=label if j == 0 else None)
    for g in range(spreads.shape[0]):
        c = colors[g % len(colors)]
        ax.plot(lam, np.clip(spreads[g], below, None), color=c, lw=1.5,
                label=rf"$n_g={n_g[g]:g}$, $K_g={int(K_g[g])}$")
        ax.axvline(lam_pred[g], color=c, lw=1.0, ls="--")
        if lam_meas is not None and np.isfinite(lam_meas[g]):
            ax.plot([lam_meas[g]], [tol], marker="v", ms=6, color=c, mec="k", mew=0.5,
                    ls="none")
    ax.plot([], [], color="0.3", lw=1.0, ls="--", label=rf"conjecture ${pred_label}$")
    ax.plot([], [], marker="v", ms=6, color="0.6", mec="k", mew=0.5, ls="none",
            label="measured threshold")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lam[0], lam[-1])
    ax.xaxis.set_minor_formatter(FuncFormatter(_minor_label))
    ax.set_ylim(floor, 10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(r"group spread $s_g=\max_{j,k\in g}\|z_j-z_k\|\,/\,\max_k\|z_k\|$")
    fig.suptitle(title, fontsize=8.5)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7.5, frameon=False)
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


def cosines(n, cos, etf, *, line_labels, xlabel=AXIS_LABELS["n_A"],
            title="", out=None):
    """Mean cosines of the class-mean logits against sample size, with the simplex ETF.

    Args:
      n: (L,) sample sizes (log x axis).
      cos: {"AA" | "BB" | "AB": (P, L)} mean cosines within A, within B, across A–B, one
        row per line of the other axes (e.g. λ_b values).
      etf: −1/(K−1), drawn as a horizontal line.
      line_labels: (P,) labels of the rows (solid, dashed, dotted, … in that order).
    Returns the figure; saved to ``out`` (.png or .pdf) when given.
    """
    fig = Figure(figsize=(8.0, 4.2), layout="constrained")
    ax = fig.subplots()
    styles = ["-", "--", ":", "-."]
    for p, lab in enumerate(line_labels):
        for key, (name, colour) in _COS_STYLE.items():
            ax.plot(n, cos[key][p], styles[p % 4], color=colour, lw=1.6,
                    label=f"{name}, {lab}")
    ax.axhline(etf, color="k", lw=1, ls=(0, (1, 2)), label=rf"ETF $-1/(K-1) = {etf:.4f}$")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(r"mean $\cos(z_j, z_k)$")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    if out is not None:
        save(fig, out)
    return fig


def spread_curve(x, spreads, x_pred, *, line_labels, tol, xlabel, log_x=True, title="",
                 out=None, floor=1e-12):
    """Minority spread of Z along one axis (λ or a sample size), one curve per line of the
    other axes, with the theory's crossing x_pred (one per line, NaN: none on the grid) as
    vertical lines and the collapse tolerance as a horizontal one.

    x: (L,); spreads: (P, L); x_pred: (P,); line_labels: (P,).
    """
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.subplots()
    for p, lab in enumerate(line_labels):
        c = f"C{p}"
        ax.plot(x, np.maximum(spreads[p], floor), color=c, lw=1.6, label=lab)
        if np.isfinite(x_pred[p]):
            ax.axvline(x_pred[p], color=c, ls="--", lw=1,
                       label=f"theory, {lab}: {x_pred[p]:.4g}")
    ax.axhline(tol, color="k", ls=":", lw=1, label=f"collapse tolerance {tol:g}")
    ax.set_yscale("log")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(r"minority spread $\max_{j,k\in B}\|z_j-z_k\|/\max_k\|z_k\|$")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, framealpha=0.85)
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


def z_heatmaps(Zs, counts, titles, *, out=None, per_row=3):
    """Class-mean logits Z (K × K, column k = z_k = W h̄_k) as heatmaps, one panel per
    chosen cell: diverging colour map centred at 0 (each panel its own symmetric scale,
    ±max|Z|), class groups (runs of equal n_k: A, B for two clusters) marked by lines and
    labelled with their count.

    Zs: (P, K, K); counts: (P, K) class counts of each panel; titles: (P,) strings.
    Returns the figure; saved to ``out`` (.png or .pdf) when given.
    """
    Zs = np.asarray(Zs, float)
    P, K = Zs.shape[0], Zs.shape[-1]
    cols = min(P, per_row)
    rows = -(-P // cols)
    fig = Figure(figsize=(3.5 * cols, 3.9 * rows), layout="constrained")
    axs = fig.subplots(rows, cols, squeeze=False)
    for p in range(rows * cols):
        ax = axs[p // cols, p % cols]
        if p >= P:
            ax.set_axis_off()
            continue
        Z = Zs[p]
        vmax = float(np.max(np.abs(Z))) or 1.0
        im = ax.imshow(Z, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -vmax, vmax),
                       interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.82, format="%.2g")
        groups = _groups(counts[p])
        names = ("A", "B") if len(groups) == 2 else tuple(f"g{i + 1}" for i in range(len(groups)))
        ticks, labels = [], []
        for (a, b, n_g), name in zip(groups, names):
            ticks.append((a + b - 1) / 2)
            labels.append(f"{name}\n$n$={n_g:.4g}")
            if a > 0:
                for line in (ax.axvline, ax.axhline):
                    line(a - 0.5, color="k", lw=1.0)
        ax.set_xticks(ticks, labels, fontsize=7)
        ax.set_yticks(ticks, [lab.replace("\n", " ") for lab in labels], fontsize=7,
                      rotation=90, va="center")
        ax.set_xlabel(r"class $k$ (column $z_k$)", fontsize=8)
        ax.set_ylabel(r"logit of class $j$ (row)", fontsize=8)
        ax.set_title(titles[p], fontsize=7.5)
    if out is not None:
        save(fig, out)
    return fig


def traces(step, gaps, nc1, spread, labels, *, title="", out=None):
    """Objective and collapse metrics against optimiser steps, one line per traced cell:
    F − F_final (log; non-positive values not drawn), NC1 (when given, m ≥ 2) and the
    minority spread of Z, each in its own panel.

    step: (S + 1,) step numbers; gaps: (P, S + 1); nc1: (P, S + 1) or None; spread:
    (P, S + 1) max_{j,k∈B}‖z_j − z_k‖/max_k‖z_k‖; labels: (P,).
    """
    panels = [(gaps, r"$F - F_{\mathrm{final}}$")]
    if nc1 is not None:
        panels.append((nc1, r"NC1 $=\mathrm{Tr}(\Sigma_W\Sigma_B^\dagger)/K$"))
    panels.append((spread, r"minority spread $\max_{j,k\in B}\|z_j-z_k\|/\max_k\|z_k\|$"))
    fig = Figure(figsize=(3.5 * len(panels), 3.6), layout="constrained")
    axs = fig.subplots(1, len(panels))
    for ax, (vals, ylabel) in zip(axs, panels):
        vals = np.asarray(vals, float)
        for p in range(vals.shape[0]):
            ax.plot(step, np.where(vals[p] > 0, vals[p], np.nan), color=f"C{p}", lw=1.4,
                    label=labels[p])
        ax.set_yscale("log")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel(ylabel)
        ax.set_xlim(step[0], step[-1])
    fig.legend(*axs[0].get_legend_handles_labels(), loc="outside lower center",
               ncol=min(len(labels), 2), fontsize=7.5, frameon=False)
    fig.suptitle(title, fontsize=9)
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
