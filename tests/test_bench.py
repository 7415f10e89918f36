"""The benchmark entry point in its tiny mode (seconds), so that it cannot rot: it writes
valid JSON, markdown and PNG, and its numbers hold together when recomputed here."""

import json

import jax.numpy as jnp
import numpy as np

from ncjax import bench, cli, solver


def test_tiny_benchmark_run(tmp_path):
    assert cli.main(["bench", "--tiny", "--repeats", "1", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "bench.json").read_text())
    md = (tmp_path / "bench.md").read_text()
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
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
        assert r["model_bytes"] == bench.adam_bytes(r["K"], r["d"], r["m"], 4)
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
    assert f"| {bench._route(r)} | {r['config_steps_per_s']:.4g} |" in md
    (row,) = [r for r in res["throughput"] if r.get("kernel")]  # against B: B = 1 here
    assert row["kernel"] == r["kernel"] and row["ran_all_steps"]
    assert (tmp_path / "step_adam_fused_hlo.txt").read_text().startswith("HloModule")
    assert isinstance(fused["hlo_copies"], int)
    a = fused["agreement"]
    assert a["all_ran"] and a["steps"] == 20
    assert max(a[k] for k in ("F", "grad_norm", "x.V", "x.U", "x.b")) < 1e-5
    # the bytes model is 6 × the bytes of the iterate x = (V, U, b) the solver starts from
    K, d, m = bench.SHAPES["tiny"]
    x0 = solver.init_natural(solver.jax.random.key(0), jnp.asarray(bench.counts_for(K, m)),
                             d=d, m=m, dtype=jnp.float32)
    assert bench.adam_bytes(K, d, m, 4) == 6 * sum(a.nbytes for a in x0)
    # the comparison against one configuration at a time is the ratio of the rates
    row = res["step_baselines"][0]
    best = max(r["config_steps_per_s"] for r in res["throughput"] if r["optimizer"] == "adam")
    assert bench._ratio(best, row["jitted_loop"]) in md
    # time to solution: every route solved the problems it was given
    tts = res["time_to_solution"]
    assert tts["configurations"] == 8
    for r in tts["ncjax"]:
        assert r["converged"] == r["configurations"] == 8
    routes = {b["route"]: b for b in tts["baselines"]}
    assert "jitted step, Python loop (L-BFGS)" in routes
    assert all(b["converged"] == b["sample"] for b in routes.values())
    assert "## Growth" in md and res["growth"]["K"][0]["ran_all_steps"]


def test_the_loop_body_alone_does_not_redraw_the_start():
    """The one-configuration baseline jits ``solver._loop``'s body on its own; after XLA's
    dead-code elimination (the lowering) it must not hold the random start (threefry), as
    it did when the stopping threshold gtol·‖∇₀‖ was closed over instead of carried."""
    import jax

    static = dict(d=4, m=2, optimizer="adam", max_steps=10, memory_size=3,
                  dtype=jnp.dtype("float32"))
    p = (jnp.asarray([50.0, 50.0, 10.0, 10.0]), 0.01, 0.001, 0.0, 0.01, 1e-6, 0.0)
    key = solver.start_key(0, 0)
    carry = solver._loop(key, *p, **static)[0]
    body = jax.jit(lambda c, k: solver._loop(k, *p, **static)[1](c))
    assert "threefry" not in body.lower(carry, key).as_text()
    start = jax.jit(lambda k: solver._loop(k, *p, **static)[0])
    assert "threefry" in start.lower(key).as_text()  # the check can see a start
