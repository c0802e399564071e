"""Which headline findings hold across fine-tuning seeds: a summary of a seeds run's index (the workflow with
config `seeds`, e.g. config/seeds.yaml), written as Markdown.

    .venv/bin/python bench/seeds_findings.py results/seeds --out bench/results/seeds_findings.md

Per task: the GLUE metric of each seed and over seeds (the crossed interval of `bertology across`); which
layers are a-priori skip candidates in how many seeds; the best single-head removal and how many seeds agree;
the Jaccard similarity of the seeds' significant heads; whether the largest attention change through
fine-tuning is in the last two layers; Δ separability per layer whose interval over seeds excludes 0; the
layer skips lossless with compensation in every seed; Kovaleva's baselines; and the seed-vs-seed comparisons.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bertology.analysis.index import IndexReader

GLUE_METRIC = {"cola": "mcc", "mrpc": "f1"}


def fmt(x: float) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.3f}"


def ci(m, lo, hi) -> str:
    return f"{fmt(m)} [{fmt(lo)}, {fmt(hi)}]"


def summarise(results: Path) -> str:
    out = [f"# Across seeds: {results}", ""]
    with IndexReader(results / "bertology.duckdb") as ix, ix.cursor():
        sets = ix.query("SELECT * FROM run_sets ORDER BY task")
        var = ix.query("SELECT * FROM seed_variability")
        stab = ix.query("SELECT * FROM seed_stability")
        base = ix.query("SELECT * FROM baselines") if "baselines" in ix.tables() else None
        comp = ix.query("SELECT c.task, c.a_path, c.b_path, s.* FROM compare_summary s JOIN compares c "
                        "USING (compare_id) WHERE s.statistic = 'delta_accuracy' ORDER BY c.task, c.a_path")
        skips = ix.query("SELECT r.task, r.seed, k.intervention, k.estimate, k.ci_low, k.ci_high FROM layer_skip k "
                         "JOIN runs r USING (run_id) WHERE k.intervention <> 'none'")
    out += ["## The metric over seeds", "",
            "| task | metric | per seed | mean over seeds [crossed 95% interval] | between-seed sd |", "|---|---|---|---|---|"]
    for s in sets.itertuples():
        v = var[(var["set_id"] == s.set_id) & (var["source"] == "task_metrics")].set_index("statistic")
        m = GLUE_METRIC.get(s.task, "accuracy")
        for stat in dict.fromkeys([m, "accuracy"]):
            r = v.loc[stat]
            per = ", ".join(fmt(x) for x in json.loads(r["estimates"]))
            out.append(f"| {s.task} | {stat} | {per} | {ci(r['mean'], r['ci_low'], r['ci_high'])} | "
                       f"{fmt(r['sd_between'])} |")
    out += ["", "## Yes/no findings: share of seeds", "",
            "| task | a-priori skip candidates (layer: share) | best single-head removal (head: share) | "
            "significant heads, mean Jaccard | largest attention change in the last two layers | "
            "lossless skips with compensation in every seed |", "|---|---|---|---|---|---|"]
    for s in sets.itertuples():
        st = stab[stab["set_id"] == s.set_id]
        sk = st[st["finding"] == "skip_candidate"]
        sk_txt = ", ".join(f"{int(r.layer)}: {r.value:.0%}" for r in sk.itertuples() if r.value > 0) or "none"
        best = st[st["finding"] == "best_head_removal"].sort_values("value", ascending=False)
        best_txt = ", ".join(f"{r.intervention.split(':')[1]}: {r.value:.0%}" for r in best.head(3).itertuples())
        jac = st[st["finding"] == "significant_heads"]
        last = st[st["finding"] == "finetune_change_last_two_layers"]
        ks = skips[skips["task"] == s.task]
        lossless = ks.groupby("intervention").apply(lambda g: bool((g["ci_high"] >= 0).all()), include_groups=False)
        ll = ", ".join(sorted((i.split(":")[1] for i in lossless[lossless].index), key=int)) or "none"
        out.append(f"| {s.task} | {sk_txt} | {best_txt} | {fmt(jac['value'].iloc[0]) if len(jac) else '–'} "
                   f"({jac['detail'].iloc[0].split(' (')[0] if len(jac) else ''}) | "
                   f"{last['value'].iloc[0]:.0%} |" if len(last) else "– |")
        out[-1] += f" {ll} |"
    out += ["", "## Δ separability (Fisher trace, ln2) over seeds", "",
            "| task | layer | per seed | mean [crossed interval] | sd | interval excludes 0 |", "|---|---|---|---|---|---|"]
    for s in sets.itertuples():
        d = var[(var["set_id"] == s.set_id) & (var["source"] == "separability")
                & (var["statistic"] == "delta_fisher_trace")].sort_values("layer")
        for r in d.itertuples():
            per = ", ".join(fmt(x) for x in json.loads(r.estimates))
            sign = "+" if r.ci_low > 0 else "−" if r.ci_high < 0 else "no"
            out.append(f"| {s.task} | {int(r.layer)} | {per} | {ci(r.mean, r.ci_low, r.ci_high)} | "
                       f"{fmt(r.sd_between)} | {sign} |")
    if base is not None and len(base):
        out += ["", "## Kovaleva's baselines (ours [95% interval]; published BERT-base)", "",
                "| task | metric | pre-trained (probe) | random init + fine-tuning | fine-tuned (mean over seeds) | "
                "published pre-trained / random init / fine-tuned |", "|---|---|---|---|---|---|"]
        for s in sets.itertuples():
            b = base[base["set_id"] == s.set_id]
            for stat in b["statistic"].unique():
                r = b[b["statistic"] == stat].set_index("baseline")
                cell = lambda k: ci(r.at[k, "estimate"], r.at[k, "ci_low"], r.at[k, "ci_high"]) if k in r.index else "–"  # noqa: E731
                pub = " / ".join(fmt(r.at[k, "published"]) if k in r.index else "–"
                                 for k in ("pretrained", "random_init", "finetuned"))
                out.append(f"| {s.task} | {stat} | {cell('pretrained')} | {cell('random_init')} | "
                           f"{cell('finetuned')} | {pub} |")
    out += ["", "## Paired comparisons of the seeds (Δ accuracy, A − B)", "",
            "(The comparisons with the pre-trained model are left out here: its classifier head is untrained, so "
            "its per-layer probes and heads, in `compare_layers` and `compare_heads`, are what compare.)", "",
            "| task | A − B | Δ [95% CI] | McNemar p | flips |", "|---|---|---|---|---|"]
    for r in comp[~comp["b_path"].str.endswith("pretrained_analysis")].itertuples():
        name = lambda p: "pre-trained" if p.endswith("pretrained_analysis") else Path(p).parent.name  # noqa: E731
        out.append(f"| {r.task} | {name(r.a_path)} − {name(r.b_path)} | {ci(r.estimate, r.ci_low, r.ci_high)} | "
                   f"{fmt(r.p)} | {int(r.flipped)} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    text = summarise(args.results)
    if args.out:
        args.out.write_text(text)
    print(text)
