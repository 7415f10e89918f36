"""The benchmarks in their tiny modes (seconds), so that they cannot rot: ``ncjax bench``
(the package's time to solution) and the repository's harness (benchmarks/harness.py)
write valid JSON, markdown and PNG, and their numbers hold together when recomputed here.
The peers ``ncjax bench`` times (``ncjax.peers``) solve the convex form as cvxpy does, by
a proximal step that is the singular-value soft-threshold, whatever their pool."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from benchmarks import harness, measure, tables
from ncjax import (bench, bench_peers, bench_problem, cli, convex, dtypes, loop, model, natural,
                   peers, spec)
from ncjax.names import CONVERGED
from ncjax.problem import Problem
from tests.conftest import convex_optimum

PNG = b"\x89PNG\r\n\x1a\n"


def test_grid_is_the_sweep_spec():
    """The grid ``ncjax bench`` generates is the one of sweeps/bench_16384.toml."""
    grid = spec.expand(spec.load(Path(__file__).parent.parent / "sweeps" / "bench_16384.toml"))
    def rows(counts, lam_W, lam_H):  # sorted: the order of the axes does not matter
        a = np.column_stack([counts, lam_W, lam_H]).astype(float)
        return a[np.lexsort(a.T[::-1])]
    counts, lam_W, lam_H = bench.grid()
    assert counts.shape == (16384, 10)
    np.testing.assert_allclose(rows(counts, lam_W, lam_H),
                               rows(grid.counts(), grid.params["lam_W"], grid.params["lam_H"]),
                               rtol=1e-12)


# (counts, λ, λ_b): two clusters below and above the minority threshold sqrt(n_B)/N, and a
# three-count problem, with a free and a penalised bias
PEER_CASES = [((100.0, 100.0, 20.0, 20.0), 0.004, 0.0),
              ((100.0, 100.0, 20.0, 20.0), 0.03, 0.0),
              ((300.0, 60.0, 60.0, 10.0, 10.0), 0.002, 0.0),
              ((100.0, 100.0, 20.0, 20.0), 0.004, 0.05),
              ((300.0, 60.0, 60.0, 10.0, 10.0), 0.01, 0.01)]


def _ops():
    torch = peers.torch_ops()
    return [peers.NUMPY] + ([torch] if torch is not None else [])


@pytest.mark.parametrize("ops", _ops(), ids=lambda o: o.name)
@pytest.mark.parametrize("svt", peers.SVT)
@pytest.mark.parametrize("counts, lam, lam_b", PEER_CASES)
def test_peer_reaches_the_cvxpy_optimum(counts, lam, lam_b, svt, ops):
    """The peer stops certified (gap ≤ 1e-9·|P|) at cvxpy's optimum P*, and its gap bounds
    its distance to P* (weak duality), with and without λ_b."""
    p_star, Z_star, b_star = convex_optimum(counts, lam, lam_b)
    r = peers.solve(np.array([counts]), lam, lam_b, svt=svt, ops=ops)
    gtol = convex.GTOL["float64"]
    assert r.status[0] == CONVERGED and 0 <= r.gap[0] <= gtol * r.P[0]
    # cvxpy to 1e-10: P* within ~1e-10·P* of the optimum, from above
    assert abs(r.P[0] - p_star) <= 2 * gtol * p_star
    assert r.P[0] - p_star <= r.gap[0] + 1e-10 * p_star
    np.testing.assert_allclose(r.Z[0], Z_star, atol=1e-3 * max(1.0, np.abs(Z_star).max()))


def test_svt_by_eigh_and_by_svd_are_the_soft_threshold():
    """Both SVT variants equal U max(S − τ, 0) Vᵀ from scipy's gesvd one matrix at a time
    (full rank, rank-deficient and zero matrices; τ cutting about half the spectrum), and
    that point is the prox: ½‖X − A‖² + τ‖X‖_* is larger at every perturbation of it."""
    rng = np.random.default_rng(3)
    K = 6
    A = rng.standard_normal((5, K, K))
    A[1] = A[1, :, :3] @ rng.standard_normal((3, K))  # rank 3
    A[2] = 0.0
    tau = np.array([np.median(np.linalg.svd(a, compute_uv=False)) + 0.1 for a in A])
    direct = []
    for a, t in zip(A, tau):
        U, S, Vt = scipy.linalg.svd(a, lapack_driver="gesvd")
        direct.append(U @ np.diag(np.maximum(S - t, 0.0)) @ Vt)
    direct = np.array(direct)
    for svt in (peers.svt_svd, peers.svt_eigh):
        np.testing.assert_allclose(svt(A, tau), direct, atol=1e-12)
    np.testing.assert_allclose(peers.svt_eigh(A, tau), peers.svt_svd(A, tau), atol=1e-12)

    def prox_objective(X, a, t):
        return 0.5 * np.sum((X - a) ** 2) + t * np.linalg.svd(X, compute_uv=False).sum()
    for X, a, t in zip(direct, A, tau):
        best = prox_objective(X, a, t)
        for _ in range(20):
            assert prox_objective(X + 1e-3 * rng.standard_normal((K, K)), a, t) > best


def test_peer_results_do_not_depend_on_the_pool():
    """16 configurations through pools of 1, 3 and 16 slots: the same steps, P, Z and b for
    each configuration (refills, compaction and batch neighbours change nothing)."""
    counts, lam_W, lam_H = bench.grid(4)
    lam = np.sqrt(lam_W * lam_H)
    runs = [peers.solve(counts, lam, 0.01, pool=p) for p in (1, 3, 16)]
    for r in runs[1:]:
        np.testing.assert_array_equal(r.steps, runs[0].steps)
        np.testing.assert_array_equal(r.status, runs[0].status)
        for a, b in ((r.P, runs[0].P), (r.Z, runs[0].Z), (r.b, runs[0].b)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert (runs[0].status == CONVERGED).all() and len(set(runs[0].steps)) > 1


def test_ufm_objective_gradient_is_the_finite_difference():
    """peers.ufm_objective's gradient (the one scipy's L-BFGS-B follows) against central
    differences, and its value against ncjax.model.ufm_objective."""
    counts = np.array([50.0, 50.0, 10.0, 5.0])
    lam_W, lam_H, lam_b = 0.01, 0.002, 0.03
    x = peers.ufm_start(counts, lam_W, lam_H, 1) + 0.1
    F, g = peers.ufm_objective(x, counts, lam_W, lam_H, lam_b)
    h = 1e-6
    fd = [(peers.ufm_objective(x + h * e, counts, lam_W, lam_H, lam_b)[0]
           - peers.ufm_objective(x - h * e, counts, lam_W, lam_H, lam_b)[0]) / (2 * h)
          for e in np.eye(x.size)]
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)
    K = counts.size
    with dtypes.x64(True):
        params = model.Params(jnp.asarray(x[:K * K].reshape(K, K)),
                              jnp.asarray(x[K * K:2 * K * K].reshape(K, 1, K)),
                              jnp.asarray(x[2 * K * K:]))
        ref = model.ufm_objective(params, Problem(jnp.asarray(counts), lam_W, lam_H, lam_b))
    np.testing.assert_allclose(F, float(ref), rtol=1e-13)


def test_ncjax_bench_tiny(tmp_path):
    assert cli.main(["bench", "--tiny", "--repeats", "1", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "bench.json").read_text())
    md = (tmp_path / "bench.md").read_text()
    assert (tmp_path / "bench.png").read_bytes()[:8] == PNG
    assert md == res["table"]
    assert res["command"].startswith("ncjax bench --tiny --repeats 1")
    assert res["machine"]["jax"] == jax.__version__
    assert res["problem"]["configurations"] == bench.TINY ** 2 == 36
    routes = res["routes"]
    # ncjax.solve of the whole grid by both methods, then B = 1 on a sample, then cvxpy
    assert [r.get("method") for r in routes[:2]] == ["ufm", "convex"]
    assert routes[2]["route"] == "ncjax.solve, one configuration a call"
    assert routes[2]["configurations"] == bench.SAMPLES["tiny"][0]
    assert len(routes) == 3 + bench.available("cvxpy")
    ref = routes[0]["converged_per_s"]
    for r in routes:
        # every route solved every configuration it was given (certified, for ncjax)
        assert r["converged"] == r["configurations"]
        # the rates and the medians follow from the raw timings
        assert len(r["times"]) == 1 and r["seconds"] == np.median(r["times"]) > 0
        np.testing.assert_allclose(r["converged_per_s"], r["converged"] / r["seconds"],
                                   rtol=1e-12)
        assert r["compile_s"] >= 0
        assert (f"| {r['route']} | {r['configurations']} | {r['converged']} | "
                f"{r['seconds']:.4g} | {r['compile_s']:.1f} | {r['converged_per_s']:.4g} | "
                f"{bench.ratio(ref, r['converged_per_s'])} |") in md
    # the whole grid compiles once: its warm call costs seconds, a timed call far less
    assert routes[0]["compile_s"] > routes[0]["seconds"]
    # the peers: ncjax's convex route in float64, then each peer, all certified to 1e-9
    pe = res["peers"]
    (c,) = pe["convex"]  # --tiny: the K = 10 grid only
    rows = c["rows"]
    assert [r["route"] for r in rows] == (["ncjax.solve, method convex, float64"]
                                          + [name for name, _, _ in bench_peers.peer_solvers()])
    assert pe["torch"] == (peers.torch_ops() is not None)
    ref = rows[0]
    for r in rows:
        assert r["converged"] == r["configurations"] == 36
        assert r["max_gap"] <= convex.GTOL["float64"]
        np.testing.assert_allclose(r["converged_per_s"], r["converged"] / r["seconds"],
                                   rtol=1e-12)
        np.testing.assert_allclose(r["first_call_per_s"], r["converged"] / r["first_s"],
                                   rtol=1e-12)
        assert (f"| {c['problem']} | {r['route']} | {r['configurations']} | {r['converged']} "
                f"| {r['seconds']:.4g} |") in md
        assert f"| {bench.ratio(ref['converged_per_s'], r['converged_per_s'])} |" in md
    for r in rows[1:]:
        assert r["max_dP"] < 1e-8  # both certified to 1e-9: the same P
    (bd,) = pe["bounds"]
    assert bd["K"] == 10 and bd["steps"] == ref["median_steps"]
    for name in ("svd", "eigh"):
        b = bd[name]
        np.testing.assert_allclose(b["per_matrix_s"], b["seconds"] / bd["batch"], rtol=1e-12)
        np.testing.assert_allclose(b["bound_per_s"], 1 / (bd["steps"] * b["per_matrix_s"]),
                                   rtol=1e-12)
        np.testing.assert_allclose(b["ncjax_fraction"],
                                   ref["converged_per_s"] / b["bound_per_s"], rtol=1e-12)
        np.testing.assert_allclose(b["cores_fraction"], ref["converged_per_s"] / (
            bd["processes"] * b["bound_per_s"]), rtol=1e-12)
    assert bd["processes"] == ref["processes"] == 1  # the suite's NCJAX_PROCESSES=1
    fa = pe["factored"]
    (r,) = fa["rows"]
    assert r["converged"] == r["configurations"] == bench_problem.SCIPY_SAMPLE["tiny"]
    assert fa["ufm_converged_per_s"] == routes[0]["converged_per_s"]
    assert f"| {r['route']} | {r['configurations']} | {r['converged']} |" in md


def test_harness_tiny(tmp_path):
    res = harness.run(tiny=True, repeats=1, out=tmp_path)
    on_disk = json.loads((tmp_path / "bench.json").read_text())
    assert on_disk["tables"] == res["tables"]
    md = (tmp_path / "bench.md").read_text()
    assert (tmp_path / "bench.png").read_bytes()[:8] == PNG
    assert res["copy"]["bandwidth"] > 0
    # every throughput row ran every step it was timed on (gtol = ftol = 0), and its rates
    # follow from its own timings
    for r in res["throughput"]:
        assert r["ran_all_steps"]
        np.testing.assert_allclose(r["config_steps_per_s"],
                                   r["B"] * r["steps"] / (r["t_hi"] - r["t_lo"]), rtol=1e-9)
        assert f"| {r['B']} | {r['config_steps_per_s']:.4g} |" in md
        # the bytes model is a lower bound of what the compiled Adam step moves (XLA's; the
        # one-kernel step's bytes are not in XLA's cost analysis)
        assert r["model_bytes"] == measure.adam_bytes(r["K"], r["d"], r["m"], 4)
        if r["kernel"]:
            assert np.isnan(r["compiled_bytes"])
            continue
        assert r["compiled_bytes"] >= r["model_bytes"]
        assert f"| {r['compiled_bytes'] / r['model_bytes']:.2f} |" in md
    # the one-kernel step (Pallas's interpreter here): its launch timed as the others, and
    # its loop is XLA's to float32 rounding after the same steps from the same starts
    fused = res["fused"]
    (r,) = fused["launches"]
    assert r["ran_all_steps"] and r["kernel"]["interpret"] and r["B"] == 1
    np.testing.assert_allclose(r["config_steps_per_s"], r["steps"] / (r["t_hi"] - r["t_lo"]),
                               rtol=1e-9)
    assert f"| {tables.label(r)} | {r['config_steps_per_s']:.4g} |" in md
    (row,) = [r for r in res["throughput"] if r.get("kernel")]  # against B: B = 1 here
    assert row["kernel"] == r["kernel"] and row["ran_all_steps"]
    assert (tmp_path / "step_adam_fused_hlo.txt").read_text().startswith("HloModule")
    assert isinstance(fused["hlo_copies"], int)
    a = fused["agreement"]
    assert a["all_ran"] and a["steps"] == 20
    assert max(a[k] for k in ("F", "grad_norm", "x.V", "x.U", "x.b")) < 1e-5
    # the bytes model is 6 × the bytes of the iterate x = (V, U, b) the solver starts from
    K, d, m = measure.SHAPES["tiny"]
    problem = Problem(jnp.asarray(measure.counts_for(K, m)), measure.LAM_W, measure.LAM_W, 0.0)
    x0 = natural.init(jax.random.key(0), problem, d=d, m=m, dtype=jnp.float32)
    assert measure.adam_bytes(K, d, m, 4) == 6 * sum(a.nbytes for a in x0)
    # the comparison against one configuration at a time is the ratio of the rates
    row = res["step_baselines"][0]
    best = max(r["config_steps_per_s"] for r in res["throughput"] if r["optimizer"] == "adam")
    assert bench.ratio(best, row["jitted_loop"]) in md
    # time to solution: every route solved the problems it was given, its rate recomputed
    tts = res["time_to_solution"]
    assert tts["configurations"] == 36
    routes = {b["route"]: b for b in tts["routes"]}
    assert "jitted step, Python loop (L-BFGS)" in routes
    for b in routes.values():
        assert b["converged"] == b["configurations"]
        np.testing.assert_allclose(b["converged_per_s"], b["converged"] / b["seconds"],
                                   rtol=1e-12)
        assert f"| {b['route']} | {b['configurations']} | {b['converged']} |" in md
    assert [b.get("method") for b in tts["routes"][:2]] == ["ufm", "convex"]
    assert all(b["configurations"] == 36 for b in tts["routes"][:2])
    assert "## Growth" in md and res["growth"]["K"][0]["ran_all_steps"]


def test_the_loop_body_alone_does_not_redraw_the_start():
    """The one-configuration baseline jits ``loop.iteration``'s body on its own; after XLA's
    dead-code elimination (the lowering) it must not hold the random start (threefry), as
    it did when the stopping threshold gtol·‖∇₀‖ was closed over instead of carried."""
    s = loop.Settings(4, 2, "adam", 10, 3, jnp.dtype("float32"))
    p = (Problem(jnp.asarray([50.0, 50.0, 10.0, 10.0]), 0.01, 0.001, 0.0), 0.01, 1e-6, 0.0)
    key = natural.start_key(0, 0)
    carry = loop.iteration(key, *p, s)[0]
    body = jax.jit(lambda c, k: loop.iteration(k, *p, s)[1](c))
    assert "threefry" not in body.lower(carry, key).as_text()
    start = jax.jit(lambda k: loop.iteration(k, *p, s)[0])
    assert "threefry" in start.lower(key).as_text()  # the check can see a start
