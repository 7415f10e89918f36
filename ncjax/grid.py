"""The grid of a checked spec, described by its axes and never expanded cell by cell.

Each setting of a cell (K, N, λ_W, λ_H, λ_b in the half convention, λ = sqrt(λ_W λ_H),
seed, d, and every axis's own value) is a function of a few axes. It is held as an array
broadcastable to the grid's shape, of length 1 along the axes it does not depend on:
quick.toml's λ_H is (1, 24), a function of its λ axis only. The class counts are computed
once per combination of the profile's axes (one table per K) and indexed from there.

Reading a selection of flat indices (``Grid.params_at``, ``Grid.counts``) costs
O(len(idx)); ``Grid.params[name]`` is the full (cells,) array, computed on first access
and kept. Every cell's settings are checked by ``expand`` on the reduced arrays; a refusal
names the first refused cell in C order and, within it, the first failed check, in the
order the per-cell rule checked them: the class count, the profile, λ's sign, N, the
float64 range of each derived λ, then d and m.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from ncjax import profiles
from ncjax.convention import to_half
from ncjax.validate import MAX_CLASSES, InputError

PROFILE_KEYS = {
    "two_cluster": {"K_A", "K_B", "n_A", "n_B", "ratio"},
    "balanced": {"K", "n"},
    "long_tail": {"K", "n", "ratio"},
    "steps": {"groups"},
    "explicit": {"counts"},
}
SETTINGS = ("K", "N", "lam_W", "lam_H", "lam_b", "lam", "seed", "d")
F64 = np.finfo(np.float64)


class SpecError(InputError):
    """A refused sweep spec: the message names the file, the key and what was expected."""


def spec_error(spec_path, key, expected, got=None) -> SpecError:
    """The one form of every refusal: ``PATH: KEY: expected WHAT[, got VALUE]``."""
    tail = "" if got is None else f", got {got!r}"
    return SpecError(f"{spec_path}: {key}: expected {expected}{tail}")


def profile_counts(prof: str, s: dict) -> np.ndarray:
    """Class counts (K,) of profile ``prof`` from its keys in the settings ``s``."""
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


class Params(Mapping):
    """``name -> (cells,)`` array of a grid's setting, each computed on first access."""

    def __init__(self, fields: dict, shape: tuple):
        self._fields, self._shape, self._full = fields, shape, {}

    def __getitem__(self, name):
        if name not in self._full:
            full = np.broadcast_to(self._fields[name], self._shape).reshape(-1)
            full.setflags(write=False)
            self._full[name] = full
        return self._full[name]

    def __iter__(self):
        return iter(self._fields)

    def __len__(self):
        return len(self._fields)


