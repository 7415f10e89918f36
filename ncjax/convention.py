"""The one regularisation convention (DESIGN.md §1), and the authors' beside it.

ncjax writes every penalty (λ/2)‖·‖² (the *half* convention); Hong & Ling's code writes
λ‖·‖² (*paper*: their λ is half of ours). Inputs may be given in either, and are turned to
the half convention at the boundary (``to_half``); results always report half values. The
convex form's λ = sqrt(λ_W λ_H) is then sqrt(λ_W λ_H) (half) = 2 sqrt(λ_W λ_H) (paper).
Plain arithmetic on numbers or arrays, without JAX: a run's spec is read with it.
"""

from __future__ import annotations

from ncjax.validate import InputError

CONVENTIONS = ("half", "paper")


def to_half(lam_W, lam_H, lam_b, convention: str = "half"):
    """(λ_W, λ_H, λ_b) from ``convention`` to the half convention: λ_half = 2 λ_paper for
    each."""
    if convention == "half":
        return lam_W, lam_H, lam_b
    if convention == "paper":
        return 2 * lam_W, 2 * lam_H, 2 * lam_b
    raise InputError(f"convention must be one of {CONVENTIONS}, got {convention!r}")


def from_half(lam_W, lam_H, lam_b, convention: str = "half"):
    """(λ_W, λ_H, λ_b) from the half convention to ``convention``."""
    if convention == "half":
        return lam_W, lam_H, lam_b
    if convention == "paper":
        return lam_W / 2, lam_H / 2, lam_b / 2
    raise InputError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
