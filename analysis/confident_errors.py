"""Confident-wrong errors: how sure the model is when it is wrong, and whether any layer had it right.

``margin`` of a prediction is p(predicted) − p(true): 0 for a correct prediction, and for an error how far
the model's belief sits on the wrong side. An error is *confident* when its margin exceeds a threshold
(0.3, as in the mission's Finding 3, where 60–93% of BERT-base's errors are). "No layer right" means the
linear probe of no layer (0 … L, see :mod:`layer_predictions`) predicts the true label: the representation,
not the classification head, is then the limit.

A regression task's error is an absolute error above a threshold (``--error-threshold``, 1.0 on STS-B's
0-5 scale); "confident-wrong" does not apply (the model states no probability), so a regression's summary
has the error rate, the mean absolute error of its errors and the share no layer's ridge readout gets within
the threshold, but no confident share.
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


def _summary(err: np.ndarray, layer_preds: pd.DataFrame, boot: Bootstrap, threshold: float, shares: dict,
             means: dict) -> pd.DataFrame:
    """The error summary's rows, in order: ``error_rate``, ``n_errors``, then each of ``shares`` (num, den:
    Wilson's interval) and ``means`` (per-error values: a cluster-bootstrap interval), ``no_layer_right_share``
    last. ``err`` is 1 for each error."""
    right = layer_preds.pivot(index="sample_index", columns="layer", values="probe_correct").sort_index()
    none_right = err * (~right.to_numpy(dtype=bool).any(axis=1))
    n = len(err)
    wilson = {"error_rate": (err, np.ones(n)), **shares, "no_layer_right_share": (none_right, err)}
    boot_rows = {"n_errors": (err.sum(), boot.weights @ err), **{k: boot.ratio(err * v, err) for k, v in means.items()}}
    rows = []
    for name, (num, den) in wilson.items():   # shares: Wilson's interval, which a share of 0 or 1 does not collapse
        est, lo, hi = share_interval(num, den)
        rows.append(dict(statistic=name, estimate=float(est), ci_low=float(lo), ci_high=float(hi), n=n,
                         threshold=threshold, ci_method="wilson"))
    for name, (est, bs) in boot_rows.items():
        lo, hi = percentile_ci(bs[:, None])
        rows.append(dict(statistic=name, estimate=float(est), ci_low=lo[0], ci_high=hi[0], n=n,
                         threshold=threshold, ci_method="percentile"))
    order = ["error_rate", "n_errors", *shares, *means, "no_layer_right_share"]
    return pd.DataFrame(rows).set_index("statistic").loc[order].reset_index()


def error_table(ds: xr.Dataset, layer_preds: pd.DataFrame, boot: Bootstrap,
                threshold: float = CONFIDENT_MARGIN) -> pd.DataFrame:
    """Per store: error rate, number of errors, confident share, mean margin, share no layer gets right."""
    y = ds["label"].values.astype(int)
    pred, _, margin = margins(ds["probs"].values, y)
    err = (pred != y).astype(np.float64)
    return _summary(err, layer_preds, boot, threshold, {"confident_share": (err * (margin > threshold), err)},
                    {"mean_margin": margin})


def regression_error_table(ds: xr.Dataset, layer_preds: pd.DataFrame, boot: Bootstrap,
                           threshold: float) -> pd.DataFrame:
    """A regression's error summary: error rate (|error| > ``threshold``), number of errors, mean absolute
    error over the errors, share of errors no layer's readout gets within the threshold."""
    abs_err = np.abs(ds["pred"].values.astype(np.float64) - ds["label"].values.astype(np.float64))
    err = (abs_err > threshold).astype(np.float64)
    return _summary(err, layer_preds, boot, threshold, {}, {"mean_abs_error": abs_err})


def analyze(ctx) -> dict:
    """The registry's entry: the error summary of a store, against its layer readouts."""
    preds = ctx.tables["layer_predictions"]
    if ctx.caps.regression:
        table = regression_error_table(ctx.ds, preds, ctx.boot, ctx.cfg.error_threshold)
    else:
        table = error_table(ctx.ds, preds, ctx.boot, ctx.cfg.confident_margin)
    return {"error_summary": table.assign(fit=ctx.record["layer_fit"])}
