"""ncjax.trace: the per-step path of one solve, checked against the solver stopped at the
same step (gtol = ftol = 0, max_steps = S), a numpy evaluation of F at the random start,
and the definitions of NC1 and the minority spread evaluated with numpy."""

import jax
import numpy as np
import pytest

import ncjax
from ncjax import trace as tr
from ncjax.dtypes import x64
from ncjax import natural
from ncjax.problem import Problem

COUNTS = np.array([60.0, 60.0, 12.0, 12.0])  # K = 4, two clusters
N = COUNTS.sum()
LAM = 0.7 * np.sqrt(12) / N  # below λ*: the minority stays apart
LAM_W = 0.01
LAM_H = LAM**2 / LAM_W


def _F(W, H, b, n, lam_W, lam_H, lam_b):
    """The UFM objective (DESIGN.md §1, m features of weight n_k/m), plain numpy."""
    K, m, _ = H.shape
    logits = np.einsum("kid,cd->kic", H, W) + b
    mx = logits.max(-1, keepdims=True)
    lse = np.log(np.exp(logits - mx).sum(-1)) + mx[..., 0]
    ce = lse - logits[np.arange(K), :, np.arange(K)]  # (K, m)
    w = n / m
    return ((w[:, None] * ce).sum() / n.sum() + 0.5 * lam_W * (W**2).sum()
            + 0.5 * lam_H * (w[:, None, None] * H**2).sum() + 0.5 * lam_b * (b**2).sum())


def _nc1(H, n):
    """NC1 = Tr(Σ_W Σ_B^†)/K from its definition (sample-weighted Σ_W, class-equal Σ_B)."""
    K, m, _ = H.shape
    Hbar = H.mean(1)
    dev = H - Hbar[:, None]
    Sw = np.einsum("k,kid,kie->de", n / (m * n.sum()), dev, dev)
    cen = Hbar - Hbar.mean(0)
    return np.trace(Sw @ np.linalg.pinv(cen.T @ cen / K, rcond=1e-8)) / K


def test_lbfgs_trace_ends_where_the_solver_stops():
    S, seed, key_index, m = 25, 3, 7, 2
    t = tr.trace(COUNTS, LAM_W, LAM_H, 0.0, steps=S, d=4, m=m, seed=seed,
                 key_index=key_index, dtype="float64")
    assert t.objective.shape == t.nc1.shape == (S + 1,)
    r = ncjax.solve(COUNTS, LAM_W, LAM_H, 0.0, d=4, m=m, seed=seed, key_index=key_index,
                    dtype="float64", gtol=0.0, ftol=0.0, max_steps=S)
    assert r.status == "max_steps" and r.steps == S
    assert t.objective[-1] == pytest.approx(r.objective, rel=1e-10)
    # the zoom line search only accepts decreasing steps, and it moved
    assert np.all(np.diff(t.objective) <= 1e-13 * np.abs(t.objective[:-1]))
    assert t.objective[-1] < t.objective[0] - 0.1
    # NC1 after S steps from the solver's own H, by the definition
    assert t.nc1[-1] == pytest.approx(_nc1(np.asarray(r.H, float), COUNTS), rel=1e-6)
    assert t.nc1[0] > 100 * t.nc1[-1]  # NC1 emerges along the path
    # the start: F of the solver's random start, evaluated here with numpy
    with x64(True):
        key = jax.random.fold_in(jax.random.key(np.uint32(seed)), np.uint32(key_index))
        prob = Problem(COUNTS, LAM_W, LAM_H, 0.0)
        x0 = natural.init(key, prob, d=4, m=m, dtype=np.float64)
        W, H, b = (np.asarray(a) for a in natural.to_params(x0, prob))
    assert t.objective[0] == pytest.approx(_F(W, H, b, COUNTS, LAM_W, LAM_H, 0.0), rel=1e-12)
    assert t.nc1[0] == pytest.approx(_nc1(H, COUNTS), rel=1e-8)


def test_adam_trace_with_one_feature_records_the_minority_spread():
    S = 30
    t = tr.trace(COUNTS, LAM_W, LAM_H, 0.01, steps=S, d=4, m=1, seed=1, optimizer="adam",
                 learning_rate=0.05, dtype="float64")
    r = ncjax.solve(COUNTS, LAM_W, LAM_H, 0.01, d=4, m=1, seed=1, optimizer="adam",
                    learning_rate=0.05, dtype="float64", gtol=0.0, ftol=0.0, max_steps=S)
    assert r.status == "max_steps" and r.steps == S
    assert t.objective[-1] == pytest.approx(r.objective, rel=1e-10)
    assert np.isnan(t.nc1).all()  # m = 1: no within-class variability to measure
    z = np.asarray(r.Z, float)  # column k = z_k; minority = the two classes of 12
    spread = np.linalg.norm(z[:, 2] - z[:, 3]) / np.linalg.norm(z, axis=0).max()
    assert t.minority_spread_Z[-1] == pytest.approx(spread, rel=1e-8)


def test_trace_takes_one_configuration():
    with pytest.raises(ncjax.InputError, match="one configuration"):
        tr.trace(np.stack([COUNTS, COUNTS]), LAM_W, LAM_H, steps=3)
