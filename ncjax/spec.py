"""Sweep specs: a TOML file → a checked ``Spec`` → the grid of configurations.

A spec has four tables (every key optional unless said)::

    [problem]   profile = "two_cluster" | "balanced" | "long_tail" | "steps" | "explicit"
                two_cluster: K_A, K_B, and two of n_A, n_B, ratio (= n_A/n_B ≥ 1)
                balanced: K, n          long_tail: K, n (= n_max), ratio (= n_max/n_min)
                steps: groups = [[K_1, n_1], …]      explicit: counts = [n_1, …]
                regularisation, one way: lam_W and lam_H | lam (= sqrt(λ_W λ_H)) | c
                (λ = c/N); with lam or c, λ_H = λ²/λ_W and lam_W defaults to λ. lam_b
                (default 0). convention = "half" | "paper" applies to lam_W, lam_H, lam_b;
                lam and c are always the convex form's λ (the authors' l).
                d (default K), m (default 1), loss (a name of ``names.LOSS_PARAMETERS``,
                default "ce") and its parameters (alpha, weights = [ω_1, …], gamma,
                tau; alpha, gamma and tau may be axes; weight_B, two_cluster's weights
                1 and weight_B per class, an axis too), bias = true | false (default
                true: the model W h + b; false: W h without a bias)
    [axes]      NAME = [v, …] | {lin = [lo, hi, num]} | {log = [lo, hi, num]}, NAME in AXES;
                an axis overrides the [problem] key of the same name; the grid is the
                Cartesian product in file order (the last axis varies fastest)
    [solver]    method = "ufm" | "convex" (``ncjax.solve``), optimizer, gtol, ftol,
                max_steps, dtype, learning_rate, memory_size, gap_tol ("converged" then
                also means certified: gap ≤ gap_tol·max(1, |F|)), pool (either method)
    [run]       chunk_size (integer ≥ 1)
    [thresholds]  a threshold grid (``ncjax.thresholds``, one search per cell): along (one
                of ``names.THRESHOLD_AXES``, required), bracket = [lo, hi] (0 < lo < hi, in
                the axis's units; required along n_B and the ratio), rtol (in [1e-12, 1),
                default 1e-6), hold ("counts" | "ratios", the latter only along n_B),
                which (a list of ``names.THRESHOLDS``, default all), lam_min (along lam or c
                without a bracket), max_steps. Along lam or c the cells have no λ (no lam,
                c, lam_W, lam_H); along n_B or the ratio each cell's λ (or its c) is the
                search's fixed λ (or c) and no axis is the searched one. A [solver] table,
                a seed axis, d and m are refused: every solve is the search's own certified
                float64 convex solve.

Everything is checked before anything runs; an error names the file, the key and what
was expected (``SpecError``): each value's type and range (integers below 2**31, seeds in
[0, 2**32), every derived λ_W, λ_H, λ_W·λ_H and λ_H/λ_W within float64's range, at most
``MAX_CELLS`` cells and ``validate.MAX_CLASSES`` classes), the loss's name and
parameters' names. What only the engine can judge (the loss's values, the solver's
settings) ``ncjax.solvable.check`` refuses, before a sweep writes anything; this module
needs no JAX, so that a run's spec is read (``ncjax show``) without it. The
grid (``expand``, ``Grid``) is described by its axes in ``ncjax.grid``, never expanded
cell by cell.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ncjax.grid import PROFILE_KEYS, Grid, SpecError, expand, spec_error  # noqa: F401
from ncjax.convention import CONVENTIONS
from ncjax.names import (LOSS_PARAMETERS, THRESHOLD_AXES, THRESHOLD_HOLDS, THRESHOLD_RTOL,
                         THRESHOLDS)
from ncjax.validate import SEED_RANGE, InputError  # noqa: F401 - re-exported

# the loss's parameters: [problem] keys, and the scalar ones axes too (one value a class
# does not make an axis)
# weight_B (profile two_cluster, loss weighted_ce): each minority class weighted weight_B,
# each majority class 1 (the remedy's strength ω_B/ω_A as one number, so an axis)
LOSS_KEYS = {p for names in LOSS_PARAMETERS.values() for p in names} | {"weight_B"}
LOSS_AXES = ("alpha", "gamma", "tau", "weight_B")
AXES = ("ratio", "n_A", "n_B", "n", "K_A", "K_B", "K", "lam", "lam_W", "lam_H", "lam_b", "c",
        "seed") + LOSS_AXES
INT_KEYS = {"K_A", "K_B", "K", "seed", "d", "m", "max_steps", "memory_size", "chunk_size",
            "pool"}
# The largest grid a spec may describe: planning a sweep holds a few bytes per cell (its
# flat indices in K blocks, int64, and the done flags), ~0.5 GB at this limit.
MAX_CELLS = 5 * 10**7
# Integer settings index arrays and count steps in int32; seeds are the PRNG key's uint32.
INT_RANGE = {"seed": (0, SEED_RANGE, "seeds in [0, 2**32) (the PRNG key's uint32)")}
INT_DEFAULT = (-(2**31), 2**31, "an integer of magnitude below 2**31")
REG_KEYS = {"lam_W", "lam_H", "lam", "c", "lam_b"}
TABLES = {
    "problem": {"profile", "d", "m", "loss", "bias", "convention", "groups", "counts"} | REG_KEYS
               | LOSS_KEYS
               | set().union(*PROFILE_KEYS.values()),
    "axes": set(AXES),
    "solver": {"method", "optimizer", "gtol", "ftol", "max_steps", "dtype", "learning_rate",
               "memory_size", "gap_tol", "pool"},
    "run": {"chunk_size"},
    "thresholds": {"along", "bracket", "rtol", "hold", "which", "lam_min", "max_steps"},
}
LAM_KEYS = ("lam", "c", "lam_W", "lam_H")  # what fixes λ: none along lam or c


class Spec(NamedTuple):
    """A checked spec: its tables as plain dicts, the axes expanded to value arrays."""

    path: str
    problem: dict
    axes: dict  # name -> 1-d numpy array, in file order
    solver: dict
    run: dict
    text: str  # the file as read, stored with a sweep so a resume can compare
    thresholds: dict | None = None  # the [thresholds] table, defaults filled; None: a solve


_err = spec_error


def _number(path, key, v, *, integer=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _err(path, key, "an integer" if integer else "a number", v)
    x = math.inf if isinstance(v, int) and abs(v) >= 2**1023 else float(v)  # TOML's big ints
    if not math.isfinite(x):
        raise _err(path, key, "a finite number", v)
    if integer and not x.is_integer():
        raise _err(path, key, "an integer", v)
    return int(v) if integer else x


def _int_range(path, key, name, values):
    """Refuse integer ``values`` of setting ``name`` outside its range (``INT_RANGE``)."""
    lo, hi, want = INT_RANGE.get(name, INT_DEFAULT)
    if isinstance(values, np.ndarray):  # a range's values, as many as MAX_CELLS
        bad = values[~((values >= lo) & (values < hi))].tolist()
    else:  # TOML's integers, of any size
        bad = [v for v in values if not lo <= v < hi]
    if bad:
        raise _err(path, key, want, int(bad[0]))


def _axis_values(path, name, raw) -> np.ndarray:
    key = f"[axes].{name}"
    integer = name in INT_KEYS
    if isinstance(raw, list):
        if not raw:
            raise _err(path, key, "a non-empty list of values", raw)
        vals = [_number(path, key, v, integer=integer) for v in raw]
    elif isinstance(raw, dict):
        if len(raw) != 1 or next(iter(raw)) not in ("lin", "log"):
            raise _err(path, key, "{lin = [lo, hi, num]} or {log = [lo, hi, num]}", raw)
        kind, rng = next(iter(raw.items()))
        if not isinstance(rng, list) or len(rng) != 3:
            raise _err(path, f"{key}.{kind}", "[lo, hi, num]", rng)
        lo = _number(path, f"{key}.{kind}", rng[0])
        hi = _number(path, f"{key}.{kind}", rng[1])
        num = _number(path, f"{key}.{kind}", rng[2], integer=True)
        if num < 1:
            raise _err(path, f"{key}.{kind}", "num >= 1 (an empty axis has no grid)", num)
        if num > MAX_CELLS:
            raise _err(path, f"{key}.{kind}", f"num <= {MAX_CELLS} (the most cells of a "
                       "grid)", num)
        if kind == "log" and (lo <= 0 or hi <= 0):
            raise _err(path, f"{key}.log", "lo, hi > 0 on a log range", rng)
        vals = (np.geomspace if kind == "log" else np.linspace)(lo, hi, num)
        if integer:
            if not np.all(np.isclose(vals, np.round(vals))):
                raise _err(path, key, "a range of integers", raw)
            vals = np.round(vals)
    else:
        raise _err(path, key, "a list or a {lin|log = [lo, hi, num]} table", raw)
    if integer:
        _int_range(path, key, name, vals)
    vals = np.asarray(vals, dtype=np.int64 if integer else np.float64)
    # a range is monotone: distinct when no two neighbours are equal, without a sort
    if np.any(np.diff(vals) == 0) if isinstance(raw, dict) else np.unique(vals).size < vals.size:
        raise _err(path, key, "distinct values", vals.tolist())
    return vals


def _check_problem(path, problem, axes, lam_free: bool = False):
    prof = problem.get("profile")
    if prof not in PROFILE_KEYS:
        raise _err(path, "[problem].profile", f"one of {sorted(PROFILE_KEYS)}", prof)
    own = PROFILE_KEYS[prof]
    for name in set(problem) | set(axes):
        if name in set().union(*PROFILE_KEYS.values()) - own:
            where = "[axes]" if name in axes else "[problem]"
            raise _err(path, f"{where}.{name}", f"no {name} for profile {prof!r} "
                       f"(its keys: {sorted(own)})")
    have = set(problem) | set(axes)
    if prof == "two_cluster":
        missing = [k for k in ("K_A", "K_B") if k not in have]
        sizes = have & {"n_A", "n_B", "ratio"}
        if missing or len(sizes) != 2:
            raise _err(path, "[problem]", "K_A, K_B and exactly two of n_A, n_B, ratio for "
                       f"profile 'two_cluster' (given: {sorted(have & own)})")
    elif prof in ("balanced", "long_tail"):
        missing = sorted(own - have)
        if missing:
            raise _err(path, f"[problem].{missing[0]}", f"a value for profile {prof!r}")
    key = {"steps": "groups", "explicit": "counts"}.get(prof)
    if key and key not in problem:
        raise _err(path, f"[problem].{key}", f"a value for profile {prof!r}")
    ways = [w for w in (("lam_W", "lam_H"), ("lam",), ("c",)) if set(w) <= have]
    if "lam" in have and "c" in have:
        raise _err(path, "[problem]", "one of lam or c (both set λ)")
    if not ways and not lam_free:
        raise _err(path, "[problem]", "a regularisation: lam_W and lam_H, or lam, or c")
    if ("lam" in have or "c" in have) and "lam_H" in have:
        raise _err(path, "lam_H", "no lam_H when lam or c sets λ (λ_H = λ²/λ_W)")
    if problem.get("loss", "ce") not in LOSS_PARAMETERS:
        raise _err(path, "[problem].loss", f"one of {sorted(LOSS_PARAMETERS)}", problem["loss"])
    name = problem.get("loss", "ce")
    if "weight_B" in have and (name != "weighted_ce" or prof != "two_cluster"
                               or "weights" in have):
        where = "[axes]" if "weight_B" in axes else "[problem]"
        raise _err(path, f"{where}.weight_B", "weight_B only with loss 'weighted_ce' and "
                   "profile 'two_cluster', instead of weights")
    for key in sorted(LOSS_KEYS & have - {"weight_B"}):
        if key not in LOSS_PARAMETERS[name]:
            where = "[axes]" if key in axes else "[problem]"
            raise _err(path, f"{where}.{key}", f"a parameter of loss {name!r} (its "
                       f"parameters: {list(LOSS_PARAMETERS[name]) or 'none'})")
    if "weight_B" in have:  # its classes are known per cell: its values checked here
        w = np.asarray(axes.get("weight_B", problem.get("weight_B")), float)
        if not np.all(np.isfinite(w) & (w > 0)):
            where = "[axes]" if "weight_B" in axes else "[problem]"
            raise _err(path, f"{where}.weight_B", "weights > 0", w.tolist())
    if problem.get("convention", "half") not in CONVENTIONS:
        raise _err(path, "[problem].convention", f"one of {CONVENTIONS}",
                   problem["convention"])


def _check_thresholds(path, raw: dict, problem, axes, tables) -> dict:
    """The [thresholds] table ``raw`` checked against the spec's other tables, with its
    defaults filled (module docstring)."""
    key = lambda k: f"[thresholds].{k}"
    th = {"rtol": 1e-6, "hold": "counts", "which": list(THRESHOLDS), **raw}
    along = th.get("along")
    if along not in THRESHOLD_AXES:
        raise _err(path, key("along"), f"one of {list(THRESHOLD_AXES)}", along)
    if th["hold"] not in THRESHOLD_HOLDS:
        raise _err(path, key("hold"), f"one of {list(THRESHOLD_HOLDS)}", th["hold"])
    if th["hold"] == "ratios" and along != "n_B":
        raise _err(path, key("hold"), f"'counts' along {along!r} ('ratios' only along "
                   "n_B)", th["hold"])
    which = th["which"]
    if (not isinstance(which, list) or not which or len(set(which)) < len(which)
            or not all(isinstance(w, str) and w in THRESHOLDS for w in which)):
        raise _err(path, key("which"), f"a list of distinct names among {list(THRESHOLDS)}",
                   which)
    lo, hi = THRESHOLD_RTOL
    if not lo <= th["rtol"] < hi:
        raise _err(path, key("rtol"), f"a number in [{lo:g}, {hi:g})", th["rtol"])
    if "max_steps" in th and th["max_steps"] < 1:
        raise _err(path, key("max_steps"), "an integer >= 1", th["max_steps"])
    if "bracket" in th:
        b = th["bracket"]
        if not 0 < b[0] < b[1]:
            raise _err(path, key("bracket"), "[lo, hi] with 0 < lo < hi", b)
    elif along in ("n_B", "ratio"):
        raise _err(path, key("bracket"), f"[lo, hi], the range of {along} searched")
    if "lam_min" in th:
        if along not in ("lam", "c") or "bracket" in th:
            raise _err(path, key("lam_min"), "no lam_min but along lam or c without a "
                       "bracket (the bottom of the λ range)")
        if th["lam_min"] <= 0:
            raise _err(path, key("lam_min"), "a number > 0", th["lam_min"])
    if "solver" in tables:
        raise _err(path, "[solver]", "no [solver] table with [thresholds] (every solve is "
                   "the search's own certified float64 convex solve)")
    bad = ["seed"] if "seed" in axes else []
    if along in ("lam", "c"):
        bad += [k for k in LAM_KEYS if k in axes or k in problem]
    elif along in axes:
        bad.append(along)
    bad += [k for k in ("d", "m") if k in problem]
    if bad:
        name = bad[0]
        why = ("a search is deterministic" if name == "seed" else
               "the search solves the convex form" if name in ("d", "m") else
               f"the search moves {'λ' if along in ('lam', 'c') else along}")
        where = "[axes]" if name in axes else "[problem]"
        raise _err(path, f"{where}.{name}", f"no {name} with [thresholds].along = "
                   f"{along!r} ({why})")
    return th


def _check_types(path, table, name, v):
    key = f"[{table}].{name}"
    if table == "thresholds" and name in ("along", "hold"):
        if not isinstance(v, str):
            raise _err(path, key, "a string", v)
        return v
    if table == "thresholds" and name == "which":
        return [v] if isinstance(v, str) else v  # checked with the table
    if table == "thresholds" and name == "bracket":
        if not isinstance(v, list) or len(v) != 2:
            raise _err(path, key, "[lo, hi]", v)
        return [_number(path, key, x) for x in v]
    if name == "bias":
        if not isinstance(v, bool):
            raise _err(path, key, "true or false", v)
        return v
    if name in ("profile", "loss", "convention", "optimizer", "dtype", "method"):
        if not isinstance(v, str):
            raise _err(path, key, "a string", v)
        return v
    if name == "groups":
        if (not isinstance(v, list) or not v
                or not all(isinstance(g, list) and len(g) == 2 for g in v)):
            raise _err(path, key, "a list of [K_g, n_g] pairs", v)
        return [(_number(path, key, g[0], integer=True), _number(path, key, g[1])) for g in v]
    if name in ("counts", "weights"):
        if not isinstance(v, list) or not v:
            raise _err(path, key, f"a non-empty list of {name}", v)
        return [_number(path, key, x) for x in v]
    x = _number(path, key, v, integer=name in INT_KEYS)
    if name in INT_KEYS:
        _int_range(path, key, name, [x])
    return x


def loads(text: str, path: str = "<spec>") -> Spec:
    """Parse and check a spec given as TOML text."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: not valid TOML: {e}") from None
    for table in raw:
        if table not in TABLES:
            raise _err(path, table, f"one of the tables {sorted(TABLES)}")
        if not isinstance(raw[table], dict):
            raise _err(path, table, "a table", raw[table])
        for name in raw[table]:
            if name not in TABLES[table]:
                raise _err(path, f"[{table}].{name}", f"a key among {sorted(TABLES[table])}")
    problem = {k: _check_types(path, "problem", k, v) for k, v in raw.get("problem", {}).items()}
    solver = {k: _check_types(path, "solver", k, v) for k, v in raw.get("solver", {}).items()}
    run = {k: _check_types(path, "run", k, v) for k, v in raw.get("run", {}).items()}
    axes = {k: _axis_values(path, k, v) for k, v in raw.get("axes", {}).items()}
    th = {k: _check_types(path, "thresholds", k, v) for k, v in raw.get("thresholds", {}).items()}
    if "thresholds" in raw:
        th = _check_thresholds(path, th, problem, axes, raw)
    _check_problem(path, problem, axes,
                   lam_free="thresholds" in raw and th["along"] in ("lam", "c"))
    if "chunk_size" in run and run["chunk_size"] < 1:
        raise _err(path, "[run].chunk_size", "an integer >= 1", run["chunk_size"])
    for name in ("gtol", "ftol", "gap_tol", "learning_rate"):
        if name in solver and solver[name] <= 0 and name != "ftol":
            raise _err(path, f"[solver].{name}", "a number > 0", solver[name])
    cells = math.prod(v.size for v in axes.values())
    if cells > MAX_CELLS:
        raise _err(path, "[axes]", f"at most {MAX_CELLS} cells in the grid, got {cells}")
    return Spec(path, problem, axes, solver, run, text, th if "thresholds" in raw else None)


