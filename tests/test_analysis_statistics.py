"""Representation statistics against closed forms, plain numpy, and their own CI coverage."""

from __future__ import annotations

import numpy as np
import pytest

from bertology.analysis.bootstrap import Bootstrap, adjust, bootstrap_p, percentile_ci
from bertology.analysis.moments import (SampleSums, centre, class_moments, energies, energies_from_moments, energies_with_ci,
                                         jackknife_moments)

# Two Gaussian classes in d dims, isotropic σ², means ±δ/2 along axis 0, plus a class-common offset m:
#   fisher_trace  = π0π1 δ² / (d σ²)          centroid_ratio = δ² / (2 d σ²)
#   structural    = ||m + (π1−π0) δ/2 e0||²   classification = π0 π1 δ²      within = d σ²
D, SIGMA, DELTA = 4, 1.0, 2.0
OFFSET = np.array([3.0, 0.0, 1.0, 0.0])


def gaussian_classes(n, rng, pi1=0.5):
    y = (rng.random(n) < pi1).astype(int)
    mu = OFFSET + np.outer(y - 0.5, np.eye(D)[0] * DELTA)
    return mu + SIGMA * rng.normal(size=(n, D)), y


def truth(pi1=0.5):
    pi0 = 1 - pi1
    return {
        "fisher_trace": pi0 * pi1 * DELTA ** 2 / (D * SIGMA ** 2),
        "centroid_ratio": DELTA ** 2 / (2 * D * SIGMA ** 2),
        "classification": pi0 * pi1 * DELTA ** 2,
        "within": D * SIGMA ** 2,
        "structural": float(np.sum((OFFSET + (pi1 - pi0) * DELTA / 2 * np.eye(D)[0]) ** 2)),
    }


def test_estimators_recover_closed_forms_on_a_large_sample():
    x, y = gaussian_classes(200_000, np.random.default_rng(0))
    e = energies(SampleSums.from_vectors(x[:, None, :]), y, 2, np.ones((1, len(y))))
    for name, value in truth().items():
        assert e[name][0, 0] == pytest.approx(value, rel=0.02, abs=0.01), name


def test_energy_parts_add_up_and_equal_plain_numpy():
    rng = np.random.default_rng(1)
    x, y = gaussian_classes(300, rng, pi1=0.3)
    e = energies(SampleSums.from_vectors(x[:, None, :]), y, 2, np.ones((1, 300)))
    parts = e["structural"] + e["classification"] + e["within"]
    np.testing.assert_allclose(parts, e["total"], rtol=1e-12)
    # plain numpy, straight from the definitions
    mu = x.mean(0)
    mus = [x[y == c].mean(0) for c in (0, 1)]
    pis = [np.mean(y == c) for c in (0, 1)]
    sb = sum(np.sum(y == c) * np.sum((mus[c] - mu) ** 2) for c in (0, 1))
    sw = sum(np.sum((x[y == c] - mus[c]) ** 2) for c in (0, 1))
    s2 = [np.mean(np.sum((x[y == c] - mus[c]) ** 2, axis=1)) for c in (0, 1)]
    assert e["fisher_trace"][0, 0] == pytest.approx(sb / sw, rel=1e-10)
    assert e["centroid_ratio"][0, 0] == pytest.approx(np.sum((mus[1] - mus[0]) ** 2) / (s2[0] + s2[1]), rel=1e-10)
    assert e["total"][0, 0] == pytest.approx(np.mean(np.sum(x ** 2, axis=1)), rel=1e-12)
    assert e["classification"][0, 0] == pytest.approx(sum(p * np.sum((m - mu) ** 2) for p, m in zip(pis, mus)))


def test_identical_vectors_have_zero_separability_and_far_offsets_stay_exact():
    x = np.tile(np.array([5.0, -3.0, 1e3, 0.25]), (40, 1))
    y = np.arange(40) % 2
    e = energies(SampleSums.from_vectors(x[:, None]), y, 2, np.ones((1, 40)))
    assert e["fisher_trace"][0, 0] == 0 and e["centroid_ratio"][0, 0] == 0 and e["classification"][0, 0] == 0
    assert e["structural"][0, 0] == pytest.approx(np.sum(x[0] ** 2)) and e["structural_share"][0, 0] == pytest.approx(1)
    rng = np.random.default_rng(8)
    z, yz = gaussian_classes(500, rng)
    near = energies(SampleSums.from_vectors(z[:, None]), yz, 2, np.ones((1, 500)))
    far = energies(SampleSums.from_vectors((z + 1e4)[:, None]), yz, 2, np.ones((1, 500)))
    assert far["fisher_trace"][0, 0] == pytest.approx(near["fisher_trace"][0, 0], rel=1e-8)


