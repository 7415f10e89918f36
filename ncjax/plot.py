"""Figures of a loaded sweep (``ncjax.load``): one function per kind of figure.

Each takes the loaded grid g (or runs of one) and returns a ``matplotlib.figure.Figure``
(no pyplot, no backend chosen: a notebook shows it inline), drawn at a size preset
(``size``: "column", "full", "slide"; ``style.SIZES``) and written to ``out`` when given
(by its extension: .png, .pdf, .svg, …; the name is checked before any work and the file
written atomically). The title states the problem (``problem_title``: profile and counts,
N, λ or c, λ_b, loss, solver) unless ``title`` is given.

  ``phase(g)``            a run over two of lam, c, n_A, n_B, n, ratio: the minority spread
                          beside the per-cell decision against the theory (``diagram``)
  ``groups(g)``           a "steps" profile over lam or c: each group's spread of Z against
                          its conjectured threshold sqrt(n_g)/N (``groups``)
  ``curves(g)``           a one-axis run: the minority spread along it, or the cosines of Z
                          along a sample size under λ = c/N (``analysis.curves``)
  ``remedies(runs)``      remedies runs (``ncjax.remedies``): per loss the measured minority
                          collapse and vanishing thresholds against the remedy's strength,
                          its theory μ_B beside them, and the A-B cosine at a fixed λ
  ``thresholds(g)``       a threshold grid (``threshold_study``): each threshold against one
                          axis (one curve per value of a second, or a heatmap over two),
                          the theory's beside it (``draw_thresholds``)
  ``cells(g, idx)``       Z (K, K) of chosen cells as heatmaps on one colour scale
  ``trace(retrace(g, idx, steps))``  F − F_final, NC1 and the minority spread against the
                          optimiser step of chosen cells, re-solved from their random starts

What is zero is drawn as zero: a spread at most the solves' rounding floor
(``tolerances.rounding`` of the stored dtype) and a solution that counts as Z = 0 in flat
colours, never as data. The drawing from arrays is ``ncjax.draw`` (``draw_phase``,
``draw_remedies``); the numbers come from ``ncjax.analysis``, ``ncjax.diagram`` and
``ncjax.groups``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ncjax import analysis, diagram, draw, draw_phase, draw_remedies, metrics, spec, style
from ncjax import draw_thresholds, threshold_study
from ncjax import remedies as _remedies
from ncjax import groups as _groups
from ncjax import trace as _trace
from ncjax.draw import AXIS_LABELS, AXIS_SYMBOLS, CURVE_LABELS
from ncjax.style import DEFAULT_SIZE
from ncjax.tolerances import COLLAPSE_TOL
from ncjax.validate import InputError

PROFILE_NAMES = {"two_cluster": "two clusters", "steps": "steps", "balanced": "balanced",
                 "long_tail": "long tail", "explicit": "counts"}
STRENGTH_LABELS = {"weight_B": r"$\omega_B/\omega_A$", "alpha": r"$\alpha$",
                   "tau": r"$\tau$", "gamma": r"$\gamma$"}
LOSS_TITLES = {"ce": "cross-entropy", "weighted_ce": "weighted CE",
               "label_smoothing": "label smoothing", "logit_adjusted": "logit adjusted",
               "vs": "VS", "mse": "MSE"}


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else f"{v}"


def _key(p: dict, axes: dict, key: str):
    """A problem key as text: its symbol where it is an axis, its value where fixed, else
    None."""
    if key in axes:
        return AXIS_SYMBOLS.get(key, key)
    return _fmt(p[key]) if key in p else None


def _counts_text(g) -> str:
    """The class counts of the problem, e.g. "two clusters 5 × 500 + 5 × n_B"."""
    p, axes = g.spec.problem, g.axes
    prof = p.get("profile", "explicit")
    name = PROFILE_NAMES.get(prof, prof)
    if prof == "two_cluster":
        n_A, n_B, r = (_key(p, axes, k) for k in ("n_A", "n_B", "ratio"))
        fixed_r = "ratio" in p and "ratio" not in axes
        n_A = n_A or (f"{r}$n_B$" if fixed_r and n_B is not None else "$n_A$")
        n_B = n_B or (f"$n_A$/{r}" if fixed_r else "$n_B$")
        return (f"{name} {_key(p, axes, 'K_A')} $\\times$ {n_A} + {_key(p, axes, 'K_B')} "
                f"$\\times$ {n_B}")
    if prof == "steps":
        return name + " " + " + ".join(f"{k} $\\times$ {n:g}" for k, n in p["groups"])
    if prof == "balanced":
        return f"{name} {_key(p, axes, 'K')} $\\times$ {_key(p, axes, 'n')}"
    if prof == "long_tail":
        return (f"{name} K = {_key(p, axes, 'K')}, $n_k$ from {_key(p, axes, 'n')} to "
                f"{_key(p, axes, 'n')}/{_key(p, axes, 'ratio')}")
    return f"{len(p['counts'])} classes"


def _range(v, fmt=".4g") -> str:
    lo, hi = (format(f(np.asarray(v, float)), fmt) for f in (np.nanmin, np.nanmax))
    return lo if lo == hi else f"{lo} … {hi}"


def problem_title(g, *, loss: bool = True, solver: bool = True) -> str:
    """The problem of a loaded grid in words, its parts separated by "; " (``style.wrap``
    breaks lines there): profile and class counts, N, λ (or λ = c/N) where it is not an
    axis, λ_b (or "no bias") and the loss with its fixed parameters (unless ``loss`` is
    False: the caller names them, per panel), the solver (unless ``solver`` is False)."""
    p, axes, sol = g.spec.problem, g.axes, g.spec.solver
    f = spec.expand(g.spec).fields
    with np.errstate(divide="ignore", invalid="ignore"):  # N = c/λ of the grid's own cells
        N = np.asarray(g["theory.c"], float) / np.asarray(g["theory.lam"], float)
    N = N[np.isfinite(N)] if np.isfinite(N).any() else f["N"]
    parts = [_counts_text(g), f"N = {_range(N, '.6g')}"]
    if "c" in p and not {"c", "lam"} & set(axes):
        parts.append(f"$\\lambda$ = {p['c']:g}/N")
    elif not {"c", "lam", "lam_W", "lam_H"} & set(axes):
        parts.append(f"$\\lambda$ = {_range(f['lam'])}")
    if loss and not p.get("bias", True):
        parts.append("no bias")
    elif loss and "lam_b" not in axes:
        lb = float(np.ravel(f["lam_b"])[0])
        parts.append(f"$\\lambda_b$ = {lb:g}" + (" (free bias)" if lb == 0 else ""))
    if loss:
        name = p.get("loss", "ce")
        fixed = [f"{STRENGTH_LABELS.get(k, k)} = {_fmt(p[k])}"
                 for k in sorted(spec.LOSS_KEYS & set(p) - set(axes))]
        parts.append(LOSS_TITLES.get(name, name) + (f" ({', '.join(fixed)})" if fixed else ""))
    dtype = np.dtype(_dtype(g)).name
    if solver:
        parts.append(f"{dtype} convex solver" if sol.get("method") == "convex" else
                     f"{dtype} {_optimizer(sol.get('optimizer', 'lbfgs'))} (UFM)")
    return "; ".join(parts)


def _optimizer(name: str) -> str:
    return {"lbfgs": "L-BFGS", "adam": "Adam"}.get(name, name)


def _dtype(g):
    """The dtype the run's metrics were computed in (its stored spread of Z)."""
    return g["metrics.minority_spread_Z"].dtype


