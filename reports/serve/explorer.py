"""What ``bertology serve`` answers, without the web: runs, samples and one sample's insides, read from the
index (every aggregate and per-row table) and from the run's store (attention maps, token states, and the
attribution maps computed from them on demand).

Everything here is keyed by ``run_id`` and ``sample_index`` (a sample's position in its store), as in the
index; nothing a caller passes becomes a path. A run's store is opened only when its recorded path lies
under the served results folder.

The index is read through the same sandboxed, read-only connection as ``bertology sql``
(:func:`bertology.analysis.sql.connect`). ``bertology index`` replaces the database file atomically (a new
file renamed over the old one); :class:`Index` notices the new file on the next request and answers from it,
once the requests already running on the old one have finished.
"""

from __future__ import annotations

import functools
import json
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bertology import BertologyError
from bertology.analysis import sql
from bertology.analysis.options import CONFIDENT_MARGIN
from bertology.analysis.index import IndexReader
from bertology.analysis.token_strength import default_layer
from bertology.analysis.registry import store_supports
from bertology.analysis.vocabulary import SCOPES
from bertology.store.capabilities import capabilities
from bertology.store.location import Location, locate
from bertology.store.reader import sample_tokens

#: Columns of a sample in lists (the API's ``/api/samples`` rows).
SAMPLE_COLUMNS = ("run_id", "task", "split", "sample_index", "sample_id", "text_a", "text_b", "label_name",
                  "pred_name", "confidence", "margin", "correct", "length")
#: Columns a sample list may be sorted by.
SORTABLE = ("sample_index", "margin", "confidence", "length", "task")
MAX_LIMIT = 1000
#: Limits of the SQL console (the same sandbox as ``bertology sql``, tighter limits: it serves many users).
SQL_LIMITS = sql.Limits(max_rows=10_000, timeout=10.0)
SQL_CSV_LIMITS = sql.Limits(max_rows=1_000_000, timeout=30.0)


class NotFound(BertologyError):
    """A run, sample, layer or head that does not exist (HTTP 404)."""


class BadRequest(BertologyError):
    """A parameter out of range or inconsistent (HTTP 400)."""


class Unavailable(BertologyError):
    """What the run's store or index does not hold (HTTP 404, with what would provide it)."""


@dataclass(frozen=True)
class SampleFilter:
    """Which samples a list shows: ``errors`` True (wrong only), False (right only) or None (all);
    ``confident``: wrong with margin > 0.3; ``q``: a case-insensitive substring of either text."""

    run_id: str | None = None
    task: str | None = None
    errors: bool | None = None
    confident: bool = False
    min_margin: float | None = None
    max_margin: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    q: str | None = None

    def where(self) -> tuple[str, list]:
        clauses, params = [], []
        if self.run_id:
            clauses.append("run_id = ?")
            params.append(self.run_id)
        if self.task:
            clauses.append("task = ?")
            params.append(self.task)
        if self.errors is not None:
            clauses.append("NOT correct" if self.errors else "correct")
        if self.confident:
            clauses.append(f"NOT correct AND margin > {CONFIDENT_MARGIN}")
        for column, op, value in (("margin", ">=", self.min_margin), ("margin", "<=", self.max_margin),
                                  ("length", ">=", self.min_length), ("length", "<=", self.max_length)):
            if value is not None:
                clauses.append(f"{column} {op} ?")
                params.append(value)
        if self.q:
            pattern = "%" + self.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            clauses.append("(text_a ILIKE ? ESCAPE '\\' OR text_b ILIKE ? ESCAPE '\\')")
            params += [pattern, pattern]
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


class _Cache:
    """At most ``size`` values by key, the least recently used dropped first; thread-safe."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, make):
        """The value for ``key``, made by ``make()`` (outside the lock) when it is not cached; what ``make``
        raises propagates and nothing is cached (a store that cannot be read now is tried again next time)."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


def _snapshot(method):
    """Run an explorer call's queries on one cursor: one database file answers all of them."""
    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        with self.index.cursor():
            return method(self, *args, **kwargs)
    return wrapped


def _finite_map(m: np.ndarray) -> list[list[float]]:
    """A map as JSON numbers: values a float16 store could not hold (inf, NaN) become 0."""
    return np.nan_to_num(np.asarray(m, np.float64), nan=0.0, posinf=0.0, neginf=0.0).round(6).tolist()


