"""What the store holds equals what Hugging Face computes, and the layer's own identities hold on it.

Checked independently: ``ln2`` against ``output_hidden_states``, attention against ``output_attentions``,
logits against the model's own, for tiny random BERT, RoBERTa and ELECTRA and (in test_real_minilm) for
the real MiniLM weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bertology.extract.extraction import ExtractConfig, extract
from bertology.extract.models import load_classifier
from bertology.store import open_store, sample_attention, sample_tokens

from .conftest import make_split


def f16_close(stored, reference, rel=4e-3):
    """Equal within float16 storage precision, relative to the reference's scale."""
    stored = np.asarray(stored, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    scale = max(np.abs(reference).max(), 1e-6)
    np.testing.assert_allclose(stored, reference, rtol=rel, atol=rel * scale)


def hf_reference(model_dir, ds, i):
    """Run the HF model on sample i alone (no padding) with its own output_hidden_states/attentions."""
    lm = load_classifier(str(model_dir))
    start, n = int(ds["token_start"][i]), int(ds["length"][i])
    ids = torch.tensor(ds["token_id"].values[start:start + n])[None]
    types = torch.tensor(ds["token_segment"].values[start:start + n].astype(np.int64))[None]
    kw = {"token_type_ids": types} if lm.model.config.type_vocab_size >= 2 else {}
    with torch.no_grad():
        out = lm.model(input_ids=ids, output_hidden_states=True, output_attentions=True, **kw)
    return lm, out


def check_against_hf(model_dir, store, samples):
    ds = open_store(store)
    L = ds.sizes["layer"]
    for i in samples:
        lm, out = hf_reference(model_dir, ds, i)
        assert len(out.attentions) == L and out.attentions[0] is not None
        f16_close(sample_tokens(ds, i, "token_embed").values, out.hidden_states[0][0])
        att = sample_attention(ds, i)
        for layer in range(1, L + 1):
            f16_close(sample_tokens(ds, i, "token_ln2").sel(token_layer=layer).values, out.hidden_states[layer][0])
            f16_close(ds["cls"].isel(sample=i).sel(layer=layer, site="ln2").values, out.hidden_states[layer][0, 0])
            f16_close(att.sel(layer=layer).values, out.attentions[layer - 1][0])
        np.testing.assert_allclose(ds["logits"].values[i], out.logits[0].numpy(), rtol=1e-4, atol=1e-5)
        assert int(ds["pred"][i]) == int(out.logits[0].argmax())
    np.testing.assert_allclose(ds["probs"].values.sum(axis=1), 1.0, atol=1e-6)


def layer_norm(x: np.ndarray, ln: torch.nn.LayerNorm) -> np.ndarray:
    """A plain numpy LayerNorm with the module's own gamma, beta and eps."""
    g, b = ln.weight.detach().double().numpy(), ln.bias.detach().double().numpy()
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + ln.eps) * g + b


def check_layer_identities(model_dir, store):
    """res1 = x + attn, ln1 = LN1(res1), res2 = ln1 + ff, ff = W2 ff_act + b2, on stored data, every layer."""
    ds = open_store(store)
    lm = load_classifier(str(model_dir))
    layers = lm.encoder_layers
    x = ds["token_embed"].values.astype(np.float64)
    for layer in range(1, ds.sizes["layer"] + 1):
        site = {s: ds[f"token_{s}"].sel(token_layer=layer).values.astype(np.float64)
                for s in ("attn", "res1", "ln1", "ff_act", "ff", "res2", "ln2")}
        mod = layers[layer - 1]
        f16_close(site["res1"], x + site["attn"])
        f16_close(site["ln1"], layer_norm(site["res1"], mod.attention.output.LayerNorm))
        f16_close(site["res2"], site["ln1"] + site["ff"])
        w2 = mod.output.dense
        f16_close(site["ff"], site["ff_act"] @ w2.weight.detach().double().numpy().T + w2.bias.detach().double().numpy())
        f16_close(site["ln2"], layer_norm(site["res2"], mod.output.LayerNorm))
        x = site["ln2"]


@pytest.mark.parametrize("family", ["bert", "roberta", "electra"])
def test_store_equals_hf_for_each_family(tmp_path, tiny_models, family):
    split = make_split(70, task="mrpc" if family == "bert" else "sst2", seed=1)  # pairs use token_type_ids
    store = extract(str(tiny_models[family]), split, tmp_path / "s.zarr", ExtractConfig(window=64), progress=False)
    ds = open_store(store)
    assert ds.attrs["model_type"] == family
    assert int(ds["length"].sum()) == ds.sizes["token"]
    if family == "bert":
        assert set(np.unique(ds["token_segment"].values)) == {0, 1}
    # shortest, longest and a middle sample; the longest shares a batch with no padding, the others do not
    lengths = ds["length"].values
    check_against_hf(tiny_models[family], store, [int(lengths.argmin()), int(lengths.argmax()), 65])
    check_layer_identities(tiny_models[family], store)


