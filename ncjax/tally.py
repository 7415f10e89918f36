"""The headline numbers of a set of solved cells, and how the numbers of several sets merge.

``ncjax show`` prints them for a whole run; a run's index stores them per chunk (computed
once, when the chunk is written), so that ``show`` merges a few numbers a chunk instead of
reading every chunk, and a loaded grid gives the same numbers from its fields. One rule for
both: ``of_cells`` on the cells' flat fields, ``merge`` over sets.

A tally is a JSON-able dict:

    version     ``VERSION``, the rule it was made by
    cells       the number of cells
    status      {status name: cells}
    collapse    {"measured": cells with metrics.minority_collapsed = 1, "solved": cells
                 where it is known, "derived": of those, cells whose loss has the
                 theory's threshold (theory.derived; CE, or CE up to what the bias
                 absorbs), "predicted": of those, cells with theory.minority_collapse = 1,
                 "differ": where the measurement and the prediction differ}
    objective   [min, max] of the finite objectives, or None
    max_grad    the largest finite ‖∇F‖, or None (the convex route records none)
    gap         [max abs, max relative to max(1, |F|)] of the certified gaps, or None
    phases      {phase name (``names.PHASES``): cells with that metrics.phase}; absent for
                cells stored without it (an earlier ncjax), and then in a merge

those four of a solve's cells; of a threshold grid's (``ncjax.threshold_sweep``) instead

    thresholds  {kind: {"found": cells with a finite threshold, "compared": of those, cells
                 with the theory's beside it, "max_error": the largest |measured/theory −
                 1| there, or None}, each a list over the groups (one entry for "zero")},
                 for the kinds the run finds (``names.THRESHOLDS``)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping

import numpy as np

from ncjax.names import PHASES, THRESHOLDS

__all__ = ["FIELDS", "of_cells", "merge", "overview", "read", "valid"]

# a tally of another version (an index entry of an earlier ncjax) is taken anew
VERSION = 2
# the fields a tally reads (flat names, as chunks and loaded grids hold them)
FIELDS = ("status", "objective", "gap", "grad_norm", "metrics.minority_collapsed",
          "theory.minority_collapse", "theory.derived", "metrics.phase")
# a threshold grid's: each kind's measured thresholds and the theory's beside them
THRESHOLD_FIELDS = tuple(f"{t}.{k}" for k in THRESHOLDS for t in ("thresholds", "theory"))


def read(names) -> list[str]:
    """The fields of ``names`` (a chunk's or a loaded grid's) that a tally reads."""
    return [k for k in names if k in FIELDS or k in THRESHOLD_FIELDS]


def _range(v) -> list | None:
    v = np.asarray(v, float)
    v = v[np.isfinite(v)]
    return [float(v.min()), float(v.max())] if v.size else None


def of_cells(fields: Mapping, status_names) -> dict:
    """The tally of n cells: ``fields`` maps (some of) ``FIELDS`` but status to (n,)
    arrays, ``status_names`` (n,) their status names."""
    names, counts = np.unique(np.asarray(status_names, str), return_counts=True)
    out = {"version": VERSION, "cells": int(np.asarray(status_names).size),
           "status": {str(n): int(c) for n, c in zip(names, counts)}}
    if any(k in fields for k in THRESHOLD_FIELDS):
        out["thresholds"] = {k: _thresholds(fields, k) for k in THRESHOLDS
                             if f"thresholds.{k}" in fields}
        return out
    n = out["cells"]
    m = np.asarray(fields.get("metrics.minority_collapsed", np.full(n, np.nan)), float)
    t = np.asarray(fields.get("theory.minority_collapse", np.full(n, np.nan)), float)
    ok = np.isfinite(m)
    have = ok & (np.asarray(fields.get("theory.derived", np.ones(n)), float) == 1)
    out["collapse"] = {"measured": int(np.sum(m[ok] == 1)), "solved": int(ok.sum()),
                       "derived": int(have.sum()), "predicted": int(np.sum(t[have] == 1)),
                       "differ": int(np.sum(m[have] != t[have]))}
    out["objective"] = _range(fields.get("objective", ()))
    grad = _range(fields.get("grad_norm", ()))
    out["max_grad"] = None if grad is None else grad[1]
    if "gap" in fields and "objective" in fields:
        g = np.asarray(fields["gap"], float)
        rel = g / np.maximum(1.0, np.abs(np.asarray(fields["objective"], float)))
        ga, gr = _range(g), _range(rel)
        out["gap"] = None if ga is None else [ga[1], gr[1]]
    else:
        out["gap"] = None
    if "metrics.phase" in fields:
        code = np.asarray(fields["metrics.phase"])
        out["phases"] = {p: int(np.sum(code == i)) for i, p in enumerate(PHASES)}
    return out


def _thresholds(fields: Mapping, kind: str) -> dict:
    """One kind's entry of a threshold grid's tally (module docstring)."""
    m = np.asarray(fields[f"thresholds.{kind}"], float)
    t = np.asarray(fields.get(f"theory.{kind}", np.full(m.shape, np.nan)), float)
    G = int(np.prod(m.shape[1:]))  # the groups; one for "zero"
    m, t = m.reshape(m.shape[0], G), t.reshape(t.shape[0], G)
    both = np.isfinite(m) & np.isfinite(t)
    err = np.where(both, np.abs(m / np.where(both, t, 1.0) - 1), -np.inf).max(0, initial=-np.inf)
    return {"found": np.isfinite(m).sum(0).tolist(), "compared": both.sum(0).tolist(),
            "max_error": [float(e) if np.isfinite(e) else None for e in err]}


def _max(a, b):
    return b if a is None else a if b is None else max(a, b)


def _merge_thresholds(a: dict, b: dict) -> dict:
    """Two threshold tallies' entries merged, group by group (a run's K blocks may have
    different numbers of groups)."""
    out = {}
    for kind in [k for k in THRESHOLDS if k in a or k in b]:
        x, y = a.get(kind, {}), b.get(kind, {})
        pairs = lambda key, fill: itertools.zip_longest(x.get(key, []), y.get(key, []),
                                                        fillvalue=fill)
        out[kind] = {"found": [p + q for p, q in pairs("found", 0)],
                     "compared": [p + q for p, q in pairs("compared", 0)],
                     "max_error": [_max(p, q) for p, q in pairs("max_error", None)]}
    return out


def merge(tallies: Iterable[dict]) -> dict:
    """One tally of the union of the sets (disjoint) that ``tallies`` describe: of a
    threshold grid if any of them is (``of_cells``)."""
    tallies = list(tallies)
    if any("thresholds" in t for t in tallies):
        out = {"version": VERSION, "cells": 0, "status": {}, "thresholds": {}}
        for t in tallies:
            out["cells"] += t["cells"]
            for k, v in t["status"].items():
                out["status"][k] = out["status"].get(k, 0) + v
            out["thresholds"] = _merge_thresholds(out["thresholds"], t.get("thresholds", {}))
        out["status"] = dict(sorted(out["status"].items()))
        return out
    out = {"version": VERSION, "cells": 0, "status": {}, "collapse": {"measured": 0, "solved": 0, "derived": 0,
                                                  "predicted": 0, "differ": 0},
           "objective": None, "max_grad": None, "gap": None}
    for t in tallies:
        out["cells"] += t["cells"]
        for k, v in t["status"].items():
            out["status"][k] = out["status"].get(k, 0) + v
        for k in out["collapse"]:
            out["collapse"][k] += t["collapse"][k]
        if t["objective"] is not None:
            lo, hi = t["objective"]
            o = out["objective"]
            out["objective"] = [lo, hi] if o is None else [min(o[0], lo), max(o[1], hi)]
        out["max_grad"] = _max(out["max_grad"], t["max_grad"])
        if t["gap"] is not None:
            g = out["gap"]
            out["gap"] = list(t["gap"]) if g is None else [max(g[0], t["gap"][0]),
                                                           max(g[1], t["gap"][1])]
    if tallies and all("phases" in t for t in tallies):
        out["phases"] = {p: sum(t["phases"].get(p, 0) for t in tallies) for p in PHASES}
    out["status"] = dict(sorted(out["status"].items()))
    return out


def overview(shape, axes, t: dict) -> dict:
    """What ``ncjax show`` prints of a grid of ``shape`` over ``axes`` (name → values)
    whose solved cells have the tally ``t``: shape, size, axes (name → (size, min, max)),
    status (name → cells, "missing" for those not solved); once a cell is solved also
    collapse, objective (min, max), max_grad and, where gaps were certified, gap; of a
    threshold grid instead its tally's thresholds."""
    size = int(np.prod(shape))
    status = dict(t["status"])
    if size > t["cells"]:
        status["missing"] = size - t["cells"]
    out = {"shape": tuple(shape), "size": size,
           "axes": {k: (np.size(v), np.min(v), np.max(v)) for k, v in axes.items()},
           "status": dict(sorted(status.items()))}
    if "thresholds" in t:
        out["thresholds"] = t["thresholds"]
    elif t["cells"]:
        out.update(collapse=t["collapse"], objective=tuple(t["objective"] or (np.nan,) * 2),
                   max_grad=t["max_grad"])
        if t["gap"] is not None:
            out["gap"] = tuple(t["gap"])
        if "phases" in t:
            out["phases"] = t["phases"]
    return out


def valid(t) -> bool:
    """Whether ``t`` has a tally's shape (an index entry read from disk)."""
    try:
        head = (t["version"] == VERSION and type(t["cells"]) is int
                and all(type(v) is int for v in t["status"].values()))
        if head and "thresholds" in t:
            return set(t["thresholds"]) <= set(THRESHOLDS) and all(
                all(type(v) is int for v in e["found"] + e["compared"])
                and len(e["found"]) == len(e["compared"]) == len(e["max_error"])
                and all(v is None or isinstance(v, float) and math.isfinite(v)
                        for v in e["max_error"]) for e in t["thresholds"].values())
        return (head
                and all(type(t["collapse"][k]) is int for k in
                        ("measured", "solved", "derived", "predicted", "differ"))
                and all(t[k] is None or (len(t[k]) == 2 and all(
                    isinstance(x, float) and not math.isnan(x) for x in t[k]))
                        for k in ("objective", "gap"))
                and (t["max_grad"] is None or isinstance(t["max_grad"], float))
                and ("phases" not in t or all(type(v) is int for v in t["phases"].values())))
    except (KeyError, TypeError, AttributeError):
        return False
