import functools

import pytest

from ncjax.solver import _x64


@pytest.fixture
def x64():
    """Run the test body with float64 enabled in JAX."""
    with _x64(True):
        yield


@functools.cache
def convex_optimum(counts: tuple, lam: float, lam_b: float):
    """cvxpy's (P*, Z*, b*) for the convex form, cached across tests."""
    from ncjax.reference import solve_convex
    return solve_convex(list(counts), lam, lam_b)


def run_spec(tmp_path_factory, text: str, name: str):
    """Sweep the spec ``text`` in a fresh temporary folder; returns the run directory."""
    from ncjax import sweep
    d = tmp_path_factory.mktemp(name)
    (d / "spec.toml").write_text(text)
    sweep.run(d / "spec.toml", d / "run", quiet=True)
    return d / "run"
