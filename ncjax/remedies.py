"""The remedies study, read off loaded runs: where the minority collapses and where it
vanishes along λ, per remedy strength, against each loss's own threshold.

A remedies run (``applies``) is a two_cluster run with a lam axis and one axis of a loss
parameter (``spec.LOSS_AXES``: weight_B, alpha, tau or gamma: the remedy's strength),
optionally a ratio axis; a study is one run or a folder of them, one per loss
(``collection``; sweeps/remedies_*.toml, docs/remedies.md). Per line (ratio, strength),
over the L cells along λ that are certified (converged, gap ≤ GAP_TOL):

  collapse   the minority spread s_B = max_{j,k∈B}‖z_j − z_k‖/max_k‖z_k‖ crossing
             COLLAPSE_TOL (``analysis.collapse_threshold``: estimate and bracket), the
             sharp bracket (s_B ≤ SHARP from there on; in_bracket: μ_B inside it) and its
             zero (``analysis.spread_root``, second order in the step), against
             theory.loss_lam_star, μ_B = ω_B (1 − α) Δ_B sqrt(n_B)/N;
  vanish     where the minority's mean logits become 0 (metrics.minority_vanished) and stay
             0: the bracket, and the zero of the minority's relative size
             m_B = max_{k∈B}‖z_k‖/max_k‖z_k‖ (``analysis.spread_zero``, a line through its
             last points); no closed form (measured);
  zero       where Z = 0 (metrics.zero_solution): the bracket, against the exact
             theory.zero_threshold;
  cosine     cos_Z_AB, the mean minority-majority cosine of the mean logits, at λ_cos: per
             ratio the largest grid λ below every measured collapse threshold of the study.

Numbers only: the text is ``report.remedies``, the figure ``plot.remedies``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ncjax import analysis, reading
from ncjax import spec as _spec
from ncjax.tolerances import COLLAPSE_TOL, FAR, GAP_TOL
from ncjax.validate import InputError

SHARP = 1e-6  # a spread of Z this small is a collapsed group in a certified float64 cell


def strength_axis(g) -> str | None:
    """The remedy-strength axis of a remedies run, None if g is not one."""
    p = g.spec.problem
    loss_axes = [a for a in g.axes if a in _spec.LOSS_AXES]
    ok = (p.get("profile") == "two_cluster" and "lam" in g.axes and len(loss_axes) == 1
          and set(g.axes) <= {"lam", "ratio", loss_axes[0]})
    return loss_axes[0] if ok else None


def applies(g) -> bool:
    """Whether g is a remedies run (module docstring)."""
    return strength_axis(g) is not None


def is_collection(path) -> bool:
    """Whether ``path`` is a folder of runs (no run itself: no manifest.json) with at
    least one remedies run in it."""
    p = Path(path)
    if not p.is_dir() or (p / "manifest.json").exists():
        return False
    return any((d / "manifest.json").exists() for d in p.iterdir() if d.is_dir())


def collection(path) -> list:
    """(name, loaded grid) of each remedies run in the folder ``path``, by name; an
    InputError if there is none."""
    runs = []
    for d in sorted(Path(path).iterdir(), key=lambda d: d.name):
        if d.is_dir() and (d / "manifest.json").exists():
            g = reading.load(d)
            if applies(g):
                runs.append((d.name, g))
    # the remedies in one order: ω_B/ω_A, τ, γ, α; a penalised bias after a free one
    order = {"weight_B": 0, "tau": 1, "gamma": 2, "alpha": 3}
    runs.sort(key=lambda r: (order.get(strength_axis(r[1]), 9),
                             float(r[1].spec.problem.get("lam_b", 0.0)), r[0]))
    if not runs:
        raise InputError(f"{path}: no remedies run in it (a run over lam and one of "
                         f"{', '.join(_spec.LOSS_AXES)}, profile two_cluster)")
    return runs


def _line(lam, spread, size, van, zero, pred, zthr):
    """The readings of one line along λ (arrays (L,), NaN where not certified)."""
    est, lo, hi = analysis.collapse_threshold(lam, spread, COLLAPSE_TOL)
    # the sharp bracket: a certified float64 optimum leaves ~1e-13 in a collapsed group,
    # where COLLAPSE_TOL also takes points just below μ_B whose spread is still ~1e-3
    _, s_lo, s_hi = analysis.collapse_threshold(lam, spread, SHARP)
    root = analysis.spread_root(lam, spread, COLLAPSE_TOL)
    _, v_lo, v_hi = analysis.collapse_threshold(lam, 1.0 - van, 0.5)
    # m_B falls to 0 at the vanishing point; where it is 0 it is exactly 0 (≤ sqrt(eps))
    v0 = analysis.spread_zero(lam, np.where(van == 1, 0.0, size), eps=1e-8)
    _, z_lo, z_hi = analysis.collapse_threshold(lam, 1.0 - zero, 0.5)
    return {"predicted": pred, "measured": est, "bracket": (lo, hi), "root": root,
            "deviation": est / pred - 1 if np.isfinite(est) and np.isfinite(pred) else np.nan,
            "root_deviation": root / pred - 1 if np.isfinite(root) and np.isfinite(pred)
            else np.nan,
            "sharp_bracket": (s_lo, s_hi),
            "in_bracket": bool(s_lo < pred <= s_hi),  # False where a side is NaN
            "vanish": v0, "vanish_bracket": (v_lo, v_hi),
            "zero_bracket": (z_lo, z_hi), "zero_threshold": zthr}


def study(g, name: str = "") -> dict:
    """The readings of one remedies run g (module docstring). Returns a dict: name, loss,
    axis (the strength axis), lam_b, ratios (R,), strengths (S,), lam (L,), certified
    (R, S, L), rows (R·S dicts: ratio, strength, and ``_line``'s readings), cos_AB (R, S, L)
    (NaN where not certified), agreement: cells where metrics.minority_collapsed equals
    theory.loss_minority_collapse, of the certified cells with a derived threshold, and of
    those farther than FAR from it."""
    axis = strength_axis(g)
    if axis is None:
        raise InputError(f"not a remedies run: axes {list(g.axes)}")
    if "ratio" in g.axes:
        ratios = np.asarray(g.axes["ratio"], float)
        order = [list(g.axes).index(a) for a in ("ratio", axis, "lam")]
        take = lambda f: np.moveaxis(g.status if f == "status" else g[f], order, [0, 1, 2])
    else:  # one ratio: a leading axis of size 1
        p = g.spec.problem
        ratios = np.array([float(p["ratio"] if "ratio" in p else p["n_A"] / p["n_B"])])
        order = [list(g.axes).index(a) for a in (axis, "lam")]
        take = lambda f: np.moveaxis(g.status if f == "status" else g[f], order, [0, 1])[None]
    lam, strengths = np.asarray(g.axes["lam"], float), np.asarray(g.axes[axis], float)
    ok = take("status") == "converged"
    if "gap" in g.fields:
        ok &= take("gap") <= GAP_TOL
    cert = lambda f: np.where(ok, take(f), np.nan)
    spread, van, zero = (cert(f"metrics.{f}") for f in
                         ("minority_spread_Z", "minority_vanished", "zero_solution"))
    norms = take("metrics.norm_z")  # (R, S, L, K)
    # two_cluster's classes: K_A of n_A, then K_B of n_B (``profiles.two_cluster``)
    in_B = np.arange(norms.shape[-1]) >= int(g.spec.problem["K_A"])
    top = np.max(norms, axis=-1)
    size = np.where(ok, np.max(np.where(in_B, norms, 0.0), axis=-1)
                    / np.where(top > 0, top, 1.0), np.nan)
    pred, zthr = take("theory.loss_lam_star"), take("theory.zero_threshold")
    rows = []
    for i, r in enumerate(ratios):
        for j, s in enumerate(strengths):
            p = pred[i, j][np.isfinite(pred[i, j])]
            zt = zthr[i, j][np.isfinite(zthr[i, j])]
            rows.append({"ratio": float(r), "strength": float(s), **_line(
                lam, spread[i, j], size[i, j], van[i, j], zero[i, j],
                float(p[0]) if p.size else np.nan, float(zt[0]) if zt.size else np.nan)})
    m, t = take("metrics.minority_collapsed"), take("theory.loss_minority_collapse")
    have = ok & np.isfinite(pred)
    with np.errstate(divide="ignore", invalid="ignore"):
        far = have & (np.abs(lam / pred - 1) > FAR)
    same = m == t
    return {"name": name, "loss": g.spec.problem.get("loss", "ce"), "axis": axis,
            "lam_b": float(g.spec.problem.get("lam_b", 0.0)), "ratios": ratios,
            "strengths": strengths, "lam": lam, "certified": ok, "rows": rows,
            "cos_AB": cert("metrics.cos_Z_AB"),
            "agreement": {"cells": int(ok.size), "certified": int(ok.sum()),
                          "scored": int(have.sum()), "agree": int((same & have).sum()),
                          "far": int(far.sum()), "far_agree": int((same & far).sum())}}


def studies(runs) -> list:
    """``study`` of each (name, grid), with the cosines read at one λ_cos per ratio
    (module docstring) added to each: lam_cos {ratio: λ}, cos_at (R, S)."""
    out = [study(g, name) for name, g in runs]
    lowest = {}
    for st in out:
        for row in st["rows"]:
            x = row["measured"] if np.isfinite(row["measured"]) else row["bracket"][1]
            if np.isfinite(x):
                lowest[row["ratio"]] = min(lowest.get(row["ratio"], np.inf), x)
    for st in out:
        lam = st["lam"]
        st["lam_cos"], st["cos_at"] = {}, np.full(st["cos_AB"].shape[:2], np.nan)
        for i, r in enumerate(st["ratios"]):
            below = np.flatnonzero(lam < lowest.get(float(r), np.inf))
            if below.size:
                k = below[-1]
                st["lam_cos"][float(r)] = float(lam[k])
                st["cos_at"][i] = st["cos_AB"][i, :, k]
    return out
