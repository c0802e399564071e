"""``bertology across RUN... --out DIR``: a finding or seed noise? Several fine-tuning seeds of one task, and
Kovaleva et al.'s baselines.

The runs are analysis folders (``bertology analyze --out``) of one task, fine-tuned with different seeds and
extracted on the same dev samples (refused otherwise), so every statistic is paired over sentences. Tables
(``DIR/NAME.parquet``, with ``across.json`` beside them):

- ``seed_variability``: per headline statistic (the task metrics; separability per layer and site and its Δ;
  the FFN's structural / classification ratio and structural share; the attention-pattern shares per head,
  layer and model; the attention change through fine-tuning; each intervention's Δ accuracy and each
  compensated skip), the ``mean`` over seeds, the between-seed standard deviation ``sd_between``, the
  sentence-level standard error ``se_within``, and an interval for the mean that accounts for both
  (:func:`crossed_interval`); ``estimates`` lists each seed's own estimate, in seed order.
- ``seed_stability``: the yes/no findings, as the share of seeds in which each holds: each layer being an
  a-priori skip candidate, the best single-head removal, "the largest fine-tuning change of attention is in
  the last two layers", and the mean pairwise Jaccard similarity of the seeds' sets of significant heads
  (single-head removals with corrected p < 0.05).
- ``baselines``: Kovaleva et al.'s Table 1 for this task: the metric of the pre-trained model without
  fine-tuning (a linear probe on its final-layer [CLS], fitted on the train split, since its classifier head is
  untrained), of a randomly initialised model of the same shape fine-tuned with the same budget, and of the
  fine-tuned model (the mean over seeds), each with its interval and the published BERT-base value beside it.

The interval is a random-effects interval for seeds crossed with shared sentences, not a two-level bootstrap: the analysis folders
keep each seed's estimate and its sentence-level standard error, not the per-sentence values every statistic
would need to be resampled (separability, for one, is a ratio over all sentences). Its coverage is checked
by simulation in ``tests/test_across.py``.
"""

from __future__ import annotations

import io
import itertools
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bertology import BertologyError
from bertology.store.location import Location, locate

from .compare import Run, match_samples
from .index.build import checkpoint_seed
from .index.schema import ACROSS_FORMAT, ACROSS_TABLES
from .intervals import CI_LEVEL, share_interval, z_value
from .published import KOVALEVA, KOVALEVA_BASELINES
from .regression import pearson, pearson_interval

#: Per source table: the columns that name one statistic, and which statistics are headlines.
HEADLINES: dict[str, tuple[tuple[str, ...], tuple[str, ...] | None]] = {
    "task_metrics": (("statistic",), None),
    "separability": (("statistic", "layer", "site", "pooling"),
                     ("fisher_trace", "probe_accuracy", "centroid_ratio", "delta_fisher_trace",
                      "delta_probe_accuracy", "delta_centroid_ratio", "probe_r2", "delta_probe_r2")),
    "ffn_roles": (("statistic", "layer", "site", "positions", "vector"),
                  ("structural_over_classification", "structural_share")),
    "attention_patterns": (("statistic", "unit", "layer", "head"),
                           ("share_vertical", "share_diagonal", "share_vertical+diagonal", "share_block",
                            "share_heterogeneous")),
    "attention_finetune_change": (("statistic", "unit", "layer", "head"), None),
    "interventions": (("statistic", "intervention"), None),
    "layer_skip": (("statistic", "intervention"), None),
}
#: The columns every ``seed_variability`` row has (NULL where a statistic has no such key).
KEY_COLUMNS = ("source", "statistic", "unit", "layer", "head", "site", "intervention", "detail")
SIGNIFICANT = 0.05
CI_METHOD = "random_effects_crossed"


