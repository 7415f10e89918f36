"""Figures of a loaded sweep (``sweep.load``): one function per kind of figure.

Each takes the loaded grid g and returns a ``matplotlib.figure.Figure`` (no pyplot, no
backend chosen: a notebook shows it inline), saved to ``out`` when given (``draw.save``);
``name`` (the run's name) starts the title.

  ``phase(g)``            a run over two of lam, c, n_A, n_B, n, ratio: the minority spread
                          beside the per-cell decision against the theory (``diagram``)
  ``groups(g)``           a "steps" profile over lam or c: each group's spread of Z against
                          its conjectured threshold sqrt(n_g)/N (``groups``)
  ``curves(g)``           a one-axis run: the minority spread along it, or the cosines of Z
                          along a sample size under λ = c/N (``analysis.curves``)
  ``remedies(runs)``      remedies runs (``ncjax.remedies``): per loss the measured minority
                          collapse and vanishing thresholds against the remedy's strength,
                          its theory μ_B beside them, and the A-B cosine at a fixed λ
  ``cells(g, idx)``       Z (K, K) of chosen cells as heatmaps
  ``trace(retrace(g, idx, steps))``  F − F_final, NC1 and the minority spread against the
                          optimiser step of chosen cells, re-solved from their random starts

The drawing from arrays is ``ncjax.draw``; the numbers come from ``ncjax.analysis``,
``ncjax.diagram`` and ``ncjax.groups``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ncjax import analysis, diagram, draw, draw_remedies, spec
from ncjax import remedies as _remedies
from ncjax import groups as _groups
from ncjax import trace as _trace
from ncjax.draw import AXIS_LABELS, AXIS_SYMBOLS, CURVE_LABELS
from ncjax.tolerances import COLLAPSE_TOL
from ncjax.validate import InputError


def _head(name: str) -> str:
    return f"{name}: " if name else ""


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else f"{v}"


def phase(g, *, name: str = "", out=None):
    """The phase diagram of a run over two axes (``diagram.phase_map``): the minority
    spread of the first seed (log colour) with the measured (majority) and the theory's
    boundaries, beside the per-cell decision against the theory (``draw.phase_diagram``).
    Raises InputError for a run with fewer than two such axes or no solved cell."""
    ph = diagram.phase_map(g)
    if ph is None:
        raise InputError(f"no phase diagram for axes {list(g.axes)}: it needs two of "
                         f"{', '.join(diagram.PHASE_AXES)} and a solved cell")
    x, y, S = ph["x"], ph["y"], ph["seeds"]
    p = g.spec.problem
    c = ph["c"]
    if y == "lam":
        star_label = r"theory $\lambda^*=\sqrt{n_B}/N$"
        zero_label = r"theory $Z=0$: $\sqrt{n_A}/N$"
    elif y == "c":
        star_label = r"theory $c^*=\sqrt{n_B}$"
        zero_label = r"theory $Z=0$: $c=\sqrt{n_A}$"
    else:
        star_label = (r"theory $\lambda=\lambda^*=\sqrt{n_B}/N$"
                      + (f": $n_B=c^2={c * c:g}$" if c is not None else ""))
        zero_label = (r"theory $Z=0$ from $\lambda=\sqrt{n_A}/N$"
                      + (": $n_A=c^2$" if c is not None else ""))
    lam_txt = (f", $\\lambda$ = {c:g}/N" if c is not None else
               f", $\\lambda$ = {p['lam']:g}" if "lam" in p and "lam" not in g.axes else "")
    return draw.phase_diagram(
        ph["xv"], ph["yv"], ph["spread"], ph["y_star"], star=ph["star"], y_zero=ph["y_zero"],
        zero=ph["zero"], collapsed=ph["frac"] > 0.5, zero_measured=ph["zero_frac"] > 0.5,
        decision=ph["category"],
        split=(ph["frac"] > 0) & (ph["frac"] < 1), counts=list(ph["counts"].values()),
        seeds=S, xlabel=AXIS_LABELS.get(x, x), ylabel=AXIS_LABELS.get(y, y),
        log_x=x in ("lam", "c") or draw.is_log_axis(ph["xv"]),
        log_y=y in ("lam", "c") or draw.is_log_axis(ph["yv"]), star_label=star_label,
        zero_label=zero_label, out=out,
        title=f"{_head(name)}{ph['yv'].size} x {ph['xv'].size} cells"
              + (f" x {S} seeds" if S > 1 else "") + lam_txt
              + ("".join(f", {k} = {v:g}" for k, v in ph["sliced"].items())))


def groups(g, *, name: str = "", out=None):
    """The group thresholds of a "steps" profile over lam or c (``groups.thresholds``):
    per group of ≥ 2 classes its spread of Z against the axis, the conjectured threshold
    sqrt(n_g)/N and the measured one, the measured Z = 0 region and, where two neighbouring
    groups merge into one cluster, their spread together (``draw.group_spreads``)."""
    t = _groups.thresholds(g)
    multi = t["K_g"] >= 2
    meas = np.array([r["measured"] for r in t["rows"]])
    extra = [("$s$ of two neighbouring\ngroups together (merge)", m["spread"])
             for m in t["merges"] if np.isfinite(m["measured"])]
    z_hi = t["zero"]["hi"]
    return draw.group_spreads(
        t["x"], t["spread"][multi], t["n_g"][multi], t["K_g"][multi], t["predicted"][multi],
        tol=COLLAPSE_TOL, lam_meas=meas[multi], lam_zero=z_hi if np.isfinite(z_hi) else None,
        extra=extra, xlabel=AXIS_LABELS[t["axis"]],
        pred_label=r"\sqrt{n_g}" if t["axis"] == "c" else r"\sqrt{n_g}/N",
        title=_head(name)
              + " + ".join(f"{k}$\\times${v:g}" for k, v in t["groups"])
              + f" ($K_g\\times n_g$), N = {t['N']:g}; {int(t['certified'].sum())} certified "
                "solutions",
        out=out)


def curves(g, *, name: str = "", out=None):
    """A one-axis run (``analysis.curves``): under λ = c/N with a sample-size axis the mean
    cosines of Z against it (``draw.cosines``, the angle study); otherwise the minority
    spread along the run's λ or sample-size axis with the theory's crossing
    (``draw.spread_curve``). Raises InputError when neither applies."""
    cv = analysis.curves(g)
    if cv is None:
        raise InputError(f"nothing to plot along one axis for axes {list(g.axes)}")
    if cv["kind"] == "angles":
        cos = cv["cosines"]
        axis = cos["axis"]
        vals = {key: [] for key in ("AA", "BB", "AB")}
        for _, idx in analysis.lines(g, axis):
            for key in vals:
                vals[key].append(g[f"metrics.cos_Z_{key}"][idx])
        return draw.cosines(
            np.asarray(g.axes[axis], float), {k: np.array(v) for k, v in vals.items()},
            cos["rows"][0]["etf"],
            line_labels=[analysis.line_label(r["where"]) for r in cos["rows"]],
            xlabel=f"{CURVE_LABELS.get(axis, axis)} (samples)",
            title=f"{_head(name)}mean cosines of the class-mean logits, {g.status.size} cells",
            out=out)
    b = cv["boundary"]
    axis = b["axis"]
    spreads = [np.where(g.status[idx] == "converged", g["metrics.minority_spread_Z"][idx], np.nan)
               for _, idx in analysis.lines(g, axis)]
    return draw.spread_curve(
        np.asarray(g.axes[axis], float), np.array(spreads),
        np.array([ln["predicted"] for ln in b["lines"]]),
        line_labels=[analysis.line_label(ln["where"]) for ln in b["lines"]], tol=COLLAPSE_TOL,
        xlabel=CURVE_LABELS.get(axis, axis), log_x=axis in ("lam", "c"),
        title=f"{_head(name)}minority spread along {axis}", out=out)


STRENGTH_LABELS = {"weight_B": r"$\omega_B/\omega_A$", "alpha": r"$\alpha$",
                   "tau": r"$\tau$", "gamma": r"$\gamma$"}
LOSS_TITLES = {"weighted_ce": "weighted CE", "label_smoothing": "label smoothing",
               "logit_adjusted": "logit adjusted", "vs": "VS"}


def remedies_panel(st: dict) -> dict:
    """The arrays of one column of the remedies figure from a ``remedies.study``."""
    R, S = st["ratios"].size, st["strengths"].size
    grid = lambda key: np.array([row[key] for row in st["rows"]], float).reshape(R, S)
    pair = lambda key, k: np.array([row[key][k] for row in st["rows"]], float).reshape(R, S)
    root, tolx = grid("root"), grid("measured")
    loss = LOSS_TITLES.get(st["loss"], st["loss"])
    bias = (rf", $\lambda_b$ = {st['lam_b']:g}" if st["lam_b"] else ", free bias")
    return {"title": loss + bias, "xlabel": STRENGTH_LABELS.get(st["axis"], st["axis"]),
            "log_x": st["axis"] == "weight_B", "x": st["strengths"], "ratios": st["ratios"],
            "predicted": grid("predicted"), "measured": np.where(np.isfinite(root), root, tolx),
            "lo": pair("bracket", 0), "hi": pair("bracket", 1),
            "v_lo": pair("vanish_bracket", 0), "v_hi": pair("vanish_bracket", 1),
            "zero": grid("zero_threshold"), "cos": st["cos_at"], "lam_cos": st["lam_cos"]}


def remedies(runs, *, name: str = "", out=None):
    """The remedies figure of (name, grid) runs (``remedies.studies``;
    ``draw_remedies.remedies``): measured collapse (the spread's zero, else its crossing
    of the tolerance), the vanishing bracket and the exact Z = 0 threshold against the
    remedy's strength beside the theory's μ_B, and cos_Z_AB at λ_cos, one column a run."""
    sts = _remedies.studies(runs)
    K = 2 * int(runs[0][1].spec.problem["K_A"])
    cells = sum(st["agreement"]["certified"] for st in sts)
    return draw_remedies.remedies(
        [remedies_panel(st) for st in sts], out=out,
        title=f"{_head(name)}minority collapse and vanishing against remedy strength, "
              f"{K // 2} + {K // 2} classes; {cells} certified cells")


def cell_title(c: dict) -> str:
    """The three-part panel title of a chosen cell (an ``analysis.cells`` entry): its axis
    values as symbols; N and λ/λ*; the measured and the predicted decision, one line each
    so that both fit a panel."""
    return (f"cell {c['index']}: " + ", ".join(f"{AXIS_SYMBOLS.get(k, k)} = {_fmt(v)}"
                                               for k, v in c["values"].items())
            + f"\n$N$ = {c['N']:g}, $\\lambda/\\lambda^*$ = {c['ratio']:.3g}"
            + f"\nmeasured: {c['measured']}\ntheory: {c['theory']}")


def cells(g, idx, *, out=None):
    """Heatmaps of Z (K, K) of the cells with flat indices ``idx`` (``draw.z_heatmaps``),
    titled by ``cell_title``. Raises InputError if one of them is not solved yet."""
    cs = analysis.cells(g, idx)
    missing = [c["index"] for c in cs if not np.isfinite(c["Z"]).all()]
    if missing:
        raise InputError(f"cells {missing} are not solved yet")
    return draw.z_heatmaps(np.stack([c["Z"] for c in cs]), np.stack([c["counts"] for c in cs]),
                           [cell_title(c) for c in cs], out=out)


class Retrace(NamedTuple):
    """Chosen cells re-solved step by step (``retrace``); arrays are (P, steps + 1) over
    the P cells, index 0 the random start.

    cells: the ``analysis.cells`` entries; steps, m, optimizer, dtype: how they were
    re-solved; objective: F; gap: F − F_final, F_final the smaller of the last F and the
    stored objective of a converged cell; nc1: NC1 (NaN for m = 1); spread: the minority
    spread of Z."""

    cells: list
    steps: int
    m: int
    optimizer: str
    dtype: str
    objective: np.ndarray
    gap: np.ndarray
    nc1: np.ndarray
    spread: np.ndarray


def retrace(g, idx, steps: int, *, m: int | None = None) -> Retrace:
    """Re-solve the cells with flat indices ``idx`` for ``steps`` optimiser steps with
    ``ncjax.trace``: the run's UFM optimiser and dtype, each cell's own random start
    (key_index = its flat index) and m features per class (default the run's; another m
    is another random start). A convex-method run is traced with the UFM solver."""
    grid = spec.expand(g.spec)
    sol, prm = g.spec.solver, grid.params
    m = int(m if m is not None else g.spec.problem.get("m", 1))
    opts = {k: sol[k] for k in ("optimizer", "learning_rate", "memory_size", "dtype")
            if k in sol}
    cs = analysis.cells(g, idx)
    F, gap, nc1, spread = [], [], [], []
    for c in cs:
        i = c["index"]
        t = _trace.trace(c["counts"], prm["lam_W"][i], prm["lam_H"][i], prm["lam_b"][i],
                         steps=steps, d=int(prm["d"][i]), m=m, seed=int(prm["seed"][i]),
                         key_index=i, **opts)
        f = t.objective.astype(float)
        stored = c["objective"] if c["status"] == "converged" else np.nan
        F.append(f)
        gap.append(f - np.nanmin([f[-1], stored]))
        nc1.append(t.nc1)
        spread.append(t.minority_spread_Z)
    return Retrace(cs, int(steps), m, opts.get("optimizer", "lbfgs"),
                   opts.get("dtype", "float32"), np.array(F), np.array(gap), np.array(nc1),
                   np.array(spread))


def trace(traced: Retrace, *, name: str = "", out=None):
    """F − F_final, NC1 (m ≥ 2) and the minority spread of Z against the optimiser step of
    re-solved cells (``retrace``; ``draw.traces``), one line per cell."""
    labels = [f"cell {c['index']}: "
              + ", ".join(f"{AXIS_SYMBOLS.get(k, k)}={_fmt(v)}" for k, v in c["values"].items())
              + f", $\\lambda/\\lambda^*$={c['ratio']:.3g}" for c in traced.cells]
    return draw.traces(np.arange(traced.steps + 1), traced.gap,
                       traced.nc1 if traced.m > 1 else None, traced.spread, labels,
                       title=f"{_head(name)}{traced.optimizer}, {traced.dtype}, m = {traced.m}, "
                             "re-solved from each cell's random start", out=out)