def phase(g, *, title=None, size=DEFAULT_SIZE, out=None):
    """The phase diagram of a run over two axes (``diagram.phase_map``): the minority
    spread of the first seed (log colour; at the rounding floor and Z = 0 in flat colours)
    with the measured (majority) and the theory's boundaries, beside the per-cell decision
    against the theory (``draw_phase.phase_diagram``). Raises InputError for a run with
    fewer than two such axes or no solved cell."""
    out = style.check(size, out)
    ph = diagram.phase_map(g)
    if ph is None:
        raise InputError(f"no phase diagram for axes {list(g.axes)}: it needs two of "
                         f"{', '.join(diagram.PHASE_AXES)} and a solved cell")
    x, y, S = ph["x"], ph["y"], ph["seeds"]
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
    grid = (f"{ph['yv'].size} $\\times$ {ph['xv'].size} cells"
            + (f" $\\times$ {S} seeds" if S > 1 else "")
            + "".join(f", {AXIS_SYMBOLS.get(k, k)} = {v:g}" for k, v in ph["sliced"].items()))
    return draw_phase.phase_diagram(
        ph["xv"], ph["yv"], ph["spread"], ph["y_star"], star=ph["star"], y_zero=ph["y_zero"],
        zero=ph["zero"], collapsed=ph["frac"] > 0.5, zero_measured=ph["zero_frac"] > 0.5,
        zero_shown=ph["zero_shown"], decision=ph["category"],
        split=(ph["frac"] > 0) & (ph["frac"] < 1), counts=list(ph["counts"].values()),
        seeds=S, xlabel=AXIS_LABELS.get(x, x), ylabel=AXIS_LABELS.get(y, y),
        log_x=x in ("lam", "c") or draw.is_log_axis(ph["xv"]),
        log_y=y in ("lam", "c") or draw.is_log_axis(ph["yv"]), star_label=star_label,
        zero_label=zero_label, dtype=_dtype(g), size=size, out=out,
        title=problem_title(g) + "; " + grid if title is None else title)


