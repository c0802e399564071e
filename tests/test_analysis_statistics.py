"""Representation statistics against closed forms and plain numpy (their coverage: tests/test_coverage.py)."""

from __future__ import annotations

import numpy as np
import pytest

from bertology.analysis.bootstrap import Bootstrap, adjust, bootstrap_p
from bertology.analysis.moments import SampleSums, energies, energies_with_ci

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
        assert e.value[name][0, 0] == pytest.approx(value, rel=0.02, abs=0.01), name
        assert e.plugin[name][0, 0] == pytest.approx(value, rel=0.02, abs=0.01), name


def test_energy_parts_add_up_and_equal_plain_numpy():
    rng = np.random.default_rng(1)
    x, y = gaussian_classes(300, rng, pi1=0.3)
    e = energies(SampleSums.from_vectors(x[:, None, :]), y, 2, np.ones((1, 300)))
    for parts in (e.plugin, e.value):   # plug-in and debiased decompositions both add up to the total
        np.testing.assert_allclose(parts["structural"] + parts["classification"] + parts["within"], parts["total"],
                                   rtol=1e-12)
    # plain numpy, straight from the definitions
    mu = x.mean(0)
    mus = [x[y == c].mean(0) for c in (0, 1)]
    pis = [np.mean(y == c) for c in (0, 1)]
    sb = sum(np.sum(y == c) * np.sum((mus[c] - mu) ** 2) for c in (0, 1))
    sw = sum(np.sum((x[y == c] - mus[c]) ** 2) for c in (0, 1))
    s2 = [np.mean(np.sum((x[y == c] - mus[c]) ** 2, axis=1)) for c in (0, 1)]
    assert e.plugin["fisher_trace"][0, 0] == pytest.approx(sb / sw, rel=1e-10)
    assert e.plugin["centroid_ratio"][0, 0] == pytest.approx(np.sum((mus[1] - mus[0]) ** 2) / (s2[0] + s2[1]), rel=1e-10)
    assert e.value["total"][0, 0] == pytest.approx(np.mean(np.sum(x ** 2, axis=1)), rel=1e-12)
    assert e.plugin["classification"][0, 0] == pytest.approx(sum(p * np.sum((m - mu) ** 2) for p, m in zip(pis, mus)))


def test_debiased_between_energy_is_the_u_statistic_over_pairs_of_distinct_samples():
    """Σ_c π_c(1−π_c) ⟨x_i, x_j⟩ over distinct pairs within c, minus Σ π_a π_b ⟨x_i, x_j⟩ across classes:
    no sample is ever paired with itself, so its expectation is the population energy for every d and n."""
    rng = np.random.default_rng(13)
    n, d = 37, 50
    y = np.arange(n) % 3
    x = rng.normal(size=(n, d)) + 3.0 * (y[:, None] == 1)
    e = energies(SampleSums.from_vectors(x[:, None, :]), y, 3, np.ones((1, n)))
    g = x @ x.T
    counts = np.bincount(y)
    pi = counts / n
    u = 0.0
    for a in range(3):
        for b in range(3):
            block = g[np.ix_(y == a, y == b)]
            if a == b:
                mean = (block.sum() - np.trace(block)) / (counts[a] * (counts[a] - 1))
                u += pi[a] * mean - pi[a] * pi[b] * mean
            else:
                u -= pi[a] * pi[b] * block.mean()
    assert e.value["classification"][0, 0] == pytest.approx(u, rel=1e-10)
    within = sum(pi[c] * np.sum((x[y == c] - x[y == c].mean(0)) ** 2) / (counts[c] - 1) for c in range(3))
    assert e.value["within"][0, 0] == pytest.approx(within, rel=1e-10)   # the unbiased within-class variance
    assert e.value["fisher_trace"][0, 0] == pytest.approx(u / within, rel=1e-10)


