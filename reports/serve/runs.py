"""The runs of the index and each run's analysis settings and store."""

from __future__ import annotations

import json

import pandas as pd

from bertology.store.location import Location

from .common import NotFound, Unavailable, records, run_key, snapshot


class RunService:
    """Runs, their tables, ``analysis.json`` and store (a mixin of :class:`~.explorer.Explorer`)."""

    @snapshot
    def runs(self) -> list[dict]:
        """Every run with its classifier metrics (estimate and bootstrap CI) as ``metrics``."""
        df = self.index.query("SELECT run_id, task, split, seed, model, checkpoint, n_samples, carve_out, layer_fit, "
                              "store_path, analysis_path FROM runs ORDER BY task, split, seed, run_id")
        rows = records(df)
        metrics = self._table_rows("task_metrics")
        for r in rows:
            r["metrics"] = {m["statistic"]: {k: m.get(k) for k in ("estimate", "ci_low", "ci_high", "ci_method")}
                            for m in metrics if m["run_id"] == r["run_id"]}
        return rows

    @snapshot
    def run(self, run_id: str) -> dict:
        df = self.index.query("SELECT * FROM runs WHERE run_id = ?", [run_id])
        if not len(df):
            raise NotFound(f"no run {run_id!r} in the index (GET /api/runs lists them)")
        row = records(df)[0]
        row["metadata"] = json.loads(row["metadata"]) if row.get("metadata") else {}
        row["carve_out_json"] = json.loads(row["carve_out_json"]) if row.get("carve_out_json") else None
        return row

    def _table_rows(self, table: str) -> list[dict]:
        if table not in self.index.tables():
            return []
        return records(self.index.query(f'SELECT * FROM "{table}"'))

    @snapshot
    def table(self, table: str, run_id: str, order: str = ""):
        """One analysis table's rows of a run, as a DataFrame (empty when the run has none)."""
        if table not in self.index.tables():
            return pd.DataFrame()
        return self.index.query(f'SELECT * FROM "{table}" WHERE run_id = ? {order}', [run_id])

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

        return self._info.get(run_key(run), read)

    def _inside(self, path: Location) -> bool:
        return (path.resolved().rstrip("/") + "/").startswith(self._root)

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

        return self._stores.get(run_key(run), read)