def groups(g, *, title=None, size=DEFAULT_SIZE, out=None):
    """The group thresholds of a "steps" profile over lam or c (``groups.thresholds``):
    per group of ≥ 2 classes its spread of Z against the axis, the conjectured threshold
    sqrt(n_g)/N and the measured one, the measured Z = 0 region and, where two neighbouring
    groups merge into one cluster, their spread together (``draw.group_spreads``)."""
    out = style.check(size, out)
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
        title=(problem_title(g) + f"; {int(t['certified'].sum())} certified solutions"
               if title is None else title), dtype=_dtype(g), size=size, out=out)


def curves(g, *, title=None, size=DEFAULT_SIZE, out=None):
    """A one-axis run (``analysis.curves``): under λ = c/N with a sample-size axis the mean
    cosines of Z against it (``draw.cosines``, the angle study); otherwise the minority
    spread along the run's λ or sample-size axis with the theory's crossing
    (``draw.spread_curve``). Raises InputError when neither applies."""
    out = style.check(size, out)
    cv = analysis.curves(g)
    if cv is None:
        raise InputError(f"nothing to plot along one axis for axes {list(g.axes)}")
    head = problem_title(g) + f"; {g.status.size} cells" if title is None else title
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
            xlabel=f"{CURVE_LABELS.get(axis, axis)} (samples)", title=head, size=size,
            out=out)
    b = cv["boundary"]
    axis = b["axis"]
    spreads = [np.where(g.status[idx] == "converged", g["metrics.minority_spread_Z"][idx], np.nan)
               for _, idx in analysis.lines(g, axis)]
    return draw.spread_curve(
        np.asarray(g.axes[axis], float), np.array(spreads),
        np.array([ln["predicted"] for ln in b["lines"]]),
        line_labels=[analysis.line_label(ln["where"]) for ln in b["lines"]], tol=COLLAPSE_TOL,
        xlabel=CURVE_LABELS.get(axis, axis), log_x=axis in ("lam", "c"), title=head,
        dtype=_dtype(g), size=size, out=out)


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


