"""What the debiased estimators and calibrated intervals change in a results folder's findings.

    python bench/intervals_before_after.py BEFORE AFTER [--out bench/results/intervals_before_after.json]

BEFORE and AFTER are results folders (``RESULTS/TASK/analysis/*.parquet``) of the same stores analysed by two
versions of ``bertology analyze``. Prints, per task: the a-priori skip candidates, the FFN block's
structural/classification ratio over [CLS] per layer (after: with its interval, "≥ X" where unbounded),
and for every summary table the number of rows with an interval whose estimate lies outside it or whose
interval leaves the statistic's range (a ratio or energy below 0, a share outside [0, 1]).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

NONNEGATIVE = {"fisher_trace", "centroid_ratio", "classification", "structural", "within", "total",
               "structural_over_classification", "norm_mean", "norm_cv", "n_errors"}
SHARES = {"structural_share", "accuracy", "error_rate", "confident_share", "no_layer_right_share", "share",
          "probe_accuracy"}


def _num(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.3g}"


def ci_rows(folder: Path) -> dict:
    """Per table: rows with an interval, estimate outside it, interval outside the statistic's range."""
    out = {"rows": 0, "outside": 0, "out_of_range": 0, "by_table": {}}
    for path in sorted(folder.glob("*/analysis/*.parquet")):
        df = pd.read_parquet(path)
        if not {"ci_low", "ci_high", "estimate"} <= set(df.columns) or "statistic" not in df:
            continue
        df = df.dropna(subset=["ci_low", "ci_high", "estimate"])
        if "ci_method" in df:
            df = df[df["ci_method"] != "permutation"]        # chance levels are ranges, not intervals
        stat = df["statistic"].astype(str)
        outside = (df["estimate"] < df["ci_low"] - 1e-12) | (df["estimate"] > df["ci_high"] + 1e-12)
        low = stat.isin(NONNEGATIVE | SHARES) & (df["ci_low"] < -1e-12)
        high = stat.isin(SHARES) & (df["ci_high"] > 1 + 1e-12)
        t = out["by_table"].setdefault(path.stem, {"rows": 0, "outside": 0, "out_of_range": 0})
        for d in (t, out):
            d["rows"] += len(df)
            d["outside"] += int(outside.sum())
            d["out_of_range"] += int((low | high).sum())
    return out


def skip(folder: Path, task: str) -> str:
    path = folder / task / "analysis" / "skip_candidates.parquet"
    if not path.exists():
        return "–"
    sk = pd.read_parquet(path)
    return ",".join(str(int(v)) for v in sk.loc[sk["candidate"].astype(bool), "layer"]) or "none"


def ffn_curve(folder: Path, task: str) -> list[str]:
    path = folder / task / "analysis" / "ffn_roles.parquet"
    if not path.exists():
        return []
    f = pd.read_parquet(path)
    f = f[(f["positions"] == "cls") & (f["vector"] == "update") & (f["statistic"] == "structural_over_classification")]
    out = []
    for r in f.sort_values("layer").itertuples():
        if np.isinf(r.ci_high):
            out.append(f"≥ {_num(r.ci_low)}")
        else:
            out.append(f"{_num(r.estimate)} [{_num(r.ci_low)}, {_num(r.ci_high)}]")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--out", type=Path, default=Path("bench/results/intervals_before_after.json"))
    args = ap.parse_args(argv)
    tasks = sorted(p.parent.name for p in args.after.glob("*/analysis"))
    report = {"tasks": {}, "ci_rows": {"before": ci_rows(args.before), "after": ci_rows(args.after)}}
    for task in tasks:
        report["tasks"][task] = {"skip_before": skip(args.before, task), "skip_after": skip(args.after, task),
                                 "ffn_ratio_before": ffn_curve(args.before, task),
                                 "ffn_ratio_after": ffn_curve(args.after, task)}
        t = report["tasks"][task]
        print(f"{task}: skip candidates {t['skip_before']} → {t['skip_after']}")
        for layer, (b, a) in enumerate(zip(t["ffn_ratio_before"], t["ffn_ratio_after"]), start=1):
            print(f"  FFN structural/classification, layer {layer}: {b}  →  {a}")
    for when in ("before", "after"):
        c = report["ci_rows"][when]
        print(f"{when}: {c['rows']} rows with an interval; estimate outside it: {c['outside']}; interval outside "
              f"the statistic's range: {c['out_of_range']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