def test_debiased_ratios_have_no_noise_floor():
    """Without signal the plug-in Fisher trace sits at (k−1)/(n−k) whatever d is; the debiased one at 0."""
    rng = np.random.default_rng(14)
    n, d = 60, 120
    plug, deb = [], []
    for _ in range(300):
        x = rng.normal(size=(n, 1, d))
        e = energies(SampleSums.from_vectors(x), np.arange(n) % 2, 2, np.ones((1, n)))
        plug.append(e.plugin["fisher_trace"][0, 0])
        deb.append(e.value["fisher_trace"][0, 0])
    assert np.mean(plug) == pytest.approx(1 / (n - 2), rel=0.05)
    assert abs(np.mean(deb)) < 3 * np.std(deb) / np.sqrt(len(deb))


def test_identical_vectors_have_zero_separability_and_far_offsets_stay_exact():
    x = np.tile(np.array([5.0, -3.0, 1e3, 0.25]), (40, 1))
    y = np.arange(40) % 2
    e = energies(SampleSums.from_vectors(x[:, None]), y, 2, np.ones((1, 40))).value
    assert e["fisher_trace"][0, 0] == 0 and e["centroid_ratio"][0, 0] == 0 and e["classification"][0, 0] == 0
    assert e["structural"][0, 0] == pytest.approx(np.sum(x[0] ** 2)) and e["structural_share"][0, 0] == pytest.approx(1)
    rng = np.random.default_rng(8)
    z, yz = gaussian_classes(500, rng)
    near = energies(SampleSums.from_vectors(z[:, None]), yz, 2, np.ones((1, 500))).value
    far = energies(SampleSums.from_vectors((z + 1e4)[:, None]), yz, 2, np.ones((1, 500))).value
    assert far["fisher_trace"][0, 0] == pytest.approx(near["fisher_trace"][0, 0], rel=1e-7)
    res = energies_with_ci(SampleSums.from_vectors(x[:, None]), y, 2)
    assert res["fisher_trace"].ci_low[0] == res["fisher_trace"].ci_high[0] == 0


def test_weighted_moments_equal_explicit_resampling():
    rng = np.random.default_rng(2)
    x, y = gaussian_classes(50, rng)
    boot = Bootstrap.draw(50, resamples=7, seed=3)
    e = energies(SampleSums.from_vectors(x[:, None, :]), y, 2, boot.weights)
    for b in range(7):
        idx = np.repeat(np.arange(50), boot.weights[b].astype(int))
        ref = energies(SampleSums.from_vectors(x[idx][:, None, :]), y[idx], 2, np.ones((1, len(idx))))
        assert e.plugin["fisher_trace"][b, 0] == pytest.approx(ref.plugin["fisher_trace"][0, 0], rel=1e-10)
        assert e.value["fisher_trace"][b, 0] == pytest.approx(ref.value["fisher_trace"][0, 0], rel=1e-10)


def test_token_level_sums_equal_pooling_every_token():
    """A sample's token sums give the same plug-in decomposition as treating every token as its own row; the
    debiased one removes the noise of sentence-clustered means (a sentence's tokens are not independent)."""
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
        assert got.plugin[k][0, 0] == pytest.approx(ref.plugin[k][0, 0], rel=1e-10)
    # the variance of a class's token mean, clustered by sentence: Σ_i ||s_i − m_i μ_c||² / M_c² · n_c/(n_c − 1)
    c = 1
    s, m = sums.s[y == c, 0], lengths[y == c]
    mu = s.sum(0) / m.sum()
    v = np.sum((s - m[:, None] * mu) ** 2) / m.sum() ** 2 * len(m) / (len(m) - 1)
    pi = np.array([lengths[y == 0].sum(), lengths[y == 1].sum()]) / lengths.sum()
    v0 = np.sum((sums.s[y == 0, 0] - lengths[y == 0, None] * (sums.s[y == 0, 0].sum(0) / lengths[y == 0].sum())) ** 2) \
        / lengths[y == 0].sum() ** 2 * np.sum(y == 0) / (np.sum(y == 0) - 1)
    expected = got.plugin["classification"][0, 0] - pi[0] * (1 - pi[0]) * v0 - pi[1] * (1 - pi[1]) * v
    assert got.value["classification"][0, 0] == pytest.approx(expected, rel=1e-10)


