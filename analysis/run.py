"""``bertology analyze STORE --out DIR``: every representation statistic of a store, as tidy parquet tables.

The tables, which of them a store gets, and which are per-row rather than summaries are listed once, in
:mod:`catalog` (each file ``NAME.parquet`` becomes the index table ``NAME``). Beside them: ``analysis.json``
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
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from bertology import BertologyError
from bertology.store import open_store
from bertology.store.location import Location, locate
from bertology.store.params import ModelParameters
from bertology.store.sweep import open_sweep

from .attention_heads import attention_tables
from .attribution import attribution_tables, ffn_output_tables
from .bootstrap import DEFAULT_RESAMPLES, Bootstrap
from .engine import engine
from .requirements import collect_skipped, skipped
from .catalog import ANALYSIS_FORMAT, BY_NAME, PER_ROW, RETIRED
from .errors import CONFIDENT_MARGIN, error_table
from .ffn_roles import ffn_roles
from .interventions import apriori_validation, intervention_effects, layer_skip, prediction_rows
from .layer_predictions import layer_predictions
from .separability import separability, skip_candidates
from .task_metrics import task_metrics
from .token_strength import token_strength

#: Cross-fitted layer readouts need two folds.
MIN_CROSS_FIT = 2
FRONT = ["task", "model", "layer", "site", "statistic", "estimate", "ci_low", "ci_high", "n", "p", "p_adj",
         "ci_method", "estimate_plugin"]


@dataclass
class AnalyzeConfig:
    resamples: int = DEFAULT_RESAMPLES
    seed: int = 0
    correction: str = "holm"          # or fdr_bh
    skip_statistic: str = "fisher_trace"
    skip_rule: str = "nonpositive"    # or k_lowest
    skip_k: int = 1
    probe: bool = True
    pooling: tuple[str, ...] = ("cls",)   # add "mean" for mean-pooled token separability
    permutations: int = 200               # label permutations for each ratio's chance level (0: none)
    strength_layer: int | None = None
    strength_site: str = "ln2"
    confident_margin: float = CONFIDENT_MARGIN
    attention: bool = True                # Kovaleva's head analyses, when the store holds attention maps
    attribution_samples: int = 50         # Kobayashi's norm-based attribution on the first N samples (0: none)
    ig_steps: int | None = None           # None: the exact integral through the activation; m: m-point IG
    block_size: int | None = None         # samples per task (None: engine.DEFAULT_BLOCK); results do not depend on it


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


def _relative(store: Location, out: Location) -> str | None:
    """The store's path from the analysis folder, when both are on this disk (results folders can move)."""
    return os.path.relpath(store.resolved(), out.resolved()) if store.local and out.local else None


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
    train = open_store(train_store, dask=False) if train_store else None
    task, model = ds.attrs["task"], ds.attrs["model"]
    with engine(scheduler), collect_skipped() as skipped_lines:
        tables, fit, cost = _tables(ds, train, cfg, store, sweep, pretrained_store, checkpoint)
    if not tables:
        raise BertologyError(f"{store}: too few samples for any statistic ({ds.sizes['sample']} samples; "
                             f"see the lines above); extract more samples")
    return _write(tables, out, cfg, task, model, ds, store, fit, cost, train_store, sweep, pretrained_store,
                  skipped_lines)


