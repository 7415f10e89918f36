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
                d (default K), m (default 1), loss (a name of ``losses.LOSSES``,
                default "ce"), bias = true | false (default true: the model W h + b;
                false: W h without a bias)
    [axes]      NAME = [v, …] | {lin = [lo, hi, num]} | {log = [lo, hi, num]}, NAME in AXES;
                an axis overrides the [problem] key of the same name; the grid is the
                Cartesian product in file order (the last axis varies fastest)
    [solver]    method = "ufm" | "convex" (``ncjax.solve``), optimizer, gtol, ftol,
                max_steps, dtype, learning_rate, memory_size, gap_tol ("converged" then
                also means certified: gap ≤ gap_tol·max(1, |F|)), pool (either method)
    [run]       chunk_size (integer ≥ 1)

Everything is checked before anything runs; an error names the file, the key and what
was expected (``SpecError``): each value's type and range (integers below 2**31, seeds in
[0, 2**32), every derived λ_W, λ_H, λ_W·λ_H and λ_H/λ_W within float64's range, at most
``MAX_CELLS`` cells and ``validate.MAX_CLASSES`` classes), and one configuration of each K
block through ``solver.prepare``, so that a solve refuses nothing a spec accepted.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import tomllib
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ncjax import losses, profiles, solver
from ncjax.problem import CONVENTIONS, to_half
from ncjax.validate import MAX_CLASSES, SEED_RANGE, InputError, NCJaxWarning

AXES = ("ratio", "n_A", "n_B", "n", "K_A", "K_B", "K", "lam", "lam_W", "lam_H", "lam_b", "c",
        "seed")
INT_KEYS = {"K_A", "K_B", "K", "seed", "d", "m", "max_steps", "memory_size", "chunk_size",
            "pool"}
PROFILE_KEYS = {
    "two_cluster": {"K_A", "K_B", "n_A", "n_B", "ratio"},
    "balanced": {"K", "n"},
    "long_tail": {"K", "n", "ratio"},
    "steps": {"groups"},
    "explicit": {"counts"},
}
# The largest grid a spec may describe: the cells are expanded into per-cell arrays.
MAX_CELLS = 10**7
# Integer settings index arrays and count steps in int32; seeds are the PRNG key's uint32.
INT_RANGE = {"seed": (0, SEED_RANGE, "seeds in [0, 2**32) (the PRNG key's uint32)")}
INT_DEFAULT = (-(2**31), 2**31, "an integer of magnitude below 2**31")
F64 = np.finfo(np.float64)
REG_KEYS = {"lam_W", "lam_H", "lam", "c", "lam_b"}
TABLES = {
    "problem": {"profile", "d", "m", "loss", "bias", "convention", "groups", "counts"} | REG_KEYS
               | set().union(*PROFILE_KEYS.values()),
    "axes": set(AXES),
    "solver": {"method", "optimizer", "gtol", "ftol", "max_steps", "dtype", "learning_rate",
               "memory_size", "gap_tol", "pool"},
    "run": {"chunk_size"},
}


class SpecError(InputError):
    """A refused sweep spec: the message names the file, the key and what was expected."""


class Spec(NamedTuple):
    """A checked spec: its tables as plain dicts, the axes expanded to value arrays."""

    path: str
    problem: dict
    axes: dict  # name -> 1-d numpy array, in file order
    solver: dict
    run: dict
    text: str  # the file as read, stored with a sweep so a resume can compare


class Grid(NamedTuple):
    """The configurations of a spec: the grid is ``shape`` = lengths of ``axes``; config i
    is the C-order flat index. ``params[name]`` is (B,) for every resolved setting
    (K, lam_W, lam_H, lam_b in the half convention, lam, seed, and the profile's keys)."""

    spec: Spec
    shape: tuple
    params: dict

    def counts(self, idx=None) -> np.ndarray:
        """Class counts of configurations ``idx`` (default all), (len(idx), K); they must
        share one K (see ``blocks``)."""
        idx = np.arange(int(np.prod(self.shape))) if idx is None else np.asarray(idx)
        problem = self.spec.problem
        rows = [_counts(problem, _resolve(problem, {k: self.params[k][i].item()
                                                    for k in self.spec.axes}))
                for i in idx]
        if len({r.size for r in rows}) > 1:
            raise InputError("these configurations have different K; take them per block")
        return np.stack(rows)

    def blocks(self) -> list[np.ndarray]:
        """Flat indices grouped by K (one compiled program each)."""
        K = self.params["K"]
        return [np.flatnonzero(K == k) for k in np.unique(K)]