def remedies(runs, *, title=None, size=DEFAULT_SIZE, out=None):
    """The remedies figure of (name, grid) runs (``remedies.studies``;
    ``draw_remedies.remedies``): measured collapse (the spread's zero, else its crossing
    of the tolerance), the vanishing bracket and the exact Z = 0 threshold against the
    remedy's strength beside the theory's μ_B, and cos_Z_AB at λ_cos, one column a run
    (its loss and bias its panel's title; the problem of the first run the figure's)."""
    out = style.check(size, out)
    sts = _remedies.studies(runs)
    cells = sum(st["agreement"]["certified"] for st in sts)
    g = runs[0][1]
    head = ("minority collapse and vanishing against remedy strength; "
            + problem_title(g, loss=False) + f"; {cells} certified cells")
    return draw_remedies.remedies([remedies_panel(st) for st in sts], size=size, out=out,
                                  title=head if title is None else title)


def cell_title(c: dict) -> str:
    """The panel title of a chosen cell (an ``analysis.cells`` entry), one part a line so
    that it fits a panel: its index; its axis values as symbols; N and λ/λ*; the measured
    and the predicted decision."""
    return (f"cell {c['index']}\n" + ", ".join(f"{AXIS_SYMBOLS.get(k, k)} = {_fmt(v)}"
                                               for k, v in c["values"].items())
            + f"\n$N$ = {c['N']:g}, $\\lambda/\\lambda^*$ = {c['ratio']:.3g}"
            + f"\nmeasured: {c['measured']}\ntheory: {c['theory']}")


def cells(g, idx, *, title=None, size=DEFAULT_SIZE, out=None):
    """Heatmaps of Z (K, K) of the cells with flat indices ``idx`` (``draw.z_heatmaps``) on
    one colour scale, each titled by ``cell_title``, the columns that vanished
    (``metrics.vanished``, read off the NaN rows of metrics.cos_Z) in the zero colour.
    Raises InputError if one of them is not solved yet."""
    out = style.check(size, out)
    cs = analysis.cells(g, idx)
    missing = [c["index"] for c in cs if not np.isfinite(c["Z"]).all()]
    if missing:
        raise InputError(f"cells {missing} are not solved yet")
    cos = [g["metrics.cos_Z"][np.unravel_index(c["index"], g.shape)] for c in cs]
    return draw.z_heatmaps(np.stack([c["Z"] for c in cs]), np.stack([c["counts"] for c in cs]),
                           [cell_title(c) for c in cs],
                           vanished=np.stack([np.isnan(np.diagonal(C)) for C in cos]),
                           title=problem_title(g) if title is None else title, size=size,
                           out=out)


class Retrace(NamedTuple):
    """Chosen cells re-solved step by step (``retrace``); arrays are (P, steps + 1) over
    the P cells, index 0 the random start.

    cells: the ``analysis.cells`` entries; steps, m, optimizer, dtype: how they were
    re-solved; objective: F; gap: F − F_final, F_final the smaller of the last F and the
    stored objective of a converged cell; nc1: NC1 (NaN for m = 1); spread: the minority
    spread of Z; problem: the grid's ``problem_title`` (without its solver); gap_floor:
    the rounding of F at the final objectives (``metrics.objective_rounding``, the
    largest over the cells)."""

    cells: list
    steps: int
    m: int
    optimizer: str
    dtype: str
    objective: np.ndarray
    gap: np.ndarray
    nc1: np.ndarray
    spread: np.ndarray
    problem: str
    gap_floor: float


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
    dtype = opts.get("dtype", "float32")
    F, gap, nc1, spread, floor = [], [], [], [], []
    for c in cs:
        i = c["index"]
        t = _trace.trace(c["counts"], prm["lam_W"][i], prm["lam_H"][i], prm["lam_b"][i],
                         steps=steps, d=int(prm["d"][i]), m=m, seed=int(prm["seed"][i]),
                         key_index=i, **opts)
        f = t.objective.astype(float)
        stored = c["objective"] if c["status"] == "converged" else np.nan
        final = np.nanmin([f[-1], stored])
        F.append(f)
        gap.append(f - final)
        nc1.append(t.nc1)
        spread.append(t.minority_spread_Z)
        floor.append(float(metrics.objective_rounding(np.asarray(final, dtype),
                                                      len(c["counts"]))))
    return Retrace(cs, int(steps), m, opts.get("optimizer", "lbfgs"), dtype, np.array(F),
                   np.array(gap), np.array(nc1), np.array(spread),
                   problem_title(g, solver=False), max(floor))


