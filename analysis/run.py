"""``bertology analyze STORE --out DIR``: every representation statistic of a store, as tidy parquet tables.

The analyses, the tables each writes, and what each needs from a store are declared once, in
:mod:`registry` (each file ``NAME.parquet`` becomes the index table ``NAME``); ``analyze`` runs its plan. Beside them: ``analysis.json``
(inputs, settings, the folder's format version) and ``timings.json`` (measured time, kept apart so that
identical reruns give identical files).

The statistics tables have the columns ``task``, ``model``, ``layer``, ``site``, ``statistic``, ``estimate``,
``ci_low``, ``ci_high``, ``n`` (``p`` and ``p_adj`` where a test applies), ``ci_method`` (how the interval
was made: :data:`intervals.CI_METHODS`) and ``estimate_plugin`` (for the energy statistics, the plug-in
value beside the debiased ``estimate``: see :mod:`moments`), and the columns the table needs beyond them.
The energy statistics' intervals come from the jackknife; one Poisson bootstrap, keyed by ``seed`` and each
sample's id, serves every other statistic; so results are deterministic, layer differences paired, and the
work can be split into tasks any way (:mod:`engine`). A statistic the data are too few for is skipped with
one line (:mod:`requirements`), recorded in ``analysis.json``.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from bertology import BertologyError
from bertology.store import open_store
from bertology.store.capabilities import capabilities
from bertology.store.location import Location, locate

from .bootstrap import Bootstrap
from .context import Context
from .engine import engine
from .options import AnalyzeConfig
from .registry import ANALYSIS_FORMAT, BY_NAME, PER_ROW, RETIRED, TABLE_BY_NAME, Inputs, NotAsked, plan
from .requirements import collect_skipped, skipped

FRONT = ["task", "model", "layer", "site", "statistic", "estimate", "ci_low", "ci_high", "n", "p", "p_adj",
         "ci_method", "estimate_plugin"]


def tidy(df: pd.DataFrame, task: str, model: str) -> pd.DataFrame:
    df = df.copy()
    df.insert(0, "model", model)
    df.insert(0, "task", task)
    if "ci_method" not in df:  # every interval is a percentile interval unless its analysis says otherwise
        df["ci_method"] = None
    if "ci_low" in df:
        df["ci_method"] = df["ci_method"].where(df["ci_method"].notna() | df["ci_low"].isna(), "percentile")
    for c in FRONT:
        if c not in df:
            df[c] = float("nan") if c in ("p", "p_adj", "estimate_plugin") else None
    for c in ("layer", "head"):  # NULL where a row is about no single layer (head): see its ``unit``
        if c in df:
            df[c] = df[c].astype("Int64")
    return df[FRONT + [c for c in df.columns if c not in FRONT]].reset_index(drop=True)


def analyze(store: str | Path, out: str | Path, cfg: AnalyzeConfig | None = None,
            train_store: str | Path | None = None, sweep: str | Path | None = None,
            pretrained_store: str | Path | None = None, checkpoint: str | Path | None = None,
            scheduler: str | None = None) -> dict[str, Path]:
    """Compute every table for one store and write them (atomically, each file) under ``out``.

    Every path may be a URL (:mod:`bertology.store.location`). The work runs as dask tasks over sample
    blocks on ``scheduler`` (see :func:`engine.engine`: threads, processes, local:N or a scheduler address).

    ``train_store`` (a ``--cls-only`` store of the train split, same checkpoint) is where the per-layer
    probes and centroids are fitted; without it they are cross-fitted on the store itself. ``sweep`` (from
    ``bertology intervene`` on this store) adds ``interventions``, ``layer_skip``, ``apriori_validation`` and
    the per-sample ``intervention_predictions``. A store with attention maps gets the attention-head tables
    (:mod:`attention_heads`); ``pretrained_store`` (the pre-trained model on the same samples, e.g.
    ``extract --attention-only``) adds their change through fine-tuning. A full-capture store gets the
    norm-based attribution tables (:mod:`attribution`), which read the weights of the checkpoint the store
    records (``checkpoint`` overrides its path; the weights' sha256 must match).
    """
    cfg = cfg or AnalyzeConfig()
    out = locate(out)
    if out.isfile():
        raise BertologyError(f"{out}: is a file; --out names the folder the tables are written to")
    store = locate(store)
    ds = open_store(store, dask=False)
    ctx = Context(ds=ds, cfg=cfg, boot=Bootstrap.of(ds, cfg.resamples, cfg.seed), caps=capabilities(ds),
                  store=store, train=open_store(train_store, dask=False) if train_store else None,
                  sweep=sweep, pretrained=pretrained_store, checkpoint=checkpoint)
    with engine(scheduler), collect_skipped() as skipped_lines:
        _run(ctx)
    if not ctx.tables:
        raise BertologyError(f"{store}: too few samples for any statistic ({ds.sizes['sample']} samples; "
                             f"see the lines above); extract more samples")
    return _write(ctx, out, train_store, sweep, pretrained_store, skipped_lines)


def _run(ctx: Context) -> None:
    """Every analysis of the registry's plan for this store, in order; each one the store cannot support is
    skipped with one line that says why and how to get it (one the user did not ask for, silently)."""
    inputs = Inputs(train=ctx.train is not None, sweep=ctx.sweep is not None, pretrained=ctx.pretrained is not None)
    steps = plan(ctx.caps, inputs, ctx.cfg)
    ctx.planned = frozenset(t for step in steps for t in step.tables)
    for step in steps:
        if isinstance(step.reason, NotAsked):
            continue
        empty = [d for d in step.analysis.depends if not any(t.name in ctx.tables for t in BY_NAME[d].tables)]
        if step.reason is None and empty:
            step.reason = f"needs the tables of {', '.join(empty)}, which the data were too few for (see above)"
        if step.reason is not None:
            skipped(f"{step.analysis.name} ({', '.join(t.name for t in step.analysis.tables)}): {step.reason}")
            continue
        for t in step.analysis.tables:
            why = t.name not in step.tables and t.requires(ctx.caps, inputs, ctx.cfg)
            if why and not isinstance(why, NotAsked):
                skipped(f"{t.name}: {why}")
        ctx.tables.update(step.analysis.compute(ctx))


def _write(ctx: Context, out: Location, train_store, sweep, pretrained_store, skipped_lines=()) -> dict[str, Path]:
    """Write the tables (each file whole or not at all), then ``analysis.json``, then ``timings.json``."""
    ds, cfg, store = ctx.ds, ctx.cfg, ctx.store
    task, model = ds.attrs["task"], ds.attrs["model"]
    out.mkdir()
    written = {}
    unknown = set(ctx.tables) - set(TABLE_BY_NAME)
    assert not unknown, f"tables missing from analysis.registry: {sorted(unknown)}"
    for stale in out.listdir():  # a table an earlier analysis of this folder wrote and this one does not
        stem = stale.removesuffix(".parquet")
        if stale.endswith(".parquet") and stem not in ctx.tables and (stem in TABLE_BY_NAME or stem in RETIRED):
            (out / stale).remove()
    for name, df in ctx.tables.items():
        df = df.assign(task=task, model=model) if name in PER_ROW else tidy(df, task, model)
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        path = out / f"{name}.parquet"
        path.write_bytes(buf.getvalue())  # whole or not at all
        written[name] = path.local_path if path.local else path
    named = lambda p: locate(p).resolved() if p else None  # noqa: E731 - a URL or an absolute path, no options
    (out / "analysis.json").write_text(json.dumps(
        {"format": ANALYSIS_FORMAT, "store": store.resolved(),
         "store_relative": store.relative_from(out),
         "train_store": named(train_store), "sweep": named(sweep), "pretrained_store": named(pretrained_store),
         "layer_fit": ctx.record.get("layer_fit"), "task": task, "model": model,
         "model_sha256": ds.attrs["model_sha256"], "carve_out": ds.attrs.get("carve_out"), "config": asdict(cfg),
         "skipped": list(skipped_lines)}, indent=2) + "\n")
    # measured wall time differs between identical runs: kept apart, so analysis.json (and the index's
    # fingerprint of it) changes only when the results do
    (out / "timings.json").write_text(json.dumps({"attribution_cost": ctx.record.get("attribution_cost")},
                                                 indent=2) + "\n")
    return written
