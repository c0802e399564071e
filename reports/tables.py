"""The report's tables, in the layouts of the mission's findings; each is also written as CSV.

Every estimate keeps its 95% bootstrap interval (``*_ci_low``, ``*_ci_high``). Tables hold no paths, times
or anything else that differs between two runs of the same configuration, so their CSVs are byte-identical
across runs (numbers are written to 6 significant digits).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

import bertology

from bertology.analysis import published as P
from bertology.analysis.vocabulary import PATTERNS, SCOPES, TOKEN_CLASSES
from bertology.store.schema import is_regression
from .collect import ReportData

CSV_FLOAT = "%.6g"
#: The task metrics the report shows (a regression's Pearson and Spearman; macro-F1 for more than two classes).
METRICS = ("accuracy", "f1", "macro_f1", "mcc", "pearson", "spearman")


def _rows(df: pd.DataFrame, **eq) -> pd.DataFrame:
    if df.empty:
        return df
    mask = np.ones(len(df), dtype=bool)
    for k, v in eq.items():
        mask &= (df[k] == v).to_numpy()
    return df[mask]


def _est(df: pd.DataFrame, prefix: str) -> dict:
    """``{prefix}``, ``{prefix}_ci_low``, ``{prefix}_ci_high`` of a one-row frame (NaN when absent)."""
    if df.empty:
        return {prefix: np.nan, f"{prefix}_ci_low": np.nan, f"{prefix}_ci_high": np.nan}
    r = df.iloc[0]
    return {prefix: r["estimate"], f"{prefix}_ci_low": r["ci_low"], f"{prefix}_ci_high": r["ci_high"]}


def _ordered(df: pd.DataFrame, data: ReportData, *keys: str) -> pd.DataFrame:
    """Rows in run order, then by ``keys``; a NULL layer or head (a layer's mean, the unskipped control) comes
    before the numbered ones."""
    order = {r.run_id: i for i, r in enumerate(data.runs)}
    return df.assign(_o=df["run_id"].map(order)).sort_values(["_o", *keys], na_position="first").drop(columns="_o")


def metrics(data: ReportData) -> pd.DataFrame:
    """Per task: the classifier's score on the analysed dev samples (with CIs), and on the whole dev split as
    recorded by fine-tuning."""
    tm = data.table("task_metrics")
    rows = []
    for run in data.runs:
        t = _rows(tm, run_id=run.run_id)
        regression = is_regression(run.meta)
        # the task's own metric, as the store records it (CoLA: mcc; MRPC, QQP: f1; STS-B: pearson)
        row = {"task": run.task, "glue_metric": run.meta.get("metric") or ("pearson" if regression else "accuracy"),
               "n_dev_analysed": int(run.meta["n_samples"])}
        for m in METRICS:
            row.update(_est(_rows(t, statistic=m), m))
        ft = run.finetune or {}
        row["finetune_n_train"] = ft.get("n_train", np.nan)
        row["finetune_epochs"] = ft.get("epochs", np.nan)
        row["finetune_n_dev"] = ft.get("n_dev", np.nan)
        for m in METRICS:
            row[f"finetune_dev_{m}"] = (ft.get("dev") or {}).get(m, np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def separability(data: ReportData, site: str = "ln2") -> pd.DataFrame:
    """Per task and layer (0 = embeddings): the separability of [CLS] at ``site`` — Fisher trace, centroid
    ratio (debiased, with the plug-in value beside them), probe accuracy, each with its CI, and the ratios'
    chance level under label permutations (mean and 97.5th percentile)."""
    sep = data.table("separability")
    if sep.empty:
        return pd.DataFrame()
    sep = sep[(sep["pooling"] == "cls") & ((sep["site"] == site) | (sep["layer"] == 0))]
    rows = []
    for run in data.runs:
        s = _rows(sep, run_id=run.run_id)
        for layer in range(run.n_layers + 1):
            at = s[s["layer"] == layer]
            row = {"task": run.task, "layer": layer, "site": "embed" if layer == 0 else site}
            for stat in ("fisher_trace", "centroid_ratio", "probe_accuracy", "probe_r2", "probe_spearman"):
                row.update(_est(at[at["statistic"] == stat], stat))
            for stat in ("fisher_trace", "centroid_ratio"):
                ch = at[at["statistic"] == f"chance_{stat}"]
                row[f"{stat}_chance"] = ch["estimate"].iloc[0] if len(ch) else np.nan
                row[f"{stat}_chance_high"] = ch["ci_high"].iloc[0] if len(ch) else np.nan
                row[f"{stat}_chance_p"] = ch["p"].iloc[0] if len(ch) else np.nan
                plug = at.loc[at["statistic"] == stat, "estimate_plugin"] if "estimate_plugin" in at else ()
                row[f"{stat}_plugin"] = plug.iloc[0] if len(plug) else np.nan
            rows.append(row)
    return pd.DataFrame(rows)


def skip_candidates(data: ReportData) -> pd.DataFrame:
    """Per task and layer: Δ of the skip statistic from the layer below (CI, Holm-adjusted p), its rank and
    whether the layer is an a-priori skip candidate (chosen before any ablation)."""
    sk = data.table("skip_candidates")
    if sk.empty:
        return pd.DataFrame()
    sk = _ordered(sk, data, "layer")
    out = sk[["task", "layer", "site", "statistic", "estimate", "ci_low", "ci_high", "p", "p_adj", "rank",
              "candidate", "rule"]].rename(columns={"statistic": "delta_of", "estimate": "delta"})
    out["delta_of"] = out["delta_of"].str.replace("delta_", "", regex=False)
    return out.reset_index(drop=True)


def ffn_ratio(data: ReportData, scope: str) -> pd.DataFrame:
    """Finding 2's layout: layer × task, the structural/classification energy ratio of the FFN block's update
    (``ln2 − ln1``) over ``scope`` (``cls`` or ``tokens``), debiased with its CI (an upper end of +inf where
    the classification energy cannot be told from 0) and the plug-in value, and the structural share; the
    published BERT-base value sits on the row at the same relative depth."""
    ffn = data.table("ffn_roles")
    if ffn.empty:
        return pd.DataFrame()
    ffn = ffn[(ffn["positions"] == scope) & (ffn["vector"] == "update")]
    depth = max(r.n_layers for r in data.runs)
    rows = []
    for layer in range(1, depth + 1):
        row = {"layer": layer, "relative_depth": layer / depth}
        for run in data.runs:
            f = _rows(ffn, run_id=run.run_id, layer=layer)
            ratio = f[f["statistic"] == "structural_over_classification"]
            row.update(_est(ratio, f"{run.task}_ratio"))
            row[f"{run.task}_ratio_plugin"] = (ratio["estimate_plugin"].iloc[0]
                                               if len(ratio) and "estimate_plugin" in ratio else np.nan)
            row.update(_est(f[f["statistic"] == "structural_share"], f"{run.task}_structural_share"))
        pub = [p for p in P.FFN_RATIO if P.nearest_layer(p, depth) == layer]
        row["published_bert_base_ratio"] = pub[0].low if pub else np.nan
        row["published_bert_base_layer"] = pub[0].layer if pub else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def confident_wrong(data: ReportData) -> pd.DataFrame:
    """Finding 3's layout: per task, the errors, the share of them with margin above the threshold, their
    mean margin, and the share no layer's probe gets right — with CIs, beside the published range. A
    regression task's errors are those beyond its error threshold (``error_threshold``), with their mean
    absolute error; "confident" does not apply to it (NaN)."""
    es = data.table("error_summary")
    if es.empty:
        return pd.DataFrame()
    rows = []
    for run in data.runs:
        e = _rows(es, run_id=run.run_id)
        regression = is_regression(run.meta)
        threshold = e["threshold"].iloc[0] if len(e) else np.nan
        row = {"task": run.task, "n": int(run.meta["n_samples"]),
               "margin_threshold": np.nan if regression else threshold,
               "error_threshold": threshold if regression else np.nan}
        for stat, name in (("n_errors", "errors"), ("error_rate", "error_rate"),
                           ("confident_share", "confident_share"), ("mean_margin", "mean_margin"),
                           ("mean_abs_error", "mean_abs_error"), ("no_layer_right_share", "no_layer_right_share")):
            row.update(_est(e[e["statistic"] == stat], name))
        row["published_bert_base_confident_share_low"] = P.CONFIDENT_SHARE.low
        row["published_bert_base_confident_share_high"] = P.CONFIDENT_SHARE.high
        rows.append(row)
    return pd.DataFrame(rows)


def token_strength(data: ReportData) -> pd.DataFrame:
    """Per task: the share of content words, function words and punctuation among HIGH and LOW tokens
    (upper-quartile threshold of ‖h‖ at the strength layer), per level and threshold, with CIs."""
    ts = data.table("token_strength_summary")
    if ts.empty:
        return pd.DataFrame()
    ts = ts[ts["statistic"] == "share"]
    ts = _ordered(ts, data, "level", "threshold", "bucket", "category")
    out = ts[["task", "layer", "site", "level", "threshold", "bucket", "category", "estimate", "ci_low",
              "ci_high", "n"]].rename(columns={"estimate": "share"})
    return out.reset_index(drop=True)


def token_profile(data: ReportData) -> pd.DataFrame:
    """Per task and layer: mean token strength ‖h‖ and the share of HIGH tokens that are content words."""
    ts = data.table("token_strength_summary")
    if ts.empty:
        return pd.DataFrame()
    ts = ts[ts["statistic"].isin(["profile_mean_strength", "profile_high_content_share"])]
    ts = _ordered(ts, data, "statistic", "layer")
    return ts[["task", "layer", "site", "statistic", "estimate", "ci_low", "ci_high", "n"]].reset_index(drop=True)


def _scored(df: pd.DataFrame, *parts: str) -> pd.DataFrame:
    """``df`` with its task's score named in ``score`` (accuracy; a regression's Pearson's r) and each
    ``PART_accuracy`` / ``PART_pearson`` column as one column ``PART`` (``""``: the bare column)."""
    df = df.copy()
    regression = df["baseline_pearson"].notna() if "baseline_pearson" in df else pd.Series(False, index=df.index)
    df.insert(0, "score", np.where(regression, "pearson", "accuracy"))
    for part in parts:
        acc, r = f"{part}_accuracy".lstrip("_"), f"{part}_pearson".lstrip("_")
        a = df[acc] if acc in df else pd.Series(np.nan, index=df.index)
        df[part or "value"] = np.where(regression, df[r] if r in df else np.nan, a)
    return df


def layer_skip(data: ReportData) -> pd.DataFrame:
    """Finding 1's layout: per task and skipped layer, the baseline, the skipped model with the original head
    and with the compensation classifier (its Δ from the baseline with CI and the corrected exact McNemar
    p), the hidden units chosen, FLOPs saved, and whether the layer was the a-priori choice. ``score`` names
    the measure: accuracy, or Pearson's r for a regression task (Williams' test, a compensating regressor).
    The row with no skipped layer is the control: the compensation classifier on the unskipped model."""
    ls = data.table("layer_skip")
    if ls.empty:
        return pd.DataFrame()
    cols = ["task", "score", "layer", "baseline", "skipped", "compensated", "compensated_ci_low",
            "compensated_ci_high", "estimate", "ci_low", "ci_high", "p", "p_adj", "hidden_units", "flops_saved",
            "apriori_candidate"]   # measured wall time is shown in the page, not in the reproducible table
    ls = _scored(ls, "baseline", "skipped", "compensated")
    return _ordered(ls, data, "layer")[cols].rename(columns={"estimate": "delta", "layer": "skipped_layer"}).reset_index(drop=True)


def apriori(data: ReportData) -> pd.DataFrame:
    """Per task: the a-priori skip candidate(s), the best actual skip, the top-1 hit, and the Spearman
    correlation of Δ separability with the accuracy change of each layer's skip."""
    av = data.table("apriori_validation")
    if av.empty:
        return pd.DataFrame()
    av = _ordered(av, data, "accuracy")
    return av[["task", "accuracy", "candidates", "best_skip", "top1_hit", "estimate", "p", "n"]].rename(
        columns={"estimate": "spearman_rho", "accuracy": "skip_accuracy_with"}).reset_index(drop=True)


