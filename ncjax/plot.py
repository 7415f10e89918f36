"""Pictures of where collapse happens (matplotlib, Agg: no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402


def phase_diagram(n_B, lam, spread, lam_star, *, collapsed=None, lam_zero=None, title="",
                  out=None, floor=1e-6):
    """Minority spread over an (n_B, λ) grid, log colour, with the theory's λ*(n_B) on top.

    Args:
      n_B: (nx,) minority counts; lam: (ny,) λ values; spread: (ny, nx) measured minority
        spread of Z; lam_star: (nx,) theoretical threshold per n_B; collapsed: optional
        (ny, nx) bool, the measured decision, drawn as its boundary contour; lam_zero:
        optional (nx,) threshold above which the theory says Z = 0 (all classes collapse).
      out: path (.png/.pdf) to save to; the figure is returned either way.
    """
    fig, ax = plt.subplots(figsize=(5.2, 4.0), constrained_layout=True)
    mesh = ax.pcolormesh(n_B, lam, np.clip(spread, floor, None), shading="nearest",
                         norm=LogNorm(vmin=floor, vmax=max(float(np.nanmax(spread)), 10 * floor)),
                         cmap="viridis")
    fig.colorbar(mesh, ax=ax, label=r"minority spread $\max_{j,k\in B}\|z_j-z_k\|/\max_k\|z_k\|$")
    if collapsed is not None:
        ax.contour(n_B, lam, collapsed.astype(float), levels=[0.5], colors="white",
                   linewidths=1.0, linestyles="--")
    ax.plot(n_B, lam_star, color="red", lw=1.5, label=r"theory $\lambda^*=\sqrt{n_B}/N$")
    if lam_zero is not None:
        ax.plot(n_B, lam_zero, color="orange", lw=1.2, ls=":",
                label=r"theory $Z=0$: $\sqrt{n_A}/N$")
    ax.set_ylim(lam[0], lam[-1])
    ax.set_yscale("log")
    ax.set_xlabel(r"minority class size $n_B$ (samples)")
    ax.set_ylabel(r"$\lambda=\sqrt{\lambda_W\lambda_H}$")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.8)
    if out is not None:
        fig.savefig(out, dpi=150)
    return fig


def group_spreads(lam, spreads, n_g, K_g, lam_pred, *, tol, lam_meas=None, lam_zero=None,
                  extra=(), xlabel=r"$\lambda=\sqrt{\lambda_W\lambda_H}$",
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
    colors = plt.get_cmap("tab10").colors
    fig, ax = plt.subplots(figsize=(7.0, 3.9), constrained_layout=True)
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
        fig.savefig(out, dpi=150)
    return fig


def _minor_label(v, _pos):
    """Minor log ticks: label 2·10^e and 5·10^e only (no crowding on short axes)."""
    e = np.floor(np.log10(v))
    m = v / 10**e
    if not (np.isclose(m, 2) or np.isclose(m, 5)):
        return ""
    return f"{v:g}" if 0 <= e <= 3 else rf"${m:.0f}\times10^{{{e:.0f}}}$"


_COS_STYLE = {"AA": ("within A", "C0"), "BB": ("within B", "C3"), "AB": ("A-B", "C2")}


def cosines(n, cos, etf, *, line_labels, xlabel=r"majority class size $n_A$ (samples)",
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
    fig, ax = plt.subplots(figsize=(8.0, 4.2), constrained_layout=True)
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
        fig.savefig(out, dpi=150)
    return fig


def spread_curve(x, spreads, x_pred, *, line_labels, tol, xlabel, log_x=True, title="",
                 out=None, floor=1e-12):
    """Minority spread of Z along one axis (λ or a sample size), one curve per line of the
    other axes, with the theory's crossing x_pred (one per line, NaN: none on the grid) as
    vertical lines and the collapse tolerance as a horizontal one.

    x: (L,); spreads: (P, L); x_pred: (P,); line_labels: (P,).
    """
    fig, ax = plt.subplots(figsize=(6.0, 4.0), constrained_layout=True)
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
        fig.savefig(out, dpi=150)
    return fig
