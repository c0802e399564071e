"""What each layer's [CLS] representation predicts: nearest-centroid and linear-probe readouts per layer.

For every layer l = 0 (input of layer 1) … L at site ``ln2``, two readouts are fitted on the train split's
[CLS] store when one is given (``fit='train store'``), otherwise cross-fitted on dev with 5 stratified folds
(``fit='cross-fitted on dev'``): the nearest class centroid (Euclidean) and a logistic-regression probe.
Alongside, the [CLS] norm and its projection on the unit class-mean direction (μ₁ − μ₀)/‖μ₁ − μ₀‖ (two
classes; NaN otherwise). A sample is "right at layer l" when the probe's prediction equals its label.

A regression task's readout is a ridge probe of the score (:func:`regression.ridge`), and a sample is right
at a layer when the probe's prediction is within the error threshold of its gold score; there is no
centroid readout (NaN) and no class direction.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from bertology.store.schema import is_regression

from .engine import compute, shared, task
from .regression import ERROR_THRESHOLD, cross_fitted, ridge

FIT_TRAIN, FIT_CROSS = "train store", "cross-fitted on dev"


def layer_vectors(ds: xr.Dataset, layer: int, site: str = "ln2") -> np.ndarray:
    """[CLS] at a layer (0: the input of layer 1) as float64."""
    if layer == 0:
        return ds["cls_embed"].values.astype(np.float64)
    return ds["cls"].sel(layer=layer, site=site).values.astype(np.float64)


def _probe():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def _centroids(x, y, C):
    return np.stack([x[y == c].mean(axis=0) if np.any(y == c) else np.full(x.shape[1], np.inf) for c in range(C)])


def _nearest(x, centroids):
    return np.argmin(((x[:, None, :] - centroids[None]) ** 2).sum(axis=2), axis=1)


def _readouts(x_fit, y_fit, x_eval, C):
    cen = _centroids(x_fit, y_fit, C)
    if np.unique(y_fit).size < 2:
        probe_pred = np.full(len(x_eval), int(np.bincount(y_fit).argmax()))
    else:
        probe_pred = _probe().fit(x_fit, y_fit).predict(x_eval)
    direction = np.full(x_eval.shape[1], np.nan)
    if C == 2 and np.all(np.isfinite(cen)):
        d = cen[1] - cen[0]
        direction = d / (np.linalg.norm(d) or 1.0)
    return _nearest(x_eval, cen), probe_pred, x_eval @ direction


def layer_predictions(ds: xr.Dataset, train: xr.Dataset | None = None, *, site: str = "ln2", folds: int = 5,
                      seed: int = 0, threshold: float = ERROR_THRESHOLD) -> tuple[pd.DataFrame, str]:
    """One row per (sample, layer): centroid and probe predictions, [CLS] norm, class-direction projection
    (one task per layer)."""
    layers = [0] + [int(l) for l in ds["layer"].values]
    fit = FIT_TRAIN if train is not None else FIT_CROSS
    if train is not None and train.attrs.get("model_sha256") != ds.attrs.get("model_sha256"):
        raise ValueError("the train store was extracted from a different checkpoint than the dev store")
    src, tr = shared(ds), shared(train)
    if is_regression(ds.attrs):
        frames = compute(*(task(_ridge_frame, src, tr, layer, site, folds, seed, threshold) for layer in layers))
    else:
        frames = compute(*(task(_layer_frame, src, tr, layer, site, folds, seed) for layer in layers))
    return pd.concat(frames, ignore_index=True), fit


def _folds(y: np.ndarray, folds: int, seed: int):
    """Cross-fitting folds: stratified, as many as the smallest class allows (2 to ``folds``); where a class
    has a single sample, plain folds (stratification is then impossible, and sklearn would only warn)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    counts = np.bincount(y)
    smallest = counts[counts > 0].min()
    if smallest >= 2:
        return StratifiedKFold(int(min(folds, smallest)), shuffle=True, random_state=seed).split(y, y)
    return KFold(int(min(folds, len(y))), shuffle=True, random_state=seed).split(y)


def _layer_frame(ds: xr.Dataset, train: xr.Dataset | None, layer: int, site: str, folds: int, seed: int):
    """One task: the readouts of one layer for every sample."""
    y = ds["label"].values.astype(int)
    C = len(ds["class"])
    n = len(y)
    x = layer_vectors(ds, layer, site)
    cen_pred = np.zeros(n, dtype=int)
    probe_pred = np.zeros(n, dtype=int)
    proj = np.zeros(n)
    if train is not None:
        xt, yt = layer_vectors(train, layer, site), train["label"].values.astype(int)
        cen_pred, probe_pred, proj = _readouts(xt, yt, x, C)
    else:
        for tr, te in _folds(y, folds, seed):
            cen_pred[te], probe_pred[te], proj[te] = _readouts(x[tr], y[tr], x[te], C)
    return pd.DataFrame({
        "sample_index": np.arange(n), "sample_id": ds["sample"].values.astype(np.int64), "layer": layer,
        "site": "embed" if layer == 0 else site, "label": y, "centroid_pred": cen_pred,
        "probe_pred": probe_pred, "centroid_correct": cen_pred == y, "probe_correct": probe_pred == y,
        "cls_norm": np.linalg.norm(x, axis=1), "class_direction_projection": proj,
    })


def _ridge_frame(ds: xr.Dataset, train: xr.Dataset | None, layer: int, site: str, folds: int, seed: int,
                 threshold: float):
    """One task: a regression's ridge readout of one layer for every sample."""
    y = ds["label"].values.astype(np.float64)
    x = layer_vectors(ds, layer, site)
    if train is not None:
        pred = ridge().fit(layer_vectors(train, layer, site), train["label"].values.astype(np.float64)).predict(x)
    else:
        pred = cross_fitted(x, y, folds, seed)
    n = len(y)
    return pd.DataFrame({
        "sample_index": np.arange(n), "sample_id": ds["sample"].values.astype(np.int64), "layer": layer,
        "site": "embed" if layer == 0 else site, "label": y, "centroid_pred": np.full(n, np.nan),
        "probe_pred": pred, "centroid_correct": np.zeros(n, dtype=bool),
        "probe_correct": np.abs(pred - y) <= threshold,
        "cls_norm": np.linalg.norm(x, axis=1), "class_direction_projection": np.full(n, np.nan),
    })


def analyze(ctx) -> dict:
    """The registry's entry: each layer's [CLS] readouts; ``layer_fit`` (train or cross-fitted) is recorded
    in ``analysis.json``."""
    preds, fit = layer_predictions(ctx.ds, ctx.train, seed=ctx.cfg.seed, threshold=ctx.cfg.error_threshold)
    ctx.record["layer_fit"] = fit
    return {"layer_predictions": preds.assign(fit=fit)}
