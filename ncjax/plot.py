"""Pictures of where collapse happens (matplotlib, Agg: no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402


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
