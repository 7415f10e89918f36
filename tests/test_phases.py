"""``ncjax.thresholds``: where each phase begins along λ, against the closed forms (the
collapse of a group sharing n_g at sqrt(n_g)/N, Z = 0 at sqrt(n_max)/N when the largest
count is shared, Hong & Ling) and, for the vanishing minority, against cvxpy's optimum
just below it, extrapolated."""

from pathlib import Path

import numpy as np
import pytest

import ncjax
from ncjax import phases, reference, spec, theory

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


def _check(t, want, rtol=1e-6):
    """t's minority collapse equals ``want`` to rtol, inside its certified bracket."""
    np.testing.assert_allclose(t.collapse[:, 1], want, rtol=rtol)
    ends = t.collapse_bracket[:, 1]
    assert np.all(np.abs(ends[:, 0] / ends[:, 1] - 1) <= 1e-6)
    assert np.all((np.min(ends, 1) <= want * (1 + 1e-9)) & (want <= np.max(ends, 1) * (1 + 1e-9)))
    assert np.all(t.collapse_gap[:, 1] <= 1e-11)


def test_thresholds_along_n_B_and_the_ratio_are_the_closed_forms(x64):
    """At a fixed λ (n_A fixed) the minority collapses for n_B ≤ n_B*, sqrt(n_B*) = λ N(n_B*)
    (the smaller root; the bracket ends before the larger one), and along the ratio at
    n_A/n_B*; at a fixed λ and ratio for n_B ≥ 1/(λ (K_A ratio + K_B))²; at a fixed c
    (λ = c/N, the ratios held) for n_B ≤ c², with Z = 0 for n_B ≤ c²/ratio
    (sqrt(n_A) ≤ c); along c at fixed counts from c = sqrt(n_B), Z = 0 from sqrt(n_A).
    Six profiles each (5 + 5 classes, λ_b = 0 and 0.02), to 1e-6; the closed forms checked
    by their defining equation λ = sqrt(n_B)/N."""
    K = 5
    n_A = np.array([1000.0, 500.0, 2000.0, 800.0, 1000.0, 300.0])
    lam = np.array([0.05, 0.06, 0.07, 0.08, 0.09, 0.095]) / np.sqrt(n_A)
    lam_b = np.array([0.0, 0.02] * 3)
    counts = np.array([[a] * K + [1.0] * K for a in n_A])  # the minority's count moves
    want = np.asarray(theory.n_B_star(lam, K, n_A, K))
    np.testing.assert_allclose(theory.lam_star_two_cluster(K, n_A, K, want), lam, rtol=1e-12)
    assert np.all(want < n_A)  # below the peak of sqrt(n_B)/N at n_B = K_A n_A/K_B = n_A
    t = ncjax.thresholds(counts, lam_b, along="n_B", lam=lam, bracket=(1.0, 0.99 * n_A),
                         which="collapse")
    assert t.along == "n_B" and np.all(np.isnan(t.vanish)) and np.all(np.isnan(t.zero))
    ends = t.collapse_bracket[:, 1]
    assert np.all(ends[:, 1] < ends[:, 0])  # collapsed below: [not collapsed, collapsed]
    _check(t, want)
    t = ncjax.thresholds(counts, lam_b, along="ratio", lam=lam, bracket=(1 / 0.99, n_A),
                         which="collapse")
    _check(t, n_A / want)

    ratio = np.array([2.5, 5.0, 10.0, 20.0, 50.0, 100.0])
    c = np.array([5.0, 8.0, 10.0, 12.0, 20.0, 30.0])
    held = np.array([[r] * K + [1.0] * K for r in ratio])
    lam_r = np.array([2e-3, 1e-3, 5e-3, 3e-3, 8e-4, 4e-3])
    t = ncjax.thresholds(held, lam_b, along="n_B", lam=lam_r, hold="ratios",
                         bracket=(1.0, 1e6), which="collapse")
    want = np.asarray(theory.n_B_star_at_ratio(lam_r, K, ratio, K))
    np.testing.assert_allclose(theory.lam_star_two_cluster(K, ratio * want, K, want), lam_r,
                               rtol=1e-12)
    ok = want > 1.0  # inside the bracket; below it NaN
    assert np.all(np.isnan(t.collapse[~ok, 1])) and ok.sum() >= 5
    ends = t.collapse_bracket[ok, 1]
    assert np.all(ends[:, 0] < ends[:, 1])  # collapsed above
    np.testing.assert_allclose(t.collapse[ok, 1], want[ok], rtol=1e-6)
    t = ncjax.thresholds(held, lam_b, along="n_B", c=c, hold="ratios",
                         bracket=(c**2 / (10 * ratio), 10 * c**2), which=("collapse", "zero"))
    _check(t, c**2)
    np.testing.assert_allclose(t.zero, c**2 / ratio, rtol=1e-6)
    assert np.all(t.zero_bracket[:, 1] < c**2 / ratio) and np.all(t.zero_gap <= 1e-11)

    counts = np.array([[1000.0] * K + [1000.0 / r] * K for r in ratio])
    t = ncjax.thresholds(counts, lam_b, along="c")
    _check(t, np.sqrt(counts[:, -1]))
    np.testing.assert_allclose(t.zero, np.sqrt(1000.0), rtol=1e-6)


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
    exactly low-rank (~1e-6 where the measure is 0), so it is read at six λ below
    ``near`` (0.05-0.3% below, where it is ~1e-3, far above that floor), and the
    least-squares parabola through them is extrapolated to its zero. (Its error in the
    measure, ~5e-6 there, moved a parabola through three points by up to 2e-5 for
    2×100 + 3×2, λ_b = 0.02, as the points moved by 1e-7; through six, by 8e-6.)"""
    K_B = int(np.sum(counts == counts.min()))
    lam = near * (1 - np.linspace(5e-4, 3e-3, 6))
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
    n = [10.0, 10.0, 2.0]
    with pytest.raises(ncjax.InputError, match="share their groups"):
        ncjax.thresholds([[10.0, 10.0, 2.0], [10.0, 3.0, 2.0]])
    with pytest.raises(ncjax.InputError, match="rtol"):
        ncjax.thresholds(n, rtol=1e-15)
    with pytest.raises(ncjax.InputError, match="along must be one of"):
        ncjax.thresholds(n, along="lam_b")
    with pytest.raises(ncjax.InputError, match="exactly one of lam= .* c="):
        ncjax.thresholds(n, along="n_B", bracket=(1, 5))
    with pytest.raises(ncjax.InputError, match="needs bracket"):
        ncjax.thresholds(n, along="n_B", lam=0.1)
    with pytest.raises(ncjax.InputError, match="bracket must have lo < hi"):
        ncjax.thresholds(n, along="n_B", lam=0.1, bracket=(5, 1))
    with pytest.raises(ncjax.InputError, match="hold must be one of"):
        ncjax.thresholds(n, along="ratio", lam=0.1, bracket=(1.5, 5), hold="ratios")
    with pytest.raises(ncjax.InputError, match="which must name"):
        ncjax.thresholds(n, which=("collapse", "spread"))


def test_groups_of():
    assert phases.groups_of(np.array([5.0, 1.0, 5.0, 3.0])) == ((0, 2), (3,), (1,))