class Grid(NamedTuple):
    """The configurations of a spec: the grid is ``shape`` = lengths of ``spec.axes``;
    config i is the C-order flat index. ``fields[name]`` is a setting broadcastable to
    ``shape``; ``params[name]`` the same as a (cells,) array, ``params_at(idx)`` at flat
    indices (names: K, N, lam_W, lam_H, lam_b, lam, seed, d, and each axis)."""

    spec: Any
    shape: tuple
    fields: dict
    params: Params
    # per cell (broadcastable) its combination of the profile's axes; per combination its
    # K and its row in the counts table of that K; the tables K -> (combos of K, K)
    combo: np.ndarray
    combo_K: np.ndarray
    combo_row: np.ndarray
    tables: dict
    cache: dict  # the blocks, computed once

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def _multi(self, idx: np.ndarray) -> tuple:
        if np.any((idx < 0) | (idx >= self.size)):
            raise IndexError(f"flat indices must be in [0, {self.size})")
        return np.unravel_index(idx, self.shape) if self.shape else ()

    def _at(self, field: np.ndarray, multi: tuple, n: int) -> np.ndarray:
        sel = field[tuple(m if size > 1 else 0 for m, size in zip(multi, field.shape))]
        return np.broadcast_to(sel, (n,)).copy()

    def params_at(self, idx) -> dict[str, np.ndarray]:
        """Every setting at flat indices ``idx``: name -> (len(idx),)."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        multi = self._multi(idx)
        return {k: self._at(f, multi, idx.size) for k, f in self.fields.items()}

    def counts(self, idx=None) -> np.ndarray:
        """Class counts of configurations ``idx`` (default all), (len(idx), K); they must
        share one K (see ``blocks``)."""
        idx = np.arange(self.size) if idx is None else np.asarray(idx, dtype=np.int64)
        idx = idx.reshape(-1)
        combos = self._at(self.combo, self._multi(idx), idx.size)
        Ks = np.unique(self.combo_K[combos])
        if Ks.size > 1:
            raise InputError("these configurations have different K; take them per block")
        if not Ks.size:
            return np.empty((0, 0))
        return self.tables[int(Ks[0])][self.combo_row[combos]]

    def blocks(self) -> list[np.ndarray]:
        """Flat indices grouped by K, in increasing K (one compiled program each);
        read-only, computed once."""
        if "blocks" not in self.cache:
            K = self.fields["K"]
            values = np.unique(K)
            if values.size == 1:
                out = [np.arange(self.size)]
            else:
                out = [np.flatnonzero(np.broadcast_to(K == k, self.shape)) for k in values]
            for b in out:
                b.setflags(write=False)
            self.cache["blocks"] = out
        return list(self.cache["blocks"])


def expand(spec) -> Grid:
    """The grid of a checked ``spec.Spec``: every setting of every cell, resolved (the
    problem's keys overlaid with the cell's axis values) and checked; ``SpecError`` names
    the first refused cell."""
    names, problem, path = list(spec.axes), spec.problem, spec.path
    shape = tuple(spec.axes[k].size for k in names)
    ndim, ones = len(shape), (1,) * len(shape)

    def view(j, values):
        return values.reshape([values.size if i == j else 1 for i in range(ndim)])

    have = {**{k: np.full(ones, v) for k, v in problem.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)},
            **{k: view(j, spec.axes[k]) for j, k in enumerate(names)}}

    def cell(i: int):
        """The axis values of flat cell ``i`` and its settings, as the per-cell rule saw
        them (for a message)."""
        point = {k: spec.axes[k][m].item()
                 for k, m in zip(names, np.unravel_index(i, shape))}
        return point, {**problem, **point}

    where = lambda k: f"[axes].{k}" if k in spec.axes else f"[problem].{k}"
    prof = problem["profile"]
    combo, Ks, Ns, tables, combo_err = _combos(spec, shape, prof, view)
    fields, checks = {}, []  # checks: (mask broadcastable to shape, message of cell i)
    checks.append((combo_err[combo] != "", lambda i: combo_message(i)))

    def combo_message(i):
        point, s = cell(i)
        kind = combo_err[_first(combo, i, shape)]
        if kind == "classes":
            K, src = {"two_cluster": (s.get("K_A", 0) + s.get("K_B", 0), "K_A"),
                      "steps": (sum(k for k, _ in s.get("groups", [])), "groups"),
                      "explicit": (len(s.get("counts", [])), "counts")}.get(prof, (s.get("K"), "K"))
            return spec_error(path, where(src), f"at most {MAX_CLASSES} classes, got K = {K}")
        if kind == "n_B":
            n = profile_counts(prof, s)
            return spec_error(path, where("n_B" if "n_B" in s else "ratio"), "n_B <= n_A: group "
                              "A is the majority of 'two_cluster'", f"n_A={n[0]:g}, n_B={n[-1]:g}")
        if kind == "K_AB":
            return spec_error(path, where("K_B" if s["K_B"] < 1 else "K_A"), ">= 1")
        if kind == "ratio":
            return spec_error(path, where("ratio"), "ratio >= 1", s["ratio"])
        return SpecError(f"{path}: {kind} (at {point})")

    for k in ("lam", "c", "lam_W", "lam_H", "lam_b"):
        if k in have:
            bad = (have[k] < 0) if k == "lam_b" else (have[k] <= 0)
            checks.append((bad, lambda i, k=k: spec_error(
                path, where(k), f"{k} {'>= 0' if k == 'lam_b' else '> 0'}", cell(i)[1][k])))

    conv = problem.get("convention", "half")
    K, N = Ks[combo], Ns[combo]
    # no λ at all: a [thresholds] grid along lam or c (its λ the search's), λ_W, λ_H NaN
    lam_free = not {"lam_W", "lam_H", "lam", "c"} & set(have)
    with np.errstate(all="ignore"):  # refused below: a λ or N out of float64's range
        lam_b = have.get("lam_b", np.zeros(ones))
        if "lam_W" in have and "lam_H" in have:
            lam_W, lam_H, lam_b = to_half(have["lam_W"], have["lam_H"], lam_b, conv)
        elif lam_free:
            lam_W = lam_H = np.full(ones, np.nan)
            lam_b = to_half(0, 0, lam_b, conv)[2]
        else:
            lam = have["lam"] if "lam" in have else have["c"] / N
            lam_W = to_half(have["lam_W"], 0, 0, conv)[0] if "lam_W" in have else lam
            lam_b = to_half(0, 0, lam_b, conv)[2]
            lam_H = _square(lam) / lam_W
        derived = {"lam_W": lam_W, "lam_H": lam_H, "lam_W * lam_H": lam_W * lam_H,
                   "lam_H / lam_W": lam_H / lam_W, "lam_b": np.where(lam_b > 0, lam_b, 1.0)}
        if lam_free:
            derived = {"lam_b": derived["lam_b"]}
        checks.append((~np.isfinite(N), lambda i: spec_error(
            path, "[problem]", f"a total count N within float64's range (at {cell(i)[0]})")))
        for k, v in derived.items():
            checks.append((~((v >= F64.tiny) & (v <= F64.max)),
                           lambda i, k=k, v=v: _range_message(path, where, cell(i)[1], k, v, i,
                                                              shape)))
        lam = np.sqrt(lam_W * lam_H)
    d = np.full(ones, problem["d"]) if "d" in problem else K
    if problem.get("d", 2) < 1 or problem.get("m", 1) < 1:
        checks.append((np.ones(ones, bool), lambda i: spec_error(
            path, "[problem].d" if problem.get("d", 2) < 1 else "[problem].m", ">= 1")))
    _refuse_first(checks, shape)

    settings = {"K": K, "N": N, "lam_W": lam_W, "lam_H": lam_H, "lam_b": lam_b, "lam": lam,
                "seed": have.get("seed", np.zeros(ones, np.int64)), "d": d}
    dtypes = {"K": np.int64, "seed": np.int64, "d": np.int64}
    for k in names + [k for k in SETTINGS if k not in names]:
        v = settings[k] if k in settings else have[k]
        fields[k] = np.asarray(v, dtype=dtypes.get(k, v.dtype if k not in settings else np.float64))
    return Grid(spec, shape, fields, Params(fields, shape), combo, *tables, {})


def _square(x: np.ndarray) -> np.ndarray:
    # libm's pow, as the per-cell rule's float64 ** 2 computed it: x * x differs from it in
    # the last bit for ~0.1% of values, and a run's grid must not move under a resume
    return np.fromiter(map(_pow2, x.ravel().tolist()), np.float64, x.size).reshape(x.shape)


def _pow2(v: float) -> float:
    try:
        return math.pow(v, 2.0)
    except OverflowError:  # float64 ** 2 is inf there, refused by the range check
        return math.inf


def _combos(spec, shape, prof, view):
    """Per combination of the profile's axes (C order): its counts, K, N and the first
    check it fails ("" for none). Returns the combination id of each cell (broadcastable
    to ``shape``), K and N per combination, the counts tables (``Grid``) and the errors."""
    names = [k for k in spec.axes if k in PROFILE_KEYS[prof]]
    sub = [spec.axes[k] for k in names]
    n_combo = math.prod(v.size for v in sub)
    combo = np.arange(n_combo).reshape(
        [spec.axes[k].size if k in names else 1 for k in spec.axes])
    Ks, Ns = np.zeros(n_combo, np.int64), np.full(n_combo, np.nan)
    row, errs, rows = np.zeros(n_combo, np.int64), np.full(n_combo, "", dtype=object), {}
    for c, values in enumerate(itertools.product(*sub)):
        s = {**spec.problem, **{k: v.item() for k, v in zip(names, values)}}
        K = {"two_cluster": s.get("K_A", 0) + s.get("K_B", 0),
             "steps": sum(k for k, _ in s.get("groups", [])),
             "explicit": len(s.get("counts", []))}.get(prof, s.get("K"))
        if K > MAX_CLASSES:
            errs[c] = "classes"
            continue
        try:
            n = profile_counts(prof, s)
        except InputError as e:
            errs[c] = str(e)
            continue
        if prof == "two_cluster" and n[-1] > n[0]:
            errs[c] = "n_B"
        elif prof == "two_cluster" and (s["K_B"] < 1 or s["K_A"] < 1):
            errs[c] = "K_AB"
        elif prof == "long_tail" and s["ratio"] < 1:
            errs[c] = "ratio"
        with np.errstate(over="ignore"):  # an N out of float64's range is refused later
            Ks[c], Ns[c] = n.size, n.sum()
        row[c] = len(rows.setdefault(n.size, []))
        rows[n.size].append(n)
    tables = (Ks, row, {K: np.stack(r) for K, r in rows.items()})
    return combo, Ks, Ns, tables, errs


def _first(mask: np.ndarray, i: int, shape: tuple):
    """The entry of a reduced array ``mask`` at flat cell ``i`` of the grid."""
    multi = np.unravel_index(i, shape)
    return mask[tuple(m if size > 1 else 0 for m, size in zip(multi, mask.shape))]


def _refuse_first(checks, shape) -> None:
    """Raise the message of the first failed check of the first cell (C order) that fails
    any: the first True of a reduced mask is, in the grid, at its coordinates with 0 on
    the axes it does not depend on."""
    best = None
    for order, (mask, message) in enumerate(checks):
        mask = np.asarray(mask)
        hit = np.flatnonzero(mask)
        if hit.size:
            coords = np.unravel_index(hit[0], mask.shape)
            i = int(np.ravel_multi_index(coords, shape)) if shape else 0
            if best is None or (i, order) < best[:2]:
                best = (i, order, message)
    if best is not None:
        raise best[2](best[0])


def _range_message(path, where, s, k, v, i, shape) -> SpecError:
    src = k if k in s else ("lam" if "lam" in s else "c" if "c" in s else "lam_H")
    v = float(_first(v, i, shape))
    also = (f" and {where('lam_W')} = {s['lam_W']!r}"
            if "lam_W" in s and "lam_W" not in (k, src) else "")
    return spec_error(path, where(src), f"{k} within float64's range [{F64.tiny:.3g}, "
                      f"{F64.max:.3g}] (half convention), got {src} = {s[src]!r}{also}"
                      + ("" if v == s[src] else f", so {k} = {v:.4g}"))
