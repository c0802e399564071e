"""The DuckDB index: counts match the stores, margins are right, writes are refused, builds are atomic."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from bertology import BertologyError
from bertology.analysis.index import build as index_mod
from bertology.analysis import sql
from bertology.analysis.confident_errors import margins
from bertology.analysis.index import build_index
from bertology.analysis.run import AnalyzeConfig, analyze
from bertology.cli import main
from bertology.extract.extraction import ExtractConfig, extract
from bertology.store import open_store

from .conftest import make_split


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_run(results, model, task, seed, n_dev=90, n_train=120, train=True, pretrained=None):
    dev = extract(str(model), make_split(n_dev, task=task, seed=seed), results / task / "dev.zarr",
                  ExtractConfig(window=64), progress=False)
    pre = None
    if pretrained is not None:  # another model on the same samples, attention only: the fine-tuning reference
        pre = extract(str(pretrained), make_split(n_dev, task=task, seed=seed), results / task / "pretrained_dev.zarr",
                      ExtractConfig(window=64, token_sites=(), extra_meta={"attention_only": True}), progress=False)
    train_store = None
    if train:
        tsplit = make_split(n_train, task=task, seed=seed + 100)
        tsplit.split = "train"
        train_store = extract(str(model), tsplit, results / task / "train.zarr",
                              ExtractConfig(window=64, token_sites=(), attention=False), progress=False)
    analyze(dev, results / task / "analysis", AnalyzeConfig(resamples=100, probe=False), train_store=train_store,
            pretrained_store=pre)
    return dev, train_store


@pytest.fixture(scope="module")
def results(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("results")
    make_run(root, tiny_models["bert"], "sst2", seed=1, pretrained=tiny_models["electra"])
    return root


def test_margin_on_hand_computed_examples():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.35, 0.65]])
    pred, conf, margin = margins(probs, np.array([0, 0, 1, 1]))
    assert pred.tolist() == [0, 1, 0, 1]
    np.testing.assert_allclose(conf, [0.9, 0.8, 0.6, 0.65])
    np.testing.assert_allclose(margin, [0.0, 0.6, 0.2, 0.0])  # errors: 0.8-0.2 (confident), 0.6-0.4 (not)


def test_counts_in_the_index_equal_counts_in_the_stores(results, tmp_path):
    db = tmp_path / "i.duckdb"
    rep = build_index(results, db)
    assert len(rep.added) == 2                                   # dev and train; the reference store is not a run
    assert len(rep.skipped) == 1 and "pretrained_dev.zarr: attention-only reference store" in rep.skipped[0]
    dev = open_store(results / "sst2" / "dev.zarr")
    q = lambda s: sql.query(db, s)  # noqa: E731
    runs = q("SELECT split, n_samples, layer_fit, carve_out FROM runs ORDER BY split")
    assert runs["n_samples"].tolist() == [90, 120]
    counts = q("SELECT split, count(*) n, count(*) FILTER (NOT correct) e FROM samples GROUP BY split ORDER BY split")
    assert counts["n"].tolist() == [90, 120]
    assert counts["e"].iloc[0] == int((dev["pred"] != dev["label"]).sum())
    assert q("SELECT count(*) n FROM errors WHERE split = 'dev'")["n"].iloc[0] == counts["e"].iloc[0]
    conf = q("SELECT sample_id, margin FROM confident_errors WHERE split = 'dev' ORDER BY sample_id")
    _, _, m = margins(dev["probs"].values, dev["label"].values)
    wrong = dev["pred"].values != dev["label"].values
    assert conf["sample_id"].tolist() == dev["sample"].values[wrong & (m > 0.3)].tolist()
    # layer predictions: one row per sample and layer 0..L, fitted on the train store
    lp = q("SELECT count(*) n, min(layer) lo, max(layer) hi, any_value(fit) fit FROM layer_predictions")
    assert (lp["n"].iloc[0], lp["lo"].iloc[0], lp["hi"].iloc[0], lp["fit"].iloc[0]) == (90 * 4, 0, 3, "train store")
    # the error summary's counts are the samples table's
    es = q("SELECT statistic, estimate FROM error_summary").set_index("statistic")["estimate"]
    assert es["n_errors"] == counts["e"].iloc[0]
    none_right = q("""SELECT count(*) n FROM samples s WHERE split = 'dev' AND NOT correct AND NOT EXISTS (
        SELECT 1 FROM layer_predictions l WHERE l.run_id = s.run_id AND l.sample_index = s.sample_index
        AND l.probe_correct)""")["n"].iloc[0]
    assert es["no_layer_right_share"] == pytest.approx(none_right / counts["e"].iloc[0])
    tok = q("SELECT count(*) n FROM token_strength")["n"].iloc[0]
    assert tok == dev.sizes["token"]


def test_probe_predictions_equal_sklearn_fitted_on_the_train_store(results):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    lp = pd.read_parquet(results / "sst2" / "analysis" / "layer_predictions.parquet")
    dev, train = open_store(results / "sst2" / "dev.zarr"), open_store(results / "sst2" / "train.zarr")
    x = lambda ds: ds["cls"].sel(layer=2, site="ln2").values.astype(np.float64)  # noqa: E731
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x(train), train["label"].values)
    assert lp[lp.layer == 2].sort_values("sample_index")["probe_pred"].tolist() == probe.predict(x(dev)).tolist()


def test_write_through_sql_is_refused_and_changes_nothing(results, tmp_path, capsys):
    db = tmp_path / "i.duckdb"
    build_index(results, db)
    before = digest(db)
    for statement in ("DELETE FROM samples", "DROP TABLE runs", "INSERT INTO runs SELECT * FROM runs",
                      "CREATE TABLE x AS SELECT 1", "SELECT 1; DELETE FROM samples"):
        assert main(["sql", "--db", str(db), statement]) == 2
        assert "read-only" in capsys.readouterr().err
    assert digest(db) == before
    assert main(["sql", "--db", str(db), "SELECT count(*) AS n FROM samples", "--format", "csv"]) == 0
    assert capsys.readouterr().out.strip() == "n\n210"


def test_second_build_with_no_new_runs_changes_nothing(results, tmp_path):
    db = tmp_path / "i.duckdb"
    build_index(results, db)
    before, mtime = digest(db), db.stat().st_mtime_ns
    rep = build_index(results, db)
    assert not rep.changed and len(rep.unchanged) == 2
    assert digest(db) == before and db.stat().st_mtime_ns == mtime


def test_incremental_and_interrupted_builds(results, tmp_path, tiny_models, monkeypatch):
    import shutil

    res = tmp_path / "results"
    shutil.copytree(results, res)
    db = tmp_path / "i.duckdb"
    build_index(res, db)
    before = digest(db)
    make_run(res, tiny_models["bert"], "rte", seed=2, train=False)
    added = []
    real = index_mod._add_run

    def crash(con, rid, store, analysis, fp):
        added.append(store)
        real(con, rid, store, analysis, fp)
        raise RuntimeError("power cut")

    monkeypatch.setattr(index_mod, "_add_run", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        build_index(res, db)
    assert [p.name for p in added] == ["dev.zarr"] and added[0].parent.name == "rte"
    assert digest(db) == before, "the old database is intact"
    assert not (tmp_path / "i.duckdb.building").exists()
    assert sql.query(db, "SELECT count(*) n FROM runs")["n"].iloc[0] == 2
    monkeypatch.setattr(index_mod, "_add_run", real)
    seen = []
    monkeypatch.setattr(index_mod, "_add_run", lambda *a: (seen.append(a[2]), real(*a)))
    rep = build_index(res, db)
    assert len(rep.added) == 1 and len(rep.unchanged) == 2 and [p.parent.name for p in seen] == ["rte"]
    runs = sql.query(db, "SELECT task, split, layer_fit FROM runs ORDER BY task, split")
    assert runs.fillna("NULL").values.tolist() == [["rte", "dev", "cross-fitted on dev"],
                                                   ["sst2", "dev", "train store"], ["sst2", "train", "NULL"]]


def test_bad_paths_give_clear_errors(tmp_path):
    with pytest.raises(BertologyError, match="no such results folder"):
        build_index(tmp_path / "none", tmp_path / "x.duckdb")
    with pytest.raises(BertologyError, match="no complete bertology store to index"):
        build_index(tmp_path, tmp_path / "x.duckdb")
    with pytest.raises(BertologyError, match="no such database; build it with `bertology index"):
        sql.query(tmp_path / "x.duckdb", "SELECT 1")


SWEEP_TABLES = ("interventions", "layer_skip", "apriori_validation", "intervention_predictions")
#: Tables of comparison folders: the README's queries on them run in tests/test_compare.py.
COMPARE_TABLES = ("compares", "compare_samples", "compare_summary", "compare_layers")


def test_every_sql_query_in_the_readme_runs(results, tmp_path):
    """Every ```sql block of the README (the worked queries and the sections' examples) runs on an index of
    this schema; those on sweep tables run in tests/test_workflow.py, on a workflow with a sweep, and those on
    comparisons in tests/test_compare.py."""
    import re

    from .conftest import REPO

    db = tmp_path / "i.duckdb"
    build_index(results, db)
    readme = (REPO / "README.md").read_text()
    queries = re.findall(r"```sql\n(.*?)```", readme, flags=re.S)
    here = [q for q in queries if not any(re.search(rf"\b{t}\b", q) for t in SWEEP_TABLES + COMPARE_TABLES)]
    assert len(queries) >= 9 and len(here) >= 8
    for q in here:
        sql.query(db, q)  # raises on any schema drift


def test_layer_0_is_the_embedding_output_and_aggregates_have_null_layers(results, tmp_path):
    """Schema 2: layer 0 means the embedding output alone (site embed); a row about a layer's heads together,
    or the whole model, says so in ``unit`` with NULL head (and layer) rather than a 0."""
    db = tmp_path / "i.duckdb"
    build_index(results, db)
    q = lambda s: sql.query(db, s)  # noqa: E731
    assert q("SELECT * FROM index_info").to_dict("records") == [
        {"schema_version": index_mod.INDEX_SCHEMA_VERSION, "analysis_format": 3}]
    tables = set(q("SELECT table_name FROM information_schema.columns WHERE column_name = 'layer'")["table_name"])
    assert {"attention_patterns", "attention_finetune_change", "separability", "layer_predictions"} <= tables
    for t in sorted(tables - {"separability", "layer_predictions"}):
        assert q(f'SELECT count(*) AS n FROM "{t}" WHERE layer = 0')["n"].iloc[0] == 0, t
    assert set(q("SELECT DISTINCT site FROM separability WHERE layer = 0")["site"]) == {"embed"}
    for t in ("attention_patterns", "attention_finetune_change", "attention_token_classes"):
        units = q(f'SELECT unit, count(*) FILTER (head IS NULL) AS no_head, count(*) FILTER (layer IS NULL) AS no_layer, '
                  f'count(*) AS n FROM "{t}" GROUP BY unit').set_index("unit")
        assert set(units.index) == {"head", "layer", "model"}, t
        assert units.at["head", "no_head"] == 0 and units.at["layer", "no_head"] == units.at["layer", "n"]
        assert units.at["model", "no_layer"] == units.at["model", "n"] and units.at["layer", "no_layer"] == 0
    assert q("SELECT count(*) AS n FROM ffn_roles WHERE site IS NOT NULL AND site <> vector")["n"].iloc[0] == 0
    assert set(q("SELECT DISTINCT site FROM ffn_roles WHERE site IS NOT NULL")["site"]) <= {"ff", "ln1", "ln2"}


def test_an_index_of_the_old_schema_is_rebuilt_and_old_analysis_folders_are_skipped(results, tmp_path):
    import duckdb
    import shutil

    db = tmp_path / "i.duckdb"
    build_index(results, db)
    with duckdb.connect(str(db)) as con:  # what schema 1 looked like: no index_info, a leftover table
        con.execute("DROP TABLE index_info")
        con.execute("CREATE TABLE token_buckets AS SELECT 1 AS x")
    rep = build_index(results, db)
    assert len(rep.added) == 2 and not rep.unchanged                     # rebuilt whole, not updated
    names = set(sql.query(db, "SELECT table_name FROM information_schema.tables")["table_name"])
    assert "token_buckets" not in names and "index_info" in names
    old = tmp_path / "old"
    shutil.copytree(results, old)
    info = old / "sst2" / "analysis" / "analysis.json"
    meta = __import__("json").loads(info.read_text())
    meta.pop("format")
    info.write_text(__import__("json").dumps(meta))
    rep = build_index(old, tmp_path / "old.duckdb")
    assert any("analysed in format 1" in s and "rerun `bertology analyze`" in s for s in rep.skipped)
    assert len(rep.added) == 1                                           # the train store alone


def test_an_index_of_named_paths_holds_exactly_those_runs(results, tmp_path):
    db = tmp_path / "i.duckdb"
    assert main(["index", str(results / "sst2" / "dev.zarr"), str(results / "sst2" / "analysis"),
                 "--db", str(db), "--quiet"]) == 0
    runs = sql.query(db, "SELECT split, analysis_path IS NOT NULL AS analysed FROM runs")
    assert runs.to_dict("records") == [{"split": "dev", "analysed": True}]
    assert main(["index", str(results / "sst2" / "dev.zarr"), str(results / "sst2" / "train.zarr")]) == 2
