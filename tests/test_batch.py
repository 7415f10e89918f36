"""One vmapped program for a batch: a configuration's result does not depend on its
batch, values recompile nothing, and a NaN stays in its own configuration."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import ncjax
from ncjax import dtypes
from ncjax import batching, model, natural, profiles, solver
from ncjax.problem import Problem
from ncjax.solver import ufm_program
from tests.conftest import forced_devices_env


def _batch(B, rng):
    K_A = rng.choice([3, 5], size=B)
    n_A = rng.uniform(200, 2000, size=B)
    n_B = rng.uniform(20, 200, size=B)
    counts = np.stack([profiles.two_cluster(a, na, 10 - a, nb)
                       for a, na, nb in zip(K_A, n_A, n_B)])
    lam = rng.uniform(0.3, 3.0, size=B) * np.sqrt(counts.min(1)) / counts.sum(1)
    lam_W = rng.uniform(0.001, 0.1, size=B)
    return counts, lam_W, lam**2 / lam_W, rng.choice([0.0, 0.01], size=B)


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-6), ("float64", 1e-12)])
def test_alone_equals_inside_a_batch_of_32(dtype, rtol):
    counts, lam_W, lam_H, lam_b = _batch(32, np.random.default_rng(0))
    seeds = np.arange(1000, 1032)
    batch = ncjax.solve(counts, lam_W, lam_H, lam_b, seed=seeds, dtype=dtype)
    assert batch.converged.all()
    for i in (0, 17, 31):
        alone = ncjax.solve(counts[i], lam_W[i], lam_H[i], lam_b[i], seed=seeds[i], dtype=dtype)
        np.testing.assert_allclose(alone.objective, batch.objective[i], rtol=rtol)


def test_groups_of_the_factored_solver_do_not_change_results():
    """pool = 3 runs 11 configurations as 4 groups of 3 (``lax.map``; the batch padded to
    12 by ``batching.layout``), pool = 11 as one batched loop: the same solves by two
    compiled programs, F to rounding (float64) and Z to the stopping tolerance: the layout
    may round differently and a path then take a few steps more or fewer (jax 0.11.2,
    the suite's XLA flags: 4 of the 11 by up to 5 steps, Z within 2.3e-8 of max |Z| 3.9,
    every ‖∇F‖ < 5e-10)."""
    counts, lam_W, lam_H, lam_b = _batch(11, np.random.default_rng(5))
    kw = dict(seed=np.arange(11), dtype="float64")
    before = ufm_program._cache_size()
    one = ncjax.solve(counts, lam_W, lam_H, lam_b, pool=11, **kw)
    groups = ncjax.solve(counts, lam_W, lam_H, lam_b, pool=3, **kw)
    assert ufm_program._cache_size() - before == 2
    assert one.converged.all() and list(groups.status) == list(one.status)
    np.testing.assert_allclose(groups.objective, one.objective, rtol=1e-12)
    np.testing.assert_allclose(groups.Z, one.Z, rtol=1e-6, atol=1e-7)


def test_layout_pads_a_batch_to_equal_groups():
    """``batching.layout``: every device gets the same number of configurations, in groups
    of at most the pool, all of one size (one compiled loop), with fewer padding rows than
    groups; the padded batch is laid out as itself (a sweep pads its chunks with it)."""
    cpu = jax.devices("cpu")[0]
    for n in (1, 3, 4):
        for B in range(1, 70):
            for p in range(1, 10):
                B_pad, s = batching.layout(B, [cpu] * n, "ufm", p)
                L = B_pad // n
                assert B_pad == n * L >= B and L % s == 0 and s <= p
                assert L - -(-B // n) < L // s  # padding beyond the devices' < groups
                assert batching.layout(B_pad, [cpu] * n, "ufm", p) == (B_pad, s)
                assert batching.layout(B, [cpu] * n, "convex", p) == (n * -(-B // n),
                                                                       min(p, -(-B // n)))
    assert batching.layout(11, [cpu], "ufm", None) == (12, 4)  # UFM_POOL["cpu"] = 4
    assert batching.layout(5, [cpu], "ufm", None) == (6, 3)
    # the convex pool: an eighth of a device's batch, at least 16, at most 512
    for B, slots in ((10, 10), (40, 16), (256, 32), (1000, 125), (4096, 512), (16384, 512)):
        assert batching.layout(B, [cpu], "convex", None) == (B, slots)
    assert batching.layout(1000, [cpu] * 2, "convex", None) == (1000, 63)


def test_a_batch_that_groups_do_not_divide_compiles_one_loop():
    """11 configurations in groups of at most 3 lower to as many while-loops as 12 do
    (the map over the groups and the loop inside it); an unequal last group would be a
    second copy of the loop."""
    def whiles(B):
        counts, lam_W, lam_H, lam_b = _batch(B, np.random.default_rng(0))
        problem, per, static, _ = solver.prepare(
            counts, lam_W, lam_H, lam_b, d=None, m=1, seed=0, convention="half",
            optimizer="adam", learning_rate=0.1, max_steps=10, gtol=None, ftol=None,
            dtype="float32", memory_size=10, key_index=0, method="ufm", gap_tol=None,
            pool=3)
        fn, args, kwargs = solver.program(problem, per, static, jax.devices()[:1])
        return fn.lower(*args, **kwargs).as_text().count("stablehlo.while")
    assert whiles(11) == whiles(12) >= 2


@pytest.mark.parametrize("optimizer, gtol, max_steps", [
    ("adam", [1e-1, 3e-2, 1e-2, 3e-3, 0.0], 200),
    ("lbfgs", [1e-1, 1e-3, 1e-5, 1e-2, 0.0], 60)])
def test_stopped_at_different_steps_equals_each_alone(optimizer, gtol, max_steps):
    """A stopped configuration keeps only its iterate and stopping state (``loop.FREEZE``;
    Adam's moments, L-BFGS's line search and memory, and ∇F go on changing): five
    configurations that stop at five different steps, in one group and in groups of 2, each
    give its solve alone (B = 1: nothing to freeze), float64 to rounding. gap_tol = 1: the
    loose gtols stop the optimiser far from the optimum (gaps up to ~0.25 of F), and this
    test is about the loop that stopped them, so no certificate may send a configuration
    on to the float64 convex route (``Result.finished``), whose steps are not the loop's."""
    counts, lam_W, lam_H, lam_b = _batch(5, np.random.default_rng(3))
    gtol = np.array(gtol)  # the last runs to max_steps
    kw = dict(dtype="float64", optimizer=optimizer, learning_rate=0.1, max_steps=max_steps,
              gap_tol=1.0)
    alone = [ncjax.solve(counts[i], lam_W[i], lam_H[i], lam_b[i], seed=i, gtol=gtol[i], **kw)
             for i in range(5)]
    assert not any(a.finished for a in alone)
    assert len({int(a.steps) for a in alone}) == 5
    assert [a.status for a in alone] == ["converged"] * 4 + ["max_steps"]
    for pool in (5, 2):
        batch = ncjax.solve(counts, lam_W, lam_H, lam_b, seed=np.arange(5), gtol=gtol,
                            pool=pool, **kw)
        assert not batch.finished.any()
        for i, a in enumerate(alone):
            assert (batch.steps[i], batch.status[i]) == (a.steps, a.status)
            np.testing.assert_allclose(batch.objective[i], a.objective, rtol=1e-12)
            np.testing.assert_allclose(batch.grad_norm[i], a.grad_norm, rtol=1e-9, atol=1e-13)
            np.testing.assert_allclose(batch.W[i], a.W, rtol=1e-9, atol=1e-12)


