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
