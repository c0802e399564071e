"""The store as a contract: ragged round trip, chunking, completeness, resume, refusal of foreign stores."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from bertology import BertologyError
from bertology.cli import main
from bertology.extract.batching import collate, encode
from bertology.extract.capture import ATTENTION, Capture
from bertology.extract.extraction import ExtractConfig, extract
from bertology.extract.models import load_classifier
from bertology.store import StoreError, open_store, sample_attention, sample_tokens
from bertology.store.info import describe

from .conftest import make_split


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_ragged_round_trip_equals_what_was_captured(tmp_path, tiny_models):
    """Each sample, captured alone (no padding at all), reads back bit for bit (after the float16 cast).

    batch_size=1 makes the extraction's arithmetic that of the lone forward pass; batched runs differ from
    it by float32 rounding only (test_extract_equivalence bounds that)."""
    split = make_split(40, seed=5)
    store = extract(str(tiny_models["bert"]), split, tmp_path / "s.zarr", ExtractConfig(window=64, batch_size=1),
                    progress=False)
    ds = open_store(store)
    lengths = ds["length"].values
    assert len(set(lengths.tolist())) > 10, "mixed lengths expected"
    lm = load_classifier(str(tiny_models["bert"]))
    enc = encode(lm.tokenizer, split, 128)
    for i in (0, int(lengths.argmin()), int(lengths.argmax()), 23):
        with Capture(lm.model) as cap, torch.no_grad():
            lm.model(**collate(enc, [i], 0, True))
        n = int(lengths[i])
        assert ds["token_id"].values[ds["token_start"].values[i]:][:n].tolist() == enc.input_ids[i]
        for site in ("attn", "res1", "ln1", "ff_act", "ff", "res2", "ln2"):
            want = torch.stack(cap.states[site])[:, 0].to(torch.float16).numpy().transpose(1, 0, 2)
            np.testing.assert_array_equal(sample_tokens(ds, i, f"token_{site}").values, want)
        np.testing.assert_array_equal(sample_tokens(ds, i, "token_embed").values,
                                      cap.states["embed"][0].to(torch.float16).numpy())
        want_att = torch.stack(cap.states[ATTENTION])[:, 0].to(torch.float16).numpy()  # (L, h, n, n)
        got_att = sample_attention(ds, i).values
        assert got_att.shape == (3, 4, n, n)
        np.testing.assert_array_equal(got_att, want_att)
        # tokens read back carry their sample and position
        assert (sample_tokens(ds, i)["token_sample"].values == i).all()
        assert sample_tokens(ds, i)["token_position"].values.tolist() == list(range(n))


def test_writer_round_trip_of_ragged_windows(tmp_path):
    """The writer alone: synthetic ragged data of mixed lengths, written window by window, read back exactly."""
    from bertology.store.writer import StorePlan, StoreWriter

    rng = np.random.default_rng(0)
    n, L, H, F, h = 150, 2, 8, 16, 2
    lengths = rng.integers(1, 30, size=n)
    T = int(lengths.sum())
    plan = StorePlan(
        meta={"format": "bertology-activation-store", "schema_version": 1, "test": True},
        sample_ids=np.arange(n) * 3, labels=rng.integers(0, 2, n), text_a=[f"s{i}" for i in range(n)],
        text_b=[""] * n, lengths=lengths, token_ids=rng.integers(0, 99, T), token_text=["t"] * T,
        token_segment=np.zeros(T, int), class_names=["a", "b"], n_layers=L, n_heads=h, hidden=H, ff_hidden=F,
        token_sites=("embed", "ln2", "ff_act"), token_layers=(1, 2), attention=True, dtype="float32", window=64)
    states = [rng.normal(size=(k, L, H)).astype(np.float32) for k in lengths]
    maps = [rng.random(size=(k * k, L, h)).astype(np.float32) for k in lengths]
    writer = StoreWriter(tmp_path / "w.zarr", plan)
    for w in range(plan.n_windows):
        sl = plan.window_slice(w)
        m = sl.stop - sl.start
        writer.write_window(w, {
            "cls": rng.normal(size=(m, L, 6, H)), "cls_ff_act": np.zeros((m, L, F)), "cls_embed": np.zeros((m, H)),
            "logits": np.zeros((m, 2)), "probs": np.zeros((m, 2)), "pred": np.zeros(m, int),
            "token_embed": np.concatenate([s[:, 0] for s in states[sl]]),
            "token_ln2": np.concatenate(states[sl]),
            "token_ff_act": np.concatenate([np.repeat(s, 2, axis=2) for s in states[sl]]),
            "attention": np.concatenate(maps[sl]),
        })
        writer.commit(w)
    writer.finish()
    ds = open_store(tmp_path / "w.zarr")
    assert ds["sample"].values.tolist() == (np.arange(n) * 3).tolist()
    for i in range(n):
        np.testing.assert_array_equal(sample_tokens(ds, i, "token_ln2").values, states[i])
        np.testing.assert_array_equal(sample_tokens(ds, i, "token_embed").values, states[i][:, 0])
        k = int(lengths[i])
        np.testing.assert_array_equal(sample_attention(ds, i).values, maps[i].reshape(k, k, L, h).transpose(2, 3, 0, 1))
    # blocks of samples on the ragged axes: spans, pair spans and token-bounded blocks tile them exactly
    lay = ds.bertology
    t0, t1, offsets = lay.spans(slice(10, 40))
    flat = ds["token_ln2"].isel(token=slice(t0, t1)).values
    for j, i in enumerate(range(10, 40)):
        np.testing.assert_array_equal(flat[offsets[j]:offsets[j] + lengths[i]], states[i])
    p0, p1 = lay.pair_span(slice(10, 40))
    assert p1 - p0 == int(np.sum(lengths[10:40] ** 2))
    blocks = list(lay.token_blocks(slice(0, n), max_tokens=100))
    assert blocks[0][0] == 0 and blocks[-1][1] == n and all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    assert all(t1 - t0 <= 100 or i1 - i0 == 1 for i0, i1, t0, t1 in blocks)
    assert sum(t1 - t0 for *_, t0, t1 in blocks) == T


def test_layout_dims_coords_and_chunks(tmp_path, tiny_models):
    split = make_split(130)
    store = extract(str(tiny_models["bert"]), split, tmp_path / "s.zarr", ExtractConfig(window=64), progress=False)
    ds = open_store(store)
    assert ds["cls"].dims == ("sample", "layer", "site", "hidden")
    assert ds["site"].values.tolist() == ["attn", "res1", "ln1", "ff", "res2", "ln2"]
    assert ds["layer"].values.tolist() == [1, 2, 3] and ds["head"].values.tolist() == [1, 2, 3, 4]
    assert ds["class"].values.tolist() == ["negative", "positive"]
    assert ds["sample"].values.tolist() == list(range(130))
    assert ds["cls"].dtype == np.float16 and ds["logits"].dtype == np.float32
    assert ds["cls_ff_act"].shape == (130, 3, 64)
    # one layer of every sample and every layer of one sample are both a handful of chunks
    cls = zarr.open_array(str(store / "cls"), mode="r")
    assert cls.chunks == (64, 1, 6, 32)
    tok = zarr.open_array(str(store / "token_ln2"), mode="r")
    assert tok.chunks[1] == 1
    # no padding is stored anywhere
    assert ds.sizes["token"] == int(ds["length"].sum())
    assert ds.sizes["pair"] == int((ds["length"].astype(int) ** 2).sum())
    assert ds["text_a"].values[3] == split.examples[3].text_a
    # lazy: nothing is loaded until asked
    assert ds["token_ln2"].chunks is not None
    # every stored variable is documented in store.schema.VARIABLES with its dimensions
    from bertology.store.schema import VARIABLES

    declared = {name: dims for name, (dims, _) in VARIABLES.items()}
    for name, var in ds.variables.items():
        if name in ds.dims:
            continue
        want = declared.get(name) or declared["token_<site>"]
        if name == "token_embed":
            want = ("token", "hidden")
        elif name == "token_ff_act":
            want = ("token", "token_layer", "ff_hidden")
        assert var.dims == want, name


def test_float32_on_request_and_cls_only_mode(tmp_path, tiny_models):
    split = make_split(30)
    full = open_store(extract(str(tiny_models["bert"]), split, tmp_path / "f.zarr",
                              ExtractConfig(window=64, dtype="float32"), progress=False))
    assert full["cls"].dtype == np.float32 and full["token_ln2"].dtype == np.float32
    cheap = open_store(extract(str(tiny_models["bert"]), split, tmp_path / "c.zarr",
                               ExtractConfig(window=64, token_sites=(), attention=False), progress=False))
    assert not any(v.startswith("token_") and v not in cheap.coords for v in cheap.data_vars)
    assert "attention" not in cheap and cheap.attrs["token_sites"] == []
    np.testing.assert_allclose(cheap["cls"].values.astype(np.float32), full["cls"].values, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(cheap["logits"].values, full["logits"].values, rtol=1e-5, atol=1e-6)
    size = lambda p: sum(f.stat().st_size for f in Path(p).rglob("*") if f.is_file())  # noqa: E731
    assert size(tmp_path / "c.zarr") < size(tmp_path / "f.zarr") / 5
    with pytest.raises(StoreError, match="holds no attention maps"):
        sample_attention(cheap, 0)


def test_interrupt_and_resume_gives_the_same_bytes(tmp_path, tiny_models):
    split = make_split(300, seed=2)
    cfg = ExtractConfig(window=64, batch_size=16)
    clean = extract(str(tiny_models["bert"]), split, tmp_path / "clean.zarr", cfg, progress=False)

    class Crash(Exception):
        pass

    def crash_after_two(w):
        if w == 1:
            raise Crash

    target = tmp_path / "resumed.zarr"
    with pytest.raises(Crash):
        extract(str(tiny_models["bert"]), split, target, cfg, progress=False, on_window=crash_after_two)
    with pytest.raises(StoreError, match=r"extraction is incomplete \(2 windows written\); rerun the same"):
        open_store(target)
    assert "INCOMPLETE" in describe(target)
    seen = []
    extract(str(tiny_models["bert"]), split, target, cfg, progress=False, on_window=seen.append)
    assert seen == [2, 3, 4], "resume starts at the first unwritten window"
    assert tree_digest(target) == tree_digest(clean)
    open_store(target)


def test_resume_refuses_other_settings_and_complete_stores(tmp_path, tiny_models):
    split = make_split(100)
    target = tmp_path / "s.zarr"

    def stop(w):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract(str(tiny_models["bert"]), split, target, ExtractConfig(window=64), progress=False, on_window=stop)
    with pytest.raises(BertologyError, match=r"unfinished store of a different extraction \(differs in: dtype\)"):
        extract(str(tiny_models["bert"]), split, target, ExtractConfig(window=64, dtype="float32"), progress=False)
    extract(str(tiny_models["bert"]), split, target, ExtractConfig(window=64), progress=False)
    with pytest.raises(BertologyError, match="already a complete store; pass --overwrite"):
        extract(str(tiny_models["bert"]), split, target, ExtractConfig(window=64), progress=False)
    extract(str(tiny_models["bert"]), split, target, ExtractConfig(window=64), progress=False, overwrite=True)


def test_readers_refuse_foreign_paths(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        open_store(tmp_path / "nothing.zarr")
    g = zarr.open_group(str(tmp_path / "other.zarr"), mode="w", zarr_format=3)
    g.create_array("x", shape=(2,), dtype="float32")
    with pytest.raises(StoreError, match="is a zarr group but not a bertology activation store"):
        open_store(tmp_path / "other.zarr")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "file.txt").write_text("hello")
    with pytest.raises(StoreError, match="not a zarr store|not a bertology"):
        open_store(tmp_path / "plain")
    g.attrs["bertology"] = {"format": "bertology-activation-store", "schema_version": 99}
    with pytest.raises(StoreError, match="store schema version 99, this bertology reads version 1"):
        open_store(tmp_path / "other.zarr")


def test_cli_extract_info_and_errors(tmp_path, tiny_models, glue_dir, capsys):
    out = tmp_path / "cli.zarr"
    rc = main(["extract", "--model", str(tiny_models["roberta"]), "--task", "rte", "--split", "dev", "--limit", "20",
               "--glue-dir", str(glue_dir), "--out", str(out), "--token-sites", "ln2,embed", "--token-layers", "1,3",
               "--quiet"])
    assert rc == 0
    ds = open_store(out)
    assert ds["token_layer"].values.tolist() == [1, 3] and "token_attn" not in ds and "token_ln2" in ds
    assert ds.attrs["segment_policy"].startswith("none") and ds.attrs["data_file"].endswith("RTE/dev.tsv")
    assert main(["store", "info", str(out)]) == 0
    info = capsys.readouterr().out
    for needle in ("rte / dev  (20 samples", "roberta", "token sites: embed ln2 at layers [1, 3]", "accuracy",
                   "size on disk", "cls "):
        assert needle in info
    # bad input: exit code 2 and a message naming the problem
    assert main(["extract", "--model", str(tiny_models["bert"]), "--task", "qnli", "--split", "train",
                 "--glue-dir", str(glue_dir), "--out", str(tmp_path / "q.zarr")]) == 2
    assert "--carve-train-from-dev" in capsys.readouterr().err
    assert main(["store", "info", str(tmp_path)]) == 2
    assert "not a" in capsys.readouterr().err
    assert main(["extract", "--model", str(tiny_models["bert"]), "--task", "sst2", "--glue-dir", str(glue_dir),
                 "--out", str(tmp_path / "x.zarr"), "--token-layers", "7"]) == 2
    assert "token layer(s) [7] out of range; layers are numbered 1..3" in capsys.readouterr().err


def test_carve_out_is_recorded_in_the_store(tmp_path, tiny_models, glue_dir):
    rc = main(["extract", "--model", str(tiny_models["bert"]), "--task", "qnli", "--split", "train",
               "--carve-train-from-dev", "0.5", "--limit", "10", "--glue-dir", str(glue_dir), "--cls-only",
               "--out", str(tmp_path / "q.zarr"), "--quiet"])
    assert rc == 0
    ds = open_store(tmp_path / "q.zarr")
    assert ds.attrs["carve_out"]["from"] == "dev" and ds.attrs["carve_out"]["n_train"] == 2731
    assert "CARVE-OUT" in describe(tmp_path / "q.zarr")


def test_unsupported_architecture_is_refused(tmp_path, minilm_tokenizer):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=100)).save_pretrained(tmp_path)
    with pytest.raises(BertologyError, match=r"model_type 'gpt2'; bertology supports the post-LN BERT family"):
        load_classifier(str(tmp_path))
    with pytest.raises(BertologyError, match="not a model directory"):
        load_classifier(str(tmp_path / "missing"))