def _value(v) -> str:
    """``v`` (what tomllib reads: a bool, number, string, array or inline table) as TOML."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON's escapes are TOML's basic string's
    if isinstance(v, list):
        return "[" + ", ".join(map(_value, v)) + "]"
    return "{" + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + "}"


def dumps(raw: dict) -> str:
    """A spec's tables (``tomllib.loads`` of it) as TOML text."""
    return "".join(f"[{t}]\n" + "".join(f"{k} = {_value(v)}\n" for k, v in keys.items())
                   for t, keys in raw.items())


def override(text: str, sets, path: str = "<spec>") -> str:
    """The spec ``text`` with each of ``sets`` ("TABLE.KEY=VALUE", e.g. "solver.method=convex"
    or "axes.seed=[0, 1]"; VALUE a TOML value, or a bare word for a string) applied, as
    TOML text headed by a comment naming them (the spec a run then stores and resumes)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: not valid TOML: {e}") from None
    for item in sets:
        key, eq, value = item.partition("=")
        table, dot, name = key.strip().partition(".")
        if not (eq and dot and name and table in TABLES):
            raise SpecError(f"--set {item!r}: expected TABLE.KEY=VALUE with TABLE one of "
                            f"{sorted(TABLES)}")
        try:
            v = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            if not re.fullmatch(r"[A-Za-z_][\w.-]*", value.strip()):
                raise SpecError(f"--set {item!r}: {value.strip()!r} is not a TOML value") from None
            v = value.strip()
        raw.setdefault(table, {})[name.strip()] = v
    head = f"# {path} with " + " ".join(f"--set {s}" for s in sets) + "\n"
    return head + dumps(raw)


def load(path, sets=()) -> Spec:
    """Read and check a spec file (UTF-8 TOML), with the overrides ``sets`` (``override``)
    applied."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(f"{p}: cannot read the spec: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise SpecError(f"{p}: not UTF-8 text (byte {e.start}: "
                        f"{e.object[e.start:e.start + 1]!r}); a spec is a TOML file") from None
    return loads(override(text, sets, str(p)) if sets else text, str(p))