def _tables(ds, train, cfg: AnalyzeConfig, store, sweep, pretrained_store, checkpoint):
    """Every table of one store (the dask work of :func:`analyze`)."""
    blocks = cfg.block_size
    boot = Bootstrap.of(ds, cfg.resamples, cfg.seed)
    tables = {}
    sep = separability(ds, boot, probe=cfg.probe, seed=cfg.seed, correction=cfg.correction,
                       pooling=cfg.pooling, permutations=cfg.permutations, block_size=blocks)
    if len(sep):
        tables["separability"] = sep
        cls_rows = sep[sep["pooling"] == "cls"]
        if (cls_rows["statistic"] == f"delta_{cfg.skip_statistic}").any():
            tables["skip_candidates"] = skip_candidates(cls_rows, cfg.skip_statistic, cfg.skip_rule, cfg.skip_k)
        else:
            skipped(f"skip candidates: they need the Δ {cfg.skip_statistic} rows, which were skipped")
    else:
        skipped("skip candidates: they need the separability rows, which were skipped")
    ffn = ffn_roles(ds, boot, correction=cfg.correction, block_size=blocks)
    if len(ffn):
        tables["ffn_roles"] = ffn
    tables["task_metrics"] = task_metrics(ds["label"].values, ds["pred"].values, boot, ds.sizes["class"])
    fit = None
    if ds.sizes["sample"] >= MIN_CROSS_FIT or train is not None:
        preds, fit = layer_predictions(ds, train, seed=cfg.seed)
        tables["layer_predictions"] = preds.assign(fit=fit)
        tables["error_summary"] = error_table(ds, preds, boot, cfg.confident_margin).assign(fit=fit)
    else:
        skipped(f"layer predictions and error summary: cross-fitting on the store needs at least "
                f"{MIN_CROSS_FIT} samples (or --train-store); it has {ds.sizes['sample']}")
    if any(v.startswith("token_") and v in ds.data_vars for v in ds.data_vars):
        try:
            summary, per_token = token_strength(ds, boot, layer=cfg.strength_layer, site=cfg.strength_site,
                                                block_size=blocks)
            tables["token_strength_summary"] = summary
            tables["token_strength"] = per_token
        except ValueError as e:  # the store lacks token states at the strength layer/site
            print(f"bertology analyze: token strength skipped: {e}")
    if pretrained_store is not None and "attention" not in ds:
        raise BertologyError(f"{store}: no attention maps to compare with {pretrained_store}; extract with attention")
    if cfg.attention and "attention" in ds:
        pre = open_store(pretrained_store, dask=False) if pretrained_store else None
        if pre is not None and "attention" not in pre:
            raise BertologyError(f"{pretrained_store}: holds no attention maps; extract it with --attention-only")
        tables.update(attention_tables(ds, boot, pre, block_size=blocks))
    cost, params = None, None
    if cfg.attribution_samples and all(v in ds for v in ("attention", "token_ff", "token_ln1")):
        params = ModelParameters(ds.attrs, checkpoint)
        attr, cost = attribution_tables(ds, cfg.seed, cfg.resamples, cfg.attribution_samples, cfg.ig_steps,
                                        cfg.correction, params)
        tables.update(attr)
    if "token_ff" in ds and "token_ln1" in ds:  # ‖ff‖/‖ln1‖ needs only the store; outlier dims LN2's γ too
        tables["ff_norm_ratio"], outliers = ffn_output_tables(ds, boot, params, block_size=blocks)
        if outliers is not None:
            tables["ffn_outlier_dims"] = outliers
    if sweep is not None:
        sw = open_sweep(sweep)
        if sw.attrs["model_sha256"] != ds.attrs["model_sha256"] or list(sw["sample"].values) != list(ds["sample"].values):
            raise BertologyError(f"{sweep}: intervention sweep of another checkpoint or other samples than {store}")
        tables["interventions"] = intervention_effects(sw, boot, cfg.correction)
        tables["layer_skip"] = layer_skip(sw, boot, tables["skip_candidates"], seed=cfg.seed,
                                          correction=cfg.correction)
        tables["apriori_validation"] = apriori_validation(tables["layer_skip"], sep, cfg.skip_statistic,
                                                          n_layers=int(sw.attrs["n_layers"]))
        tables["intervention_predictions"] = prediction_rows(sw)
    return tables, fit, cost


def _write(tables, out: Location, cfg: AnalyzeConfig, task: str, model: str, ds, store: Location, fit, cost,
           train_store, sweep, pretrained_store, skipped_lines=()) -> dict[str, Path]:
    """Write the tables (each file whole or not at all), then ``analysis.json``, then ``timings.json``."""
    out.mkdir()
    written = {}
    unknown = set(tables) - set(BY_NAME)
    assert not unknown, f"tables missing from analysis.catalog: {sorted(unknown)}"
    for stale in out.listdir():  # a table an earlier analysis of this folder wrote and this one does not
        stem = stale.removesuffix(".parquet")
        if stale.endswith(".parquet") and stem not in tables and (stem in BY_NAME or stem in RETIRED):
            (out / stale).remove()
    for name, df in tables.items():
        df = df.assign(task=task, model=model) if name in PER_ROW else tidy(df, task, model)
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        path = out / f"{name}.parquet"
        path.write_bytes(buf.getvalue())  # whole or not at all
        written[name] = path.local_path if path.local else path
    named = lambda p: locate(p).resolved() if p else None  # noqa: E731 - a URL or an absolute path, no options
    (out / "analysis.json").write_text(json.dumps(
        {"format": ANALYSIS_FORMAT, "store": store.resolved(),
         "store_relative": _relative(store, out),
         "train_store": named(train_store), "sweep": named(sweep), "pretrained_store": named(pretrained_store),
         "layer_fit": fit, "task": task, "model": model, "model_sha256": ds.attrs["model_sha256"],
         "carve_out": ds.attrs.get("carve_out"), "config": asdict(cfg),
         "skipped": list(skipped_lines)}, indent=2) + "\n")
    # measured wall time differs between identical runs: kept apart, so analysis.json (and the index's
    # fingerprint of it) changes only when the results do
    (out / "timings.json").write_text(json.dumps({"attribution_cost": cost}, indent=2) + "\n")
    return written
