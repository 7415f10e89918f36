"""``ncjax bench``'s peers: the solvers a researcher would write, against ``ncjax.solve``.

The peers (``peers``), the solvers a researcher would write, on this grid and on a second
one at K = 20 (10 classes of n_A = 500 and 10 of n_B, the same n_B and λ ranges, 16 × 16
points; left out by ``--tiny``, whose time is compilation, one more program a K), each
against ``ncjax.solve`` in the same run:

* the convex form: ``ncjax.solve(method="convex", dtype="float64")`` against
  ``ncjax.peers.solve`` (ncjax's algorithm in numpy, SVT by SVD and by eigh of the Gram
  matrix; in torch on the CPU, one thread, when torch is importable), every configuration
  counted only when certified to gap ≤ 1e-9·|P| (``convex.GTOL``), with the largest
  |P_ncjax − P_peer|/|P|; warm (the median after a warm call) and including the first call
  (for ncjax: its compilation in this process). ncjax's time includes what ``solve``
  does beyond the peers' (Z, b): the factorisation, the metrics, the float64 certificate
  of F;
* the bounds of the machine's LAPACK: one batched SVD, one batched eigh of 512 K × K
  matrices (numpy), and configs/s ≤ 1/(steps × time per matrix) at ncjax's median steps,
  one core, and as many cores as ``ncjax.solve`` ran processes (``ncjax.cores``);
* the factored F: the grid's ``ncjax.solve`` (method "ufm", L-BFGS, float32) against
  scipy's L-BFGS-B one configuration a call (``peers.ufm_lbfgsb``, float64) on a sample,
  both counted by the same certificate (``solver.certify``: gap ≤ GAP_RTOL["float32"]·F).
"""

from __future__ import annotations

import numpy as np

import ncjax
from ncjax import convex, cores, peers, solver, stopping
from ncjax.bench_problem import (FULL, K20, K_A, K_B, LAPACK_BATCH, PEER_POINTS,
                                 SCIPY_SAMPLE, TINY, devices_of, grid, ratio, route, sample,
                                 timed)
from ncjax.dtypes import x64
from ncjax.problem import Problem
from ncjax.tolerances import GAP_RTOL


def _certified(gap, value, rtol) -> np.ndarray:
    """``stopping.certified`` of host float64 values, in float64."""
    with x64(True):
        return np.asarray(stopping.certified(np.asarray(gap, np.float64),
                                             np.asarray(value, np.float64), rtol))


def peer_solvers() -> list:
    """(route name, ``peers.Ops``, SVT variant) of each convex peer importable here."""
    rows = [("numpy, SVT by SVD", peers.NUMPY, "svd"),
            ("numpy, SVT by eigh of the Gram matrix", peers.NUMPY, "eigh")]
    torch = peers.torch_ops()
    if torch is not None:
        rows.append(("torch CPU, SVT by eigh of the Gram matrix", torch, "eigh"))
    return rows


def _one_thread(ops, fn):
    """fn() with torch on one thread, as numpy's batched LAPACK runs (on the shared CPU
    torch's two OpenMP threads made its eigh 30 times slower)."""
    if ops.name != "torch":
        return fn()
    threads = ops.xp.get_num_threads()
    ops.xp.set_num_threads(1)
    try:
        return fn()
    finally:
        ops.xp.set_num_threads(threads)


def convex_against_peers(name, counts, lam_W, lam_H, *, device, repeats, log) -> dict:
    """ncjax.solve(method "convex", float64) of every configuration in one call, then each
    peer of ``peer_solvers``; a configuration counts when certified to gap ≤ GTOL·|P|."""
    B, K = counts.shape
    gtol = convex.GTOL["float64"]
    call = lambda: ncjax.solve(counts, lam_W, lam_H, d=K, m=1, method="convex",
                               dtype="float64", devices=devices_of(device))
    first, t, times, r = timed(call, repeats)
    ok = r.converged & _certified(r.gap, r.objective, gtol)
    ref = route("ncjax.solve, method convex, float64", B, ok.sum(), first, t, times,
                first_s=first, first_call_per_s=ok.sum() / first,
                processes=cores.count(B, device.platform),
                median_steps=float(np.median(r.steps)),
                max_gap=float(np.max(r.gap / np.abs(r.objective))))
    rows = [ref]
    lam = np.sqrt(lam_W) * np.sqrt(lam_H)  # as ncjax.Problem.lam computes it
    for label, ops, svt in peer_solvers():
        first, t, times, p = timed(lambda: _one_thread(ops, lambda: peers.solve(
            counts, lam, 0.0, svt=svt, ops=ops)), repeats)
        ok = (p.status == stopping.CONVERGED) & _certified(p.gap, p.P, gtol)
        rows.append(route(label, B, ok.sum(), first, t, times, first_s=first,
                          first_call_per_s=ok.sum() / first, library=ops.name, svt=svt,
                          median_steps=float(np.median(p.steps)),
                          max_gap=float(np.max(p.gap / np.abs(p.P))),
                          max_dP=float(np.max(np.abs(r.objective - p.P) / np.abs(p.P))),
                          same_steps=float(np.mean(p.steps == r.steps))))
    for row in rows:
        log(f"{name}, {row['route']}: {row['converged']}/{B} certified, "
            f"{row['converged_per_s']:.4g}/s warm, first call {row['first_s']:.3g} s")
    return {"problem": name, "K": K, "configurations": B, "rows": rows}