def removals(data: ReportData) -> pd.DataFrame:
    """Per task, intervention family (``skip``, ``ffn``, ``attn``, ``heads``) and layer: the score (``value``:
    accuracy, or a regression's Pearson's r, Kovaleva's STS-B rows) after the removal and its Δ from the plain
    model (CI, exact McNemar p or Williams' test, corrected within the family)."""
    iv = data.table("interventions")
    if iv.empty:
        return pd.DataFrame()
    iv = iv[iv["kind"].isin(["skip", "ffn", "attn", "heads"])]
    kind = {"skip": 0, "ffn": 1, "attn": 2, "heads": 3}
    iv = _ordered(_scored(iv.assign(_k=iv["kind"].map(kind)), "baseline", ""), data, "_k", "layer")
    return iv.reindex(columns=["task", "score", "kind", "layer", "baseline", "value", "estimate", "ci_low", "ci_high",
                               "p", "p_adj", "flipped"]).rename(columns={"estimate": "delta"}).reset_index(drop=True)


def heads(data: ReportData) -> pd.DataFrame:
    """Per task, layer and head: Δ score (accuracy; a regression's Pearson's r) when the head attends uniformly
    (CI, corrected McNemar p or Williams' test)."""
    iv = data.table("interventions")
    if iv.empty or not (iv["kind"] == "head").any():
        return pd.DataFrame()
    iv = _ordered(_scored(iv[iv["kind"] == "head"], "baseline", ""), data, "layer", "head")
    return iv.reindex(columns=["task", "score", "layer", "head", "value", "estimate", "ci_low", "ci_high", "p", "p_adj",
                               "flipped"]).rename(columns={"estimate": "delta"}).reset_index(drop=True)