def test_new_values_do_not_recompile():
    before = ufm_program._cache_size()
    rng = np.random.default_rng(1)
    for _ in range(3):  # new λ, counts, λ_b and seeds, same shapes
        ncjax.solve(*_batch(8, rng), seed=rng.integers(0, 100, size=8))
    assert ufm_program._cache_size() - before == 1


def test_a_diverging_configuration_leaves_the_others_untouched():
    """Gradient descent with a huge step in the middle configuration overflows it."""
    n = profiles.two_cluster(5, 500, 5, 100)
    counts = np.stack([n, n, n])
    kw = dict(optimizer="gd", max_steps=200, seed=[0, 1, 2], dtype="float64")
    bad = ncjax.solve(counts, 0.01, 1e-3, 0.0, learning_rate=[1.0, 1e8, 1.0], **kw)
    good = ncjax.solve(counts, 0.01, 1e-3, 0.0, learning_rate=[1.0, 1.0, 1.0], **kw)
    assert list(bad.status) == ["max_steps", "diverged", "max_steps"]
    assert not bad.converged[1]
    for i in (0, 2):
        np.testing.assert_allclose(bad.objective[i], good.objective[i], rtol=1e-12)
        np.testing.assert_allclose(bad.Z[i], good.Z[i], rtol=1e-12)
    # the diverged one keeps its last finite iterate, with that point's F and ‖∇F‖:
    # recomputed here from (W, H, b) by the model's objective and autodiff in the natural
    # coordinates (V = W/a, u = a sqrt(w_k) h, a = (λ_H/λ_W)^{1/4})
    assert np.isfinite(bad.objective[1]) and np.isfinite(bad.Z[1]).all()
    assert 1 <= bad.steps[1] < 200
    with dtypes.x64(True):
        a = (1e-3 / 0.01) ** 0.25
        x = natural.Natural(bad.W[1] / a, bad.H[1] * a * np.sqrt(n / 1)[:, None, None],
                            bad.b[1])
        prob = Problem(n, 0.01, 1e-3, 0.0)
        F = lambda x: model.ufm_objective(natural.to_params(x, prob), prob)
        value, grad = jax.jit(jax.value_and_grad(F))(x)
        gnorm = np.sqrt(sum(float(np.sum(np.asarray(g) ** 2)) for g in grad))
    np.testing.assert_allclose(bad.objective[1], float(value), rtol=1e-10)
    np.testing.assert_allclose(bad.grad_norm[1], gnorm, rtol=1e-6)


