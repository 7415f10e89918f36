"""``ncjax.thresholds``: where each phase begins along λ, against the closed forms (the
collapse of a group sharing n_g at sqrt(n_g)/N, Z = 0 at sqrt(n_max)/N when the largest
count is shared, Hong & Ling) and, for the vanishing minority, against cvxpy's optimum
just below it, extrapolated."""

from pathlib import Path

import numpy as np
import pytest

import ncjax
from ncjax import phases, reference, spec

TWO_CLUSTERS = [(2, 2), (5, 5), (8, 3), (3, 8)]
RATIOS = (2.5, 10.0, 100.0)


@pytest.mark.parametrize("K_A, K_B", TWO_CLUSTERS)
def test_two_cluster_thresholds_are_the_closed_forms(K_A, K_B):
    """Ratios 2.5, 10, 100 and λ_b = 0, 0.02 in one batch: the minority collapses at
    sqrt(n_B)/N, the majority with Z = 0 at sqrt(n_A)/N, to 1e-6 relative, every deciding
    solve certified; the vanishing minority lies between them."""
    n_A = 1000.0
    cfg = [(r, lb) for r in RATIOS for lb in (0.0, 0.02)]
    counts = np.array([[n_A] * K_A + [n_A / r] * K_B for r, _ in cfg])
    lam_b = np.array([lb for _, lb in cfg])
    t = ncjax.thresholds(counts, lam_b)
    assert t.groups == (tuple(range(K_A)), tuple(range(K_A, K_A + K_B)))
    N = counts.sum(1)
    want = np.stack([np.sqrt(n_A) / N, np.sqrt(counts[:, -1]) / N], 1)
    if K_B == 1:
        want[:, 1] = np.nan
    np.testing.assert_allclose(t.collapse, want, rtol=1e-6)
    np.testing.assert_allclose(t.zero, np.sqrt(n_A) / N, rtol=1e-6)
    lo, hi = t.collapse_bracket[..., 0], t.collapse_bracket[..., 1]
    assert np.all(hi / lo - 1 <= 1e-6) and np.all((lo <= want) & (want <= hi * (1 + 1e-9)))
    gaps = np.concatenate([t.collapse_gap.ravel(), t.vanish_gap.ravel(), t.zero_gap.ravel()])
    assert np.all(gaps <= 1e-11)
    assert np.all((t.collapse[:, 1] < t.vanish[:, 1]) & (t.vanish[:, 1] < t.zero))
    np.testing.assert_allclose(t.vanish[:, 0], t.zero, rtol=1e-6)  # the majority: at Z = 0


ROOT = Path(__file__).resolve().parent.parent
GROUPS = sorted(p.stem for p in (ROOT / "sweeps").glob("groups*.toml"))  # the six studies


def _steps(name):
    """[K_g, n_g] pairs and λ_b of the committed group study ``name`` (its spec file)."""
    sp = spec.load(ROOT / "sweeps" / f"{name}.toml")
    return sp.problem["groups"], sp.problem.get("lam_b", 0.0)


@pytest.mark.parametrize("name", GROUPS)
def test_the_group_rule_on_the_committed_profiles(name):
    """Each group of ≥ 2 classes collapses at sqrt(n_g)/N to 1e-6; a group of one class has
    no collapse (NaN)."""
    assert len(GROUPS) == 6
    steps, lam_b = _steps(name)
    counts = np.concatenate([[n] * k for k, n in steps]).astype(float)
    t = ncjax.thresholds(counts, lam_b)
    N = counts.sum()
    want = np.array([np.sqrt(n) / N if k >= 2 else np.nan for k, n in steps])
    np.testing.assert_allclose(t.collapse, want, rtol=1e-6)
    assert [len(g) for g in t.groups] == [k for k, _ in steps]


def _cvxpy_zero(counts, lam_b, near, measure, loss="ce", params=None):
    """Where ``measure`` (of the minority's columns z_B and Z, relative to ‖Z‖) reaches 0
    in cvxpy's optimum (Clarabel, 1e-10) of ``loss``: an interior-point solution is never
    exactly low-rank (~1e-6 where the measure is 0), so it is read at three λ below
    ``near`` (0.05-0.2% below, where it is ~1e-3, far above that floor), and the parabola
    through them is extrapolated to its zero."""
    K_B = int(np.sum(counts == counts.min()))
    lam = near * (1 - np.array([2e-3, 1e-3, 5e-4]))
    y = []
    for x in lam:
        _, Z, _ = reference.solve_convex(counts, x, lam_b, loss=loss, params=params)
        y.append(measure(Z[:, -K_B:]) / np.linalg.norm(Z))
    roots = np.roots(np.polyfit(lam / near - 1, y, 2))
    roots = roots[np.isreal(roots)].real
    return near * (1 + roots[np.argmin(np.abs(roots))])


def _gone(zB):  # the minority's mean logits all 0
    return np.linalg.norm(zB)


def _spread(zB):  # the minority's mean logits coincide
    return np.linalg.norm(zB - zB.mean(1, keepdims=True))


@pytest.mark.parametrize("K_A, K_B, ratio, lam_b", [
    (3, 3, 10.0, 0.0), (2, 2, 4.0, 0.0), (5, 5, 10.0, 0.02), (3, 5, 20.0, 0.0),
    (4, 2, 2.5, 0.0), (2, 3, 50.0, 0.02)])
def test_the_vanishing_minority_against_cvxpy(K_A, K_B, ratio, lam_b):
    """Six profiles: the vanishing threshold agrees with cvxpy's optimum to 1e-5."""
    counts = np.array([100.0] * K_A + [100.0 / ratio] * K_B)
    t = ncjax.thresholds(counts, lam_b)
    v = t.vanish[1]
    assert t.collapse[1] < v < t.zero
    ref = _cvxpy_zero(counts, lam_b, v, _gone)
    assert v == pytest.approx(ref, rel=1e-5)


LOSS_CASES = [("ce", {}), ("label_smoothing", {"alpha": 0.2}),
              ("weighted_ce", {"weights": [1.0, 1.0, 1.5, 1.5]}),
              ("logit_adjusted", {"tau": 1.0}), ("vs", {"gamma": 0.3, "tau": 0.5}),
              ("mse", {})]


@pytest.mark.parametrize("name, params", LOSS_CASES)
def test_each_loss_thresholds_against_cvxpy(name, params):
    """2×100 + 2×20 with λ_b = 0.01: the minority's collapse threshold of every loss, from
    the same call, agrees with cvxpy's optimum of that loss to 5e-5 (the extrapolation of
    an interior-point solution: for CE it is 1.7e-5 from sqrt(n_B)/N, which ncjax meets
    to 1e-6 in ``test_two_cluster_thresholds_are_the_closed_forms``)."""
    counts = np.array([100.0, 100.0, 20.0, 20.0])
    t = ncjax.thresholds(counts, 0.01, loss=ncjax.losses.get(name, **params))
    c = t.collapse[1]
    assert np.isfinite(c) and c < t.zero * (1 + 1e-6)
    assert c == pytest.approx(_cvxpy_zero(counts, 0.01, c, _spread, name, params), rel=5e-5)


def test_bad_input_is_refused():
    with pytest.raises(ncjax.InputError, match="share their groups"):
        ncjax.thresholds([[10.0, 10.0, 2.0], [10.0, 3.0, 2.0]])
    with pytest.raises(ncjax.InputError, match="rtol"):
        ncjax.thresholds([10.0, 10.0, 2.0], rtol=1e-15)


def test_groups_of():
    assert phases.groups_of(np.array([5.0, 1.0, 5.0, 3.0])) == ((0, 2), (3,), (1,))
