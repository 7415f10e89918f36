"""Bad input gets one clear error (InputError from Python, exit 2 and one line from the
CLI) and never a traceback; d < K − 1 is allowed with a warning."""

import subprocess
import sys

import numpy as np
import pytest

import ncjax
from ncjax import profiles

GOOD = dict(counts=[500, 500, 100], lam_W=0.01, lam_H=0.001, lam_b=0.0)

BAD = [  # (override, words the message must contain)
    (dict(counts=[500, 0, 100]), "> 0"),
    (dict(counts=[500, -3, 100]), "> 0"),
    (dict(counts=[500, np.nan, 100]), "finite"),
    (dict(counts=[500, np.inf, 100]), "finite"),
    (dict(counts=[500]), "at least 2 classes"),
    (dict(counts="abc"), "numeric"),
    (dict(lam_W=-0.1), "lam_W must be >= 0"),
    (dict(lam_H=np.nan), "lam_H must be finite"),
    (dict(lam_b=np.inf), "lam_b must be finite"),
    (dict(lam_b=-1.0), "lam_b must be >= 0"),
    (dict(lam_W=0.0), "no minimiser"),
    (dict(counts=np.ones((3, 4)), lam_W=np.ones(2) * 0.01), "mismatched batch sizes"),
]


@pytest.mark.parametrize("override, words", BAD)
def test_bad_input_is_refused(override, words):
    args = {**GOOD, **override}
    with pytest.raises(ncjax.InputError, match=words):
        ncjax.solve(args["counts"], args["lam_W"], args["lam_H"], args["lam_b"])


@pytest.mark.parametrize("kw, words", [(dict(m=0), "m must be >= 1"),
                                       (dict(m=1.5), "m must be an integer"),
                                       (dict(d=0), "d must be >= 1"),
                                       (dict(convention="authors"), "convention"),
                                       (dict(optimizer="sgd"), "optimizer"),
                                       (dict(dtype="float16"), "dtype"),
                                       (dict(seed=[1, 2], lam_b=[0.1, 0.1, 0.1]),
                                        "mismatched batch sizes"),
                                       (dict(method="newton"), "method must be one of"),
                                       (dict(method="convex", d=1), "needs d >= K - 1"),
                                       (dict(method="convex", gtol=[1e-9, 1e-8]),
                                        "one gtol"),
                                       (dict(method="convex", pool=0), "pool must be >= 1"),
                                       (dict(gap_tol=0.0), "gap_tol must be > 0")])
def test_bad_setting_is_refused(kw, words):
    with pytest.raises(ncjax.InputError, match=words):
        ncjax.solve(**{**GOOD, **kw})


def test_small_d_warns():
    with pytest.warns(ncjax.NCJaxWarning, match="K - 1"):
        r = ncjax.solve([100, 100, 10, 10], 0.01, 0.001, d=2)
    assert r.converged


@pytest.mark.parametrize("fn, args, words", [
    (profiles.two_cluster, (5, 500, 5, -1), "> 0"),
    (profiles.long_tail, (10, 1000, 0.5), "rho"),
    (profiles.long_tail, (1, 1000, 10), "K must be"),
    (profiles.steps, ([(0, 100), (2, 5)],), "integer >= 1"),
    (profiles.steps, ([100],), "pair"),
])
def test_bad_profiles_are_refused(fn, args, words):
    with pytest.raises(ncjax.InputError, match=words):
        fn(*args)


def test_profiles():
    np.testing.assert_array_equal(profiles.two_cluster(2, 500, 3, 100), [500, 500, 100, 100, 100])
    np.testing.assert_array_equal(profiles.steps([(1, 7), (2, 3.5)]), [7, 3.5, 3.5])
    lt = profiles.long_tail(5, 1000, 100)
    np.testing.assert_allclose(lt, 1000 * 100.0 ** (-np.arange(5) / 4))
    assert lt[0] == 1000 and np.isclose(lt[-1], 10)
