"""``ncjax.functional.solve``, the solve of one configuration as a pure function of arrays:
``jax.jit(jax.vmap(f))`` over a batch gives ``ncjax.solve``'s objectives (float64, to
1e-12) by both methods, and cvxpy's optimum to within its own certificate; the result is a
pytree of arrays with integer status codes; a new λ is a new value, not a new program; a
loosely stopped solve is "uncertified" where cvxpy says it is off by more than gap_tol."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ncjax
from ncjax import dtypes, functional, losses, natural, problem, stopping
from ncjax.names import STATUS_NAMES
from ncjax.reference import solve_convex
from ncjax.tolerances import GAP_RTOL
from tests.conftest import convex_optimum

# imbalanced counts (two clusters, a single minority class, one class against three), λ
# on both sides of the minority threshold sqrt(n_min)/N, free and penalised biases
COUNTS = np.array([[500.0, 500, 100, 100], [300, 300, 300, 30], [200, 50, 50, 50],
                   [1000, 20, 20, 20]])
LAM = np.array([0.5, 1.5, 0.8, 2.0]) * np.sqrt(COUNTS.min(1)) / COUNTS.sum(1)
LAM_W = np.array([0.01, 0.02, 0.005, 0.01])
LAM_H = LAM**2 / LAM_W
LAM_B = np.array([0.0, 0.01, 0.0, 0.1])
SEEDS = np.array([3, 1, 4, 1])
VS = dict(gamma=np.array([0.0, 0.5, 1.0, 0.3]), tau=np.array([1.0, 0.0, 0.5, -0.5]))
B = len(COUNTS)


def _problems(**kw):
    """The batch as float64 arrays (``problem.make``, then cast: x64 must be on)."""
    prob, _, _ = problem.make(COUNTS, LAM_W, LAM_H, LAM_B, **kw)
    return prob.astype(jnp.float64)


_convex = jax.jit(jax.vmap(functools.partial(functional.solve, method="convex")))
# gtol and gap_tol traced: the loose solve below reuses the program
_ufm = jax.jit(jax.vmap(lambda p, key, gtol, gap_tol: functional.solve(
    p, key, gtol=gtol, gap_tol=gap_tol)))


def _keys():
    """ncjax.solve's starts for SEEDS (key_index 0)."""
    return jax.vmap(natural.start_key)(jnp.asarray(SEEDS, jnp.uint32),
                                       jnp.zeros(B, jnp.uint32))


@pytest.fixture(scope="module")
def solved():
    """(functional, ncjax.solve) for: the VS loss with a bias ("convex"), CE without a bias
    ("convex"), CE with a bias ("ufm", from SEEDS)."""
    with dtypes.x64(True):
        vs = losses.vs(**VS)
        out = {
            "vs": (_convex(_problems(loss=vs)),
                   ncjax.solve(COUNTS, LAM_W, LAM_H, LAM_B, loss=vs, method="convex",
                               dtype="float64")),
            "nobias": (_convex(_problems(bias=False)),
                       ncjax.solve(COUNTS, LAM_W, LAM_H, LAM_B, bias=False, method="convex",
                                   dtype="float64")),
            "ufm": (_ufm(_problems(), _keys(), jnp.full(B, stopping.GTOL["float64"]),
                         jnp.full(B, GAP_RTOL["float64"])),
                    ncjax.solve(COUNTS, LAM_W, LAM_H, LAM_B, seed=SEEDS, dtype="float64")),
        }
    return jax.tree.map(np.asarray, out)


def _cvxpy(case, i):
    """cvxpy's P* of configuration i of a case (an independent solver of the convex form)."""
    n, lam, lam_b = COUNTS[i], float(LAM[i]), float(LAM_B[i])
    if case == "ufm":
        return convex_optimum(tuple(n), lam, lam_b)[0]
    if case == "nobias":
        return solve_convex(n, lam, lam_b, bias=False)[0]
    return solve_convex(n, lam, lam_b, loss="vs",
                        params={k: float(v[i]) for k, v in VS.items()})[0]


@pytest.mark.parametrize("case", ["vs", "nobias", "ufm"])
def test_jit_vmap_equals_ncjax_solve_and_cvxpy(solved, case):
    f, r = solved[case]
    assert (f.status == stopping.CONVERGED).all(), f.status
    assert list(r.status) == ["converged"] * B and not r.finished.any()
    np.testing.assert_allclose(f.objective, r.objective, rtol=1e-12, atol=0)
    for i in range(B):
        P = _cvxpy(case, i)
        # the certificate bounds F − F*; cvxpy's own tolerance is 1e-10
        assert -1e-9 * P <= f.objective[i] - P <= f.gap[i] + 1e-9 * P, (i, f.objective[i], P)
        assert f.gap[i] <= GAP_RTOL["float64"] * f.objective[i]


