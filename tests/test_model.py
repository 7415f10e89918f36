"""The objectives against independent routes: plain numpy loops and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncjax import losses, model, natural
from ncjax.problem import Problem, from_lam


def _naive_F(W, H, b, n_k, lam_W, lam_H, lam_b):
    """DESIGN.md §1 written as loops over samples, in numpy."""
    K, m, _ = H.shape
    N = n_k.sum()
    total = 0.0
    for k in range(K):
        for i in range(m):
            u = W @ H[k, i] + b
            ce = np.log(np.sum(np.exp(u - u.max()))) + u.max() - u[k]
            total += (n_k[k] / m) * ce / N
            total += 0.5 * lam_H * (n_k[k] / m) * H[k, i] @ H[k, i]
    return total + 0.5 * lam_W * np.sum(W**2) + 0.5 * lam_b * b @ b


def _random_point(K=4, m=3, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(K, d)), rng.normal(size=(K, m, d)), rng.normal(size=K),
            rng.uniform(5, 500, size=K))


def test_objective_matches_loops(x64):
    W, H, b, n = _random_point()
    got = model.ufm_objective(model.Params(W, H, b), Problem(n, 0.3, 0.02, 0.1))
    np.testing.assert_allclose(float(got), _naive_F(W, H, b, n, 0.3, 0.02, 0.1), rtol=1e-13)


def test_gradient_matches_finite_differences(x64):
    W, H, b, n = _random_point(seed=1)
    p = model.Params(*(jnp.asarray(a) for a in (W, H, b)))
    f = lambda q: model.ufm_objective(q, Problem(jnp.asarray(n), 0.3, 0.02, 0.1))
    g = jax.grad(f)(p)
    rng = np.random.default_rng(2)
    for _ in range(5):
        v = model.Params(*(rng.normal(size=a.shape) for a in (W, H, b)))
        eps = 1e-5
        plus = _naive_F(W + eps * v.W, H + eps * v.H, b + eps * v.b, n, 0.3, 0.02, 0.1)
        minus = _naive_F(W - eps * v.W, H - eps * v.H, b - eps * v.b, n, 0.3, 0.02, 0.1)
        fd = (plus - minus) / (2 * eps)
        ad = sum(float(jnp.vdot(gi, vi)) for gi, vi in zip(g, v))
        np.testing.assert_allclose(ad, fd, rtol=1e-7)


def test_natural_objective_is_F_of_the_mapped_point(x64):
    """natural.objective(V, U, b) = F(a V, u_{k,i}/(a sqrt(w_k)), b) by the numpy
    loops, and its gradient matches finite differences of that composition."""
    V, U, b, n = _random_point(K=5, m=3, d=4, seed=3)
    lam_W, lam_H, lam_b = 0.3, 0.02, 0.1
    a = (lam_H / lam_W) ** 0.25
    w = n / U.shape[1]
    F = lambda V, U, b: _naive_F(a * V, U / (a * np.sqrt(w))[:, None, None], b, n, lam_W,
                                 lam_H, lam_b)
    f = lambda x: natural.objective(x, Problem(jnp.asarray(n), lam_W, lam_H, lam_b))
    x = natural.Natural(*(jnp.asarray(t) for t in (V, U, b)))
    np.testing.assert_allclose(float(f(x)), F(V, U, b), rtol=1e-13)
    g = jax.grad(f)(x)
    rng = np.random.default_rng(4)
    for _ in range(5):
        v = [rng.normal(size=t.shape) for t in (V, U, b)]
        eps = 1e-5
        fd = (F(*(t + eps * s for t, s in zip((V, U, b), v)))
              - F(*(t - eps * s for t, s in zip((V, U, b), v)))) / (2 * eps)
        ad = sum(float(jnp.vdot(gi, vi)) for gi, vi in zip(g, v))
        np.testing.assert_allclose(ad, fd, rtol=1e-7)


def test_cross_entropy_is_stable_for_huge_logits(x64):
    u = jnp.array([1e4, 0.0, -1e4])
    np.testing.assert_allclose(losses.cross_entropy(u, 0), 0.0, atol=1e-12)
    np.testing.assert_allclose(losses.cross_entropy(u, 1), 1e4, rtol=1e-12)
    assert np.isfinite(losses.cross_entropy(jnp.float32(1e30) * jnp.ones(3), 0))


def test_convex_objective_matches_numpy(x64):
    rng = np.random.default_rng(3)
    K = 5
    Z, b, n = rng.normal(size=(K, K)), rng.normal(size=K), rng.uniform(1, 100, size=K)
    lam, lam_b = 0.01, 0.2
    ce = [np.log(np.sum(np.exp(Z[:, k] + b))) - Z[k, k] - b[k] for k in range(K)]
    want = (np.dot(n, ce) / n.sum() + lam * np.linalg.svd(Z @ np.diag(np.sqrt(n)),
            compute_uv=False).sum() + lam_b / 2 * b @ b)
    got = model.convex_objective(Z, b, from_lam(n, lam, lam_b))
    np.testing.assert_allclose(float(got), want, rtol=1e-13)


@pytest.mark.parametrize("seed", range(3))
def test_convex_form_lower_bounds_the_ufm(x64, seed):
    """P(W H̄ᵀ, b) ≤ F(W, H, b) at any point (Jensen on CE, nuclear norm ≤ the penalty)."""
    W, H, b, n = _random_point(K=4, m=3, d=6, seed=seed)
    lam_W, lam_H = 0.05, 0.2
    F = model.ufm_objective(model.Params(W, H, b), Problem(n, lam_W, lam_H, 0.1))
    P = model.convex_objective(model.mean_logits(W, H), b,
                               from_lam(n, np.sqrt(lam_W * lam_H), 0.1))
    assert float(P) <= float(F)


def test_gradient_of_the_step_holds_no_scatter():
    """CE picks u_k by a mask: the gradient JAX hands to XLA has no scatter-add (the
    backward of a gather, an extra pass over the logits on a GPU; benchmarks/RESULTS.md)."""
    n = jnp.array([50.0, 50.0, 10.0])
    prob = Problem(n, 0.01, 0.002, 0.0)
    x = natural.init(jax.random.key(0), prob, d=4, m=2, dtype=jnp.float32)
    f = jax.vmap(jax.grad(lambda x: natural.objective(x, prob)))
    xb = jax.tree.map(lambda a: jnp.stack([a, a]), x)
    text = jax.jit(f).lower(xb).as_text()
    assert "scatter" not in text and "dot_general" in text
