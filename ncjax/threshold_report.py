"""Text of a threshold grid (``ncjax.threshold_study``): the lines ``ncjax show`` adds to a
run's (``show``), the markdown report of measured against predicted thresholds with their
relative errors (``render``, ``write``: ``ncjax report``), and its one-line ``headline``
(also what ``ncjax plot`` prints). Each function returns a string (``write``: the path).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ncjax import report, threshold_study
from ncjax.validate import as_out_path, replacing

__all__ = ["headline", "render", "search", "show", "write"]

MAX_ROWS = 40  # cells listed per threshold


def _f(v, fmt=".6g") -> str:
    return "—" if v is None or not np.isfinite(v) else format(v, fmt)


def _cell(d: dict) -> str:
    """A cell's axis values, "k=v" with 4 significant digits."""
    return ", ".join(f"{k}={v:.4g}" for k, v in d.items())


def search(th: dict) -> str:
    """A run's [thresholds] table in words."""
    where = (f"bracket [{th['bracket'][0]:g}, {th['bracket'][1]:g}]" if "bracket" in th
             else "from lam_min" if "lam_min" in th else "up to the onset of Z = 0")
    hold = f", hold {th['hold']}" if th["along"] == "n_B" else ""
    return (f"{', '.join(th['which'])} along {th['along']} ({where}{hold}, rtol "
            f"{th['rtol']:g})")


def show(s: dict, where) -> str:
    """``report.show``'s lines of a threshold grid's overview (``SweepGrid.overview``) and,
    per threshold and group, the cells where it was found, those with the theory's beside
    it, and their largest relative error."""
    lines = [report.show(s, where)]
    if "search" in s:
        lines.append(f"  thresholds: {search(s['search'])}")
    for kind, e in s.get("thresholds", {}).items():
        for g, (found, compared, err) in enumerate(zip(e["found"], e["compared"],
                                                       e["max_error"])):
            name = kind if kind == "zero" else f"{kind} of group {g}"
            lines.append(f"  {name}: found in {found} cells"
                         + (f"; against the theory in {compared}, max |measured/theory - 1| "
                            f"{err:.2e}" if compared else ""))
    return "\n".join(lines)


def headline(st: dict) -> str:
    """One line: per threshold with a theory, the cells compared and the largest relative
    error (``threshold_study.study``)."""
    parts = [f"{e['name']}: found in {e['found']} of {e['done']} cells"
             + (f", within {e['max_error']:.2e} of the theory in {e['compared']}"
                if e["compared"] else "") for e in st["entries"]]
    return f"thresholds along {st['search']['along']}: " + "; ".join(parts)


def render(g, title: str = "thresholds") -> str:
    """The markdown report of a loaded threshold grid: the search, per threshold its
    statistics and, per cell (the first ``MAX_ROWS``), measured, predicted, relative error,
    the deciding bracket and the status."""
    st = threshold_study.study(g)
    L = [f"# ncjax report: {title}", "",
         f"Grid {' x '.join(map(str, g.shape))} = {g.status.size} cells; axes: "
         + ", ".join(f"{k} ({v.size} values, {v.min():g} .. {v.max():g})"
                     for k, v in g.axes.items()) + ".", "",
         f"Thresholds (`ncjax.thresholds`): {search(st['search'])}. Status: "
         + ", ".join(f"{k} {v}" for k, v in st["status"].items())
         + " (converged: every asked threshold decided by certified solves).", "",
         "Theory: along lam the group's own threshold mu_g (cross-entropy: sqrt(n_g)/N), "
         "along c mu_g N, Z = 0 from sqrt(n_max)/N (a shared largest count, a bias, a loss "
         "CE up to the bias); along n_B and the ratio the two-cluster minority's n_B* "
         "(`theory.n_B_star_at_ratio`, `theory.n_B_star`, c^2 at a fixed c).", "",
         "| threshold | cells found | with theory | compared | max abs rel. error | median |",
         "|---|---|---|---|---|---|"]
    for e in st["entries"]:
        L.append(f"| {e['name']} | {e['found']} of {e['done']} | {e['theory']} | "
                 f"{e['compared']} | {_f(e['max_error'], '.3e')} | "
                 f"{_f(e['median_error'], '.3e')} |")
    for e, s in zip(threshold_study.entries(g), st["entries"]):
        L += ["", f"## {e['name']}", ""]
        if s["worst"] is not None:
            w = s["worst"]
            L += [f"Largest relative error at {_cell(w['where'])}: measured "
                  f"{_f(w['measured'])}, theory {_f(w['theory'])}.", ""]
        L += ["| cell | measured | theory | rel. error | bracket | status |",
              "|---|---|---|---|---|---|"]
        for n, i in enumerate(np.ndindex(*g.shape)):
            if n == MAX_ROWS:
                L.append(f"\n({g.status.size - MAX_ROWS} more cells not listed.)")
                break
            lo, hi = e["bracket"][i]
            cell = {k: v[j].item() for (k, v), j in zip(g.axes.items(), i)}
            L.append(f"| {_cell(cell)} | {_f(e['measured'][i])} | "
                     f"{_f(e['theory'][i])} | {_f(e['error'][i], '+.3e')} | "
                     f"[{_f(lo)}, {_f(hi)}] | {g.status[i]} |")
    L += ["", "**Headline:** " + headline(st), ""]
    return "\n".join(L)


def write(g, path, title: str | None = None) -> Path:
    """Write ``render(g)`` to ``path`` (checked first), atomically; returns the path."""
    path = as_out_path(path)
    text = render(g, title or path.parent.name)
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