def crossed_interval(estimates: np.ndarray, se: np.ndarray, n: np.ndarray | float, level: float = CI_LEVEL) -> dict:
    """The mean over seeds of a statistic and its interval, from each seed's estimate and sentence-level
    standard error (``estimates``, ``se``: (..., S)), for seeds that share their ``n`` sentences.

    The mean over S seeds errs by the seeds' own spread (a new seed is a new draw of the fine-tuning) and by
    the sentences' (the dev set is one draw of the task's sentences). The seed part is the between-seed
    variance s² of the estimates over S, known to S − 1 degrees of freedom; since the sentences are the *same*
    for every seed, their error does not average out over seeds, so the sentence part is the mean within-seed
    variance mean(se²), in full (conservative: s² already holds the part of the sentence error that differs
    between seeds). The two half-widths add in quadrature, each with its own t quantile:

        half = √( t(S − 1)² · s²/S  +  t(n − 1)² · mean(se²) ),   interval: mean ± half.

    Where the seeds dominate this is the exact t interval of S seeds; where the sentences do, the sentence
    interval. Satterthwaite's pooled degrees of freedom, the textbook alternative, covers only 87% (2 seeds)
    and 92% (3 seeds) of the time when the seeds dominate; this form never falls below 95% in the simulation
    of ``tests/test_across.py`` (and is wider than needed, up to 99.9%, only where each seed's own noise on
    each sentence dominates, which per-seed summaries cannot tell from seed spread). One seed gives its own
    estimate and sentence interval (``sd_between`` NaN)."""
    est = np.asarray(estimates, dtype=np.float64)
    se = np.asarray(se, dtype=np.float64)
    S = est.shape[-1]
    mean = est.mean(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)          # a statistic no seed gives an se for
        between = est.var(axis=-1, ddof=1) if S > 1 else np.full(mean.shape, np.nan)
        b = np.nanmean(np.where(np.isfinite(se), se ** 2, np.nan), axis=-1) if se.size else np.zeros(mean.shape)
    b = np.where(np.isfinite(b), b, 0.0)
    a = between / S if S > 1 else np.zeros(mean.shape)
    n = np.broadcast_to(np.asarray(n, dtype=np.float64), mean.shape)
    q_seed = stats.t.ppf(0.5 + level / 2, max(S - 1, 1))
    q_sent = stats.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1))
    half = np.sqrt(q_seed ** 2 * a + q_sent ** 2 * b)
    return dict(mean=mean, sd_between=np.sqrt(between), se_within=np.sqrt(b), se=np.sqrt(a + b),
                ci_low=mean - half, ci_high=mean + half)


def _se(df: pd.DataFrame) -> np.ndarray:
    """Each row's sentence-level standard error: its ``se`` where the table gives one, else its interval's
    half-width over z (a percentile or Wilson interval read as a normal one)."""
    half = (df["ci_high"].astype(float) - df["ci_low"].astype(float)) / (2 * z_value(CI_LEVEL))
    if "se" in df:
        se = df["se"].astype(float)
        return np.where(np.isfinite(se), se, half)
    return half.to_numpy()


def _headline_rows(seeds: list[int], tables: list[dict[str, pd.DataFrame]]) -> pd.DataFrame:
    """Every headline row of every seed's tables, long: one row per (seed, statistic)."""
    parts = []
    for source, (keys, wanted) in HEADLINES.items():
        for seed, t in zip(seeds, tables):
            df = t.get(source)
            if df is None or not len(df):
                continue
            if wanted is not None:
                df = df[df["statistic"].isin(wanted)]
            if not len(df):
                continue
            out = pd.DataFrame({"source": source, "seed": seed, "estimate": df["estimate"].astype(float).to_numpy(),
                                "se_seed": _se(df), "n": df["n"].astype(float).to_numpy()})
            detail = [[] for _ in range(len(df))]
            for k in keys:
                vals = df[k].to_numpy()
                if k in KEY_COLUMNS:
                    out[k] = vals
                else:
                    for i, v in enumerate(vals):
                        if not pd.isna(v):
                            detail[i].append(f"{k}={v}")
            out["detail"] = [", ".join(d) or None for d in detail]
            parts.append(out)
    rows = pd.concat(parts, ignore_index=True)
    for k in KEY_COLUMNS:
        if k not in rows:
            rows[k] = None
    return rows