def test_jackknife_values_equal_leaving_each_sample_out():
    rng = np.random.default_rng(7)
    x, y = gaussian_classes(30, rng)
    res = energies_with_ci(SampleSums.from_vectors(x[:, None, :]), y, 2)
    for i in (0, 7, 29):
        keep = np.arange(30) != i
        ref = energies(SampleSums.from_vectors(x[keep][:, None, :]), y[keep], 2, np.ones((1, 29)))
        for name in ("centroid_ratio", "fisher_trace", "structural"):
            assert res[name].jackknife[i, 0] == pytest.approx(ref.value[name][0, 0], rel=1e-9)


def test_pairwise_noise_products_equal_a_direct_double_loop():
    """The Gram products behind the jackknife's correction, Σ_{i≠j} (ẽ_iᵀẽ_j)_k (ẽ_iᵀẽ_j)_k' per class
    pair, streamed over pairs of sample blocks, equal a plain double loop."""
    from bertology.analysis.moments import ArraySource, _block_pair_gram

    rng = np.random.default_rng(15)
    n, d = 23, 4
    x = rng.normal(size=(n, 2, d))
    y = rng.integers(0, 2, n)
    means = np.stack([x[y == c].mean(0) for c in (0, 1)])             # (C, K, d)
    e = x - means[y]
    src = ArraySource(SampleSums.from_vectors(x))
    pairs = [(0, 0), (1, 1), (0, 1)]
    blocks = [slice(0, 9), slice(9, 20), slice(20, 23)]
    got = sum(_block_pair_gram(src, 2, a, b, means, y, 2, pairs) for i, a in enumerate(blocks) for b in blocks[i:])
    ref = np.zeros((2, 2, 3))
    for i in range(n):
        for j in range(n):
            if i != j:
                for p, (k, k2) in enumerate(pairs):
                    ref[y[i], y[j], p] += (e[i, k] @ e[j, k]) * (e[i, k2] @ e[j, k2])
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_layer_differences_are_differences_of_the_layers():
    rng = np.random.default_rng(16)
    n = 80
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 3, 6)) + np.array([0.0, 0.5, 1.0])[None, :, None] * y[:, None, None]
    res = energies_with_ci(SampleSums.from_vectors(x), y, 2, deltas=[(0, 1), (1, 2)])
    for name in ("fisher_trace", "classification"):
        full = energies(SampleSums.from_vectors(x), y, 2, np.ones((1, n))).value[name][0]
        np.testing.assert_allclose(res.deltas[name].estimate, [full[1] - full[0], full[2] - full[1]], rtol=1e-10)
        np.testing.assert_allclose(res.deltas[name].jackknife[:, 0], res[name].jackknife[:, 1] - res[name].jackknife[:, 0])
        assert np.all(res.deltas[name].ci_low <= res.deltas[name].estimate)
    assert res.deltas["fisher_trace"].p[1] < 0.05                         # layer 2 adds separability


def test_paired_p_values_and_correction():
    rng = np.random.default_rng(6)
    boot_diff = np.column_stack([rng.normal(0.0, 1, 2000), rng.normal(5.0, 1, 2000)])
    p = bootstrap_p(boot_diff)
    assert p[0] > 0.5 and p[1] < 0.001
    np.testing.assert_allclose(adjust(np.array([0.01, 0.04, 0.03]), "holm"), [0.03, 0.06, 0.06])


