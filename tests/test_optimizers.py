"""One optimiser protocol: a user's own optax transformation drives the factored solve,
and its optimum is the convex route's (an independent, certified solve)."""

import numpy as np
import optax
import pytest

import ncjax
from ncjax import optimizers


def test_a_users_optax_transformation_solves_the_ufm():
    counts = np.array([200.0, 200, 40, 40, 40])
    lam = 0.5 * np.sqrt(40) / counts.sum()
    tx = optax.chain(optax.clip_by_global_norm(10.0), optax.adamw(3e-2, weight_decay=0.0))
    r = ncjax.solve(counts, 0.01, lam**2 / 0.01, optimizer=tx, dtype="float64",
                    max_steps=20000, gtol=1e-8, gap_tol=1e-5)
    ref = ncjax.solve(counts, 0.01, lam**2 / 0.01, dtype="float64", method="convex")
    assert r.converged and not r.finished, r.status
    np.testing.assert_allclose(r.objective, ref.objective, rtol=1e-5)
    # the run is the transformation's own: Adam-like steps, not L-BFGS's few dozen
    lbfgs = ncjax.solve(counts, 0.01, lam**2 / 0.01, dtype="float64")
    assert r.steps > 5 * lbfgs.steps


def test_named_optimizers_and_refusals():
    assert isinstance(optimizers.build("adam", 1e-2, 10), optimizers.Optimizer)
    with pytest.raises(ncjax.InputError, match="optax.GradientTransformation"):
        ncjax.solve([10.0, 10.0], 0.1, 0.1, optimizer="newton")
