"""Kovaleva's attention-head analyses: synthetic maps of each type, padding, the fine-tuning cosine against
plain numpy, the features against a per-sample loop, threshold calibration."""

from __future__ import annotations

import numpy as np
import pytest

from bertology import BertologyError
from bertology.analysis.attention_heads import (FEATURES, PATTERNS, TOKEN_CLASSES, PatternClassifier,
                                                PatternThresholds, attention_tables, finetune_cosine,
                                                head_features, map_features, token_classes)
from bertology.analysis.bootstrap import Bootstrap
from bertology.extract.extraction import ExtractConfig, extract
from bertology.store import open_store
from bertology.store.reader import sample_attention

from .conftest import make_split

# a sentence pair of 12 + 12 tokens, the separators included
TOKENS = (["[CLS]"] + [f"a{k}" for k in range(9)] + [",", "[SEP]"]
          + [f"b{k}" for k in range(10)] + [".", "[SEP]"])
N = len(TOKENS)
CLASSES, SEGMENT = token_classes(TOKENS)
SPECIAL = np.isin(CLASSES, [TOKEN_CLASSES.index("cls"), TOKEN_CLASSES.index("sep")])


def _rows(weights: np.ndarray) -> np.ndarray:
    return weights / weights.sum(axis=1, keepdims=True)


def synthetic_map(kind: str, rng) -> np.ndarray:
    """An n × n attention map (rows: queries) of one of Kovaleva's types."""
    idx = np.arange(N)
    neighbours = (np.abs(idx[:, None] - idx[None, :]) == 1).astype(float)
    special = np.tile(SPECIAL.astype(float), (N, 1))
    background = _rows(np.ones((N, N)))
    if kind == "vertical":
        return 0.85 * _rows(special) + 0.15 * background
    if kind == "diagonal":
        return 0.85 * _rows(neighbours) + 0.15 * background
    if kind == "vertical+diagonal":
        return 0.45 * _rows(special) + 0.45 * _rows(neighbours) + 0.10 * background
    if kind == "block":
        same = (SEGMENT[:, None] == SEGMENT[None, :]).astype(float)
        return 0.95 * _rows(same * rng.uniform(0.5, 1.5, (N, N))) + 0.05 * background
    if kind == "heterogeneous":
        return rng.dirichlet(np.full(N, 1.0), size=N)
    raise ValueError(kind)


def test_token_classes_and_segments():
    assert TOKEN_CLASSES[CLASSES[0]] == "cls" and TOKEN_CLASSES[CLASSES[11]] == "sep"
    assert TOKEN_CLASSES[CLASSES[10]] == "punct" and TOKEN_CLASSES[CLASSES[1]] == "other"
    assert SEGMENT[:12].tolist() == [0] * 12 and SEGMENT[12:].tolist() == [1] * 12
    cls, seg = token_classes(["<s>", "Ġa", "</s>", "</s>", "Ġb", "Ġ!", "</s>"])   # RoBERTa's pair layout
    assert [TOKEN_CLASSES[c] for c in cls] == ["cls", "other", "sep", "sep", "other", "punct", "sep"]
    assert seg.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert token_classes(["[CLS]", "a", "b", "[SEP]"])[1].tolist() == [0, 0, 0, 0]   # one sentence


@pytest.mark.parametrize("kind", PATTERNS)
def test_the_classifier_labels_synthetic_maps_of_each_type(kind):
    rng = np.random.default_rng(PATTERNS.index(kind))
    maps = np.stack([synthetic_map(kind, rng) for _ in range(20)])           # (20, n, n)
    f = map_features(maps, CLASSES, SEGMENT)
    v, d, b = (f[:, FEATURES.index(k)] for k in ("vertical", "diagonal", "block"))
    got = PatternClassifier().predict(v, d, b)
    assert [PATTERNS[c] for c in got] == [kind] * 20


def test_features_are_the_closed_form_shares():
    maps = synthetic_map("vertical", np.random.default_rng(0))[None]
    f = map_features(maps, CLASSES, SEGMENT)[0]
    n_special = SPECIAL.sum()
    assert f[FEATURES.index("vertical")] == pytest.approx(0.85 + 0.15 * n_special / N)
    assert f[FEATURES.index("attention_to_cls")] == pytest.approx(0.85 / n_special + 0.15 / N)
    assert sum(f[FEATURES.index(f"attention_to_{c}")] for c in TOKEN_CLASSES) == pytest.approx(1.0)
    # diagonal of a pure neighbour map: every query's mass is on i±1
    idx = np.arange(N)
    nb = _rows((np.abs(idx[:, None] - idx[None, :]) == 1).astype(float))[None]
    assert map_features(nb, CLASSES, SEGMENT)[0, FEATURES.index("diagonal")] == pytest.approx(1.0)
    # one sentence: block is undefined
    single = np.full((1, 5, 5), 0.2)
    assert np.isnan(map_features(single, *token_classes(["[CLS]", "a", "b", "c", "[SEP]"]))[0, FEATURES.index("block")])