def attention_patterns(data: ReportData) -> pd.DataFrame:
    """Per task: the share of each of Kovaleva's pattern types over every head and dev sample (CI), and the
    thresholds the classifier used."""
    ap = data.table("attention_patterns")
    if ap.empty:
        return pd.DataFrame()
    ap = ap[(ap["unit"] == "model") & ap["statistic"].str.startswith("share_")]
    ap = ap.assign(pattern=ap["statistic"].str.removeprefix("share_"))
    ap = _ordered(ap.assign(_p=ap["pattern"].map({p: i for i, p in enumerate(PATTERNS)})), data, "_p")
    return ap[["task", "pattern", "estimate", "ci_low", "ci_high", "n", "thresholds"]].rename(
        columns={"estimate": "share"}).reset_index(drop=True)


def attention_heads(data: ReportData) -> pd.DataFrame:
    """Per task, layer and head: the dominant pattern type, the shares of each type, and the mean vertical,
    diagonal and block features (mass on [CLS]/[SEP], on i±1, within the query's segment)."""
    ap = data.table("attention_patterns")
    if ap.empty:
        return pd.DataFrame()
    ap = ap[ap["unit"] == "head"]
    wide = ap.pivot_table(index=["run_id", "task", "layer", "head"], columns="statistic", values="estimate").reset_index()
    dom = ap.dropna(subset=["dominant"]).drop_duplicates(["run_id", "layer", "head"])[["run_id", "layer", "head", "dominant"]]
    wide = wide.merge(dom, on=["run_id", "layer", "head"], how="left").astype({"layer": int, "head": int})
    cols = ["task", "layer", "head", "dominant"] + [c for c in (
        [f"share_{p}" for p in PATTERNS]
        + ["feature_vertical", "feature_diagonal", "feature_block"]) if c in wide]
    return _ordered(wide, data, "layer", "head")[cols].reset_index(drop=True)


