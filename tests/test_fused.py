"""benchmarks/experiments/fused.py: the solver's Adam loop with each step in one Pallas
kernel (interpret mode here) is the solver's own Adam loop (optax.adam on autodiff's
gradient, XLA), step for step: the same stopping steps and statuses, the same iterates, F
and ‖∇F‖ in float64 to rounding, a diverged configuration's last finite iterate kept; and
it lowers for CUDA."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.experiments import fused
from ncjax import dtypes, loop, natural, stopping
from ncjax.problem import Problem
from ncjax.validate import InputError

B, K, d, m = 5, 4, 16, 8


def _args(dtype=jnp.float64, lr=(1e-2, 3e-2, 1e-1, 1e200, 2e152)):
    """(keys, problems, learning rate, gtol, ftol) of B configurations, (B, ...)."""
    rng = np.random.default_rng(0)
    a = lambda x: jnp.asarray(x, dtype)
    keys = jax.vmap(natural.start_key)(jnp.arange(B, dtype=jnp.uint32),
                                       jnp.zeros(B, jnp.uint32))
    problems = Problem(a(rng.integers(50, 500, size=(B, K))), a(np.full(B, 0.01)),
                       a(rng.uniform(1e-4, 1e-2, B)), a([0.0, 0.01, 0.1, 0.0, 0.0]))
    return (keys, problems,
            # the learning rates: configuration 3 overflows ‖U‖² at its first step,
            # configuration 4 only after ~100 (its Adam steps add up)
            a(lr),
            a([1e-3, 1e-4, 1e-2, 1e-3, 1e-3]),  # gtol; configuration 2 reaches it
            a([0.0, 1e-2, 0.0, 0.0, 0.0]))  # ftol; configuration 1 stops on it


def _settings(max_steps, dtype="float64", d=d, m=m, optimizer="adam"):
    return loop.Settings(d, m, optimizer, max_steps, 1, jnp.dtype(dtype))


def test_fused_loop_is_the_solvers_adam_loop():
    # 8 rows a block, 2 blocks a program: each configuration's sums come from 2 programs
    kernel = fused.Settings(rows=8, per=2, interpret=True)
    s = _settings(300)
    with dtypes.x64(True):
        args = _args()
        want = jax.jit(lambda *a: loop.solve(*a, s))(*args)
        got = jax.jit(lambda *a: fused.solve(*a, s, kernel))(*args)
    x, value, gnorm, steps, status = (jax.device_get(a) for a in got)
    S = stopping
    assert list(status) == [S.MAX_STEPS, S.CONVERGED, S.CONVERGED, S.DIVERGED, S.DIVERGED]
    assert list(steps) == list(want[3])
    assert steps[0] == 300 and steps[1] % stopping.WINDOW == 0 and steps[1] < 300
    assert steps[3] == 1 and 50 < steps[4] < 300
    for a, b in zip(jax.tree.leaves((x, value, gnorm)), jax.tree.leaves(want[:3])):
        # to float64 rounding after 300 steps, on the scale of the array (jax 0.11.2 with
        # the suite's XLA flags: one entry of 2,048, 1.1e-4, off by 1.6e-16)
        np.testing.assert_allclose(a[:4], b[:4], rtol=1e-12,
                                   atol=1e-12 * np.abs(b[:4]).max())
        # 104 steps at ~1e148, where the gradient's rounding is the step's
        np.testing.assert_allclose(a[4], b[4], rtol=1e-9, atol=0)
    # the diverged ones keep their last finite iterate (the first: its start)
    assert all(np.isfinite(a[3:]).all() for a in jax.tree.leaves(x))
    np.testing.assert_array_equal(x.U[3], want[0].U[3])
    assert np.isfinite(value[3:]).all() and value[4] > 1e290


def _triton_calls(f, *args):
    """The Triton calls in ``f`` lowered for CUDA on an abstract H100 (jax ≥ 0.11 asks for
    a GPU to lower Pallas's Triton kernels; the abstract mesh stands in for one)."""
    gpu = jax.sharding.AbstractDevice("NVIDIA H100", None, "gpu")
    mesh = jax.sharding.AbstractMesh((1,), ("cfg",), (jax.sharding.AxisType.Auto,),
                                     abstract_device=gpu)
    with jax.sharding.use_abstract_mesh(mesh):
        text = jax.jit(f).trace(*args).lower(lowering_platforms=("cuda",)).as_text()
    return [line for line in text.splitlines() if "custom_call" in line and "triton" in line]


def test_fused_kernel_lowers_for_cuda():
    """Triton lowering on this CPU machine, for the reference shape (K m = 320 rows): the
    solver's loop under the default launch holds one Triton call, and so does the kernel
    under every launch the GPU benchmark compares (``fused.LAUNCHES``)."""
    args = _args(jnp.float32, lr=[1e-2] * B)
    args = (args[0], args[1]._replace(counts=jnp.full((B, 10), 100.0, jnp.float32))) + args[2:]
    s = _settings(10, "float32", d=64, m=32)
    f = lambda *a: fused.solve(*a, s, fused.Settings())
    assert len(_triton_calls(f, *args)) == 1
    sd = lambda *shape, t=jnp.float32: jax.ShapeDtypeStruct(shape, t)
    shapes = (sd(B, 2, 320, 64), sd(B, 320, 64), sd(B, 320, 64), sd(B, t=jnp.int32),
              sd(B, 10, 64), sd(B, 10), sd(B, 10, 64), sd(B, 10), sd(B, 10), sd(B, 5))
    for launch in fused.LAUNCHES:
        s = fused.Settings(*launch)
        step = lambda *a: fused.kernel_step(*a, settings=s)
        assert len(_triton_calls(step, *shapes)) == 1


def test_kernel_settings_are_checked():
    with pytest.raises(ValueError, match="do not tile"):
        fused.blocks(4, 8, 8, 3)  # 4 blocks of 8 rows, 3 a program
    with pytest.raises(InputError, match="Adam step"):
        fused.solve(*_args(jnp.float32, lr=[1e-2] * B),
                    _settings(5, "float32", optimizer="lbfgs"), fused.Settings(interpret=True))
