"""``ncjax.svt``: both routes of the SVT against numpy's SVD soft-threshold, the prox's
optimality condition, and the switch (the Gram route's failure where ``prox`` must not take
it)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncjax import svt


def _reference(A, tau):
    """U max(S − τ, 0) Vᵀ by numpy's SVD, one matrix at a time."""
    out = []
    for a, t in zip(A, tau):
        U, S, Vt = np.linalg.svd(a)
        out.append((U * np.maximum(S - t, 0.0)) @ Vt)
    return np.stack(out)


def _matrices(rng, B, K, spectrum):
    """B random K × K matrices U diag(spectrum) Vᵀ with Haar-random U, V."""
    out = []
    for _ in range(B):
        U, _ = np.linalg.qr(rng.standard_normal((K, K)))
        V, _ = np.linalg.qr(rng.standard_normal((K, K)))
        out.append((U * spectrum) @ V.T)
    return np.stack(out)


@pytest.mark.parametrize("route", [svt.by_svd, svt.by_gram, svt.prox], ids=["svd", "gram", "prox"])
@pytest.mark.parametrize("K", [2, 10, 20])
def test_routes_against_numpy(route, K, x64):
    rng = np.random.default_rng(K)
    # a rank-deficient one (two zero singular values), a generic one, τ above every s
    spectra = [np.r_[np.linspace(3, 1, K - 2), 0, 0], rng.uniform(0.1, 5, K),
               rng.uniform(0.1, 0.5, K)]
    A = np.concatenate([_matrices(rng, 1, K, s) for s in spectra])
    tau = np.array([0.7, 1.3, 0.6])
    want = _reference(A, tau)
    got = jax.jit(jax.vmap(route))(jnp.asarray(A), jnp.asarray(tau))
    np.testing.assert_allclose(got, want, atol=1e-12 * np.abs(A).max())
    np.testing.assert_array_equal(np.asarray(got[2]), 0.0)
    one = jax.jit(route)(jnp.asarray(A[1]), jnp.asarray(tau[1]))  # unbatched
    np.testing.assert_allclose(one, want[1], atol=1e-12 * np.abs(A).max())


def test_prox_optimality_condition(x64):
    """X = prox(A, τ) iff (A − X)/τ is a subgradient of ‖·‖_* at X: with X = U_r S_r V_rᵀ,
    A − X = τ (U_r V_rᵀ + R), U_rᵀR = 0, R V_r = 0, ‖R‖_op ≤ 1."""
    rng = np.random.default_rng(0)
    A = _matrices(rng, 4, 8, np.geomspace(4, 0.01, 8))
    tau = np.full(4, 0.3)
    X = np.asarray(jax.vmap(svt.prox)(jnp.asarray(A), jnp.asarray(tau)))
    for a, x, t in zip(A, X, tau):
        U, S, Vt = np.linalg.svd(x)
        r = int(np.sum(S > 1e-10))
        Ur, Vr = U[:, :r], Vt[:r].T
        R = (a - x) / t - Ur @ Vr.T
        np.testing.assert_allclose(Ur.T @ R, 0.0, atol=1e-10)
        np.testing.assert_allclose(R @ Vr, 0.0, atol=1e-10)
        assert np.linalg.norm(R, 2) <= 1 + 1e-10


def test_switch_falls_back_where_the_gram_route_is_wrong(x64):
    """s_max/τ = 1e8: the Gram route loses the singular value 1.5 above τ = 1 to the
    squared condition; ``prox`` sees τ < GRAM_RATIO·‖A‖_F and takes the SVD for the whole
    batch, the well-conditioned matrix beside it included."""
    rng = np.random.default_rng(1)
    bad = _matrices(rng, 1, 6, np.array([1e8, 1e7, 1e3, 10, 1.5, 0.1]))
    good = _matrices(rng, 1, 6, np.linspace(5, 1, 6))
    A, tau = np.concatenate([bad, good]), np.array([1.0, 1.0])
    want = _reference(A, tau)
    gram = np.asarray(jax.vmap(svt.by_gram)(jnp.asarray(A), jnp.asarray(tau)))
    U, S, Vt = np.linalg.svd(want[0])
    assert np.abs(gram[0] - want[0]).max() > 1e-3  # the Gram route is wrong here
    assert not bool(svt.gram_ok(jnp.asarray(A), jnp.asarray(tau)))
    assert bool(svt.gram_ok(jnp.asarray(A[1:]), jnp.asarray(tau[1:])))
    got = np.asarray(jax.jit(jax.vmap(svt.prox))(jnp.asarray(A), jnp.asarray(tau)))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15 * 1e8 * 10)
    np.testing.assert_allclose(got[1], want[1], atol=1e-13)


def test_float32_takes_the_svd():
    A = jnp.asarray(np.random.default_rng(2).standard_normal((3, 5, 5)), jnp.float32)
    tau = jnp.full((3,), 0.5, jnp.float32)
    assert not bool(svt.gram_ok(A, tau))
    np.testing.assert_array_equal(jax.vmap(svt.prox)(A, tau), jax.vmap(svt.by_svd)(A, tau))


def test_nested_vmap_is_one_batch(x64):
    """vmap over vmap: the same values as the flat batch (the rule re-enters ``prox``)."""
    rng = np.random.default_rng(3)
    A = rng.standard_normal((2, 3, 4, 4))
    tau = rng.uniform(0.1, 1.0, (2, 3))
    got = jax.jit(jax.vmap(jax.vmap(svt.prox)))(jnp.asarray(A), jnp.asarray(tau))
    want = _reference(A.reshape(6, 4, 4), tau.ravel()).reshape(2, 3, 4, 4)
    np.testing.assert_allclose(got, want, atol=1e-12)
    # an unbatched τ broadcast against a batched A
    got = jax.vmap(svt.prox, in_axes=(0, None))(jnp.asarray(A[0]), jnp.asarray(0.5))
    np.testing.assert_allclose(got, _reference(A[0], np.full(3, 0.5)), atol=1e-12)