def attention_token_classes(data: ReportData) -> pd.DataFrame:
    """Per task and layer (mean over heads): attention mass to [CLS], [SEP], punctuation and other tokens,
    averaged over queries (normalising by sequence length) and samples, beside uniform attention's mass."""
    tc = data.table("attention_token_classes")
    if tc.empty:
        return pd.DataFrame()
    order = {c: i for i, c in enumerate(TOKEN_CLASSES)}
    tc = tc[tc["unit"] == "layer"]
    tc = _ordered(tc.assign(_c=tc["token_class"].map(order)), data, "_c", "layer")
    return tc[["task", "token_class", "layer", "estimate", "ci_low", "ci_high", "uniform"]].rename(
        columns={"estimate": "attention"}).reset_index(drop=True)


def attention_finetune(data: ReportData) -> pd.DataFrame:
    """Per task, layer and head (head empty: the layer's mean over its heads): cosine similarity of the
    pre-trained and the fine-tuned model's attention maps on the same inputs (1: unchanged)."""
    fc = data.table("attention_finetune_change")
    if fc.empty:
        return pd.DataFrame()
    fc = _ordered(fc[fc["unit"].isin(["head", "layer"])], data, "layer", "head")
    return fc[["task", "layer", "head", "estimate", "ci_low", "ci_high", "n"]].rename(
        columns={"estimate": "cosine"}).reset_index(drop=True)