def test_convex_method_on_four_devices_equals_one(tmp_path):
    """method="convex" shards the batch with shard_map (one pool per device): 10
    configurations (padded to 12) on 4 forced CPU devices = on 1, objective to 1e-12,
    Z to 1e-6 (another batch layout rounds differently in flat directions)."""
    code = """
import numpy as np, ncjax, jax
c = np.array([[500.0] * 5 + [100.0] * 5] * 10)
lam = np.sqrt(100) / 3000 * np.linspace(0.5, 2, 10)
r = ncjax.solve(c, 0.01, lam**2 / 0.01, method="convex", dtype="float64", pool=2)
np.savez(OUT, objective=r.objective, Z=r.Z, n=jax.local_device_count())
"""
    for n in (1, 4):
        env = forced_devices_env(n)
        out = tmp_path / f"{n}.npz"
        p = subprocess.run([sys.executable, "-c", code.replace("OUT", repr(str(out)))],
                           env=env, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
    one, four = np.load(tmp_path / "1.npz"), np.load(tmp_path / "4.npz")
    assert int(one["n"]) == 1 and int(four["n"]) == 4
    np.testing.assert_allclose(four["objective"], one["objective"], rtol=1e-12)
    np.testing.assert_allclose(four["Z"], one["Z"], atol=1e-6)


def test_repeated_float64_lbfgs_solves_finish():
    """jax 0.10.2's CPU runtime wedged (idle threads, no result, forever) on the second or
    third call of this solve (24 float64 L-BFGS configurations in groups of 4, metrics in
    the same program) until ncjax turned off XLA's concurrency-optimised scheduler
    (docs/known-issues.md; now ``ncjax.configure_cpu()``, called before the first JAX
    computation, since importing ncjax changes no environment): six calls in a fresh
    process with XLA_FLAGS unset must finish, with the flags ``configure_cpu`` set."""
    code = """
import os, numpy as np, ncjax
ncjax.configure_cpu()
counts = np.array([500.0] * 5 + [100.0] * 5)
lam = np.repeat([0.5, 0.9, 0.99, 1.01, 1.1, 2.0], 4) * np.sqrt(100) / counts.sum()
for _ in range(6):
    r = ncjax.solve(counts, 0.01, lam**2 / 0.01, 0.0, seed=np.tile(np.arange(4), 6),
                    gtol=1e-7 / 0.35, ftol=0.0, max_steps=20000, dtype="float64", pool=4)
    assert r.converged.all()
print(os.environ["XLA_FLAGS"])
"""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["--xla_cpu_multi_thread_eigen=false",
                                "--xla_cpu_enable_concurrency_optimized_scheduler=false"]


def test_the_convex_mse_solve_that_wedged_finishes():
    """jax 0.10.2's LAPACK kernels split a batch over XLA's intra-op pool and block a pool
    thread meanwhile; with both threads of a 2-core machine in such kernels (an SVD and an
    LU under gdb) the second call of this solve never returned, flags set or not
    (docs/known-issues.md). ``configure_cpu`` gives the pool one thread: three calls in a
    fresh process must finish, and the pool must have one thread."""
    code = """
import os, numpy as np, ncjax
from ncjax.bench_problem import grid
ncjax.configure_cpu()
counts, lam_W, lam_H = grid(24)
for _ in range(3):
    r = ncjax.solve(counts, lam_W, lam_H, 0.0, loss="mse", method="convex", dtype="float64",
                    processes=1)
    assert r.converged.all()
names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
print(names.count("tf_XLAEigen"))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "NPROC")}
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                       text=True, timeout=180)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["1"]
