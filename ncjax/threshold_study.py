"""The numbers of a loaded threshold grid (a run of a spec with [thresholds],
``ncjax.threshold_sweep``): each threshold measured against the theory's beside it, and how
a figure lays the grid out. Numpy only, read from the stored fields.

An entry is one threshold of one group: (kind, g) for kind in the run's ``which`` and g a
group (0: the largest count; the collapse of a group of one class has none), or ("zero",
None). Per entry, over the grid's shape: the measured threshold (NaN where the phase does
not begin in the bracket, a solve was not certified, or the cell is missing), the theory's
(NaN where it has none), and the relative error measured/theory − 1 where both are finite.

The layout (``layout``): a grid over one axis is a curve along it; over two, curves along
the longer axis, one per value of the other, when the other has at most ``MAX_LINES``
values, else a heatmap (rows the first axis, columns the second); over more, the slice at
the first value of every axis but the two longest.
"""

from __future__ import annotations

import numpy as np

from ncjax.names import THRESHOLDS
from ncjax.validate import InputError

__all__ = ["MAX_LINES", "applies", "entries", "layout", "panels", "study"]

MAX_LINES = 6  # curves a panel draws at most, one per value of the second axis


def applies(g) -> bool:
    """Whether the loaded grid ``g`` is a threshold grid."""
    return g.spec.thresholds is not None


def _group_names(g) -> list[str]:
    """Each group's name: "majority" and "minority" of two groups, else "group g", with its
    number of classes (at the grid's first solved cell)."""
    label = np.asarray(g["thresholds.group"])
    label = label.reshape(-1, label.shape[-1])[int(np.argmax(g.done.ravel()))]
    G = int(np.nanmax(label)) + 1 if np.isfinite(label).any() else 0
    names = []
    for i in range(G):
        k = int(np.sum(label == i))
        word = ("majority", "minority")[i] if G == 2 else f"group {i}"
        names.append(f"{word} ({k} class{'es' if k > 1 else ''})")
    return names


def entries(g) -> list[dict]:
    """The run's thresholds (module docstring): per entry kind, group (None for zero), name,
    measured, theory and error, arrays of the grid's shape, and bracket (shape + (2,))."""
    out = []
    names = _group_names(g)
    for kind in (k for k in THRESHOLDS if f"thresholds.{k}" in g.fields):
        m = np.asarray(g[f"thresholds.{kind}"], float)
        t = np.asarray(g[f"theory.{kind}"], float) if f"theory.{kind}" in g.fields else None
        b = np.asarray(g[f"thresholds.{kind}_bracket"], float)
        for grp in ([None] if kind == "zero" else range(m.shape[-1])):
            at = (...,) if grp is None else (..., grp)
            mg = m[at]
            if grp is not None and np.isnan(b[..., grp, :]).all():
                continue  # no search ran: the collapse of a group of one class
            tg = np.full(mg.shape, np.nan) if t is None else t[at]
            both = np.isfinite(mg) & np.isfinite(tg)
            err = np.where(both, mg / np.where(both, tg, 1.0) - 1, np.nan)
            out.append({"kind": kind, "group": grp,
                        "name": kind if grp is None else f"{kind} of the {names[grp]}",
                        "measured": mg, "theory": tg, "error": err,
                        "bracket": b if grp is None else b[..., grp, :]})
    return out


def _stats(g, e: dict) -> dict:
    """An entry's counts and errors: cells, found, with theory, compared, max and median
    |error|, and the cell of the largest (axis values, measured, theory)."""
    m, t, err = e["measured"], e["theory"], np.abs(e["error"])
    out = {"name": e["name"], "kind": e["kind"], "group": e["group"], "cells": int(m.size),
           "done": int(g.done.sum()), "found": int(np.isfinite(m).sum()),
           "theory": int(np.isfinite(t).sum()), "compared": int(np.isfinite(err).sum()),
           "max_error": np.nan, "median_error": np.nan, "worst": None}
    if out["compared"]:
        i = int(np.nanargmax(err.ravel()))
        where = np.unravel_index(i, g.shape)
        out.update(max_error=float(np.nanmax(err)), median_error=float(np.nanmedian(err)),
                   worst={"where": {k: v[j].item() for (k, v), j in zip(g.axes.items(), where)},
                          "measured": float(m.ravel()[i]), "theory": float(t.ravel()[i])})
    return out


def study(g) -> dict:
    """The run's search (its [thresholds] table), its entries' statistics (``_stats``),
    and its status counts."""
    names, counts = np.unique(np.asarray(g.status, str), return_counts=True)
    return {"search": dict(g.spec.thresholds), "axes": list(g.axes),
            "entries": [_stats(g, e) for e in entries(g)],
            "status": {str(n): int(c) for n, c in zip(names, counts)}}


def layout(g) -> dict:
    """How a figure shows the grid (module docstring): {"mode": "curves" | "heatmap", "x":
    the axis along the curves (or the heatmap's columns), "lines": the other axis or None
    (the heatmap's rows), "sliced": {axis: value} of the axes held at their first value,
    "index": the index tuple of the slice}."""
    names = list(g.axes)
    if not names:
        raise InputError("a threshold grid without axes (one cell) has nothing to draw along")
    by_size = sorted(names, key=lambda k: -g.axes[k].size)
    kept = [k for k in names if k in by_size[:2]]
    sliced = {k: g.axes[k][0].item() for k in names if k not in kept}
    index = tuple(slice(None) if k in kept else 0 for k in names)
    if len(kept) == 1:
        return {"mode": "curves", "x": kept[0], "lines": None, "sliced": sliced,
                "index": index}
    long, short = by_size[0], by_size[1]
    if g.axes[short].size <= MAX_LINES:
        return {"mode": "curves", "x": long, "lines": short, "sliced": sliced, "index": index}
    return {"mode": "heatmap", "x": kept[1], "lines": kept[0], "sliced": sliced,
            "index": index}


def panels(g) -> dict:
    """What a figure of the grid draws (``layout``): its layout's keys, "xv" the x axis's
    values, "lv" the lines' (None for one curve), and "entries": per entry (``entries``)
    kind, group, name and measured, theory and error as (lines, x) arrays (rows the
    heatmap's), with "above": whether the phase holds above the curve (at larger values of
    the searched axis; from the deciding brackets)."""
    lay = layout(g)
    names = [k for k in g.axes if k not in lay["sliced"]]  # the slice's axes, in order
    order = [names.index(k) for k in ([lay["lines"]] if lay["lines"] else []) + [lay["x"]]]
    arrange = lambda a: np.transpose(a[lay["index"]], order).reshape(
        -1, g.axes[lay["x"]].size)
    out = dict(lay, xv=np.asarray(g.axes[lay["x"]], float),
               lv=None if lay["lines"] is None else np.asarray(g.axes[lay["lines"]], float),
               entries=[])
    for e in entries(g):
        b = e["bracket"][lay["index"]]
        side = np.sign(b[..., 1] - b[..., 0])
        side = side[np.isfinite(side) & (side != 0)]
        out["entries"].append({"kind": e["kind"], "group": e["group"], "name": e["name"],
                               **{k: arrange(e[k]) for k in ("measured", "theory", "error")},
                               "above": bool(np.median(side) > 0) if side.size else True})
    return out
