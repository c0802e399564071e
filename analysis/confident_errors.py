"""Confident-wrong errors: how sure the model is when it is wrong, and whether any layer had it right.

``margin`` of a prediction is p(predicted) − p(true): 0 for a correct prediction, and for an error how far
the model's belief sits on the wrong side. An error is *confident* when its margin exceeds a threshold
(0.3, as in the mission's Finding 3, where 60–93% of BERT-base's errors are). "No layer right" means the
linear probe of no layer (0 … L, see :mod:`layer_predictions`) predicts the true label: the representation,
not the classification head, is then the limit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from .bootstrap import Bootstrap, percentile_ci
from .intervals import share_interval
from .options import CONFIDENT_MARGIN


def margins(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prediction, confidence p(predicted), margin p(predicted) − p(true)) per sample."""
    probs = np.asarray(probs, dtype=np.float64)
    pred = probs.argmax(axis=1)
    rows = np.arange(len(probs))
    return pred, probs[rows, pred], probs[rows, pred] - probs[rows, np.asarray(labels)]


def error_table(ds: xr.Dataset, layer_preds: pd.DataFrame, boot: Bootstrap,
                threshold: float = CONFIDENT_MARGIN) -> pd.DataFrame:
    """Per store: error rate, number of errors, confident share, mean margin, share no layer gets right."""
    y = ds["label"].values.astype(int)
    pred, _, margin = margins(ds["probs"].values, y)
    err = (pred != y).astype(np.float64)
    conf = err * (margin > threshold)
    right = layer_preds.pivot(index="sample_index", columns="layer", values="probe_correct").sort_index()
    none_right = err * (~right.to_numpy(dtype=bool).any(axis=1))
    n = len(y)
    rows = []
    shares = {"error_rate": (err, np.ones(n)), "confident_share": (conf, err), "no_layer_right_share": (none_right, err)}
    for name, (num, den) in shares.items():   # shares: Wilson's interval, which a share of 0 or 1 does not collapse
        est, lo, hi = share_interval(num, den)
        rows.append(dict(statistic=name, estimate=float(est), ci_low=float(lo), ci_high=float(hi), n=n,
                         threshold=threshold, ci_method="wilson"))
    for name, (est, bs) in {"n_errors": (err.sum(), boot.weights @ err),
                            "mean_margin": boot.ratio(err * margin, err)}.items():
        lo, hi = percentile_ci(bs[:, None])
        rows.append(dict(statistic=name, estimate=float(est), ci_low=lo[0], ci_high=hi[0], n=n,
                         threshold=threshold, ci_method="percentile"))
    order = ["error_rate", "n_errors", "confident_share", "mean_margin", "no_layer_right_share"]
    return pd.DataFrame(rows).set_index("statistic").loc[order].reset_index()


def analyze(ctx) -> dict:
    """The registry's entry: the error summary of a store, against its layer readouts."""
    preds = ctx.tables["layer_predictions"]
    return {"error_summary": error_table(ctx.ds, preds, ctx.boot, ctx.cfg.confident_margin)
            .assign(fit=ctx.record["layer_fit"])}
