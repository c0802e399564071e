"""``bertology index RESULTS_DIR --db FILE``: one DuckDB database over every run under a results folder.

A *run* is one complete store, with the analysis tables written for it (the ``analysis.json`` beside them
names the store). Tables (every row carries ``run_id``):

- ``runs``: store path, task, split, model, checkpoint and its sha256, sample count, carve-out flag and
  JSON, how per-layer probes were fitted (``layer_fit``), the store metadata as JSON, a fingerprint;
- ``samples``: task, split, sample id, text(s), label, prediction (ids and names), probabilities,
  ``confidence`` p(predicted), ``margin`` p(predicted) − p(true), ``correct``, ``length`` in tokens;
- ``layer_predictions``: per sample and layer (0 … L), centroid and probe predictions, [CLS] norm and
  projection on the class-mean direction (from ``analyze``);
- ``token_strength``: per token at the strength layer: text, word, category, strength, buckets;
- the analysis tables ``task_metrics``, ``separability``, ``skip_candidates``, ``ffn_roles``, ``token_strength_summary``,
  ``error_summary`` (the files ``token_strength.parquet`` and ``errors.parquet``);
- with an intervention sweep: ``interventions`` (Δ accuracy per intervention), ``layer_skip`` (skip +
  compensation classifier), ``apriori_validation``, and ``intervention_predictions`` (per sample and
  intervention: prediction, correct, flipped);
- with attention maps in the store: ``attention_patterns`` (Kovaleva's pattern types and the features they
  are read from, per head, layer and model), ``attention_token_classes`` (attention to [CLS], [SEP],
  punctuation, other), ``attention_examples`` (one map of each type) and, with a pre-trained reference
  store, ``attention_finetune_change`` (cosine of pre-trained and fine-tuned maps);
- with a full capture: the norm-based attribution tables ``attribution_similarity`` (Spearman ρ of each
  scope's map with the previous scope's), ``attribution_completeness``, ``ff_amp_pairs``,
  ``ff_amp_wordsplit``, ``attention_norms`` (α, ‖f(x)‖, ‖αf(x)‖ by token class), ``attribution_example``,
  ``ff_norm_ratio`` and ``ffn_outlier_dims``;
- views ``errors`` (``NOT correct``) and ``confident_errors`` (errors with ``margin > 0.3``).

Rebuilding is incremental (a run whose fingerprint is unchanged is not re-read) and atomic (the new
database is written beside the old one and renamed over it only when complete). Duplicates cannot arise:
``runs`` has the primary key ``run_id`` and the per-row tables their natural keys (:data:`PRIMARY_KEYS`), and
each run's rows are inserted in one transaction with its ``runs`` row, so a run inserted twice fails as a
whole. A build killed at any point leaves the previous database in place; its leftover temporary database
and write-ahead log are removed before the next build starts. Builds of one database take a file lock
(``DB.lock``): a second build waits for the first (up to ``wait`` seconds), then finds the work done.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from filelock import FileLock, Timeout

from bertology import BertologyError
from bertology.store import open_store
from bertology.store.reader import StoreError, read_attrs

from .errors import CONFIDENT_MARGIN, margins

#: analysis file -> table name in the database
ANALYSIS_TABLES = {
    "task_metrics": "task_metrics",
    "separability": "separability",
    "skip_candidates": "skip_candidates",
    "ffn_roles": "ffn_roles",
    "token_strength": "token_strength_summary",
    "errors": "error_summary",
    "layer_predictions": "layer_predictions",
    "token_buckets": "token_strength",
    "interventions": "interventions",
    "layer_skip": "layer_skip",
    "apriori_validation": "apriori_validation",
    "intervention_predictions": "intervention_predictions",
    "attention_patterns": "attention_patterns",
    "attention_token_classes": "attention_token_classes",
    "attention_finetune_change": "attention_finetune_change",
    "attention_examples": "attention_examples",
    "attribution_similarity": "attribution_similarity",
    "attribution_completeness": "attribution_completeness",
    "ff_amp_pairs": "ff_amp_pairs",
    "ff_amp_wordsplit": "ff_amp_wordsplit",
    "attention_norms": "attention_norms",
    "attribution_example": "attribution_example",
    "ff_norm_ratio": "ff_norm_ratio",
    "ffn_outlier_dims": "ffn_outlier_dims",
}
RUN_TABLES = ("samples",) + tuple(ANALYSIS_TABLES.values())
#: Natural keys: no two rows of a table may share them (summary tables are guarded through ``runs``).
PRIMARY_KEYS = {
    "runs": ("run_id",),
    "samples": ("run_id", "sample_index"),
    "layer_predictions": ("run_id", "sample_index", "layer"),
    "token_strength": ("run_id", "sample", "position"),
    "intervention_predictions": ("run_id", "intervention", "sample_index"),
}
VIEWS = {
    "errors": "SELECT * FROM samples WHERE NOT correct",
    "confident_errors": f"SELECT * FROM samples WHERE NOT correct AND margin > {CONFIDENT_MARGIN}",
}


@dataclass
class IndexReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # incomplete or unreadable stores, with the reason

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)


def _walk(results: Path):
    """Stores (``*.zarr`` folders, not descended into) and analysis folders under ``results``."""
    stores, analyses = [], []
    for root, dirs, files in os.walk(results):
        for d in list(dirs):
            if d.endswith(".zarr"):
                stores.append(Path(root) / d)
                dirs.remove(d)
        if "analysis.json" in files:
            analyses.append(Path(root))
    return sorted(stores), sorted(analyses)


def _fingerprint(store: Path, analysis: Path | None) -> str:
    h = hashlib.sha256(json.dumps(read_attrs(store), sort_keys=True).encode())
    if analysis is not None:
        for f in sorted(analysis.glob("*.parquet")) + [analysis / "analysis.json"]:
            h.update(f.name.encode())
            h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def run_id(store: Path) -> str:
    return hashlib.sha256(str(store.resolve()).encode()).hexdigest()[:16]


def sample_frame(ds, rid: str) -> pd.DataFrame:
    """The ``samples`` rows of one store."""
    labels = ds["label"].values.astype(int)
    probs = ds["probs"].values.astype(np.float64)
    pred, confidence, margin = margins(probs, labels)
    names = np.array([str(c) for c in ds["class"].values], dtype=object)
    return pd.DataFrame({
        "run_id": rid, "task": ds.attrs["task"], "split": ds.attrs["split"],
        "sample_id": ds["sample"].values.astype(np.int64), "sample_index": np.arange(len(labels)),
        "text_a": ds["text_a"].values.astype(object), "text_b": ds["text_b"].values.astype(object),
        "label": labels, "label_name": names[labels], "pred": pred, "pred_name": names[pred],
        "probs": list(probs), "confidence": confidence, "margin": margin, "correct": pred == labels,
        "length": ds["length"].values.astype(np.int64),
    })


def _append(con, table: str, df: pd.DataFrame) -> None:
    """Insert by column name, creating the table or adding columns it lacks."""
    # an all-None object column would get DuckDB's NULL type, which later values cannot be cast to
    df = df.astype({c: "string" for c in df.columns if df[c].dtype == object and df[c].isna().all()})
    con.register("_incoming", df)
    try:
        exists = con.sql(f"SELECT count(*) FROM information_schema.tables WHERE table_name = '{table}'").fetchall()[0][0]
        if not exists:
            columns = con.sql("DESCRIBE SELECT * FROM _incoming").fetchall()
            key = PRIMARY_KEYS.get(table, ())
            ddl = [f'"{name}" {dtype}' for name, dtype, *_ in columns]
            if key:
                ddl.append("PRIMARY KEY (" + ", ".join(f'"{k}"' for k in key) + ")")
            con.execute(f'CREATE TABLE "{table}" ({", ".join(ddl)})')
            con.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM _incoming')
            return
        have = {r[0] for r in con.sql(f"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}'").fetchall()}
        for name, dtype, *_ in con.sql("DESCRIBE SELECT * FROM _incoming").fetchall():
            if name not in have:
                con.execute(f'ALTER TABLE "{table}" ADD COLUMN "{name}" {dtype}')
        con.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM _incoming')
    finally:
        con.unregister("_incoming")


def _add_run(con, rid: str, store: Path, analysis: Path | None, fingerprint: str) -> None:
    ds = open_store(store)
    info = json.loads((analysis / "analysis.json").read_text()) if analysis else {}
    carve = ds.attrs.get("carve_out")
    _append(con, "runs", pd.DataFrame([{
        "run_id": rid, "store_path": str(store.resolve()), "task": ds.attrs["task"], "split": ds.attrs["split"],
        "model": ds.attrs["model"], "checkpoint": ds.attrs["model_path"], "model_sha256": ds.attrs["model_sha256"],
        "n_samples": ds.sizes["sample"], "carve_out": bool(carve), "carve_out_json": json.dumps(carve),
        "analysis_path": str(analysis.resolve()) if analysis else None,
        "layer_fit": info.get("layer_fit"), "metadata": json.dumps(dict(ds.attrs), sort_keys=True),
        "fingerprint": fingerprint,
    }]))
    _append(con, "samples", sample_frame(ds, rid))
    if analysis is None:
        return
    for stem, table in ANALYSIS_TABLES.items():
        path = analysis / f"{stem}.parquet"
        if path.is_file():
            _append(con, table, pd.read_parquet(path).assign(run_id=rid, split=ds.attrs["split"]))


def _existing_runs(db: Path) -> dict[str, str]:
    """``run_id -> fingerprint`` of the runs already in ``db`` (none when it does not exist yet)."""
    if not db.exists():
        return {}
    try:
        with duckdb.connect(str(db), read_only=True) as con:
            return dict(con.sql("SELECT run_id, fingerprint FROM runs").fetchall())
    except duckdb.Error as e:
        raise BertologyError(f"{db}: exists but is not a readable bertology index ({str(e).splitlines()[0]}); "
                             f"move it away or choose another --db") from None


def build_index(results: str | Path, db: str | Path, wait: float = 600) -> IndexReport:
    """Index every complete store under ``results`` into ``db`` (see the module docstring); wait up to
    ``wait`` seconds for another build of ``db`` to finish first."""
    results, db = Path(results), Path(db)
    if not results.is_dir():
        raise BertologyError(f"{results}: no such results folder")
    if not db.parent.is_dir():
        raise BertologyError(f"{db}: its folder {db.parent} does not exist; create it or choose another --db")
    _existing_runs(db)  # an unreadable database is refused before anything (the lock file too) is created
    lock = FileLock(str(db) + ".lock")
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        raise BertologyError(f"{db}: another `bertology index` is building this database (lock {db}.lock held "
                             f"for over {wait:g} s); wait for it to finish, or raise --wait") from None
    try:
        return _build(results, db)
    finally:
        lock.release()


def _build(results: Path, db: Path) -> IndexReport:
    stores, analyses = _walk(results)
    by_store: dict[str, Path] = {}
    for a in analyses:
        try:
            info = json.loads((a / "analysis.json").read_text())
            target = (a / info["store_relative"]) if "store_relative" in info else Path(info["store"])
            by_store[str(target.resolve())] = a
        except (KeyError, ValueError) as e:
            raise BertologyError(f"{a / 'analysis.json'}: unreadable ({e}); rerun `bertology analyze`") from None
    report = IndexReport()
    wanted: dict[str, tuple[Path, Path | None, str]] = {}
    for store in stores:
        try:
            attrs = read_attrs(store)
        except StoreError as e:
            report.skipped.append(f"{store}: {e}")
            continue
        if not (attrs.get("bertology_progress") or {}).get("complete"):
            report.skipped.append(f"{store}: incomplete extraction")
            continue
        if (attrs.get("bertology") or {}).get("attention_only"):
            report.skipped.append(f"{store}: attention-only reference store (read by `analyze --pretrained-store`)")
            continue
        analysis = by_store.get(str(store.resolve()))
        wanted[run_id(store)] = (store, analysis, _fingerprint(store, analysis))
    if not wanted:
        raise BertologyError(f"{results}: no complete bertology store to index"
                             + (f" ({len(report.skipped)} skipped: {'; '.join(report.skipped)})" if report.skipped else ""))
    existing = _existing_runs(db)
    for rid, (store, _, fp) in wanted.items():
        if rid not in existing:
            report.added.append(str(store))
        elif existing[rid] != fp:
            report.updated.append(str(store))
        else:
            report.unchanged.append(str(store))
    report.removed = [rid for rid in existing if rid not in wanted]
    if not report.changed and db.exists():
        return report  # nothing new: the database file is not touched
    tmp = db.with_name(db.name + ".building")
    leftovers = (tmp, tmp.with_name(tmp.name + ".wal"))
    for f in leftovers:  # a killed build's temporary database and its write-ahead log: never replayed
        f.unlink(missing_ok=True)
    try:
        if db.exists():
            shutil.copyfile(db, tmp)
        with duckdb.connect(str(tmp)) as con:
            stale = [rid for rid in existing if rid not in wanted or existing[rid] != wanted[rid][2]]
            tables = {r[0] for r in con.sql("SELECT table_name FROM information_schema.tables").fetchall()}
            con.execute("BEGIN TRANSACTION")
            for rid in stale:
                for table in ("runs",) + RUN_TABLES:
                    if table in tables:
                        con.execute(f'DELETE FROM "{table}" WHERE run_id = ?', [rid])
            con.execute("COMMIT")
            for rid, (store, analysis, fp) in wanted.items():
                if existing.get(rid) != fp:
                    con.execute("BEGIN TRANSACTION")  # a run's rows go in together, or not at all
                    _add_run(con, rid, store, analysis, fp)
                    con.execute("COMMIT")
            for name, query in VIEWS.items():
                con.execute(f"CREATE OR REPLACE VIEW {name} AS {query}")
            con.execute("CHECKPOINT")
        os.replace(tmp, db)
    finally:
        for f in leftovers:
            f.unlink(missing_ok=True)
    return report
