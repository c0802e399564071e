"""What a report is made of: the analysed dev runs of a results folder, read from its DuckDB index.

The report asks the index (``bertology index``) for everything it shows, through the index's one reader
(:class:`~bertology.analysis.index.IndexReader`: every row, never capped), with the same table and column
names a user's own SQL sees; the only other inputs are the fine-tuning record ``metrics.json`` beside each
checkpoint and, for the run-time section, the workflow's benchmark files. The index is read as it is: the
report says when it is out of date with the results folder, and rebuilds it only when asked (``reindex``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bertology import BertologyError
from bertology.analysis.index import IndexReader, build_index, check_index, indexed_paths
from bertology.analysis.index.schema import ACROSS_TABLES
from bertology.analysis.registry import TABLES
from bertology.store.location import Location, locate

#: The index tables the report reads, per run: every summary table, and the per-row tables it shows.
REPORT_TABLES = tuple(t.name for t in TABLES if not t.per_row or t.report)
TASK_ORDER = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "rte", "qnli", "wnli")   # GLUE's order; others after


@dataclass
class Run:
    """One analysed dev store: its task, store metadata, analysis settings and fine-tuning record."""

    run_id: str
    task: str
    meta: dict                  # the store's bertology metadata
    analysis: dict              # analysis.json
    finetune: dict | None       # metrics.json beside the checkpoint, when bertology fine-tuned it

    @property
    def n_layers(self) -> int:
        return int(self.meta["n_layers"])


@dataclass
class ReportData:
    results: Location           # the results folder (a path or URL)
    runs: list[Run]
    tables: dict[str, pd.DataFrame]
    examples: pd.DataFrame          # per-token rows (index table token_strength) of the example sentences
    samples: pd.DataFrame           # the example sentences' sample rows
    benchmarks: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: the reported tasks' across-runs tables (seed_variability, seed_stability, baselines) and comparisons
    #: (compares, compare_summary, compare_layers): the "Across seeds and runs" section's
    across: dict[str, pd.DataFrame] = field(default_factory=dict)
    seeds: dict[str, list[int]] = field(default_factory=dict)   # per task: the seeds of its indexed runs

    @property
    def tasks(self) -> list[str]:
        return [r.task for r in self.runs]

    def table(self, name: str) -> pd.DataFrame:
        return self.tables.get(name, pd.DataFrame())


def _order(task: str) -> tuple:
    return (TASK_ORDER.index(task) if task in TASK_ORDER else len(TASK_ORDER), task)


def example_samples(index: IndexReader, run_ids: list[str], per_task: int = 2, min_tokens: int = 8,
                    max_tokens: int = 28) -> pd.DataFrame:
    """The sentences shown with their HIGH tokens marked: per run, the first ``per_task`` samples (in store
    order) of ``min_tokens``–``max_tokens`` tokens, the first of them a correct prediction and the second an
    error where the run has one, so both kinds are seen."""
    ids = ", ".join("?" * len(run_ids))
    cand = index.query(f"""
        SELECT s.run_id, s.task, s.sample_index, s.sample_id, s.text_a, s.text_b, s.label_name, s.pred_name,
               s.correct, s.margin, s.length
        FROM samples s
        WHERE s.run_id IN ({ids}) AND s.length BETWEEN {min_tokens} AND {max_tokens}
          AND s.sample_index IN (SELECT DISTINCT sample FROM token_strength t WHERE t.run_id = s.run_id)
        ORDER BY s.run_id, s.sample_index""", list(run_ids))
    picked = []
    for _, g in cand.groupby("run_id", sort=True):
        rows = [g[g["correct"]].head(1), g[~g["correct"]].head(1)]
        chosen = pd.concat([r for r in rows if len(r)])
        if len(chosen) < per_task:
            chosen = pd.concat([chosen, g[~g.index.isin(chosen.index)].head(per_task - len(chosen))])
        picked.append(chosen.head(per_task))
    return pd.concat(picked).reset_index(drop=True) if picked else cand.head(0)


def read_benchmarks(results: Location) -> pd.DataFrame:
    """Wall time and peak memory per workflow job, from Snakemake's ``benchmarks/*.tsv`` (``job`` is the file
    name: the rule and its wildcards; a run of several seeds writes ``RULE_TASK/seed-S.tsv``, the job
    ``RULE_TASK/seed-S``). Empty when the results were not made by the workflow."""
    import io

    rows = []
    folder = results / "benchmarks"
    names = [n for n in folder.listdir() if n.endswith(".tsv")]
    names += [f"{d}/{n}" for d in folder.listdir() if (folder / d).isdir()
              for n in (folder / d).listdir() if n.endswith(".tsv")]
    for name in names:
        try:
            b = pd.read_csv(io.BytesIO((folder / name).read_bytes()), sep="\t")
            rows.append({"job": name.removesuffix(".tsv"), "seconds": float(b["s"].iloc[0]),
                         "max_rss_mb": float(b["max_rss"].iloc[0]) if "max_rss" in b else float("nan")})
        except (OSError, ValueError, KeyError, IndexError, pd.errors.ParserError):
            continue  # a benchmark file still being written, or not Snakemake's
    return pd.DataFrame(rows, columns=["job", "seconds", "max_rss_mb"])


def collect(results: str | Path, db: str | Path | None = None, tasks: list[str] | None = None,
            reindex: bool = False) -> ReportData:
    """Read every analysed dev run of the index ``db`` (by default ``results/bertology.duckdb``).

    The index is read as it is. Where it is missing, or out of date with the results (runs added, changed or
    removed since it was built), the report says so and how to refresh it; with ``reindex`` it is brought up
    to date first: an index named here over the runs it holds, else over the whole results folder."""
    results = locate(results)
    if not results.isdir():
        raise BertologyError(f"{results}: no such results folder")
    named = db is not None
    if not named and not results.local:
        raise BertologyError(f"{results}: results on an object store: name a local index file with --db (the "
                             f"index is a DuckDB file on this machine)")
    db = Path(db) if db else results.local_path / "bertology.duckdb"
    sources = (indexed_paths(db) if named and db.is_file() else []) or results
    refresh = (f"`bertology report {results} --db {db} --reindex` (it re-reads the runs this index holds)" if named
               else f"`bertology index {results}` or `bertology report {results} --reindex`")
    if reindex:
        build_index(sources, db)
    elif not db.is_file():
        raise BertologyError(f"{db}: no index of {results}; build it with `bertology index {results}"
                             + (f" --db {db}`" if named else "`") + ", or pass --reindex")
    else:
        stale = check_index(sources, db)
        if stale.changed:
            print(f"bertology report: the index {db} is out of date with {results} ({stale.describe()}); the "
                  f"report shows the index as it is: refresh it with {refresh}", file=sys.stderr, flush=True)
    with IndexReader(db) as index, index.cursor():   # every read from one database file
        return _read(index, results, tasks)


def _read(index: IndexReader, results: Location, tasks: list[str] | None) -> ReportData:
    runs_df = index.query("SELECT run_id, task, seed, metadata, analysis_path, checkpoint FROM runs "
                          "WHERE split = 'dev' AND analysis_path IS NOT NULL")
    if tasks:
        missing = sorted(set(tasks) - set(runs_df["task"]))
        if missing:
            raise BertologyError(f"{results}: no analysed dev store for task(s) {', '.join(missing)}; run "
                                 f"`bertology extract` and `bertology analyze` for them (or the workflow)")
        runs_df = runs_df[runs_df["task"].isin(tasks)]
    if runs_df.empty:
        raise BertologyError(f"{results}: no analysed dev store; run `bertology analyze` (or the workflow) first")
    seeds = {t: sorted(int(s) for s in g["seed"].dropna()) for t, g in runs_df.groupby("task")}
    runs_df = _one_run_per_task(runs_df, results)
    runs = []
    for row in sorted(runs_df.itertuples(), key=lambda r: _order(r.task)):
        try:
            analysis = json.loads((Location(row.analysis_path) / "analysis.json").read_text())
        except (OSError, ValueError) as e:
            raise BertologyError(f"{row.analysis_path}: the index names this analysis folder, which cannot be "
                                 f"read now ({e}); refresh the index with `bertology report --reindex`") from None
        metrics = Location(row.checkpoint) / "metrics.json"
        runs.append(Run(row.run_id, row.task, json.loads(row.metadata), analysis,
                        json.loads(metrics.read_text()) if metrics.isfile() else None))
    ids = [r.run_id for r in runs]
    tables = {t: df for t in REPORT_TABLES if (df := index.frame(t, ids)) is not None}
    present = index.tables()
    samples = example_samples(index, ids) if "token_strength" in present else pd.DataFrame()
    examples = pd.DataFrame()
    if len(samples):
        keys = " OR ".join("(run_id = ? AND sample = ?)" for _ in range(len(samples)))
        params = [v for r in samples.itertuples() for v in (r.run_id, int(r.sample_index))]
        examples = index.query(f"SELECT run_id, task, sample, position, token, word_id, category, strength, "
                               f"bucket_corpus, bucket_sentence FROM token_strength WHERE {keys} "
                               f"ORDER BY run_id, sample, position", params)
    return ReportData(results, runs, tables, examples, samples, read_benchmarks(results),
                      _across(index, [r.task for r in runs]), seeds)


def _one_run_per_task(runs_df: pd.DataFrame, results: Location) -> pd.DataFrame:
    """The run each task's per-run sections show: its only run, or of several fine-tuning seeds the smallest
    (said in one line; the across-runs section covers them all). Several runs that are not distinct seeds of
    one task are refused."""
    keep = []
    for task, g in runs_df.groupby("task", sort=False):
        if len(g) == 1:
            keep.append(g)
            continue
        if g["seed"].isna().any() or g["seed"].duplicated().any():
            raise BertologyError(f"{results}: more than one analysed dev store for task {task}, not distinct "
                                 f"fine-tuning seeds; a report covers one run per task (pass --tasks, or report "
                                 f"each folder apart)")
        first = g.sort_values("seed").head(1)
        print(f"bertology report: {task} has runs of seeds {', '.join(str(int(s)) for s in sorted(g['seed']))}: "
              f"the per-run sections show seed {int(first['seed'].iloc[0])}; \"Across seeds and runs\" covers "
              f"them all", file=sys.stderr, flush=True)
        keep.append(first)
    return pd.concat(keep)


def _across(index: IndexReader, tasks: list[str]) -> dict[str, pd.DataFrame]:
    """The across-runs tables and the comparisons of ``tasks`` (every row, as indexed)."""
    present = index.tables()
    out = {}
    marks = ", ".join("?" * len(tasks))
    for table in ("run_sets", "compares") + ACROSS_TABLES + ("compare_summary", "compare_layers"):
        if table in present and tasks:
            key = "set_id" if table in ("run_sets",) + ACROSS_TABLES else "compare_id"
            parent = "run_sets" if key == "set_id" else "compares"
            out[table] = index.query(f'SELECT t.* FROM "{table}" t WHERE t.{key} IN (SELECT {key} FROM {parent} '
                                     f'WHERE task IN ({marks}))', list(tasks))
    return out
