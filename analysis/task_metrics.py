"""The classifier's own score on the stored samples: accuracy, F1 and Matthews correlation, with CIs.

GLUE scores CoLA by Matthews correlation (MCC), MRPC by F1 of the positive class (and accuracy), and SST-2,
RTE and QNLI by accuracy. Accuracy is a share of samples (Wilson's interval); F1 and MCC are functions of
the four confusion counts, so every bootstrap resample is evaluated at once from the resample weights
(percentile intervals). F1 and MCC are defined for two classes
(class 1 positive); with more classes only accuracy is reported.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .bootstrap import Bootstrap, percentile_ci
from .intervals import share_interval


def _scores(tp, fp, fn, tn) -> dict[str, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        n = tp + fp + fn + tn
        acc = (tp + tn) / n
        f1 = 2 * tp / (2 * tp + fp + fn)
        den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        mcc = np.where(den > 0, (tp * tn - fp * fn) / np.where(den > 0, den, 1.0), 0.0)  # sklearn's convention
    return {"accuracy": acc, "f1": f1, "mcc": mcc}


def task_metrics(labels: np.ndarray, preds: np.ndarray, boot: Bootstrap, n_classes: int) -> pd.DataFrame:
    """One row per metric: ``statistic`` (accuracy, f1, mcc), ``estimate``, ``ci_low``, ``ci_high``, ``n``."""
    y, p = np.asarray(labels, dtype=int), np.asarray(preds, dtype=int)
    right = (y == p).astype(np.float64)
    est, lo, hi = share_interval(right, np.ones(len(y)))
    accuracy = dict(statistic="accuracy", estimate=float(est), ci_low=float(lo), ci_high=float(hi), n=len(y),
                    ci_method="wilson")
    if n_classes != 2:
        return pd.DataFrame([accuracy])
    cells = np.stack([(y == 1) & (p == 1), (y == 0) & (p == 1), (y == 1) & (p == 0), (y == 0) & (p == 0)],
                     axis=1).astype(np.float64)                      # (n, 4): tp fp fn tn indicators
    full = _scores(*cells.sum(axis=0))
    resampled = _scores(*(boot.weights @ cells).T)
    rows = [accuracy]
    for name in ("f1", "mcc"):
        lo, hi = percentile_ci(resampled[name][:, None])
        rows.append(dict(statistic=name, estimate=float(full[name]), ci_low=float(lo[0]), ci_high=float(hi[0]),
                         n=len(y), ci_method="percentile"))
    return pd.DataFrame(rows)


def analyze(ctx) -> dict:
    """The registry's entry: the classifier's own score on the store's samples."""
    ds = ctx.ds
    return {"task_metrics": task_metrics(ds["label"].values, ds["pred"].values, ctx.boot, ds.sizes["class"])}