def _cell(v):
    """One SQL result value as JSON: numbers and text as they are, NULL/NaN as null, anything else (dates,
    intervals, blobs, nested values) as its text."""
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, str):
        return v
    if isinstance(v, (bytes, bytearray)):
        return "\\x" + bytes(v).hex()
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, (list, tuple)):
        return [_cell(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _cell(x) for k, x in v.items()}
    return str(v)


def _run_key(run: dict) -> str:
    """A run as cache key: its id and fingerprint (a re-extracted or re-analysed run is another key)."""
    return f"{run['run_id']}:{run.get('fingerprint')}"


def _no_sample(run: dict, i: int) -> NotFound:
    return NotFound(f"run {run['run_id']} has no sample {i} (its samples are 0…{run['n_samples'] - 1})")


def _records(df) -> list[dict]:
    """JSON-ready rows: NaN and NA become None, numpy scalars Python numbers."""
    return json.loads(df.to_json(orient="records", date_format="iso")) if len(df) else []


class Explorer:
    """The explorer's data: a results folder and its index (see the module docstring)."""

    def __init__(self, results: str | Path, db: str | Path | None = None, *, cache: int = 8):
        self.results = locate(results)
        if not self.results.isdir():
            raise BertologyError(f"{results}: no such results folder")
        db = Path(db) if db else (self.results.local_path / "bertology.duckdb" if self.results.local else None)
        if db is None:
            raise BertologyError(f"{results}: a results folder on object storage is served from a local index; "
                                 f"pass --db FILE (built with `bertology index {results} --db FILE`)")
        if not db.is_file():
            raise BertologyError(f"{db}: no index; build it with `bertology index {results}"
                                 + (f" --db {db}`" if db.parent != self.results.local_path else "`"))
        self.index = IndexReader(db)
        self._root = self.results.resolved().rstrip("/") + "/"
        self._stores = _Cache(cache)          # run -> its opened store
        self._shows = _Cache(cache)           # run -> which maps its store holds
        self._info = _Cache(4 * cache)        # run -> its analysis.json
        self._params = _Cache(2)              # run -> its checkpoint's parameters (MBs each)

    # -- runs -----------------------------------------------------------------------------------------------
    @_snapshot
    def runs(self) -> list[dict]:
        """Every run with its classifier metrics (estimate and bootstrap CI) as ``metrics``."""
        df = self.index.query("SELECT run_id, task, split, model, checkpoint, n_samples, carve_out, layer_fit, "
                              "store_path, analysis_path FROM runs ORDER BY task, split, run_id")
        rows = _records(df)
        metrics = self._table_rows("task_metrics")
        for r in rows:
            r["metrics"] = {m["statistic"]: {k: m.get(k) for k in ("estimate", "ci_low", "ci_high", "ci_method")}
                            for m in metrics if m["run_id"] == r["run_id"]}
        return rows

    @_snapshot
    def run(self, run_id: str) -> dict:
        df = self.index.query("SELECT * FROM runs WHERE run_id = ?", [run_id])
        if not len(df):
            raise NotFound(f"no run {run_id!r} in the index (GET /api/runs lists them)")
        row = _records(df)[0]
        row["metadata"] = json.loads(row["metadata"]) if row.get("metadata") else {}
        row["carve_out_json"] = json.loads(row["carve_out_json"]) if row.get("carve_out_json") else None
        return row

    def _table_rows(self, table: str) -> list[dict]:
        if table not in self.index.tables():
            return []
        return _records(self.index.query(f'SELECT * FROM "{table}"'))

    @_snapshot
    def table(self, table: str, run_id: str, order: str = ""):
        """One analysis table's rows of a run, as a DataFrame (empty when the run has none)."""
        if table not in self.index.tables():
            return pd.DataFrame()
        return self.index.query(f'SELECT * FROM "{table}" WHERE run_id = ? {order}', [run_id])

    # -- samples --------------------------------------------------------------------------------------------
    @_snapshot
    def samples(self, f: SampleFilter, *, sort: str = "sample_index", descending: bool = False, limit: int = 50,
                offset: int = 0) -> dict:
        """A page of samples matching ``f``, and their ``total``."""
        if sort not in SORTABLE:
            raise BadRequest(f"sort={sort!r}: sort by one of {', '.join(SORTABLE)}")
        if not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(f"limit={limit}: between 1 and {MAX_LIMIT}")
        if offset < 0:
            raise BadRequest(f"offset={offset}: zero or more")
        if f.confident and f.errors is False:
            raise BadRequest("confident=true selects misclassified samples: it contradicts errors=false")
        for low, high, what in ((f.min_margin, f.max_margin, "margin"), (f.min_length, f.max_length, "length")):
            if low is not None and high is not None and low > high:
                raise BadRequest(f"min_{what}={low} is above max_{what}={high}")
        if f.run_id:
            self.run(f.run_id)  # an unknown run is a 404, not an empty page
        where, params = f.where()
        total = int(self.index.query(f"SELECT count(*) AS n FROM samples{where}", params)["n"][0])
        direction = "DESC" if descending else "ASC"
        df = self.index.query(f"SELECT {', '.join(SAMPLE_COLUMNS)} FROM samples{where} "
                              f"ORDER BY {sort} {direction}, run_id, sample_index LIMIT ? OFFSET ?",
                              params + [limit, offset])
        return {"total": total, "limit": limit, "offset": offset, "samples": _records(df)}

    @_snapshot
    def sample(self, run_id: str, sample_index: int) -> dict:
        """One sample: its row, probabilities with class names, per-layer readouts, tokens with strengths and
        HIGH/LOW buckets, the interventions that flip it, and which maps are available."""
        run = self.run(run_id)
        df = self.index.query("SELECT * FROM samples WHERE run_id = ? AND sample_index = ?", [run_id, sample_index])
        if not len(df):
            raise _no_sample(run, sample_index)
        s = _records(df)[0]
        meta = run["metadata"]
        classes = list(meta.get("label_names") or [])
        s["probs"] = [float(p) for p in s.get("probs") or []]
        s["classes"] = classes if len(classes) == len(s["probs"]) else [str(k) for k in range(len(s["probs"]))]
        s["layers"] = _records(self.index.query(
            "SELECT layer, site, centroid_pred, probe_pred, centroid_correct, probe_correct, cls_norm, "
            "class_direction_projection FROM layer_predictions WHERE run_id = ? AND sample_index = ? ORDER BY layer",
            [run_id, sample_index])) if "layer_predictions" in self.index.tables() else []
        s["tokens"] = self._tokens(run, sample_index)
        s["available"] = self.available(run)
        s["flips"] = (_records(self.index.query(
            "SELECT intervention, kind, layer, head, pred, correct FROM intervention_predictions "
            "WHERE run_id = ? AND sample_index = ? AND flipped ORDER BY kind, layer, head, intervention",
            [run_id, sample_index])) if s["available"]["interventions"] is True else None)
        s["layer_fit"] = run.get("layer_fit")
        s["n_layers"] = int(meta.get("n_layers", 0))
        s["n_heads"] = int(meta.get("n_heads", 0) or meta.get("num_attention_heads", 0) or 0)
        return s

    def _tokens(self, run: dict, i: int) -> dict | None:
        """The sample's tokens with their strength at the analysis's strength layer (index ``token_strength``),
        else the tokens alone from the store; None when neither holds them."""
        if "token_strength" in self.index.tables():
            df = self.index.query("SELECT * EXCLUDE (run_id) FROM token_strength WHERE run_id = ? AND sample = ? "
                                  "ORDER BY position", [run["run_id"], i])
            if len(df):
                config = self.analysis_info(run).get("config", {})
                layer = config.get("strength_layer") or default_layer(int(run["metadata"].get("n_layers", 1)))
                return {"source": "index", "layer": int(layer), "site": config.get("strength_site", "ln2"),
                        "rows": _records(df)}
        try:
            ds = self.store(run)
        except Unavailable:
            return None
        if "token_text" not in ds:
            return None
        return {"source": "store", "rows": [{"position": k, "token": t} for k, t in enumerate(self.tokens_of(ds, i))]}

    def analysis_info(self, run: dict) -> dict:
        """The run's ``analysis.json`` (its analysis settings), when its analysis folder is under the results."""
        path = run.get("analysis_path")
        if not path or not self._inside(Location(path)):
            return {}
        def read():
            try:
                return json.loads((Location(path) / "analysis.json").read_text())
            except (OSError, ValueError):
                return {}

        return self._info.get(_run_key(run), read)

    def _inside(self, path: Location) -> bool:
        return (path.resolved().rstrip("/") + "/").startswith(self._root)

    # -- the run's store ------------------------------------------------------------------------------------
    def store(self, run: dict):
        """The run's store opened lazily (no dask; only the chunks asked for are read), when it lies under the
        results folder."""
        path = Location(run["store_path"])
        if not self._inside(path):
            raise Unavailable(f"run {run['run_id']}: its store {path} is not under the served results folder")
        from bertology.store import open_store
        from bertology.store.errors import StoreError

        def read():
            try:
                return open_store(path, dask=False)
            except StoreError as e:
                raise Unavailable(f"run {run['run_id']}: its store cannot be read ({e})") from None

        return self._stores.get(_run_key(run), read)

    @_snapshot
    def available(self, run: dict) -> dict:
        """Which per-sample maps this run can show, with the reason where not."""
        has = bool(len(self.index.query("SELECT 1 FROM intervention_predictions WHERE run_id = ? LIMIT 1",
                                        [run["run_id"]]))) if "intervention_predictions" in self.index.tables() else False
        return {**self._store_shows(run),
                "interventions": True if has else "no intervention sweep was analysed for this run"}

    def _store_shows(self, run: dict) -> dict:
        """Which per-sample maps the run's store can show (``attention``, ``attribution``): True, or why not."""
        try:
            ds = self.store(run)
        except Unavailable as e:
            return {"attention": str(e), "attribution": str(e)}

        def read():
            caps = capabilities(ds)
            return {shows: store_supports(analysis, caps) or True
                    for shows, analysis in (("attention", "attention_heads"), ("attribution", "attribution"))}

        return self._shows.get(_run_key(run), read)

    def _sample_in_store(self, run_id: str, sample_index: int, need: str):
        run = self.run(run_id)
        if not 0 <= sample_index < int(run["n_samples"]):
            raise _no_sample(run, sample_index)
        why = self._store_shows(run)[need]
        if why is not True:
            raise Unavailable(f"run {run_id}: no {need} maps: {why}")
        return run, self.store(run)

    @staticmethod
    def _check_layer(ds, layer: int) -> None:
        L = ds.sizes["layer"]
        if not 1 <= layer <= L:
            raise BadRequest(f"layer={layer}: this model's layers are 1…{L}")

    @staticmethod
    def tokens_of(ds, i: int) -> list[str]:
        return [str(t) for t in sample_tokens(ds, i, "token_text").values]

    def attention(self, run_id: str, sample_index: int, layer: int, head: int | None) -> dict:
        """The attention map (query × key) of one head at one layer, or the mean over heads (``head`` None),
        as stored: each row sums to 1."""
        run, ds = self._sample_in_store(run_id, sample_index, "attention")
        self._check_layer(ds, layer)
        H = ds.sizes["head"]
        if head is not None and not 1 <= head <= H:
            raise BadRequest(f"head={head}: this model's heads are 1…{H} (omit head for the mean over heads)")
        n = int(ds.bertology.lengths[sample_index])
        flat = np.asarray(ds["attention"].isel(pair=ds.bertology.pair_slice(sample_index), layer=layer - 1).values,
                          np.float64)
        maps = flat.reshape(n, n, H)
        m = maps.mean(axis=2) if head is None else maps[:, :, head - 1]
        return {"run_id": run_id, "sample_index": sample_index, "layer": layer, "head": head,
                "tokens": self.tokens_of(ds, sample_index), "map": _finite_map(m)}

    def attribution(self, run_id: str, sample_index: int, layer: int, scope: str) -> dict:
        """One scope's token-to-token attribution map (output token × input token) at one layer, computed
        from the store's states and the checkpoint's parameters (Kobayashi et al.; see
        :mod:`bertology.analysis.attribution`), with each scope's completeness error at that layer."""
        from bertology.analysis.attribution import completeness_errors, decompose_layer, read_sentence
        from bertology.store.errors import StoreError
        from bertology.store.params import ModelParameters

        if scope not in SCOPES:
            raise BadRequest(f"scope={scope!r}: one of {', '.join(SCOPES)}")
        run, ds = self._sample_in_store(run_id, sample_index, "attribution")
        self._check_layer(ds, layer)
        def read():
            try:
                return ModelParameters(ds.attrs)
            except StoreError as e:
                raise Unavailable(f"run {run_id}: attribution needs the checkpoint's weights: {e}") from None

        params = self._params.get(_run_key(run), read)
        sent = read_sentence(ds, sample_index)
        res = decompose_layer(sent.inputs(layer), sent.attention[layer - 1], params.layer(layer))
        errors = completeness_errors(res, sent, layer)
        return {"run_id": run_id, "sample_index": sample_index, "layer": layer, "scope": scope,
                "tokens": sent.tokens, "map": _finite_map(res.maps()[scope]),
                "completeness_error": {k: (v if math.isfinite(v) else None) for k, v in errors.items()}}

    # -- the SQL console ------------------------------------------------------------------------------------
    @_snapshot
    def sql(self, text: str, limits: sql.Limits = SQL_LIMITS) -> dict:
        df = self.index.user_query(text, limits)
        return {"columns": [str(c) for c in df.columns], "rows": [[_cell(v) for v in row] for row in
                                                                  df.itertuples(index=False, name=None)],
                "truncated": bool(df.attrs.get("truncated")), "max_rows": limits.max_rows}

    @_snapshot
    def sql_frame(self, text: str, limits: sql.Limits = SQL_CSV_LIMITS):
        return self.index.user_query(text, limits)
