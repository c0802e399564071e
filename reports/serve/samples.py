"""Samples: filtered, sorted pages of the index's ``samples`` and one sample with everything known of it."""

from __future__ import annotations

from dataclasses import dataclass

from bertology.analysis.options import CONFIDENT_MARGIN
from bertology.analysis.token_strength import default_layer

from .common import BadRequest, Unavailable, no_sample, records, snapshot


#: Columns of a sample in lists (the API's ``/api/samples`` rows).
SAMPLE_COLUMNS = ("run_id", "task", "split", "sample_index", "sample_id", "text_a", "text_b", "label_name",
                  "pred_name", "confidence", "margin", "correct", "length")
#: Columns a sample list may be sorted by.
SORTABLE = ("sample_index", "margin", "confidence", "length", "task")
MAX_LIMIT = 1000


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


class SampleService:
    """Sample lists and one sample's page (a mixin of :class:`~.explorer.Explorer`)."""

    @snapshot
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
        return {"total": total, "limit": limit, "offset": offset, "samples": records(df)}

    @snapshot
    def sample(self, run_id: str, sample_index: int) -> dict:
        """One sample: its row, probabilities with class names, per-layer readouts, tokens with strengths and
        HIGH/LOW buckets, the interventions that flip it, and which maps are available."""
        run = self.run(run_id)
        df = self.index.query("SELECT * FROM samples WHERE run_id = ? AND sample_index = ?", [run_id, sample_index])
        if not len(df):
            raise no_sample(run, sample_index)
        s = records(df)[0]
        meta = run["metadata"]
        classes = list(meta.get("label_names") or [])
        s["probs"] = [float(p) for p in s.get("probs") or []]
        s["classes"] = classes if len(classes) == len(s["probs"]) else [str(k) for k in range(len(s["probs"]))]
        s["layers"] = records(self.index.query(
            "SELECT layer, site, centroid_pred, probe_pred, centroid_correct, probe_correct, cls_norm, "
            "class_direction_projection FROM layer_predictions WHERE run_id = ? AND sample_index = ? ORDER BY layer",
            [run_id, sample_index])) if "layer_predictions" in self.index.tables() else []
        s["tokens"] = self._tokens(run, sample_index)
        s["available"] = self.available(run)
        s["flips"] = (records(self.index.query(
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
                        "rows": records(df)}
        try:
            ds = self.store(run)
        except Unavailable:
            return None
        if "token_text" not in ds:
            return None
        return {"source": "store", "rows": [{"position": k, "token": t} for k, t in enumerate(self.tokens_of(ds, i))]}
