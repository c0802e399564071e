"""The model's own score on the stored samples: accuracy, F1 and Matthews correlation, with CIs (a
regression task's Pearson and Spearman correlations: :mod:`regression`).

GLUE scores CoLA by Matthews correlation (MCC), MRPC by F1 of the positive class (and accuracy), and SST-2,
RTE and QNLI by accuracy. Accuracy is a share of samples (Wilson's interval); F1 and MCC are functions of
the four confusion counts, so every bootstrap resample is evaluated at once from the resample weights
(percentile intervals). F1 is that of class 1 for two classes; with more classes it is the macro-F1 (the mean
of the classes' F1), and MCC is Gorodkin's k-class form (which equals the binary one for two classes).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .bootstrap import Bootstrap, percentile_ci
from .intervals import share_interval
from .regression import score_rows


def _scores(tp, fp, fn, tn) -> dict[str, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        n = tp + fp + fn + tn
        acc = (tp + tn) / n
        f1 = 2 * tp / (2 * tp + fp + fn)
        den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        mcc = np.where(den > 0, (tp * tn - fp * fn) / np.where(den > 0, den, 1.0), 0.0)  # sklearn's convention
    return {"accuracy": acc, "f1": f1, "mcc": mcc}


def _k_class_scores(conf: np.ndarray) -> dict[str, np.ndarray]:
    """Macro-F1 and Gorodkin's k-class Matthews correlation from confusion counts ``conf[..., true, pred]``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        tp = np.diagonal(conf, axis1=-2, axis2=-1)
        t, p = conf.sum(axis=-1), conf.sum(axis=-2)          # per class: true count, predicted count
        f1 = np.where(t + p > 0, 2 * tp / np.where(t + p > 0, t + p, 1.0), 0.0).mean(axis=-1)
        n, c = conf.sum(axis=(-2, -1)), tp.sum(axis=-1)
        den = np.sqrt((n ** 2 - (p ** 2).sum(-1)) * (n ** 2 - (t ** 2).sum(-1)))
        mcc = np.where(den > 0, (c * n - (t * p).sum(-1)) / np.where(den > 0, den, 1.0), 0.0)
    return {"macro_f1": f1, "mcc": mcc}


def task_metrics(labels: np.ndarray, preds: np.ndarray, boot: Bootstrap, n_classes: int) -> pd.DataFrame:
    """One row per metric: ``statistic`` (accuracy; f1 and mcc for two classes; macro_f1 and mcc for more),
    ``estimate``, ``ci_low``, ``ci_high``, ``n``."""
    y, p = np.asarray(labels, dtype=int), np.asarray(preds, dtype=int)
    right = (y == p).astype(np.float64)
    est, lo, hi = share_interval(right, np.ones(len(y)))
    accuracy = dict(statistic="accuracy", estimate=float(est), ci_low=float(lo), ci_high=float(hi), n=len(y),
                    ci_method="wilson")
    if n_classes == 2:
        cells = np.stack([(y == 1) & (p == 1), (y == 0) & (p == 1), (y == 1) & (p == 0), (y == 0) & (p == 0)],
                         axis=1).astype(np.float64)                      # (n, 4): tp fp fn tn indicators
        full = _scores(*cells.sum(axis=0))
        resampled = _scores(*(boot.weights @ cells).T)
        names = ("f1", "mcc")
    else:
        cells = np.zeros((len(y), n_classes * n_classes))                 # (n, k·k): one confusion cell each
        cells[np.arange(len(y)), y * n_classes + p] = 1.0
        full = _k_class_scores(cells.sum(axis=0).reshape(n_classes, n_classes))
        resampled = _k_class_scores((boot.weights @ cells).reshape(-1, n_classes, n_classes))
        names = ("macro_f1", "mcc")
    rows = [accuracy]
    for name in names:
        lo, hi = percentile_ci(resampled[name][:, None])
        rows.append(dict(statistic=name, estimate=float(full[name]), ci_low=float(lo[0]), ci_high=float(hi[0]),
                         n=len(y), ci_method="percentile"))
    return pd.DataFrame(rows)


def analyze(ctx) -> dict:
    """The registry's entry: the model's own score on the store's samples (a regression's: Pearson's r,
    Spearman's ρ and the mean squared error, :mod:`regression`)."""
    ds = ctx.ds
    if ctx.caps.regression:
        return {"task_metrics": pd.DataFrame(score_rows(ds["label"].values, ds["pred"].values, ctx.boot))}
    return {"task_metrics": task_metrics(ds["label"].values, ds["pred"].values, ctx.boot, ds.sizes["class"])}
