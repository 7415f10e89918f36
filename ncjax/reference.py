"""Independent reference: the convex form of DESIGN.md §1 solved by cvxpy (Clarabel).

    min_{Z, b} (1/N) Σ_k n_k CE(z_k + b, k) + λ ‖Z D^{1/2}‖_* + (λ_b/2)‖b‖²

(or, without a bias, the same with b = 0 and no λ_b term)

written with cvxpy atoms only (log_sum_exp, normNuc), nothing else from ncjax: the tests
check ``ncjax.convex`` against it and the benchmarks time it as the way one solves the
convex form today. cvxpy and clarabel are test-only dependencies (``pip install
'ncjax[test]'``), imported when called. The variable is Y = Z D^{1/2} (so the nuclear norm
acts on a variable), Z = Y D^{-1/2}: Clarabel then reaches a 1e-10 gap on every tested
setting (on Z itself it stalls at "optimal_inaccurate" for some, e.g. the balanced Z = 0
case).
"""

from __future__ import annotations

import numpy as np


def problem(n_k, lam, lam_b, bias=True):
    """The cvxpy problem for one configuration: (problem, Z, b), Z (K, K) an expression
    with column k = z_k and b a variable (K,), or the constant 0 without a bias."""
    import cvxpy as cp

    n_k = np.asarray(n_k, dtype=np.float64)
    K = n_k.size
    N = n_k.sum()
    Y = cp.Variable((K, K))
    b = cp.Variable(K) if bias else cp.Constant(np.zeros(K))
    Z = Y @ np.diag(1 / np.sqrt(n_k))
    loss = sum(n_k[k] / N * (cp.log_sum_exp(Z[:, k] + b) - Z[k, k] - b[k]) for k in range(K))
    obj = loss + lam * cp.normNuc(Y)
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


def solve_convex(n_k, lam, lam_b, *, tol=1e-10, bias=True):
    """Returns (P*, Z*, b*) in float64, Z* (K, K) with column k = z_k; raises unless
    Clarabel reports the problem solved to ``tol``."""
    prob, Z, b = problem(n_k, lam, lam_b, bias)
    status = solve(prob, tol)
    if status != "optimal":
        raise RuntimeError(f"cvxpy: {status}")
    return float(prob.value), np.asarray(Z.value), np.asarray(b.value)