def seed_variability(seeds: list[int], tables: list[dict[str, pd.DataFrame]]) -> pd.DataFrame:
    """Per headline statistic: mean over seeds, between-seed sd and the crossed interval (module docstring).
    A statistic some seed lacks (e.g. a head's intervention one sweep did not run) is left out."""
    rows = _headline_rows(seeds, tables)
    keys = list(KEY_COLUMNS)
    filled = rows[keys].astype(object).where(rows[keys].notna(), "\0")
    rows = rows.assign(_key=pd.MultiIndex.from_frame(filled).to_flat_index())
    S = len(seeds)
    wide = rows.pivot_table(index="_key", columns="seed", values="estimate", aggfunc="first", sort=False)
    wide_se = rows.pivot_table(index="_key", columns="seed", values="se_seed", aggfunc="first", sort=False)
    wide_n = rows.groupby("_key", sort=False)["n"].mean()
    complete = wide.notna().sum(axis=1) == S
    wide, wide_se = wide[complete][seeds], wide_se.reindex(wide.index)[complete].reindex(columns=seeds)
    ci = crossed_interval(wide.to_numpy(), wide_se.to_numpy(), wide_n.reindex(wide.index).to_numpy())
    first = rows.drop_duplicates("_key").set_index("_key").loc[wide.index, keys]
    out = first.reset_index(drop=True)
    out["n_seeds"] = S
    for k in ("mean", "sd_between", "se_within", "se", "ci_low", "ci_high"):
        out[k] = ci[k]
    out["n"] = wide_n.reindex(wide.index).to_numpy()
    out["estimates"] = [json.dumps([float(v) for v in r]) for r in wide.to_numpy()]
    out["seeds"] = json.dumps(seeds)
    out["ci_method"] = CI_METHOD if S > 1 else "one_seed"
    out[["layer", "head"]] = out[["layer", "head"]].apply(pd.to_numeric, errors="coerce").astype("Int64")
    return out


def _shares(holding: dict, seeds: list[int], finding: str, **keys) -> dict:
    held = [s for s in seeds if holding.get(s)]
    return dict(finding=finding, statistic="share_of_seeds", value=len(held) / len(seeds), n_seeds=len(seeds),
                seeds_holding=json.dumps(held), **keys)


def seed_stability(seeds: list[int], tables: list[dict[str, pd.DataFrame]]) -> pd.DataFrame:
    """The yes/no findings as the share of seeds in which each holds (module docstring)."""
    rows = []
    skip = {s: t.get("skip_candidates") for s, t in zip(seeds, tables)}
    if all(df is not None for df in skip.values()):
        layers = sorted({int(v) for df in skip.values() for v in df["layer"].dropna()})
        for layer in layers:
            holds = {s: bool(df[(df["layer"] == layer)]["candidate"].any()) for s, df in skip.items()}
            rows.append(_shares(holds, seeds, "skip_candidate", layer=layer,
                                detail=f"layer {layer} is an a-priori skip candidate"))
    heads = {s: t["interventions"][t["interventions"]["kind"] == "head"] for s, t in zip(seeds, tables)
             if t.get("interventions") is not None}
    if len(heads) == len(seeds) and all(len(df) for df in heads.values()):
        best = {s: set(df.loc[df["estimate"] == df["estimate"].max(), "intervention"]) for s, df in heads.items()}
        for name in sorted(set().union(*best.values())):
            df0 = next(iter(heads.values()))
            row = df0[df0["intervention"] == name]
            rows.append(_shares({s: name in b for s, b in best.items()}, seeds, "best_head_removal",
                                intervention=name, layer=row["layer"].iloc[0] if len(row) else None,
                                head=row["head"].iloc[0] if len(row) else None,
                                detail=f"removing head {name.split(':', 1)[-1]} gives the highest accuracy of any "
                                       f"single-head removal (ties count for each)"))
        sig = {s: set(df.loc[df["p_adj"] < SIGNIFICANT, "intervention"]) for s, df in heads.items()}
        pairs = list(itertools.combinations(seeds, 2))
        jac = [len(sig[a] & sig[b]) / len(sig[a] | sig[b]) if sig[a] | sig[b] else 1.0 for a, b in pairs]
        rows.append(dict(finding="significant_heads", statistic="mean_pairwise_jaccard",
                         value=float(np.mean(jac)) if jac else np.nan, n_seeds=len(seeds),
                         seeds_holding=json.dumps([s for s in seeds if sig[s]]),
                         detail="; ".join(f"seed {s}: {', '.join(sorted(sig[s])) or 'none'}" for s in seeds)
                         + " (Jaccard of two empty sets: 1)"))
    change = {s: t.get("attention_finetune_change") for s, t in zip(seeds, tables)}
    if all(df is not None and len(df) for df in change.values()):
        holds = {}
        for s, df in change.items():
            per_layer = df[df["unit"] == "layer"].set_index("layer")["estimate"]
            last = sorted(per_layer.index)[-2:]
            holds[s] = per_layer.idxmin() in last          # the lowest cosine: the largest change
        rows.append(_shares(holds, seeds, "finetune_change_last_two_layers",
                            detail="the layer whose attention changed most through fine-tuning (lowest cosine "
                                   "to the pre-trained maps) is one of the last two"))
    out = pd.DataFrame(rows)
    for k in ("layer", "head", "intervention", "detail"):
        if k not in out:
            out[k] = None
    out[["layer", "head"]] = out[["layer", "head"]].apply(pd.to_numeric, errors="coerce").astype("Int64")
    return out


