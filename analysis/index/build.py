"""``bertology index PATH... --db FILE``: one DuckDB database over every run under results folders (or the
stores and analysis folders named).

A *run* is one complete store, with the analysis tables written for it (the ``analysis.json`` beside them
names the store); what the index holds is :mod:`.schema`.

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
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import duckdb
import numpy as np
import pandas as pd
from filelock import FileLock, Timeout

from bertology import BertologyError
from bertology.store import open_store
from bertology.store.location import Location, locate
from bertology.store.reader import StoreError, is_complete, read_attrs
from bertology.store.schema import is_regression

from ..registry import ANALYSIS_FORMAT
from ..confident_errors import margins
from ..regression import ERROR_THRESHOLD
from .schema import (ACROSS_FORMAT, ACROSS_TABLES, ANALYSIS_TABLES, COMPARE_FORMAT, COMPARE_TABLES, INDEX_SCHEMA_VERSION, PRIMARY_KEYS,
                     RUN_TABLES, VIEWS, schema_version)


@dataclass
class IndexReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # incomplete or unreadable stores, with the reason

    outdated_schema: bool = False   # the database is of an older schema: rebuilt whole
    comparisons: set[str] = field(default_factory=set)   # which of the paths are comparison folders

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed or self.outdated_schema)

    def describe(self) -> str:
        """What a build would change, in words."""
        if self.outdated_schema:
            return "it is of an older schema"
        parts = []
        for k, v in (("added", self.added), ("changed", self.updated), ("removed", self.removed)):
            comparisons = sum(x in self.comparisons or x.startswith(("cmp-", "set-")) for x in v)
            parts += [f"{n} {what} {k}" for n, what in ((len(v) - comparisons, "run(s)"),
                                                         (comparisons, "comparison(s)")) if n]
        return ", ".join(parts) + " since it was built"


#: Column types a regression's float scores widen to DOUBLE (a label column of class indices, say).
INTEGER_TYPES = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
                           "UINTEGER", "UBIGINT"})

def _walk(paths: list[Location]):
    """Stores (``*.zarr`` folders, not descended into), analysis folders and compare folders
    (``bertology compare --out``): each path given is one of them, or a folder searched for them (on disk or
    on an object store)."""
    stores, analyses, compares = set(), set(), set()   # compares: compare and across-runs folders
    for path in paths:
        if path.name.endswith(".zarr"):
            stores.add(path)
            continue
        for root, dirs, files in path.walk():
            for d in list(dirs):
                if d.endswith(".zarr"):
                    stores.add(root / d)
                    dirs.remove(d)
            if "analysis.json" in files:
                analyses.add(root)
            if "compare.json" in files or "across.json" in files:
                compares.add(root)
    key = Location.resolved
    return sorted(stores, key=key), sorted(analyses, key=key), sorted(compares, key=key)


def _tables_of(analysis: Location) -> list[str]:
    return [n for n in analysis.listdir() if n.endswith(".parquet")]


def _fingerprint(store: Location | None, folder: Location | None, info: str = "analysis.json") -> str:
    h = hashlib.sha256(json.dumps(read_attrs(store), sort_keys=True).encode() if store else b"")
    if folder is not None:
        for name in _tables_of(folder) + [info]:
            h.update(name.encode())
            h.update(hashlib.sha256((folder / name).read_bytes()).digest())
    return h.hexdigest()


def run_id(store: str | Path | Location) -> str:
    """A run's id: a digest of its store's absolute path or URL."""
    return hashlib.sha256(locate(store).resolved().encode()).hexdigest()[:16]


def compare_id(folder: str | Path | Location) -> str:
    """A comparison's id: a digest of its folder's absolute path or URL."""
    return "cmp-" + hashlib.sha256(locate(folder).resolved().encode()).hexdigest()[:12]


def sample_frame(ds, rid: str, error_threshold: float = ERROR_THRESHOLD) -> pd.DataFrame:
    """The ``samples`` rows of one store. A regression's label and prediction are the gold and predicted
    scores (``label_name``, ``pred_name``: the same as text), ``abs_error`` their distance, ``correct``
    whether it is within ``error_threshold``; its ``confidence`` and ``margin`` are NULL (no probability)."""
    probs = ds["probs"].values.astype(np.float64)
    n = len(probs)
    if is_regression(ds.attrs):
        labels, pred = ds["label"].values.astype(np.float64), ds["pred"].values.astype(np.float64)
        abs_error = np.abs(pred - labels)
        confidence = margin = np.full(n, np.nan)
        label_name, pred_name = [f"{v:g}" for v in labels], [f"{v:.3g}" for v in pred]
        right, extra = abs_error <= error_threshold, {"abs_error": abs_error}
    else:
        labels = ds["label"].values.astype(int)
        pred, confidence, margin = margins(probs, labels)
        names = np.array([str(c) for c in ds["class"].values], dtype=object)
        label_name, pred_name = names[labels], names[pred]
        right, extra = pred == labels, {}
    return pd.DataFrame({
        "run_id": rid, "task": ds.attrs["task"], "split": ds.attrs["split"],
        "sample_id": ds["sample"].values.astype(np.int64), "sample_index": np.arange(n),
        "text_a": ds["text_a"].values.astype(object), "text_b": ds["text_b"].values.astype(object),
        "label": labels, "label_name": label_name, "pred": pred, "pred_name": pred_name,
        "probs": list(probs), "confidence": confidence, "margin": margin, "correct": right, **extra,
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
        have = dict(con.sql(f"SELECT column_name, data_type FROM information_schema.columns "
                            f"WHERE table_name = '{table}'").fetchall())
        for name, dtype, *_ in con.sql("DESCRIBE SELECT * FROM _incoming").fetchall():
            if name not in have:
                con.execute(f'ALTER TABLE "{table}" ADD COLUMN "{name}" {dtype}')
            elif dtype == "DOUBLE" and have[name] in INTEGER_TYPES:   # a regression's scores beside class indices
                con.execute(f'ALTER TABLE "{table}" ALTER COLUMN "{name}" TYPE DOUBLE')
        con.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM _incoming')
    finally:
        con.unregister("_incoming")


def _add_run(con, rid: str, store: Location, analysis: Location | None, fingerprint: str) -> None:
    ds = open_store(store)
    info = json.loads((analysis / "analysis.json").read_text()) if analysis else {}
    carve = ds.attrs.get("carve_out")
    _append(con, "runs", pd.DataFrame([{
        "run_id": rid, "store_path": store.resolved(), "task": ds.attrs["task"], "split": ds.attrs["split"],
        "task_type": ds.attrs.get("task_type", "classification"), "model": ds.attrs["model"], "checkpoint": ds.attrs["model_path"], "model_sha256": ds.attrs["model_sha256"],
        "seed": checkpoint_seed(ds.attrs["model_path"]),
        "n_samples": ds.sizes["sample"], "carve_out": bool(carve), "carve_out_json": json.dumps(carve),
        "analysis_path": analysis.resolved() if analysis else None,
        "layer_fit": info.get("layer_fit"), "metadata": json.dumps(dict(ds.attrs), sort_keys=True),
        "fingerprint": fingerprint,
    }]))
    _append(con, "samples", sample_frame(ds, rid, info.get("config", {}).get("error_threshold", ERROR_THRESHOLD)))
    if analysis is None:
        return
    present = set(_tables_of(analysis))
    for table in ANALYSIS_TABLES:
        if f"{table}.parquet" in present:
            frame = pd.read_parquet(io.BytesIO((analysis / f"{table}.parquet").read_bytes()))
            _append(con, table, frame.assign(run_id=rid, split=ds.attrs["split"]))


def set_id(folder: str | Path | Location) -> str:
    """An across-runs folder's id: a digest of its folder's absolute path or URL."""
    return "set-" + hashlib.sha256(locate(folder).resolved().encode()).hexdigest()[:12]


def checkpoint_seed(checkpoint: str) -> int | None:
    """The fine-tuning seed a checkpoint records (``metrics.json`` of ``bertology finetune``), else None."""
    try:
        return int(json.loads((locate(checkpoint) / "metrics.json").read_text())["seed"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def _add_set(con, sid: str, folder: Location, fingerprint: str) -> None:
    info = json.loads((folder / "across.json").read_text())
    runs = [folder.named_by(rel, rec) for rel, rec in zip(info.get("runs_relative") or [None] * len(info["runs"]),
                                                          info["runs"])]
    ids = [run_id(store) for store in info["stores"]]
    _append(con, "run_sets", pd.DataFrame([{
        "set_id": sid, "set_path": folder.resolved(), "task": info["task"], "n_runs": len(runs),
        "seeds": json.dumps(info["seeds"]), "run_ids": json.dumps(ids),
        "run_paths": json.dumps([r.resolved() for r in runs]), "n_samples": info["n_samples"],
        "pretrained_path": info.get("pretrained"), "random_init_path": info.get("random_init"),
        "fingerprint": fingerprint}]))
    _add_tables(con, folder, ACROSS_TABLES, set_id=sid)


def _add_tables(con, folder: Location, tables: tuple[str, ...], **key) -> None:
    """Each of ``tables`` the folder holds (``NAME.parquet``), every row tagged with ``key`` (its id column)."""
    present = set(_tables_of(folder))
    for table in tables:
        if f"{table}.parquet" in present:
            frame = pd.read_parquet(io.BytesIO((folder / f"{table}.parquet").read_bytes()))
            _append(con, table, frame.assign(**key))


def _compared_runs(folder: Location, info: dict) -> tuple[str, str, Location, Location]:
    """The run ids and analysis folders a compare folder compares (found beside it when results move)."""
    a, b = (folder.named_by(info.get(f"{s}_relative"), info[s]) for s in ("a", "b"))
    ids = []
    for side, f in (("a", a), ("b", b)):
        try:
            ids.append(run_id(analysed_store(f, json.loads((f / "analysis.json").read_text()))))
        except (OSError, KeyError, ValueError):
            ids.append(run_id(info[f"store_{side}"]))       # the analysis folder is gone: as recorded
    return ids[0], ids[1], a, b


def _add_compare(con, cid: str, folder: Location, fingerprint: str) -> None:
    info = json.loads((folder / "compare.json").read_text())
    a_id, b_id, a, b = _compared_runs(folder, info)
    _append(con, "compares", pd.DataFrame([{
        "compare_id": cid, "compare_path": folder.resolved(), "task": info["task"], "a_run_id": a_id,
        "b_run_id": b_id, "a_path": a.resolved(), "b_path": b.resolved(), "n_samples": info["n_samples"],
        "fingerprint": fingerprint}]))
    _add_tables(con, folder, COMPARE_TABLES, compare_id=cid)


def _existing_runs(db: Path) -> tuple[dict[str, str], bool]:
    """``id -> fingerprint`` of the runs (and comparisons) already in ``db`` (none when it does not exist
    yet), and whether ``db`` is an index of an older schema (to be rebuilt whole). A newer schema is
    refused."""
    if not db.exists():
        return {}, False
    try:
        with duckdb.connect(str(db), read_only=True) as con:
            version = schema_version(con)
            runs = dict(con.sql("SELECT run_id, fingerprint FROM runs").fetchall()) if version else {}
            tables = {r[0] for r in con.sql("SELECT table_name FROM information_schema.tables").fetchall()}
            for table, key in (("compares", "compare_id"), ("run_sets", "set_id")):
                if table in tables:
                    runs.update(con.sql(f"SELECT {key}, fingerprint FROM {table}").fetchall())
    except duckdb.Error as e:
        raise BertologyError(f"{db}: exists but is not a readable bertology index ({str(e).splitlines()[0]}); "
                             f"move it away or choose another --db") from None
    if version is not None and version > INDEX_SCHEMA_VERSION:
        raise BertologyError(f"{db}: an index of schema version {version}, made by a newer bertology (this one "
                             f"writes version {INDEX_SCHEMA_VERSION}); upgrade bertology or choose another --db")
    return runs, version is not None and version < INDEX_SCHEMA_VERSION


def indexed_paths(db: Path) -> list[Location]:
    """The stores and analysis folders (paths or URLs) an existing index was built from, those still there:
    what a rebuild of it re-reads."""
    _existing_runs(db)  # a file that is no bertology index is refused with the fix
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.sql("SELECT store_path, analysis_path FROM runs").fetchall()
        tables = {r[0] for r in con.sql("SELECT table_name FROM information_schema.tables").fetchall()}
        if "compares" in tables:
            rows += con.sql("SELECT compare_path, NULL FROM compares").fetchall()
        if "run_sets" in tables:
            rows += con.sql("SELECT set_path, NULL FROM run_sets").fetchall()
    found = {Location(p) for row in rows for p in row if p}
    return sorted((p for p in found if p.isdir()), key=Location.resolved)


def build_index(results: str | Path | list, db: str | Path, wait: float = 600,
                on_run: Callable[[int, int, Path], None] | None = None) -> IndexReport:
    """Index every complete store under ``results`` into ``db`` (see the module docstring); wait up to
    ``wait`` seconds for another build of ``db`` to finish first. ``results`` is a results folder, or a list
    of stores, analysis folders and results folders (the index then holds exactly the runs they name).
    ``on_run(k, n, store)`` is called as the k-th of the n runs to (re)index is committed."""
    paths = [locate(p) for p in (results if isinstance(results, (list, tuple)) else [results])]
    db = Path(db)
    if "://" in str(db):
        raise BertologyError(f"{db}: the index is a DuckDB file on this machine's disk; give --db a local path "
                             f"(the stores and analysis folders it indexes may be URLs)")
    for path in paths:
        if not path.isdir():
            raise BertologyError(f"{path}: no such results folder, store or analysis folder")
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
        return _build(paths, db, on_run)
    finally:
        lock.release()


def analysed_store(a: Location, info: dict) -> Location:
    """The store an analysis folder names: beside it as it was when analysed (results folders can move), or
    at its recorded path or URL."""
    return a.named_by(info.get("store_relative"), info["store"])


def check_index(results: str | Path | list, db: str | Path) -> IndexReport:
    """What ``build_index(results, db)`` would change, without changing anything: ``changed`` False when the
    index is up to date with the stores and analysis folders it would read."""
    paths = [locate(p) for p in (results if isinstance(results, (list, tuple)) else [results])]
    return _survey(paths, Path(db))[0]


def _survey(paths: list[Location], db: Path):
    """The runs ``paths`` hold against those in ``db``: the report of what a build changes, the runs wanted
    (``run_id -> (store, analysis, fingerprint)``) and the runs of ``db`` a build keeps."""
    stores, analyses, compares = _walk(paths)
    by_store: dict[str, Location] = {}
    outdated: dict[str, str] = {}
    for a in analyses:
        try:
            info = json.loads((a / "analysis.json").read_text())
            target = analysed_store(a, info)
        except (KeyError, ValueError) as e:
            raise BertologyError(f"{a / 'analysis.json'}: unreadable ({e}); rerun `bertology analyze`") from None
        if info.get("format", 1) != ANALYSIS_FORMAT:
            outdated[target.resolved()] = (f"analysed in format {info.get('format', 1)} (this bertology reads "
                                           f"{ANALYSIS_FORMAT}); rerun `bertology analyze` into {a}")
        else:
            by_store[target.resolved()] = a
    where = paths[0] if len(paths) == 1 else f"{len(paths)} paths"
    report = IndexReport()
    wanted: dict[str, tuple[Location, Location | None, str]] = {}
    for store in stores:
        key = store.resolved()
        try:
            attrs = read_attrs(store)
        except StoreError as e:
            report.skipped.append(f"{store}: {e}")
            continue
        if not is_complete(store, attrs):
            report.skipped.append(f"{store}: incomplete extraction")
            continue
        if (attrs.get("bertology") or {}).get("attention_only"):
            report.skipped.append(f"{store}: attention-only reference store (read by `analyze --pretrained-store`)")
            continue
        if key in outdated and key not in by_store:
            report.skipped.append(f"{store}: {outdated[key]}")
            continue
        analysis = by_store.get(key)
        wanted[run_id(store)] = (store, analysis, _fingerprint(store, analysis))
    found = {s.resolved() for s in stores}
    for target, a in sorted(by_store.items()):
        if target not in found:
            report.skipped.append(f"{a}: analysis of {target}, which is not among the stores indexed; name the "
                                  f"store too (or its results folder)")
    if not wanted:
        raise BertologyError(f"{where}: no complete bertology store to index"
                             + (f" ({len(report.skipped)} skipped: {'; '.join(report.skipped)})" if report.skipped else ""))
    for folder in compares:   # a comparison folder, or an across-runs one: (its file, format, keys, id, command)
        info_file, fmt, needed, ident, command = (
            ("across.json", ACROSS_FORMAT, {"task", "runs", "stores", "seeds"}, set_id, "across")
            if (folder / "across.json").isfile() else
            ("compare.json", COMPARE_FORMAT, {"task", "a", "b", "store_a", "store_b"}, compare_id, "compare"))
        try:
            info = json.loads((folder / info_file).read_text())
            if info.get("format") != fmt or not needed <= set(info):
                raise ValueError(f"format {info.get('format')}; this bertology reads {fmt}")
        except (ValueError, OSError) as e:
            report.skipped.append(f"{folder}: unreadable {info_file} ({e}); rerun `bertology {command}`")
            continue
        wanted[ident(folder)] = (folder, None, _fingerprint(None, folder, info_file))
        report.comparisons.add(str(folder))
    old, rebuild = _existing_runs(db)  # an index of an older schema is rebuilt from scratch
    existing = {} if rebuild else old
    for rid, (store, _, fp) in wanted.items():
        if rid not in existing:
            report.added.append(str(store))
        elif existing[rid] != fp:
            report.updated.append(str(store))
        else:
            report.unchanged.append(str(store))
    report.removed = [rid for rid in old if rid not in wanted]
    report.outdated_schema = rebuild
    return report, wanted, existing


def _kind(rid: str) -> tuple[tuple[str, ...], str]:
    """The tables an indexed id's rows live in, and its id column: a run's, a comparison's, a run set's."""
    if rid.startswith("cmp-"):
        return ("compares",) + COMPARE_TABLES, "compare_id"
    if rid.startswith("set-"):
        return ("run_sets",) + ACROSS_TABLES, "set_id"
    return ("runs",) + RUN_TABLES, "run_id"


def _build(paths: list[Location], db: Path, on_run=None) -> IndexReport:
    report, wanted, existing = _survey(paths, db)
    rebuild = report.outdated_schema
    if not report.changed and db.exists():
        return report  # nothing new: the database file is not touched
    tmp = db.with_name(db.name + ".building")
    leftovers = (tmp, tmp.with_name(tmp.name + ".wal"))
    for f in leftovers:  # a killed build's temporary database and its write-ahead log: never replayed
        f.unlink(missing_ok=True)
    try:
        if db.exists() and not rebuild:
            shutil.copyfile(db, tmp)
        with duckdb.connect(str(tmp)) as con:
            stale = [rid for rid in existing if rid not in wanted or existing[rid] != wanted[rid][2]]
            tables = {r[0] for r in con.sql("SELECT table_name FROM information_schema.tables").fetchall()}
            con.execute("BEGIN TRANSACTION")
            for rid in stale:
                kind, column = _kind(rid)
                for table in kind:
                    if table in tables:
                        con.execute(f'DELETE FROM "{table}" WHERE {column} = ?', [rid])
            con.execute("COMMIT")
            todo = [(rid, *v) for rid, v in wanted.items() if existing.get(rid) != v[2]]
            for k, (rid, store, analysis, fp) in enumerate(todo, 1):
                con.execute("BEGIN TRANSACTION")  # a run's rows go in together, or not at all
                if rid.startswith("cmp-"):
                    _add_compare(con, rid, store, fp)
                elif rid.startswith("set-"):
                    _add_set(con, rid, store, fp)
                else:
                    _add_run(con, rid, store, analysis, fp)
                con.execute("COMMIT")
                if on_run is not None:
                    on_run(k, len(todo), store)
            con.execute("CREATE OR REPLACE TABLE index_info AS SELECT ? AS schema_version, ? AS analysis_format",
                        [INDEX_SCHEMA_VERSION, ANALYSIS_FORMAT])
            for name, query in VIEWS.items():
                con.execute(f"CREATE OR REPLACE VIEW {name} AS {query}")
            con.execute("CHECKPOINT")
        os.replace(tmp, db)
    finally:
        for f in leftovers:
            f.unlink(missing_ok=True)
    return report
