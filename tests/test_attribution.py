"""Norm-based attribution: completeness of every scope on the real MiniLM weights, the integrated-gradient
step's convergence, the cheap forms against naive ones, and the store-side parameter checks."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from bertology import BertologyError
from bertology.analysis.attribution import (activation, attribute, attribution_tables, decompose_layer,
                                            read_sentence)
from bertology.analysis.vocabulary import SCOPE_SITE, SCOPES
from bertology.extract.extraction import ExtractConfig, extract
from bertology.extract.tasks import load_split
from bertology.store import open_store
from bertology.store.params import ModelParameters
from bertology.store.reader import StoreError


@pytest.fixture(scope="module")
def real_store(tmp_path_factory, glue_dir):
    """Four MRPC dev pairs through the real MiniLM weights, every site stored in float32."""
    split = load_split("mrpc", "dev", glue_dir, limit=4)
    path = extract("minilm-l6", split, tmp_path_factory.mktemp("attr") / "mrpc.zarr",
                   ExtractConfig(dtype="float32", allow_untrained_head=True), progress=False)
    return open_store(path)


def test_every_scope_sums_to_its_stored_site_on_real_weights(real_store):
    """Completeness, the correctness check: for every layer and sentence, Σ_j vectors + bias = the site the
    model computed (attn, res1, ln1, ff, res2, ln2), in float64."""
    seen = set()
    for i, layer, tokens, maps, errors, secs, fnorm, alpha in attribute(real_store, samples=4, dtype=np.float64):
        seen.add((i, layer))
        assert set(errors) == set(SCOPE_SITE)
        for scope, err in errors.items():
            assert err < 2e-6, f"sample {i} layer {layer} {scope}: relative error {err:.2e}"
        assert set(maps) == set(SCOPES)
        n = len(tokens)
        assert all(m.shape == (n, n) for m in maps.values())
        np.testing.assert_allclose(maps["ATTN-W"].sum(axis=1), 1.0, atol=1e-5)   # head-averaged weights
    assert seen == {(i, layer) for i in range(4) for layer in range(1, 7)}


def test_integrated_gradients_error_falls_with_steps(real_store):
    params = ModelParameters(real_store.attrs)
    sent = read_sentence(real_store, 0)
    att, x, ff = sent.attention, sent.inputs(3), sent.site("ff", 3)
    errors = []
    for steps in (1, 4, 16, 64):
        res = decompose_layer(x, att[2], params.layer(3), ig_steps=steps)
        errors.append(np.linalg.norm(res.sums()["ATTNRESLNFF-N"] - ff) / np.linalg.norm(ff))
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-3 and errors[0] > 10 * errors[-1]
    exact = decompose_layer(x, att[2], params.layer(3))                       # the limit: g(h)/h
    assert np.linalg.norm(exact.sums()["ATTNRESLNFF-N"] - ff) / np.linalg.norm(ff) < 2e-6


def test_attention_vectors_equal_the_naive_per_head_tensor(real_store):
    """ATTN-N without the (heads, n, n, d) tensor equals the naive computation that forms it."""
    params = ModelParameters(real_store.attrs)
    p = params.layer(2)
    sent = read_sentence(real_store, 1)
    att, x, n = sent.attention, sent.inputs(2), len(sent.tokens)
    res = decompose_layer(x, att[1], p)
    naive = np.zeros((att.shape[1], n, n, x.shape[1]))
    for h in range(att.shape[1]):
        f = x @ p.W_V[h] @ p.W_O[h]                                          # (n, d)
        naive[h] = att[1, h][:, :, None] * f[None, :, :]
    np.testing.assert_allclose(res.vectors["ATTN-N"], naive.sum(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.maps()["ATTN-N"], np.linalg.norm(naive.sum(axis=0), axis=-1), rtol=1e-9)
    np.testing.assert_allclose(res.value_norms, np.linalg.norm(np.stack(
        [x @ p.W_V[h] @ p.W_O[h] for h in range(att.shape[1])]), axis=-1), rtol=1e-9)


def test_activation_derivatives_match_finite_differences():
    x = np.linspace(-4, 4, 81)
    for name in ("gelu", "gelu_new", "relu"):
        g, dg = activation(name)
        num = (g(x + 1e-6) - g(x - 1e-6)) / 2e-6
        keep = np.abs(x) > 1e-3                                               # relu's kink
        np.testing.assert_allclose(dg(x)[keep], num[keep], atol=1e-6, err_msg=name)
    with pytest.raises(BertologyError, match="not implemented"):
        activation("swish")


def test_parameters_are_read_only_for_the_recorded_checkpoint(real_store, tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(real_store.attrs["model_path"], copy)
    assert ModelParameters(real_store.attrs, copy).layer(1).W_1.shape == (384, 1536)
    weights = next(copy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF                                                          # one flipped byte
    weights.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="differ from the checkpoint"):
        ModelParameters(real_store.attrs, copy)
    with pytest.raises(StoreError, match="not there"):
        ModelParameters(real_store.attrs, tmp_path / "missing")


def test_tables_have_every_scope_layer_and_test(real_store):
    tables, cost = attribution_tables(real_store, resamples=100, samples=4)
    sim = tables["attribution_similarity"]
    assert set(sim["scope"]) == set(SCOPES[1:]) and set(sim["layer"].dropna()) == set(range(1, 7))
    assert set(sim.loc[sim["layer"].isna(), "unit"]) == {"model"}
    assert set(sim.loc[sim["layer"].notna(), "unit"]) == {"layer"}
    assert sim["estimate"].between(-1, 1).all() and set(sim["maps"]) == {"norm", "row_normalised"}
    comp = tables["attribution_completeness"]
    assert comp["estimate"].max() < 1e-4                                      # float32 store, float32 compute
    ws = tables["ff_amp_wordsplit"]
    assert set(ws["stage"]) == {"ff", "ffres", "ffresln"} and len(ws) == 18
    pairs = tables["ff_amp_pairs"]
    assert (pairs.groupby("layer")["rank"].max() <= 10).all()
    norms = tables["attention_norms"]
    per_head = norms[(norms["statistic"] == "alpha") & (norms["head"] > 0)]
    assert set(per_head["token_class"]) >= {"cls", "sep", "other"}
    assert cost["ig_seconds_per_sentence_layer"] > 0 and cost["sentences"] == 4
    ex = tables["attribution_example"]
    assert set(ex["scope"]) == set(SCOPES)


def test_attribution_needs_a_full_capture(tiny_models, tmp_path):
    from .conftest import make_split

    path = extract(str(tiny_models["bert"]), make_split(3), tmp_path / "cls.zarr",
                   ExtractConfig(token_sites=(), attention=False), progress=False)
    with pytest.raises(BertologyError, match="needs a full capture: the store holds no attention maps"):
        next(attribute(open_store(path)))