def baselines(task: str, variability: pd.DataFrame, pretrained: Run | None, random_init: Run | None,
              ids: np.ndarray) -> pd.DataFrame:
    """Kovaleva et al.'s Table 1 row of ``task``: the pre-trained model (a linear probe on its final-layer
    [CLS], fitted on train), a random-init model fine-tuned on the task, and the fine-tuned model (mean over
    seeds, crossed interval), on the fine-tuned runs' samples ``ids``; accuracy, and F1 where the paper gives
    it, with the published values (in %) beside them."""
    published = KOVALEVA_BASELINES.get(task, {})
    rows = []
    regression = bool((variability["statistic"] == "pearson").any()) if len(variability) else False
    for stat in ("pearson",) if regression else ("accuracy", "f1"):
        if stat == "f1" and not any(stat in v for v in published.values()):
            continue
        ft = variability[(variability["source"] == "task_metrics") & (variability["statistic"] == stat)]
        if len(ft):
            r = ft.iloc[0]
            rows.append(dict(baseline="finetuned", statistic=stat, estimate=r["mean"], ci_low=r["ci_low"],
                             ci_high=r["ci_high"], n=r["n"], n_seeds=int(r["n_seeds"]), ci_method=r["ci_method"],
                             how="the fine-tuned model's classifier, mean over seeds"))
        if random_init is not None:
            tm = random_init.table("task_metrics")
            if tm is not None and (tm["statistic"] == stat).any():
                r = tm[tm["statistic"] == stat].iloc[0]
                rows.append(dict(baseline="random_init", statistic=stat, estimate=r["estimate"], ci_low=r["ci_low"],
                                 ci_high=r["ci_high"], n=r["n"], n_seeds=1, ci_method=r["ci_method"],
                                 how="a randomly initialised model of the same shape, fine-tuned with the same "
                                     "budget"))
        if pretrained is not None:
            lp = pretrained.table("layer_predictions")
            if lp is not None:
                last = lp[lp["layer"] == lp["layer"].max()].set_index("sample_id").reindex(ids)
                if last["probe_correct"].notna().all() and regression:   # the ridge probe's Pearson's r
                    r = pearson(last["probe_pred"].to_numpy(float), last["label"].to_numpy(float))
                    lo, hi = pearson_interval(r, len(ids))
                    rows.append(dict(baseline="pretrained", statistic=stat, estimate=r, ci_low=lo, ci_high=hi,
                                     n=len(ids), n_seeds=1, ci_method="fisher_z",
                                     how=f"a ridge probe on the pre-trained model's final [CLS] "
                                         f"({str(last['fit'].iloc[0])})"))
                elif last["probe_correct"].notna().all():
                    pred, label = last["probe_pred"].to_numpy(int), last["label"].to_numpy(int)
                    if stat == "accuracy":
                        est, lo, hi = share_interval((pred == label).astype(float), np.ones(len(ids)))
                    else:                       # F1 of the positive class: a share of the positive-ish samples
                        tp = (pred == 1) & (label == 1)
                        den = ((pred == 1).astype(float) + (label == 1)) / 2
                        est, lo, hi = share_interval(tp.astype(float), den)
                    rows.append(dict(baseline="pretrained", statistic=stat, estimate=float(est), ci_low=float(lo),
                                     ci_high=float(hi), n=len(ids), n_seeds=1, ci_method="wilson",
                                     how=f"a linear probe on the pre-trained model's final [CLS] "
                                         f"({str(last['fit'].iloc[0])})"))
    out = pd.DataFrame(rows)
    if len(out):
        out["published"] = [published.get(b, {}).get(s, np.nan) / 100 for b, s in zip(out["baseline"], out["statistic"])]
        out["published_source"] = KOVALEVA + ", Table 1 (BERT-base)" if published else None
    return out


