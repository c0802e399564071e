"""The report reads the index through its one reader: every row, never capped, and the index as it is.

A 12-layer model over long RTE pairs makes an ``attribution_example`` of 12 layers × 7 scopes × n² rows,
far past the SQL sandbox's 100,000-row cap; the report reads it whole. The report never rebuilds the index
behind the user's back: it says when the index is out of date, and refreshes it only with ``reindex``.
"""

from __future__ import annotations

import shutil
from dataclasses import replace

import pandas as pd
import pytest

from bertology import BertologyError
from bertology.analysis.index import IndexReader, build_index, check_index
from bertology.analysis.sql import query

#: The user sandbox's default row cap: what the report's reads must not be limited by.
SANDBOX_ROWS = 100_000


@pytest.fixture(scope="module")
def deep_results(tmp_path_factory, minilm_tokenizer, glue_dir):
    """A results folder with one analysed RTE dev store of a 12-layer random-init BERT (width 32), its first
    sample a long pair."""
    from transformers import AutoModelForSequenceClassification, BertConfig

    from bertology.analysis.run import AnalyzeConfig, analyze
    from bertology.extract.extraction import ExtractConfig, extract
    from bertology.extract.tasks import load_split

    root = tmp_path_factory.mktemp("deep")
    config = BertConfig(vocab_size=minilm_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=12,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=160, num_labels=2)
    model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(root / "model")
    minilm_tokenizer.save_pretrained(root / "model")
    split = load_split("rte", "dev", glue_dir)
    longest = sorted(split.examples, key=lambda e: -len(e.text_a + (e.text_b or "")))
    picked = [e for c in (0, 1) for e in [e for e in longest if e.label == c][:4]]
    split = replace(split, examples=sorted(picked, key=lambda e: e.sample_id))  # pairs that fill 128 tokens
    store = extract(str(root / "model"), split, root / "rte" / "dev.zarr",
                    ExtractConfig(window=64, max_length=128), progress=False)
    analyze(store, root / "rte" / "analysis", AnalyzeConfig(resamples=20, probe=False, permutations=0,
                                                            attribution_samples=1))
    build_index(root, root / "bertology.duckdb")
    return root


def test_a_report_reads_an_attribution_example_past_the_sandbox_cap_whole(deep_results):
    from bertology.reports.collect import collect

    written = pd.read_parquet(deep_results / "rte" / "analysis" / "attribution_example.parquet")
    n = int(written.groupby(["layer", "scope"]).size().iloc[0] ** 0.5)
    assert written["layer"].nunique() == 12 and written["scope"].nunique() == 7
    assert len(written) == 12 * 7 * n * n > SANDBOX_ROWS
    sandboxed = query(deep_results / "bertology.duckdb", "SELECT * FROM attribution_example")
    assert sandboxed.attrs["truncated"] and len(sandboxed) == SANDBOX_ROWS   # what the report used to read
    data = collect(deep_results)
    got = data.table("attribution_example")
    assert len(got) == len(written)
    key = ["layer", "scope", "output", "input"]
    pd.testing.assert_frame_equal(got[written.columns].sort_values(key).reset_index(drop=True),
                                  written.sort_values(key).reset_index(drop=True), check_dtype=False)


def test_the_report_of_a_12_layer_model_shows_every_layer(deep_results, tmp_path):
    from bertology.reports import build_report

    page = build_report(deep_results, tmp_path / "report").read_text()
    assert "RTE" in page and "attribution" in page.lower()
    with IndexReader(deep_results / "bertology.duckdb") as index:
        layers = index.query("SELECT DISTINCT layer FROM separability WHERE layer IS NOT NULL ORDER BY layer")
    assert layers["layer"].tolist() == list(range(13))


def test_the_report_says_when_the_index_is_stale_and_refreshes_it_only_when_asked(deep_results, tmp_path, capsys):
    from bertology.reports import build_report

    results = tmp_path / "results"
    shutil.copytree(deep_results, results)
    (results / "bertology.duckdb").unlink()
    with pytest.raises(BertologyError, match=r"no index of .*`bertology index .*results`, or pass --reindex"):
        build_report(results, tmp_path / "r0")
    build_index(results, results / "bertology.duckdb")
    db_bytes = (results / "bertology.duckdb").read_bytes()
    assert not check_index(results, results / "bertology.duckdb").changed
    build_report(results, tmp_path / "r1")
    assert "out of date" not in capsys.readouterr().err
    # the analysis changes after the index was built: the report reads the index as it is, and says so
    meta = pd.read_parquet(results / "rte" / "analysis" / "task_metrics.parquet")
    meta.assign(estimate=0.123).to_parquet(results / "rte" / "analysis" / "task_metrics.parquet", index=False)
    assert check_index(results, results / "bertology.duckdb").describe() == "1 run(s) changed since it was built"
    build_report(results, tmp_path / "r2")
    err = capsys.readouterr().err
    assert "out of date" in err and "1 run(s) changed" in err and "--reindex" in err
    assert (results / "bertology.duckdb").read_bytes() == db_bytes        # not rebuilt as a side effect
    assert "0.123" not in (tmp_path / "r2" / "summary.md").read_text()
    build_report(results, tmp_path / "r3", reindex=True)
    assert "out of date" not in capsys.readouterr().err
    assert not check_index(results, results / "bertology.duckdb").changed
    assert "0.123" in (tmp_path / "r3" / "summary.md").read_text()
    # an analysis folder the index names is gone: the report stops with the fix instead of a traceback
    shutil.rmtree(results / "rte" / "analysis")
    with pytest.raises(BertologyError, match=r"cannot be read now .*--reindex"):
        build_report(results, tmp_path / "r4")
