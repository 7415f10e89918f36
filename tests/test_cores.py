"""``ncjax.cores``: a batch split over helper processes gives the one-process results, a
helper's exception is raised in the caller, a dead helper's part is computed here."""

import warnings

import numpy as np
import pytest

import ncjax
from ncjax import cores
from ncjax.validate import InputError


def test_parts_cover_the_batch():
    for B in range(1, 40):
        for n in range(1, min(B, 6) + 1):
            p = cores.parts(B, n)
            assert len(p) == n and p[0][0] == 0 and p[-1][1] == B
            assert all(a[1] == b[0] for a, b in zip(p, p[1:]))
            sizes = [b - a for a, b in p]
            assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_count(monkeypatch):
    monkeypatch.setattr(cores, "available", lambda: 4)
    cores.reset()
    assert cores.count(10_000, "cpu") == 4
    assert cores.count(300, "cpu") == 2  # one process per MIN_PER_PROCESS configurations
    assert cores.count(100, "cpu") == 1
    assert cores.count(10_000, "gpu") == 1
    assert cores.count(3, "gpu", requested=8) == 3
    monkeypatch.undo()
    monkeypatch.setenv(cores.ENV, "3")
    assert cores.available() == 3


def _grid(B):
    n_B = np.linspace(20, 400, B)
    counts = np.concatenate([np.full((B, 3), 500.0), np.repeat(n_B[:, None], 2, axis=1)], 1)
    lam = np.geomspace(1e-3, 8e-3, B)
    return counts, 0.01, lam**2 / 0.01


@pytest.fixture
def fresh_helpers():
    cores.reset()
    yield
    cores.reset()


@pytest.mark.parametrize("method, dtype", [("convex", "float64"), ("ufm", "float32")])
def test_two_processes_give_the_one_process_results(method, dtype, fresh_helpers):
    counts, lam_W, lam_H = _grid(7)
    kw = dict(method=method, dtype=dtype, seed=np.arange(7))
    one = ncjax.solve(counts, lam_W, lam_H, processes=1, **kw)
    two = ncjax.solve(counts, lam_W, lam_H, processes=2, **kw)
    assert len(cores.processes()) == 1 and cores.processes()[0].poll() is None
    assert list(two.status) == list(one.status) and one.converged.all()
    np.testing.assert_array_equal(two.steps, one.steps)
    # float32 L-BFGS in groups of other shapes: the same optimum to its rounding
    tol = 1e-12 if dtype == "float64" else 1e-4
    np.testing.assert_allclose(two.objective, one.objective, rtol=tol / 100)
    np.testing.assert_allclose(two.Z, one.Z, rtol=tol, atol=tol)
    np.testing.assert_allclose(two.metrics["nc1"], one.metrics["nc1"], rtol=1e-5, atol=1e-9)
    np.testing.assert_array_equal(two.counts, counts)


def test_a_helpers_exception_is_raised_here(fresh_helpers):
    got = cores.run("ncjax.validate", "as_counts", [([1.0, 2.0],), ([3.0, 4.0],)])
    np.testing.assert_array_equal(np.stack(got), [[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(InputError, match="every class count n_k must be > 0"):
        cores.run("ncjax.validate", "as_counts", [([1.0, 2.0],), ([3.0, -4.0],)])
    assert cores.broken() is None  # the helper is fine and is used again
    got = cores.run("ncjax.validate", "as_counts", [([5.0, 6.0],), ([7.0, 8.0],)])
    np.testing.assert_array_equal(got[1], [7.0, 8.0])
    # raised in this process's part while a helper works on its own: the next call reads
    # its own answers, not that helper's
    with pytest.raises(InputError):
        cores.run("ncjax.validate", "as_counts", [([-1.0, 2.0],), ([3.0, 4.0],)])
    got = cores.run("ncjax.validate", "as_counts", [([5.0, 6.0],), ([9.0, 10.0],)])
    np.testing.assert_array_equal(got[1], [9.0, 10.0])


def test_a_dead_helper_loses_nothing(fresh_helpers):
    counts, lam_W, lam_H = _grid(6)
    kw = dict(method="convex", dtype="float64")
    first = ncjax.solve(counts, lam_W, lam_H, processes=2, **kw)
    cores.processes()[0].kill()
    cores.processes()[0].wait()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = ncjax.solve(counts, lam_W, lam_H, processes=2, **kw)
    assert sum("helper process" in str(w.message) for w in caught) == 1
    np.testing.assert_allclose(again.objective, first.objective, rtol=1e-12)
    assert again.converged.all() and cores.broken() is not None and not cores.processes()
    assert cores.count(10_000, "cpu") == 1  # no helpers for the rest of the process
