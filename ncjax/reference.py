"""Independent reference: the convex form of DESIGN.md §1 solved by cvxpy (Clarabel).

    min_{Z, b} (1/N) Σ_k n_k ℓ(z_k + b, k) + λ ‖Z D^{1/2}‖_* + (λ_b/2)‖b‖²

(or, without a bias, the same with b = 0 and no λ_b term), for the losses of DESIGN.md
§1b by name, with u = z_k + b and π = n/N:

    "ce"               log_sum_exp(u) − u_k
    "label_smoothing"  log_sum_exp(u) − (1 − alpha) u_k − (alpha/K) Σ_j u_j
    "weighted_ce"      weights_k (log_sum_exp(u) − u_k)
    "logit_adjusted"   log_sum_exp(u + tau log π) − u_k − tau log π_k
    "vs"               log_sum_exp(Δ u + tau log π) − Δ_k u_k − tau log π_k,
                       Δ_j = (n_j/max n)^gamma
    "mse"              ½ ‖u − e_k‖²

written with cvxpy atoms only (log_sum_exp, sum_squares, normNuc, affine terms; the
weights, Δ and log π numpy constants computed here), nothing else from ncjax: the tests
check ``ncjax.convex`` against it and the benchmarks time it as the way one solves the
convex form today. cvxpy and clarabel are test-only dependencies (``pip install
'ncjax[test]'``), imported when called. The variable is Y = Z D^{1/2} (so the nuclear norm
acts on a variable), Z = Y D^{-1/2}: Clarabel then reaches a 1e-10 gap on every tested
setting (on Z itself it stalls at "optimal_inaccurate" for some, e.g. the balanced Z = 0
case).
"""

from __future__ import annotations

import numpy as np


def sample_loss(name, u, k, n_k, params):
    """ℓ(u, k) of the loss ``name`` (module docstring) as a cvxpy expression; u (K,) an
    expression, n_k the counts, params the loss's parameters (a dict)."""
    import cvxpy as cp

    K = n_k.size
    log_pi = np.log(n_k / n_k.sum())
    if name == "mse":
        return 0.5 * cp.sum_squares(u - np.eye(K)[k])
    if name == "label_smoothing":
        a = float(params["alpha"])
        return cp.log_sum_exp(u) - (1 - a) * u[k] - a / K * cp.sum(u)
    if name == "weighted_ce":
        return float(np.asarray(params["weights"])[k]) * (cp.log_sum_exp(u) - u[k])
    if name in ("logit_adjusted", "vs"):
        delta = (n_k / n_k.max()) ** float(params.get("gamma", 0.0))
        s = float(params["tau"]) * log_pi
        w = cp.multiply(delta, u) + s
        return cp.log_sum_exp(w) - w[k]
    if name == "ce":
        return cp.log_sum_exp(u) - u[k]
    raise ValueError(f"unknown loss {name!r}")


def problem(n_k, lam, lam_b, bias=True, loss="ce", params=None):
    """The cvxpy problem for one configuration: (problem, Z, b), Z (K, K) an expression
    with column k = z_k and b a variable (K,), or the constant 0 without a bias."""
    import cvxpy as cp

    n_k = np.asarray(n_k, dtype=np.float64)
    K = n_k.size
    N = n_k.sum()
    Y = cp.Variable((K, K))
    b = cp.Variable(K) if bias else cp.Constant(np.zeros(K))
    Z = Y @ np.diag(1 / np.sqrt(n_k))
    data = sum(n_k[k] / N * sample_loss(loss, Z[:, k] + b, k, n_k, params or {})
               for k in range(K))
    obj = data + lam * cp.normNuc(Y)
    if bias and lam_b > 0:
        obj = obj + lam_b / 2 * cp.sum_squares(b)
    return cp.Problem(cp.Minimize(obj)), Z, b


# Clarabel's settings tried in turn until one reports the problem solved: its defaults,
# then without its equilibration, which on some settings stalls it at "optimal_inaccurate"
# (e.g. 3×500 + 7×50, λ = 0.00386, λ_b = 0.01, cvxpy 1.9.3 with Clarabel 0.11.1).
ATTEMPTS = ({}, {"equilibrate_enable": False})


def solve(prob, tol):
    """Solve ``prob`` with Clarabel to absolute and relative gap and feasibility ``tol``
    (settings of ``ATTEMPTS`` in turn, until one reports "optimal"); returns cvxpy's
    status string."""
    import cvxpy as cp

    for extra in ATTEMPTS:
        prob.solve(solver=cp.CLARABEL, tol_gap_abs=tol, tol_gap_rel=tol, tol_feas=tol,
                   max_iter=500, **extra)
        if prob.status == "optimal":
            break
    return prob.status


def solve_convex(n_k, lam, lam_b, *, tol=1e-10, bias=True, loss="ce", params=None):
    """Returns (P*, Z*, b*) in float64, Z* (K, K) with column k = z_k, for the loss
    ``loss`` with ``params`` (module docstring); raises unless Clarabel reports the
    problem solved to ``tol``."""
    prob, Z, b = problem(n_k, lam, lam_b, bias, loss, params)
    status = solve(prob, tol)
    if status != "optimal":
        raise RuntimeError(f"cvxpy: {status}")
    return float(prob.value), np.asarray(Z.value), np.asarray(b.value)