def attribution_similarity(data: ReportData) -> pd.DataFrame:
    """Per task, map variant and scope: Spearman ρ of its attribution map with the previous scope's, averaged
    over sentences and layers (CI), with the published BERT-base value."""
    sim = data.table("attribution_similarity")
    if sim.empty:
        return pd.DataFrame()
    sim = sim[sim["unit"] == "model"]
    sim = _ordered(sim.assign(_s=sim["scope"].map({s: i for i, s in enumerate(SCOPES)})), data, "maps", "_s")
    return sim[["task", "maps", "previous", "scope", "estimate", "ci_low", "ci_high", "n", "published"]].rename(
        columns={"estimate": "spearman"}).reset_index(drop=True)


def attribution_completeness(data: ReportData) -> pd.DataFrame:
    """Per task and scope: the largest relative error of Σ vectors + bias against the stored site."""
    c = data.table("attribution_completeness")
    if c.empty:
        return pd.DataFrame()
    g = c.groupby(["run_id", "task", "scope", "site"], sort=False)["estimate"].max().reset_index()
    g = _ordered(g.assign(_s=g["scope"].map({s: i for i, s in enumerate(SCOPES)})), data, "_s")
    return g[["task", "scope", "site", "estimate"]].rename(columns={"estimate": "max_relative_error"}).reset_index(drop=True)


def ff_amp_wordsplit(data: ReportData) -> pd.DataFrame:
    """Per task, stage and layer: FF-amp of word-split pairs minus distance-matched other pairs (CI, Holm p)."""
    w = data.table("ff_amp_wordsplit")
    if w.empty:
        return pd.DataFrame()
    w = _ordered(w.assign(_st=w["stage"].map({"ff": 0, "ffres": 1, "ffresln": 2})), data, "_st", "layer")
    return w[["task", "stage", "layer", "estimate", "ci_low", "ci_high", "p", "p_adj", "n", "n_other"]].reset_index(drop=True)


def ff_amp_pairs(data: ReportData) -> pd.DataFrame:
    """Per task and layer: the (input subword, output subword) pairs the FFN amplifies most."""
    pr = data.table("ff_amp_pairs")
    if pr.empty:
        return pd.DataFrame()
    pr = _ordered(pr, data, "layer", "rank")
    return pr[["task", "layer", "rank", "input_token", "output_token", "estimate", "n"]].rename(
        columns={"estimate": "ff_amp"}).reset_index(drop=True)


def attention_norms(data: ReportData) -> pd.DataFrame:
    """Per task, layer (mean over heads) and token class: mean α received, ‖f(x)‖ and ‖α f(x)‖ (CI)."""
    an = data.table("attention_norms")
    if an.empty:
        return pd.DataFrame()
    an = an[an["unit"] == "layer"]
    order = {c: i for i, c in enumerate(TOKEN_CLASSES)}
    stat = {q: i for i, q in enumerate(("alpha", "f_norm", "alpha_f_norm"))}
    an = _ordered(an.assign(_c=an["token_class"].map(order), _q=an["statistic"].map(stat)), data, "_q", "_c", "layer")
    return an[["task", "statistic", "token_class", "layer", "estimate", "ci_low", "ci_high"]].reset_index(drop=True)


def ffn_norms(data: ReportData) -> pd.DataFrame:
    """Per task and layer: ‖ff‖ / ‖ln1‖ (the FFN output beside the vector it bypasses), with the top outlier
    dimension of the FFN output and LN2's γ there."""
    r, o = data.table("ff_norm_ratio"), data.table("ffn_outlier_dims")
    if r.empty:
        return pd.DataFrame()
    out = r[["run_id", "task", "layer", "estimate", "ci_low", "ci_high"]].rename(columns={"estimate": "ff_over_bypass"})
    if len(o):
        top = o[o["rank"] == 1][["run_id", "layer", "dim", "estimate", "ln2_gamma", "gamma_abs_rank"]].rename(
            columns={"estimate": "outlier_mean_abs_over_median", "dim": "outlier_dim"})
        out = out.merge(top, on=["run_id", "layer"], how="left")
    return _ordered(out, data, "layer").drop(columns="run_id").reset_index(drop=True)