def test_calibration_recovers_the_labels_from_mislabelling_thresholds():
    rng = np.random.default_rng(3)
    maps, labels = [], []
    for kind in PATTERNS:
        for _ in range(6):
            maps.append(synthetic_map(kind, rng))
            labels.append(kind)
    f = map_features(np.stack(maps), CLASSES, SEGMENT)
    v, d, b = (f[:, FEATURES.index(k)] for k in ("vertical", "diagonal", "block"))
    given = PatternThresholds(vertical=0.95, diagonal=0.95, mixed_each=0.6, block=0.99)
    bad = PatternClassifier(given)
    assert np.mean(np.array(PATTERNS)[bad.predict(v, d, b)] == np.array(labels)) < 0.5
    grid = {"vertical": np.array([0.3, 0.5, 0.95]), "diagonal": np.array([0.5, 0.95]),
            "mixed_each": np.array([0.2, 0.6]), "block": np.array([0.8, 0.99])}
    fitted = bad.fit(v, d, b, labels, grid=grid)
    assert fitted.accuracy_ == 1.0 and fitted.thresholds is given       # the constructor's setting is kept
    assert fitted.thresholds_ != given and fitted.active_thresholds is fitted.thresholds_
    assert np.array_equal(np.array(PATTERNS)[fitted.predict(v, d, b)], np.array(labels))


@pytest.fixture(scope="module")
def stores(tiny_models, tmp_path_factory):
    """The same sentence pairs through two tiny models, float32; and once more with other padding."""
    root = tmp_path_factory.mktemp("attention")
    split = make_split(12, task="mrpc", seed=7, max_words=14)
    a = extract(str(tiny_models["bert"]), split, root / "a.zarr", ExtractConfig(dtype="float32", batch_size=8),
                progress=False)
    a1 = extract(str(tiny_models["bert"]), split, root / "a1.zarr",
                 ExtractConfig(dtype="float32", batch_size=1, token_sites=()), progress=False)
    b = extract(str(tiny_models["electra"]), split, root / "b.zarr",
                ExtractConfig(dtype="float32", token_sites=(), extra_meta={"attention_only": True}), progress=False)
    return open_store(a), open_store(a1), open_store(b)


def test_store_features_equal_a_per_sample_loop(stores):
    ds = stores[0]
    feats = head_features(ds)
    for i in range(ds.sizes["sample"]):
        maps = sample_attention(ds, i).values                     # (L, h, n, n)
        tokens = [str(t) for t in ds["token_text"].values[int(ds["token_start"][i]):][:int(ds["length"][i])]]
        cls, seg = token_classes(tokens)
        for layer in range(maps.shape[0]):
            for head in range(maps.shape[1]):
                a = maps[layer, head].astype(np.float64)
                n = a.shape[0]
                vertical = sum(a[q, k] for q in range(n) for k in range(n) if cls[k] <= 1) / n
                diagonal = sum(a[q, k] for q in range(n) for k in range(n) if abs(q - k) == 1) / n
                block = sum(a[q, k] for q in range(n) for k in range(n) if seg[q] == seg[k]) / n
                got = feats.values[i, layer, head]
                np.testing.assert_allclose([got[0], got[1], got[2]], [vertical, diagonal, block], rtol=1e-9)


def test_padding_never_changes_a_result(stores):
    """Batches of 8 (padded to the longest) and of 1 (no padding) give the same tables."""
    padded, alone = stores[0], stores[1]
    boot = Bootstrap.draw(padded.sizes["sample"], 50, seed=0)
    t8, t1 = attention_tables(padded, boot), attention_tables(alone, boot)
    for name in t8:
        num = t8[name].select_dtypes("number").columns
        np.testing.assert_allclose(t8[name][num].to_numpy(float), t1[name][num].to_numpy(float), atol=1e-6,
                                   err_msg=name)


def test_finetune_cosine_equals_plain_numpy(stores):
    a, _, b = stores
    cos = finetune_cosine(a, b).values
    for i in range(a.sizes["sample"]):
        x, y = sample_attention(a, i).values, sample_attention(b, i).values
        for layer in range(x.shape[0]):
            for head in range(x.shape[1]):
                u, w = x[layer, head].ravel().astype(float), y[layer, head].ravel().astype(float)
                assert cos[i, layer, head] == pytest.approx(u @ w / np.sqrt((u @ u) * (w @ w)), rel=1e-9)
    assert np.allclose(finetune_cosine(a, a).values, 1.0)
    assert (cos < 0.99999).any()       # two different models differ (random tiny models: near-uniform maps)
    with pytest.raises(BertologyError, match="other samples"):
        finetune_cosine(a, b.isel(sample=slice(0, 5)))


def test_tables_cover_every_head_and_type(stores):
    a, _, b = stores
    tables = attention_tables(a, Bootstrap.draw(a.sizes["sample"], 100, seed=0), b)
    pat = tables["attention_patterns"]
    heads = pat[(pat["unit"] == "head") & pat["statistic"].str.startswith("share_")]
    L, H = a.sizes["layer"], a.sizes["head"]
    assert len(heads) == L * H * len(PATTERNS)                         # a pair task: block included
    total = heads.groupby(["layer", "head"])["estimate"].sum()
    np.testing.assert_allclose(total.to_numpy(), 1.0)                  # the types partition the maps
    model = pat[(pat["unit"] == "model") & pat["statistic"].str.startswith("share_")]
    assert (model["ci_low"] <= model["estimate"]).all() and (model["estimate"] <= model["ci_high"]).all()
    ch = tables["attention_finetune_change"]
    assert set(ch["unit"]) == {"head", "layer", "model"} and ch["estimate"].between(-1, 1).all()
    assert ch.loc[ch["unit"] != "head", "head"].isna().all() and ch.loc[ch["unit"] == "model", "layer"].isna().all()
    assert (ch.loc[ch["unit"] == "head", ["layer", "head"]] >= 1).all().all()          # no 0 standing for "all"
    tc = tables["attention_token_classes"]
    per_head = tc[tc["unit"] == "head"].groupby(["layer", "head"])["estimate"].sum()
    np.testing.assert_allclose(per_head.to_numpy(), 1.0)               # the four classes cover every key
    ex = tables["attention_examples"]
    assert set(ex["pattern"]) <= set(PATTERNS) and len(ex)
