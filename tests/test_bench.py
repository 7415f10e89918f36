"""The benchmarks in their tiny modes (seconds), so that they cannot rot: ``ncjax bench``
(the package's time to solution) and the repository's harness (benchmarks/harness.py)
write valid JSON, markdown and PNG, and their numbers hold together when recomputed here."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import harness, measure, tables
from ncjax import bench, cli, loop, natural, spec
from ncjax.problem import Problem

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