def across(folders: list[str | Path], out: str | Path, *, pretrained: str | Path | None = None,
           random_init: str | Path | None = None) -> dict[str, Path]:
    """Write ``seed_variability``, ``seed_stability`` and (given a pre-trained or random-init run)
    ``baselines`` for the analysed runs ``folders`` of one task under ``out`` (module docstring)."""
    runs = [Run(f, f"run {k + 1}") for k, f in enumerate(folders)]
    if not runs:
        raise BertologyError("give the analysis folders of at least one run")
    ids = np.unique(runs[0].ids)
    for other in runs[1:]:
        match_samples(runs[0], other, False)                  # the same samples, texts and labels, or refused
    seeds = [checkpoint_seed(r.ds.attrs["model_path"]) for r in runs]
    if None in seeds or len(set(seeds)) < len(seeds):
        print(f"bertology across: the runs' fine-tuning seeds are not all recorded and distinct ({seeds}); they "
              f"are numbered 0…{len(runs) - 1} in the order given", file=sys.stderr, flush=True)
        seeds = list(range(len(runs)))
    order = np.argsort(seeds, kind="stable")
    runs, seeds = [runs[k] for k in order], [seeds[k] for k in order]
    tables = [{name: r.table(name) for name in HEADLINES.keys() | {"skip_candidates"}} for r in runs]
    task = runs[0].ds.attrs["task"]
    result = {"seed_variability": seed_variability(seeds, tables), "seed_stability": seed_stability(seeds, tables)}
    extra = {side: Run(f, side) for side, f in (("pretrained", pretrained), ("random_init", random_init)) if f}
    for side, run in extra.items():
        if run.ds.attrs.get("task") != task:
            raise BertologyError(f"{run.folder}: a run of {run.ds.attrs.get('task')}, not {task}")
    if extra:
        result["baselines"] = baselines(task, result["seed_variability"], extra.get("pretrained"),
                                        extra.get("random_init"), ids)
    out = locate(out)
    if out.isfile():
        raise BertologyError(f"{out}: is a file; --out names the folder the tables are written to")
    out.mkdir()
    for stale in set(ACROSS_TABLES) - set(result):
        if (out / f"{stale}.parquet").isfile():
            (out / f"{stale}.parquet").remove()
    written = {}
    for name, df in result.items():
        buf = io.BytesIO()
        df.assign(task=task).to_parquet(buf, index=False)
        (out / f"{name}.parquet").write_bytes(buf.getvalue())
        written[name] = out / f"{name}.parquet"
    (out / "across.json").write_text(json.dumps(
        {"format": ACROSS_FORMAT, "task": task, "seeds": seeds, "n_samples": int(len(ids)),
         "runs": [r.folder.resolved() for r in runs], "runs_relative": [r.folder.relative_from(out) for r in runs],
         "stores": [r.store.resolved() for r in runs],
         **{f"{side}": run.folder.resolved() for side, run in extra.items()},
         **{f"{side}_relative": run.folder.relative_from(out) for side, run in extra.items()}}, indent=2) + "\n")
    return {k: (v.local_path if isinstance(v, Location) and v.local else v) for k, v in written.items()}
