"""Interventions do what their names say (checked against independent computations), and a partial forward
from the store equals a full forward with the same intervention."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bertology import BertologyError
from bertology.extract.batching import collate, encode
from bertology.extract.extraction import ExtractConfig, extract
from bertology.extract.interventions import intervened, parse
from bertology.extract.models import load_classifier
from bertology.extract.partial import LayerInputs, forward_from
from bertology.extract.sweep import skip_features
from bertology.store import open_store

from .conftest import make_split


def _layer_norm(x, ln):
    x = x.double()
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + ln.eps) * ln.weight.double() + ln.bias.double()


@pytest.fixture(scope="module")
def bert(tiny_models):
    return load_classifier(str(tiny_models["bert"]))


@pytest.fixture(scope="module")
def batch(bert):
    split = make_split(6, task="mrpc", seed=4, max_words=12)
    enc = encode(bert.tokenizer, split, 64)
    return collate(enc, np.arange(6), bert.tokenizer.pad_token_id, True)


def _run(lm, batch, spec, **kw):
    with intervened(lm.model, spec) as iv, torch.no_grad():
        iv.set_mask(batch["attention_mask"])
        return lm.model(**batch, output_hidden_states=True, **kw)


def test_names_parse_compose_and_refuse_nonsense(bert):
    assert [i.name for i in parse("skip:3+head:2.4+ffn:1")] == ["ffn:1", "head:2.4", "skip:3"]
    assert parse("none") == ()
    for bad in ("skip:0x", "head:2", "drop:1", "heads:a"):
        with pytest.raises(BertologyError, match="expected one of"):
            parse(bad)
    with pytest.raises(BertologyError, match="layers 1..3"):
        with intervened(bert.model, "skip:4"):
            pass


def test_skip_layer_is_the_identity(bert, batch):
    out = _run(bert, batch, "skip:2")
    torch.testing.assert_close(out.hidden_states[2], out.hidden_states[1])
    plain = _run(bert, batch, "none")
    torch.testing.assert_close(out.hidden_states[1], plain.hidden_states[1])  # layers below untouched


def test_ffn_and_attention_removal_keep_residual_and_layernorm(bert, batch):
    layer = bert.model.bert.encoder.layer[1]
    out = _run(bert, batch, "ffn:2")
    plain = _run(bert, batch, "none")
    from bertology.extract.capture import Capture

    with Capture(bert.model, sites=("ln1",), attention=False) as cap, intervened(bert.model, "ffn:2") as iv, \
            torch.no_grad():
        iv.set_mask(batch["attention_mask"])
        bert.model(**batch)
    torch.testing.assert_close(out.hidden_states[2], _layer_norm(cap.states["ln1"][1], layer.output.LayerNorm).float())
    assert not torch.allclose(out.hidden_states[2], plain.hidden_states[2])
    out = _run(bert, batch, "attn:2")
    expect = _layer_norm(out.hidden_states[1], layer.attention.output.LayerNorm)   # ln1 = LN1(x)
    with Capture(bert.model, sites=("ln1",), attention=False) as cap, intervened(bert.model, "attn:2") as iv, \
            torch.no_grad():
        iv.set_mask(batch["attention_mask"])
        bert.model(**batch)
    torch.testing.assert_close(cap.states["ln1"][1], expect.float())


def test_disabled_head_attends_uniformly_over_real_tokens(bert, batch, monkeypatch):
    """Against an independent implementation: the eager attention function replaced by one that makes the
    head's probabilities uniform over real tokens before multiplying by V."""
    from transformers.models.bert import modeling_bert

    target_layer, target_head = 1, 2       # 0-based: layer 2, head 3
    mask = batch["attention_mask"]
    eager = modeling_bert.eager_attention_forward
    layers = bert.model.bert.encoder.layer

    def uniform_head(module, q, k, v, attention_mask, **kw):
        out, probs = eager(module, q, k, v, attention_mask, **kw)
        if module is not layers[target_layer].attention.self:
            return out, probs
        probs = probs.clone()
        probs[:, target_head] = (mask / mask.sum(1, keepdim=True)).to(probs.dtype)[:, None, :]
        return torch.matmul(probs, v).transpose(1, 2).contiguous(), probs

    with monkeypatch.context() as mp:
        mp.setattr(modeling_bert, "eager_attention_forward", uniform_head)
        with torch.no_grad():
            ref = bert.model(**batch, output_attentions=True)
    out = _run(bert, batch, "head:2.3")
    torch.testing.assert_close(out.logits, ref.logits)
    assert not torch.allclose(out.logits, _run(bert, batch, "none").logits)
    # every head of a layer: heads:2 equals disabling all four one by one
    both = _run(bert, batch, "heads:2")
    each = _run(bert, batch, "+".join(f"head:2.{h}" for h in range(1, 5)))
    torch.testing.assert_close(both.logits, each.logits)


@pytest.mark.parametrize("family", ["bert", "roberta", "electra"])
def test_partial_forward_from_the_store_equals_a_full_forward(tiny_models, tmp_path, family):
    split = make_split(10, task="rte", seed=2, max_words=15)
    path = extract(str(tiny_models[family]), split, tmp_path / "s.zarr", ExtractConfig(dtype="float32"),
                   progress=False)
    ds = open_store(path)
    lm = load_classifier(str(tiny_models[family]))
    enc = encode(lm.tokenizer, split, 128)
    idx = np.arange(len(split))
    full_batch = collate(enc, idx, lm.tokenizer.pad_token_id, lm.model.config.type_vocab_size >= 2)
    inputs = LayerInputs(ds)
    for spec in ("none", "skip:1", "skip:3", "ffn:2", "attn:3", "head:2.1", "heads:1", "skip:2+head:3.4"):
        ivs = parse(spec)
        start = min([i.layer for i in ivs] or [1])
        hidden, mask = inputs.batch(start, idx)
        logits, cls = forward_from(lm.model, hidden, mask, start, ivs)
        full = _run(lm, full_batch, spec)
        torch.testing.assert_close(logits, full.logits, rtol=1e-4, atol=1e-5, msg=f"{family} {spec}")
        torch.testing.assert_close(cls, full.hidden_states[-1][:, 0], rtol=1e-4, atol=1e-5)
    # and the unmodified partial forward reproduces the stored logits
    hidden, mask = inputs.batch(1, idx)
    logits, _ = forward_from(lm.model, hidden, mask, 1)
    np.testing.assert_allclose(logits.numpy(), ds["logits"].values, rtol=1e-4, atol=1e-5)


def test_skip_features_equal_full_forwards_of_each_skipped_model(bert):
    """The compensation classifier's features: reusing one plain forward's layer outputs gives the same final
    [CLS] as running the whole model with the layer skipped."""
    split = make_split(9, task="rte", seed=5, max_words=14)
    enc = encode(bert.tokenizer, split, 64)
    skips = [1, 2, 3]
    got = skip_features(bert, enc, skips, batch_size=4, dev=torch.device("cpu"))
    batch = collate(enc, np.arange(len(split)), bert.tokenizer.pad_token_id, True)
    for k, spec in enumerate(["none"] + [f"skip:{s}" for s in skips]):
        want = _run(bert, batch, spec).hidden_states[-1][:, 0].numpy()
        np.testing.assert_allclose(got[k], want, rtol=1e-4, atol=1e-5, err_msg=spec)
    assert not np.allclose(got[1], got[0])                    # skipping changes the features