def test_cls_variable_equals_token_states_at_position_zero(tmp_path, tiny_models):
    store = extract(str(tiny_models["bert"]), make_split(20), tmp_path / "s.zarr", ExtractConfig(window=64),
                    progress=False)
    ds = open_store(store)
    starts = ds["token_start"].values
    for s in ("attn", "res1", "ln1", "ff", "res2", "ln2"):
        np.testing.assert_array_equal(ds["cls"].sel(site=s).values, ds[f"token_{s}"].values[starts])
    np.testing.assert_array_equal(ds["cls_ff_act"].values, ds["token_ff_act"].values[starts])
    np.testing.assert_array_equal(ds["cls_embed"].values, ds["token_embed"].values[starts])


def test_init_model_writes_the_same_random_bert_every_time(tmp_path):
    from bertology.extract.models import init_random_bert, load_classifier

    a = init_random_bert(tmp_path / "a", layers=2, hidden=32, heads=4, intermediate=64, seed=5)
    b = init_random_bert(tmp_path / "b", layers=2, hidden=32, heads=4, intermediate=64, seed=5)
    c = init_random_bert(tmp_path / "c", layers=2, hidden=32, heads=4, intermediate=64, seed=6)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    m = load_classifier(str(a), num_labels=2)
    assert len(m.encoder_layers) == 2 and m.model.config.hidden_size == 32
    assert not (tmp_path / "a.tmp").exists()


def test_init_like_copies_a_models_shape_and_tokenizer_with_fresh_seeded_weights(tmp_path):
    """Kovaleva's random-init baseline: MiniLM's architecture, size and vocabulary, none of its weights."""
    from safetensors.numpy import load_file

    from bertology.extract.models import init_like, load_classifier, resolve

    a = init_like(tmp_path / "a", "minilm-l6", seed=3)
    b = init_like(tmp_path / "b", "minilm-l6", seed=3)
    c = init_like(tmp_path / "c", "minilm-l6", seed=4)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    fresh, real = load_classifier(str(a), num_labels=2), load_classifier("minilm-l6", num_labels=2)
    assert len(fresh.encoder_layers) == len(real.encoder_layers) == 6
    assert fresh.model.config.hidden_size == real.model.config.hidden_size == 384
    assert fresh.tokenizer("a test")["input_ids"] == real.tokenizer("a test")["input_ids"]
    ours = load_file(str(a / "model.safetensors"))
    theirs = load_file(str(next(Path(resolve("minilm-l6")).glob("*.safetensors"))))
    q = next(k for k in ours if k.endswith("layer.0.attention.self.query.weight"))
    t = next(k for k in theirs if k.endswith("layer.0.attention.self.query.weight"))
    assert ours[q].shape == theirs[t].shape and not np.allclose(ours[q], theirs[t])


def test_seeds_that_share_a_carve_seed_share_their_dev_set(glue_dir, monkeypatch):
    """QNLI's train is carved out of dev: fine-tuning seeds 0 and 1 with --carve-seed 0 train on the same train
    part and hold out the same dev samples (so their stores compare sample by sample); without it each seed
    carves its own."""
    from bertology.extract import finetune as F

    seen = {}
    monkeypatch.setattr(F, "finetune", lambda model, train, dev, out, seed, **kw: seen.setdefault(
        (seed, kw.get("tag")), ({e.sample_id for e in train.examples}, [e.sample_id for e in dev.examples])))
    for seed, carve_seed, tag in ((0, 0, "a"), (1, 0, "b"), (1, None, "c")):
        F.finetune_task("minilm-l6", "qnli", "unused", glue_dir=glue_dir, carve_train_from_dev=0.5, seed=seed,
                        carve_seed=carve_seed, max_train=200, tag=tag)
    (train0, dev0), (train1, dev1), (train_own, dev_own) = (seen[k] for k in ((0, "a"), (1, "b"), (1, "c")))
    assert dev0 == dev1 and dev0 != dev_own
    all_train = {e.sample_id for e in F.load_split("qnli", "train", glue_dir, carve_train_from_dev=0.5,
                                                   carve_seed=0).examples}
    assert train0 <= all_train and train1 <= all_train and not set(dev0) & all_train
    assert train0 != train1          # each seed draws its own max_train subset of the same train part