def test_bootstrap_weights_equal_explicit_resampling():
    rng = np.random.default_rng(2)
    x, y = gaussian_classes(50, rng)
    boot = Bootstrap.draw(50, resamples=7, seed=3)
    e = energies(SampleSums.from_vectors(x[:, None, :]), y, 2, boot.weights)
    for b in range(7):
        idx = np.repeat(np.arange(50), boot.weights[b].astype(int))
        ref = energies(SampleSums.from_vectors(x[idx][:, None, :]), y[idx], 2, np.ones((1, len(idx))))
        assert e["fisher_trace"][b, 0] == pytest.approx(ref["fisher_trace"][0, 0], rel=1e-10)


def test_token_level_sums_equal_pooling_every_token():
    """A sample's token sums give the same decomposition as treating every token as its own row."""
    rng = np.random.default_rng(4)
    lengths = rng.integers(1, 9, size=40)
    y = rng.integers(0, 2, size=40)
    toks = [rng.normal(size=(k, 3)) + y[i] for i, k in enumerate(lengths)]
    sums = SampleSums(np.stack([t.sum(0) for t in toks])[:, None], np.array([(t ** 2).sum() for t in toks])[:, None],
                      lengths.astype(float))
    flat = np.concatenate(toks)
    ref = energies(SampleSums.from_vectors(flat[:, None]), np.repeat(y, lengths), 2, np.ones((1, len(flat))))
    got = energies(sums, y, 2, np.ones((1, 40)))
    for k in ("total", "structural", "classification", "within", "fisher_trace"):
        assert got[k][0, 0] == pytest.approx(ref[k][0, 0], rel=1e-10)


def test_95_percent_bca_ci_covers_the_truth_95_percent_of_the_time():
    """400 replications × 1,000 resamples; coverage must be 95% ± 3% for each statistic."""
    rng = np.random.default_rng(5)
    names = ("fisher_trace", "centroid_ratio", "classification", "structural", "within")
    covered = dict.fromkeys(names, 0)
    reps, n = 400, 400
    for r in range(reps):
        x, y = gaussian_classes(n, rng)
        res = energies_with_ci(SampleSums.from_vectors(x[:, None, :]), y, 2, Bootstrap.draw(n, 1000, seed=r))
        for name in names:
            lo, hi = res[name].ci_low, res[name].ci_high
            covered[name] += bool(lo[0] <= truth()[name] <= hi[0])
    rates = {k: v / reps for k, v in covered.items()}
    assert all(0.92 <= v <= 0.98 for v in rates.values()), rates


def test_jackknife_moments_equal_leaving_each_sample_out():
    rng = np.random.default_rng(7)
    x, y = gaussian_classes(30, rng)
    sums = SampleSums.from_vectors(x[:, None, :])
    centred, c = centre(sums)
    full = class_moments(centred, y, 2, np.ones((1, 30)))
    jk = energies_from_moments(*jackknife_moments(full, centred, y, 2), shift=c)
    for i in (0, 7, 29):
        keep = np.arange(30) != i
        ref = energies(SampleSums.from_vectors(x[keep][:, None, :]), y[keep], 2, np.ones((1, 29)))
        assert jk["centroid_ratio"][i, 0] == pytest.approx(ref["centroid_ratio"][0, 0], rel=1e-10)


def test_paired_p_values_and_correction():
    rng = np.random.default_rng(6)
    boot_diff = np.column_stack([rng.normal(0.0, 1, 2000), rng.normal(5.0, 1, 2000)])
    p = bootstrap_p(boot_diff)
    assert p[0] > 0.5 and p[1] < 0.001
    np.testing.assert_allclose(adjust(np.array([0.01, 0.04, 0.03]), "holm"), [0.03, 0.06, 0.06])