def _err(spec_path, key, expected, got=None) -> SpecError:
    tail = "" if got is None else f", got {got!r}"
    return SpecError(f"{spec_path}: {key}: expected {expected}{tail}")


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
    bad = [v for v in np.ravel(values) if not lo <= v < hi]
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
    if len(np.unique(vals)) != vals.size:
        raise _err(path, key, "distinct values", vals.tolist())
    return vals


def _resolve(problem: dict, point: dict) -> dict:
    """Settings of one configuration: the problem's keys overlaid with its axis values."""
    return {**problem, **point}


def _counts(problem: dict, s: dict) -> np.ndarray:
    """Class counts of one configuration (read-only array); cached on the profile's keys,
    which a grid of 10^5–10^6 cells repeats many times."""
    prof = problem["profile"]
    return _counts_of(prof, json.dumps(sorted((k, s[k]) for k in PROFILE_KEYS[prof] if k in s)))


@functools.lru_cache(maxsize=1 << 16)
def _counts_of(prof: str, items: str) -> np.ndarray:
    n = _counts_uncached(prof, dict(json.loads(items)))
    n.setflags(write=False)
    return n


def _counts_uncached(prof: str, s: dict) -> np.ndarray:
    if prof == "two_cluster":
        if "ratio" in s and "n_B" in s and "n_A" not in s:
            n_A, n_B = s["ratio"] * s["n_B"], s["n_B"]
        elif "ratio" in s and "n_A" in s and "n_B" not in s:
            n_A, n_B = s["n_A"], s["n_A"] / s["ratio"]
        else:
            n_A, n_B = s["n_A"], s["n_B"]
        return profiles.two_cluster(int(s["K_A"]), n_A, int(s["K_B"]), n_B)
    if prof == "balanced":
        return profiles.explicit([s["n"]] * int(s["K"]))
    if prof == "long_tail":
        return profiles.long_tail(int(s["K"]), s["n"], s["ratio"])
    if prof == "steps":
        return profiles.steps(s["groups"])
    return profiles.explicit(s["counts"])


def _check_problem(path, problem, axes):
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
    if not ways:
        raise _err(path, "[problem]", "a regularisation: lam_W and lam_H, or lam, or c")
    if ("lam" in have or "c" in have) and "lam_H" in have:
        raise _err(path, "lam_H", "no lam_H when lam or c sets λ (λ_H = λ²/λ_W)")
    if problem.get("loss", "ce") not in losses.LOSSES:
        raise _err(path, "[problem].loss", f"one of {sorted(losses.LOSSES)}", problem["loss"])
    if problem.get("convention", "half") not in CONVENTIONS:
        raise _err(path, "[problem].convention", f"one of {CONVENTIONS}",
                   problem["convention"])


def _check_types(path, table, name, v):
    key = f"[{table}].{name}"
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
    if name == "counts":
        if not isinstance(v, list) or not v:
            raise _err(path, key, "a non-empty list of counts", v)
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
    _check_problem(path, problem, axes)
    if "chunk_size" in run and run["chunk_size"] < 1:
        raise _err(path, "[run].chunk_size", "an integer >= 1", run["chunk_size"])
    for name in ("gtol", "ftol", "gap_tol", "learning_rate"):
        if name in solver and solver[name] <= 0 and name != "ftol":
            raise _err(path, f"[solver].{name}", "a number > 0", solver[name])
    cells = math.prod(v.size for v in axes.values())
    if cells > MAX_CELLS:
        raise _err(path, "[axes]", f"at most {MAX_CELLS} cells in the grid, got {cells}")
    spec = Spec(path, problem, axes, solver, run, text)
    _check_solve(spec, expand(spec))  # impossible settings are refused now, before any run
    return spec


def _check_solve(spec: Spec, grid: Grid) -> None:
    """Refuse what ``solver.prepare`` would refuse at solve time (the solver's settings,
    convex with d < K − 1, …): one configuration of each K block, as a sweep passes it."""
    p = grid.params
    for block in grid.blocks():
        i = int(block[0])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NCJaxWarning)  # a sweep warns when it solves
                solver.prepare(grid.counts([i]), p["lam_W"][[i]], p["lam_H"][[i]],
                               p["lam_b"][[i]], d=int(p["d"][i]), m=spec.problem.get("m", 1),
                               seed=p["seed"][[i]], key_index=np.array([i]),
                               loss=spec.problem.get("loss", "ce"),
                               bias=spec.problem.get("bias", True), **spec.solver)
        except InputError as e:
            word = str(e).split(" ", 1)[0]
            key = next((f"[{t}].{word}" for t in ("solver", "problem") if word in TABLES[t]),
                       "[solver]")
            raise SpecError(f"{spec.path}: {key}: {e} (K = {int(p['K'][i])})") from None