def test_the_result_is_a_pytree_of_arrays_with_integer_status(solved):
    f, r = solved["ufm"]
    assert isinstance(f, functional.Solution)
    leaves = jax.tree.leaves(f)
    assert leaves and all(isinstance(a, np.ndarray) and a.shape[0] == B for a in leaves)
    # jax.tree.map over it: take configuration 2 from every leaf, keys and shapes kept
    one = jax.tree.map(lambda a: a[2], f)
    assert one.W.shape == (4, 4) and one.H.shape == (4, 1, 4) and one.Z.shape == (4, 4)
    assert set(one.metrics) == set(r.metrics) and set(one.theory) == set(r.theory)
    np.testing.assert_allclose(one.Z, r.Z[2], rtol=1e-6, atol=1e-8)
    assert f.status.dtype == np.int32
    assert [STATUS_NAMES[s] for s in f.status] == list(r.status)
    # JAX's own functions map over it (a Result's strings would stop them)
    zeros = jax.tree.map(jnp.zeros_like, f)
    assert all(not np.asarray(a).any() for a in jax.tree.leaves(zeros))


def test_a_new_lambda_does_not_recompile():
    """λ is an array leaf of the problem: new values reuse the compiled program and give
    the new optimum (cvxpy's)."""
    with dtypes.x64(True):
        base = _problems(bias=False)
        _convex(base)  # compiled here or by the fixture
        before = _convex._cache_size()
        lam = 1.3 * LAM
        new = _convex(base._replace(lam_W=jnp.asarray(lam), lam_H=jnp.asarray(lam)))
        assert _convex._cache_size() == before
    for i in range(B):
        P = solve_convex(COUNTS[i], float(lam[i]), float(LAM_B[i]), bias=False)[0]
        np.testing.assert_allclose(float(new.objective[i]), P, rtol=1e-8)


def test_a_loose_stop_is_uncertified_where_it_is_off():
    """gtol = 0.3 stops L-BFGS early; with gap_tol = 1e-10 the certificate fails, and
    cvxpy confirms those points are more than 1e-10·F above the optimum."""
    with dtypes.x64(True):
        f = jax.tree.map(np.asarray, _ufm(_problems(), _keys(), jnp.full(B, 0.3),
                                          jnp.full(B, 1e-10)))
    assert (f.status == stopping.UNCERTIFIED).any(), f.status
    for i in range(B):
        P = convex_optimum(tuple(COUNTS[i]), float(LAM[i]), float(LAM_B[i]))[0]
        assert f.objective[i] - P <= f.gap[i] + 1e-9 * P  # the bound holds
        if f.status[i] == stopping.UNCERTIFIED:
            assert f.objective[i] - P > 1e-10 * f.objective[i]
        else:
            assert f.status[i] == stopping.CONVERGED and f.gap[i] <= 1e-10 * f.objective[i]


def test_float32_without_x64_certifies_in_float32():
    """Under a user's jit without x64 the certificate is computed in float32; it is still
    a bound, on cvxpy's optimum to float32's rounding."""
    prob, _, _ = problem.make(COUNTS[0], LAM_W[0], LAM_H[0], LAM_B[0])
    one = jax.tree.map(lambda a: jnp.asarray(a[0], jnp.float32), prob)
    f = jax.jit(functools.partial(functional.solve, method="convex"))(one)
    assert f.gap.dtype == jnp.float32 and f.objective.dtype == jnp.float32
    assert int(f.status) == stopping.CONVERGED
    P = convex_optimum(tuple(COUNTS[0]), float(LAM[0]), float(LAM_B[0]))[0]
    assert float(f.objective) - P <= float(f.gap) + 1e-6 * P
    np.testing.assert_allclose(float(f.objective), P, rtol=GAP_RTOL["float32"])


def test_convex_refuses_d_below_K_minus_1():
    prob, _, _ = problem.make(COUNTS[0], 0.01, 0.01)
    one = jax.tree.map(lambda a: a[0], prob)
    with pytest.raises(ncjax.InputError, match="d >= K - 1"):
        functional.solve(one, method="convex", d=2)