def test_streamed_blocks_equal_one_block():
    """Streaming 7 samples × 1 series at a time gives the same estimates, resamples and CIs."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(60, 3, 5)) + 10.0
    y = rng.integers(0, 2, 60)
    boot = Bootstrap.draw(60, 50, seed=1)
    one = energies_with_ci(SampleSums.from_vectors(x), y, 2, boot)
    many = energies_with_ci(SampleSums.from_vectors(x), y, 2, boot, k_block=1, sample_block=7)
    for name in one:
        for a, b in zip(one[name][:5], many[name][:5]):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_bca_falls_back_to_the_basic_interval_when_every_resample_is_biased_one_way():
    from bertology.analysis.bootstrap import bca_ci

    rng = np.random.default_rng(10)
    boot = 1.0 + rng.random((1000, 1))            # every resample above the estimate 0.5
    jack = 0.5 + 0.01 * rng.normal(size=(50, 1))
    lo, hi = bca_ci(boot, np.array([0.5]), jack)
    plo, phi = percentile_ci(boot)
    assert lo[0] == pytest.approx(1.0 - phi[0]) and hi[0] == pytest.approx(1.0 - plo[0])
    assert lo[0] < hi[0]


def test_an_estimate_outside_its_interval_is_a_basic_interval_around_the_bias_corrected_estimate():
    from bertology.analysis.bootstrap import bias_corrected

    # no class signal in many dimensions: the plug-in ratio sits on its noise floor and resampling inflates it
    rng = np.random.default_rng(12)
    n, d = 120, 60
    x, y = rng.normal(size=(n, 4, d)), np.arange(n) % 2
    res = energies_with_ci(SampleSums.from_vectors(x), y, 2, Bootstrap.draw(n, 400, seed=1))
    seen = 0
    for name in ("fisher_trace", "centroid_ratio"):
        e = res[name]
        assert set(e.ci_method) <= {"bca", "basic"}
        outside = (e.estimate < e.ci_low) | (e.estimate > e.ci_high)
        bc = bias_corrected(e.resamples, e.estimate)
        assert np.allclose(bc, 2 * e.estimate - e.resamples.mean(axis=0))
        seen += outside.sum()
        assert all(e.ci_method[outside] == "basic")                 # never a silently collapsed BCa interval
        assert np.all((bc[outside] >= e.ci_low[outside]) & (bc[outside] <= e.ci_high[outside]))
        assert np.all(e.ci_high - e.ci_low > 0)
    assert seen > 0                                                 # the case this test is about occurred


def test_poisson_weights_depend_only_on_the_seed_and_the_sample_id():
    from bertology.analysis.bootstrap import poisson_weights

    ids = np.array([7, 3, 1000, 42, 5])
    b = Bootstrap.draw(5, 300, seed=4, keys=ids)
    assert np.array_equal(b.block(slice(1, 3)), b.weights[:, 1:3])            # a block computes its own
    assert np.array_equal(poisson_weights(4, ids[::-1], 300), b.weights[:, ::-1])  # order of samples: irrelevant
    assert not np.array_equal(poisson_weights(5, ids, 300), b.weights)          # the seed matters
    w = poisson_weights(0, np.arange(20000), 50).ravel()
    assert abs(w.mean() - 1) < 0.01 and abs(w.var() - 1) < 0.02                 # Poisson(1): mean = variance = 1
    assert abs((w == 0).mean() - np.exp(-1)) < 0.005


def test_chance_level_is_the_statistic_under_explicit_relabellings():
    """Permutation nulls equal recomputing with shuffled labels, and sit at the d/n noise floor."""
    rng = np.random.default_rng(11)
    n, d = 120, 30
    x = rng.normal(size=(n, 1, d))            # no class signal at all
    y = np.arange(n) % 2
    res = energies_with_ci(SampleSums.from_vectors(x), y, 2, Bootstrap.draw(n, 20, seed=0), permutations=50,
                           seed=4, sample_block=37)
    perm_rng = np.random.default_rng(4)
    for p in range(3):
        yp = perm_rng.permutation(y)
        ref = energies(SampleSums.from_vectors(x), yp, 2, np.ones((1, n)))
        assert res["fisher_trace"].null[p, 0] == pytest.approx(ref["fisher_trace"][0, 0], rel=1e-9)
    # E[tr S_B / tr S_W] under no signal is about (C-1)/(n-C): the floor users must compare against
    assert res["fisher_trace"].null.mean() == pytest.approx(1 / (n - 2), rel=0.3)


def test_task_metrics_equal_sklearn_and_their_intervals_cover_them():
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    from bertology.analysis.task_metrics import task_metrics

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    pred = np.where(rng.random(300) < 0.75, y, 1 - y)
    df = task_metrics(y, pred, Bootstrap.draw(300, 500, seed=0), n_classes=2).set_index("statistic")
    assert df.at["accuracy", "estimate"] == pytest.approx(accuracy_score(y, pred))
    assert df.at["f1", "estimate"] == pytest.approx(f1_score(y, pred))
    assert df.at["mcc", "estimate"] == pytest.approx(matthews_corrcoef(y, pred))
    assert (df["ci_low"] < df["estimate"]).all() and (df["estimate"] < df["ci_high"]).all()
    # a constant prediction has MCC 0 (sklearn's convention), with no spread
    const = task_metrics(y, np.ones_like(y), Bootstrap.draw(300, 200, seed=0), n_classes=2).set_index("statistic")
    assert const.at["mcc", "estimate"] == 0 == matthews_corrcoef(y, np.ones_like(y))
    three = task_metrics(np.arange(30) % 3, np.zeros(30, int), Bootstrap.draw(30, 100), n_classes=3)
    assert list(three["statistic"]) == ["accuracy"] and three["estimate"].iloc[0] == pytest.approx(1 / 3)