def load(path) -> Spec:
    """Read and check a spec file (UTF-8 TOML)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(f"{p}: cannot read the spec: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise SpecError(f"{p}: not UTF-8 text (byte {e.start}: "
                        f"{e.object[e.start:e.start + 1]!r}); a spec is a TOML file") from None
    return loads(text, str(p))


def _settings(spec: Spec, point: dict) -> dict[str, Any]:
    """Resolved half-convention settings of one grid point, checked."""
    path = spec.path
    s = _resolve(spec.problem, point)
    where = lambda k: f"[axes].{k}" if k in point else f"[problem].{k}"
    K, src = {"two_cluster": (s.get("K_A", 0) + s.get("K_B", 0), "K_A"),
              "steps": (sum(k for k, _ in s.get("groups", [])), "groups"),
              "explicit": (len(s.get("counts", [])), "counts")}.get(spec.problem["profile"],
                                                                    (s.get("K"), "K"))
    if K > MAX_CLASSES:
        raise _err(path, where(src), f"at most {MAX_CLASSES} classes, got K = {K}")
    try:
        n = _counts(spec.problem, s)
    except InputError as e:
        raise SpecError(f"{path}: {e} (at {point})") from None
    if spec.problem["profile"] == "two_cluster":
        n_A, n_B = n[0], n[-1]
        if n_B > n_A:
            key = "n_B" if "n_B" in s else "ratio"
            raise _err(path, where(key), "n_B <= n_A: group A is the majority of "
                       "'two_cluster'", f"n_A={n_A:g}, n_B={n_B:g}")
        if s["K_B"] < 1 or s["K_A"] < 1:
            raise _err(path, where("K_B" if s["K_B"] < 1 else "K_A"), ">= 1")
    if spec.problem["profile"] == "long_tail" and s["ratio"] < 1:
        raise _err(path, where("ratio"), "ratio >= 1", s["ratio"])
    for k in ("lam", "c", "lam_W", "lam_H", "lam_b"):
        if k in s and (s[k] < 0 or (k != "lam_b" and s[k] == 0)):
            raise _err(path, where(k), f"{k} {'>= 0' if k == 'lam_b' else '> 0'}", s[k])
    conv = spec.problem.get("convention", "half")
    lam_b = s.get("lam_b", 0.0)
    N = n.sum()
    if "lam_W" in s and "lam_H" in s:
        lam_W, lam_H, lam_b = map(np.float64, to_half(s["lam_W"], s["lam_H"], lam_b, conv))
    else:
        lam = np.float64(s["lam"] if "lam" in s else s["c"] / N)
        lam_W = np.float64(to_half(s["lam_W"], 0, 0, conv)[0]) if "lam_W" in s else lam
        lam_b = np.float64(to_half(0, 0, lam_b, conv)[2])
        lam_H = lam**2 / lam_W
    derived = (("lam_W", lam_W), ("lam_H", lam_H), ("lam_W * lam_H", lam_W * lam_H),
               ("lam_H / lam_W", lam_H / lam_W))
    if not math.isfinite(N):
        raise _err(path, "[problem]", f"a total count N within float64's range (at {point})")
    set_by = lambda k: k if k in s else ("lam" if "lam" in s else "c" if "c" in s else "lam_H")
    for k, v in derived + (("lam_b", lam_b if lam_b > 0 else 1.0),):
        if not F64.tiny <= v <= F64.max:
            src = set_by(k)
            also = (f" and {where('lam_W')} = {s['lam_W']!r}"
                    if "lam_W" in s and "lam_W" not in (k, src) else "")
            raise _err(path, where(src), f"{k} within float64's range [{F64.tiny:.3g}, "
                       f"{F64.max:.3g}] (half convention), got {src} = {s[src]!r}{also}"
                       + ("" if float(v) == s[src] else f", so {k} = {float(v):.4g}"))
    d = s.get("d", n.size)
    if d < 1 or s.get("m", 1) < 1:
        raise _err(path, "[problem].d" if d < 1 else "[problem].m", ">= 1")
    return {"K": n.size, "N": float(N), "lam_W": float(lam_W), "lam_H": float(lam_H),
            "lam_b": float(lam_b), "lam": math.sqrt(lam_W * lam_H), "seed": int(s.get("seed", 0)),
            "d": int(d)}


def expand(spec: Spec) -> Grid:
    """The Cartesian product of the axes: (B,) arrays of every resolved setting."""
    names = list(spec.axes)
    shape = tuple(spec.axes[k].size for k in names)
    rows = []
    with np.errstate(all="ignore"):  # _settings refuses a λ or N out of float64's range
        for combo in itertools.product(*(spec.axes[k] for k in names)):
            point = {k: v.item() for k, v in zip(names, combo)}
            rows.append({**point, **_settings(spec, point)})
    return Grid(spec, shape, {k: np.asarray([r[k] for r in rows]) for k in rows[0]})