def trace(traced: Retrace, *, title=None, size=DEFAULT_SIZE, out=None):
    """F − F_final, NC1 (m ≥ 2) and the minority spread of Z against the optimiser step of
    re-solved cells (``retrace``; ``draw.traces``), one line per cell."""
    out = style.check(size, out)
    head = (f"{traced.problem}; re-solved by {_optimizer(traced.optimizer)} in "
            f"{traced.dtype} (UFM, m = {traced.m}) from each cell's random start")
    labels = [f"cell {c['index']}: "
              + ", ".join(f"{AXIS_SYMBOLS.get(k, k)}={_fmt(v)}" for k, v in c["values"].items())
              + f", $\\lambda/\\lambda^*$={c['ratio']:.3g}" for c in traced.cells]
    return draw.traces(np.arange(traced.steps + 1), traced.gap,
                       traced.nc1 if traced.m > 1 else None, traced.spread, labels,
                       gap_floor=traced.gap_floor, title=head if title is None else title,
                       dtype=traced.dtype, size=size, out=out)


def thresholds(g, *, title=None, size=DEFAULT_SIZE, out=None):
    """A threshold grid (``threshold_study.panels``): along one axis each group's
    thresholds as curves, one per value of a second axis, the theory's beside each, and
    with one curve the phase regions (``draw_thresholds.curves``); over two longer axes
    per threshold a heatmap with the theory's contours, beside its relative error
    (``draw_thresholds.heatmaps``)."""
    out = style.check(size, out)
    p = threshold_study.panels(g)
    th, prob = g.spec.thresholds, g.spec.problem
    along = th["along"]
    fixed = ("lam", "c") if along in ("n_B", "ratio") else ()
    moving = prob.get("profile") == "two_cluster" and along in ("n_B", "ratio")
    counts = (f"two clusters {_key(prob, g.axes, 'K_A')} $\\times$ $n_A$ + "
              f"{_key(prob, g.axes, 'K_B')} $\\times$ $n_B$" if moving else _counts_text(g))
    parts = [counts] + [f"{AXIS_SYMBOLS[k]} = {prob[k]:g}" + ("/N" * (k == "c"))
                        for k in fixed if k in prob]
    parts.append("no bias" if not prob.get("bias", True) else
                 f"$\\lambda_b$ = {prob.get('lam_b', 0.0):g}" if "lam_b" not in g.axes else "")
    parts += [LOSS_TITLES.get(prob.get("loss", "ce"), prob.get("loss", "ce")),
              f"certified thresholds along {AXIS_SYMBOLS.get(along, along)}, rtol "
              f"{th['rtol']:g}; {g.status.size} cells"]
    parts += [f"{AXIS_SYMBOLS.get(k, k)} = {v:g}" for k, v in p["sliced"].items()]
    head = "; ".join(x for x in parts if x) if title is None else title
    what = f"where it begins: {AXIS_SYMBOLS.get(along, along)}"
    log = {k: k in ("lam", "c") or draw.is_log_axis(v) for k, v in g.axes.items()}
    if p["mode"] == "heatmap":
        return draw_thresholds.heatmaps(
            p["xv"], p["lv"], p["entries"], xlabel=AXIS_LABELS.get(p["x"], p["x"]),
            ylabel=AXIS_LABELS.get(p["lines"], p["lines"]), clabel=what, log_x=log[p["x"]],
            log_y=log[p["lines"]], title=head, size=size, out=out)
    return draw_thresholds.curves(
        p["xv"], p["lv"], p["entries"], xlabel=AXIS_LABELS.get(p["x"], p["x"]), ylabel=what,
        line_label=lambda i: f"{AXIS_SYMBOLS.get(p['lines'], p['lines'])} = {p['lv'][i]:.4g}",
        log_x=log[p["x"]], title=head, size=size, out=out)