def source_commit() -> str:
    """The git commit of the bertology source in use (``+dirty`` with uncommitted changes; ``unknown``
    outside a git checkout)."""
    root = Path(bertology.__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _relative(path: str | None, base) -> str:
    """An absolute path inside ``base`` (the results :class:`Location`) relative to it; anything else (a hub
    id, a path elsewhere, a URL) as is."""
    if not path or not Path(path).is_absolute() or not base.local:
        return path or ""
    try:
        return str(Path(path).resolve().relative_to(base.local_path.resolve()))
    except ValueError:
        return str(path)


def _carve(carve) -> str:
    if not carve:
        return ""
    if isinstance(carve, dict):
        return (f"{carve.get('n_train')} train examples carved from {carve.get('from', 'dev')} (fraction "
                f"{carve.get('fraction')}, seed {carve.get('seed')}); dev keeps {carve.get('n_dev')}")
    return str(carve)


def _columns(record: dict | None) -> str:
    """A user dataset's source and column mapping (GLUE tasks: their fixed layout, so empty)."""
    if not record:
        return ""
    columns = record["columns"]
    cols = ", ".join(f"{k}={columns[k]}" for k in ("text", "text_pair", "label", "split", "id")
                     if columns.get(k) is not None)
    return f"{record['data']} ({cols})"


def provenance(data: ReportData) -> pd.DataFrame:
    """Per task: what produced its numbers — software, checkpoint and data checksums, seeds, carve-out,
    bootstrap settings. Paths inside the results folder are relative to it."""
    commit = source_commit()
    rows = []
    for run in data.runs:
        m, a, ft = run.meta, run.analysis, run.finetune or {}
        cfg = a.get("config", {})
        carve = m.get("carve_out")
        rows.append({
            "task": run.task, "bertology_version": bertology.__version__, "git_commit": commit,
            "torch": m["software"]["torch"], "transformers": m["software"]["transformers"],
            "checkpoint": _relative(m["model_path"], data.results), "model_type": m["model_type"],
            "classifier_head": m.get("classifier_head", "not recorded"),
            "n_layers": m["n_layers"], "hidden": m["hidden"], "model_sha256": m["model_sha256"],
            "base_model": _relative(ft.get("base_model"), data.results), "base_model_sha256": ft.get("base_model_sha256", ""),
            "finetune_seed": ft.get("seed", np.nan), "data_file": Path(m["data_file"]).name if m.get("data_file") else "",
            "data_sha256": m.get("data_sha256", ""), "carve_out": _carve(carve),
            "task_type": m.get("task_type", "classification"), "classes": ", ".join(m.get("label_names") or []),
            "data_columns": _columns(m.get("data")),
            "n_dev_analysed": m["n_samples"], "extract_seed": m["seed"], "dtype": m["dtype"],
            "analysis_seed": cfg.get("seed"), "resamples": cfg.get("resamples"),
            "skipped": "; ".join(a.get("skipped") or []) or "none",
            "permutations": cfg.get("permutations"), "correction": cfg.get("correction"),
            "score_bins": ",".join(f"{b:g}" for b in cfg["bins"]) if cfg.get("bins") else "",
            "error_threshold": cfg.get("error_threshold") if is_regression(m) else np.nan,
            "layer_fit": a.get("layer_fit"),
        })
    return pd.DataFrame(rows)


def all_tables(data: ReportData) -> dict[str, pd.DataFrame]:
    """Every table of the report, by CSV name (empty tables are left out)."""
    tables = {
        "metrics": metrics(data),
        "separability": separability(data),
        "skip_candidates": skip_candidates(data),
        "ffn_ratio_cls": ffn_ratio(data, "cls"),
        "ffn_ratio_tokens": ffn_ratio(data, "tokens"),
        "confident_wrong": confident_wrong(data),
        "token_strength_summary": token_strength(data),
        "token_profile": token_profile(data),
        "layer_skip": layer_skip(data),
        "apriori_validation": apriori(data),
        "removals": removals(data),
        "heads": heads(data),
        "attention_patterns": attention_patterns(data),
        "attention_heads": attention_heads(data),
        "attention_token_classes": attention_token_classes(data),
        "attention_finetune": attention_finetune(data),
        "attribution_similarity": attribution_similarity(data),
        "attribution_completeness": attribution_completeness(data),
        "ff_amp_wordsplit": ff_amp_wordsplit(data),
        "ff_amp_pairs": ff_amp_pairs(data),
        "attention_norms": attention_norms(data),
        "ffn_norms": ffn_norms(data),
        "provenance": provenance(data),
    }
    return {k: v for k, v in tables.items() if not v.empty}


def to_csv_bytes(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False, float_format=CSV_FLOAT, lineterminator="\n").encode()