def lapack_bounds(K: int, steps: float, rate: float, *, repeats: int, processes: int = 1,
                  batch: int = LAPACK_BATCH) -> dict:
    """The median seconds of one batched numpy SVD (gesdd) and eigh (of AᵀA) of ``batch``
    K × K matrices, and the configs/s one core could reach if a configuration cost only
    ``steps`` of them: 1/(steps × seconds per matrix); ``rate``'s fraction of each, and of
    ``processes`` cores' (the processes ``ncjax.solve`` ran the batch in)."""
    A = np.random.default_rng(0).standard_normal((batch, K, K))
    G = A.swapaxes(-1, -2) @ A
    out = {"K": K, "batch": batch, "steps": steps, "processes": processes}
    for name, fn in (("svd", lambda: np.linalg.svd(A, full_matrices=False)),
                     ("eigh", lambda: np.linalg.eigh(G))):
        _, t, times, _ = timed(fn, max(repeats, 5))
        per = t / batch
        out[name] = {"seconds": t, "times": times, "per_matrix_s": per,
                     "bound_per_s": 1 / (steps * per), "ncjax_fraction": rate * steps * per,
                     "cores_fraction": rate * steps * per / processes}
    return out


def factored_against_scipy(counts, lam_W, lam_H, idx, *, ufm_rate, repeats) -> dict:
    """scipy's L-BFGS-B on F (``peers.ufm_lbfgsb``, a configuration a call, its start
    seeded by the configuration's index) on the sample ``idx``, counted by ncjax's
    certificate (gap ≤ GAP_RTOL["float32"]·F, as method "ufm" is); ``ufm_rate`` ncjax's
    converged/s on the whole grid."""
    call = lambda: [peers.ufm_lbfgsb(counts[i], lam_W[i], lam_H[i], seed=int(i)) for i in idx]
    first, t, times, sols = timed(call, repeats)
    W, H, b = (np.stack([s[j] for s in sols]) for j in range(3))
    prob = Problem(counts[idx], lam_W[idx], lam_H[idx], np.zeros(len(idx)))
    F, gap = solver.certify(W, H, b, prob)
    ok = _certified(gap, F, GAP_RTOL["float32"])
    row = route("scipy L-BFGS-B (F, float64), one configuration a call", len(idx), ok.sum(),
                first, t, times, median_iterations=float(np.median([s[3] for s in sols])))
    return {"ufm_converged_per_s": ufm_rate, "gap_rtol": GAP_RTOL["float32"], "rows": [row]}


def peers_section(*, tiny, repeats, device, ufm_rate, log) -> dict:
    """The peers of the module docstring: both problems, the LAPACK bounds, scipy."""
    mode = "tiny" if tiny else "full"
    problems = [(f"K = {K_A + K_B}, {TINY if tiny else FULL}² grid",
                 grid(TINY if tiny else FULL))]
    if PEER_POINTS[mode]:
        problems.append((f"K = {2 * K20}, {PEER_POINTS[mode]}² grid",
                         grid(PEER_POINTS[mode], K20, K20)))
    out = {"torch": peers.torch_ops() is not None, "numba": peers.numba_available(),
           "convex": [], "bounds": []}
    for name, (counts, lam_W, lam_H) in problems:
        c = convex_against_peers(name, counts, lam_W, lam_H, device=device, repeats=repeats,
                                 log=log)
        out["convex"].append(c)
        ref = c["rows"][0]
        out["bounds"].append(lapack_bounds(c["K"], ref["median_steps"],
                                           ref["converged_per_s"], repeats=repeats,
                                           processes=ref["processes"]))
    counts, lam_W, lam_H = problems[0][1]
    out["factored"] = factored_against_scipy(
        counts, lam_W, lam_H, sample(counts.shape[0], SCIPY_SAMPLE[mode]), ufm_rate=ufm_rate,
        repeats=repeats)
    return out