def test_streamed_blocks_equal_one_block():
    """Streaming 7 samples × 1 series at a time gives the same estimates, errors, intervals and nulls."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(60, 3, 5)) + 10.0
    y = rng.integers(0, 2, 60)
    one = energies_with_ci(SampleSums.from_vectors(x), y, 2, deltas=[(0, 1)], permutations=5)
    many = energies_with_ci(SampleSums.from_vectors(x), y, 2, deltas=[(0, 1)], permutations=5, k_block=1,
                            sample_block=7)
    for part in ("series", "deltas"):
        for name, e in getattr(one, part).items():
            f = getattr(many, part)[name]
            for field in ("estimate", "plugin", "se", "ci_low", "ci_high", "jackknife"):
                np.testing.assert_allclose(getattr(e, field), getattr(f, field), rtol=1e-9, atol=1e-12)


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
    """Permutation nulls equal recomputing with shuffled labels; the debiased ratio's chance level is 0
    (the plug-in's is the (C−1)/(n−C) floor)."""
    rng = np.random.default_rng(11)
    n, d = 120, 30
    x = rng.normal(size=(n, 1, d))            # no class signal at all
    y = np.arange(n) % 2
    res = energies_with_ci(SampleSums.from_vectors(x), y, 2, permutations=50, seed=4, sample_block=37)
    perm_rng = np.random.default_rng(4)
    for p in range(3):
        yp = perm_rng.permutation(y)
        ref = energies(SampleSums.from_vectors(x), yp, 2, np.ones((1, n)))
        assert res["fisher_trace"].null[p, 0] == pytest.approx(ref.value["fisher_trace"][0, 0], rel=1e-9)
    null = res["fisher_trace"].null[:, 0]
    assert abs(null.mean()) < 3 * null.std() / np.sqrt(len(null))


def test_too_few_samples_of_a_class_is_a_clear_error():
    x = np.random.default_rng(0).normal(size=(5, 1, 3))
    with pytest.raises(ValueError, match="at least 3 samples of each class"):
        energies_with_ci(SampleSums.from_vectors(x), np.array([0, 0, 0, 1, 1]), 2)


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
    assert list(three["statistic"]) == ["accuracy", "macro_f1", "mcc"]
    assert three["estimate"].iloc[0] == pytest.approx(1 / 3)


def test_k_class_metrics_equal_sklearn_on_every_resample():
    """Three classes: macro-F1 and Gorodkin's MCC equal sklearn's, on the sample and on each bootstrap resample
    (weights that repeat samples give the same numbers as the repeated samples)."""
    from sklearn.metrics import f1_score, matthews_corrcoef

    from bertology.analysis.task_metrics import _k_class_scores, task_metrics

    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 240)
    pred = np.where(rng.random(240) < 0.6, y, rng.integers(0, 3, 240))
    df = task_metrics(y, pred, Bootstrap.draw(240, 400, seed=1), n_classes=3).set_index("statistic")
    assert df.at["macro_f1", "estimate"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert df.at["mcc", "estimate"] == pytest.approx(matthews_corrcoef(y, pred))
    assert (df["ci_low"] < df["estimate"]).all() and (df["estimate"] < df["ci_high"]).all()
    idx = rng.integers(0, 240, 240)                                   # one resample, drawn by hand
    conf = np.zeros((3, 3))
    np.add.at(conf, (y[idx], pred[idx]), 1.0)
    got = _k_class_scores(conf)
    assert got["macro_f1"] == pytest.approx(f1_score(y[idx], pred[idx], average="macro", labels=[0, 1, 2],
                                                     zero_division=0))
    assert got["mcc"] == pytest.approx(matthews_corrcoef(y[idx], pred[idx]))


def test_corrections_equal_statsmodels():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(17)
    for m in (1, 2, 7, 50):
        p = rng.random(m) ** 3
        p[rng.random(m) < 0.2] = p[0]                                   # ties
        for method in ("holm", "fdr_bh"):
            np.testing.assert_allclose(adjust(p, method), multipletests(p, method=method)[1], rtol=1e-12)
    np.testing.assert_array_equal(np.isnan(adjust(np.array([0.1, np.nan]))), [False, True])