def peers_table(res: dict) -> str:
    """The markdown tables of the peers section."""
    pe = res["peers"]
    lines = ["## The peers a researcher would write", "",
             "The convex form by ncjax (one `ncjax.solve` call, float64) and by "
             "`ncjax.peers` (its algorithm rewritten in numpy/torch, batched, a pool of 512 "
             "slots refilled as configurations finish). Certified: gap ≤ 1e-9·|P|. Warm: "
             f"median of {res['repeats']} calls after a warm call; first: that first call "
             "(for ncjax, with its compilation; its time also holds the factorisation, the "
             "metrics and the float64 certificate of F, which the peers skip). "
             "ΔP: max |P_ncjax − P_peer|/|P|. Same steps: "
             "the fraction of configurations whose step count is ncjax's. "
             f"torch {'importable' if pe['torch'] else 'not installed'}; numba "
             f"{'importable (no numba peer written)' if pe['numba'] else 'not installed'}.",
             "", "| problem | route | configurations | certified | seconds (warm) "
             "| first call, s | certified/s warm | certified/s with first call | median steps "
             "| max gap / P | ΔP | same steps | ncjax / route, warm | ncjax / route, first |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in pe["convex"]:
        ref = c["rows"][0]
        for r in c["rows"]:
            lines.append(
                f"| {c['problem']} | {r['route']} | {r['configurations']} | {r['converged']} "
                f"| {r['seconds']:.4g} | {r['first_s']:.4g} | {r['converged_per_s']:.4g} | "
                f"{r['first_call_per_s']:.4g} | {r['median_steps']:g} | {r['max_gap']:.2g} | "
                f"{r.get('max_dP', 0.0):.2g} | {r.get('same_steps', 1.0):.3f} | "
                f"{ratio(ref['converged_per_s'], r['converged_per_s'])} | "
                f"{ratio(ref['first_call_per_s'], r['first_call_per_s'])} |")
    lines += ["", "Bounds of this machine's LAPACK (numpy, one core): one batched SVD "
              "(gesdd) and one batched eigh (of AᵀA) of 512 K × K matrices, median of "
              "calls; bound = 1/(ncjax's median steps × seconds per matrix), as if a step "
              "cost one SVT and nothing else. ncjax.solve ran the batch in the processes "
              "shown (`ncjax.cores`, one a core): its fraction of that many cores' bound "
              "too.", "",
              "| K | median steps | SVD per matrix, µs | eigh per matrix, µs | SVD bound, "
              "configs/s | eigh bound, configs/s | ncjax warm / SVD bound "
              "| ncjax warm / eigh bound | ncjax processes | ncjax warm / their SVD bound "
              "| ncjax warm / their eigh bound |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for bd in pe["bounds"]:
        sv, eh = bd["svd"], bd["eigh"]
        lines.append(f"| {bd['K']} | {bd['steps']:g} | {sv['per_matrix_s'] * 1e6:.3g} | "
                     f"{eh['per_matrix_s'] * 1e6:.3g} | {sv['bound_per_s']:.4g} | "
                     f"{eh['bound_per_s']:.4g} | {sv['ncjax_fraction']:.2f} | "
                     f"{eh['ncjax_fraction']:.2f} | {bd['processes']} | "
                     f"{sv['cores_fraction']:.2f} | {eh['cores_fraction']:.2f} |")
    fa = pe["factored"]
    lines += ["", "The factored F (K = 10 grid): ncjax.solve, method ufm (L-BFGS, float32, "
              "the whole grid in one call, above) against scipy's L-BFGS-B one configuration "
              "a call on an evenly spaced sample, both counted by the certificate "
              f"gap ≤ {fa['gap_rtol']:g}·F (scipy's certification not timed).", "",
              "| route | configurations | certified | seconds | certified/s "
              "| median iterations | ncjax ufm / route |", "|---|---|---|---|---|---|---|"]
    for r in fa["rows"]:
        lines.append(f"| {r['route']} | {r['configurations']} | {r['converged']} | "
                     f"{r['seconds']:.4g} | {r['converged_per_s']:.4g} | "
                     f"{r['median_iterations']:g} | "
                     f"{ratio(fa['ufm_converged_per_s'], r['converged_per_s'])} |")
    return "\n".join(lines) + "\n"
