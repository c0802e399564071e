"""The FFN's dual role: how much of each FFN block's update is class-common versus class-specific.

The FFN block of layer l maps ``ln1`` to ``ln2``; its update is Δ = ``ln2 − ln1`` (and the raw FFN output is
``ff``). Δ's mean energy splits into the class-common mean μ ("structural"), the class-specific shifts
μ_c − μ ("classification") and the within-class residual (see :mod:`moments`). The published claim for
BERT-base is a structural/classification ratio of ~150× at layer 1 falling to ~2× at layer 12, with ~92%
of the energy structural in the front layers; ``structural_over_classification`` and ``structural_share``
are those two numbers. Alongside: norm normalisation (mean and coefficient of variation of ‖·‖ before and
after the block) and ‖ff‖/‖ln1‖, the FFN output against the bypass it is added to.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from .bootstrap import Bootstrap, percentile_ci
from .moments import SampleSums, energies_with_ci

PARTS = ("total", "structural", "classification", "within", "structural_share", "structural_over_classification")
TARGETS = ("update", "ff")   # update = ln2 − ln1 (the whole block), ff = raw FFN output


def _sample_blocks(ds: xr.Dataset, max_tokens: int = 200_000):
    """Consecutive sample ranges whose tokens fit in ``max_tokens`` (memory stays flat as stores grow)."""
    starts = ds["token_start"].values.astype(np.int64)
    lengths = ds["length"].values.astype(np.int64)
    i = 0
    while i < len(starts):
        j = i + 1
        while j < len(starts) and starts[j] + lengths[j] - starts[i] <= max_tokens:
            j += 1
        yield i, j, int(starts[i]), int(starts[j - 1] + lengths[j - 1])
        i = j


def token_sums(ds: xr.Dataset, layer: int) -> dict[str, np.ndarray]:
    """Per-sample sums over all tokens at one layer: vectors and squared norms of Δ and ff, and norms.

    Reads one token block at a time from the store (never all tokens of all layers at once).
    """
    n = ds.sizes["sample"]
    H = ds.sizes["hidden"]
    out = {f"s_{t}": np.zeros((n, H)) for t in TARGETS}
    out |= {f"q_{t}": np.zeros(n) for t in TARGETS}
    out |= {f"{k}_{s}": np.zeros(n) for s in ("ln1", "ln2", "ff_over_ln1") for k in ("norm", "norm2")}
    for i, j, t0, t1 in _sample_blocks(ds):
        get = {s: ds[f"token_{s}"].sel(token_layer=layer).isel(token=slice(t0, t1)).astype("float32").values
               .astype(np.float64) for s in ("ln1", "ln2", "ff")}
        starts = ds["token_start"].values[i:j].astype(np.int64) - t0
        vec = {"update": get["ln2"] - get["ln1"], "ff": get["ff"]}
        for t, v in vec.items():
            out[f"s_{t}"][i:j] = np.add.reduceat(v, starts, axis=0)
            out[f"q_{t}"][i:j] = np.add.reduceat(np.einsum("td,td->t", v, v), starts)
        norms = {"ln1": np.linalg.norm(get["ln1"], axis=1), "ln2": np.linalg.norm(get["ln2"], axis=1)}
        norms["ff_over_ln1"] = np.linalg.norm(get["ff"], axis=1) / norms["ln1"]
        for s, x in norms.items():
            out[f"norm_{s}"][i:j] = np.add.reduceat(x, starts)
            out[f"norm2_{s}"][i:j] = np.add.reduceat(x * x, starts)
    return out


def _norm_stats(total, total2, count, weights):
    """Mean and coefficient of variation of a norm from per-sample sums, for the full sample and resamples."""
    w = np.vstack([np.ones((1, weights.shape[1])), weights])
    N = w @ count
    mean = (w @ total) / N[:, None]
    var = (w @ total2) / N[:, None] - mean ** 2
    cv = np.sqrt(np.maximum(var, 0)) / mean
    return mean, cv


def ffn_roles(ds: xr.Dataset, boot: Bootstrap, *, tokens: bool = True, ci: str = "bca") -> pd.DataFrame:
    """Per layer: the energy decomposition of the FFN update and of ``ff``, and norm normalisation.

    ``scope='cls'`` uses the [CLS] vector; ``scope='tokens'`` every (non-padding) token, resampled by sample.
    """
    y = ds["label"].values.astype(int)
    C = len(ds["class"])
    layers = [int(l) for l in ds["layer"].values]
    n = len(y)
    rows = []

    def emit(scope, layer, site, statistic, est, bs, count, lo=None, hi=None):
        if lo is None:
            lo, hi = percentile_ci(bs)
        for k, (l, s) in enumerate(zip(layer, site)):
            rows.append(dict(scope=scope, layer=l, site=s, statistic=statistic, estimate=est[k],
                             ci_low=lo[k], ci_high=hi[k], n=count))

    # [CLS]
    cls = ds["cls"].sel(site=["ln1", "ff", "ln2"]).astype("float32").values.astype(np.float64)  # (n, L, 3, d)
    ln1, ff, ln2 = cls[:, :, 0], cls[:, :, 1], cls[:, :, 2]
    v = np.concatenate([ln2 - ln1, ff], axis=1)                                           # (n, 2L, d)
    labels_site = ["update"] * len(layers) + ["ff"] * len(layers)
    labels_layer = layers + layers
    res = energies_with_ci(SampleSums.from_vectors(v), y, C, boot, method=ci)
    for part in PARTS:
        est, bs, lo, hi = res[part]
        emit("cls", labels_layer, labels_site, part, est, bs, n, lo, hi)
    norms = {"ln1": np.linalg.norm(ln1, axis=2), "ln2": np.linalg.norm(ln2, axis=2)}
    norms["ff_over_ln1"] = np.linalg.norm(ff, axis=2) / norms["ln1"]
    for s, x in norms.items():
        mean, cv = _norm_stats(x, x * x, np.ones(n), boot.weights)
        emit("cls", layers, [s] * len(layers), "norm_mean", mean[0], mean[1:], n)
        if s != "ff_over_ln1":
            emit("cls", layers, [s] * len(layers), "norm_cv", cv[0], cv[1:], n)
    # all tokens (needs token_ln1, token_ff, token_ln2 at the layer)
    have = all(f"token_{s}" in ds for s in ("ln1", "ff", "ln2"))
    if tokens and have:
        tok_layers = [int(l) for l in ds["token_layer"].values]
        per = [token_sums(ds, l) for l in tok_layers]
        m = ds["length"].values.astype(np.float64)
        s = np.stack([p["s_update"] for p in per] + [p["s_ff"] for p in per], axis=1)
        q = np.stack([p["q_update"] for p in per] + [p["q_ff"] for p in per], axis=1)
        res = energies_with_ci(SampleSums(s, q, m), y, C, boot, method=ci)
        for part in PARTS:
            est, bs, lo, hi = res[part]
            emit("tokens", tok_layers + tok_layers, ["update"] * len(tok_layers) + ["ff"] * len(tok_layers), part,
                 est, bs, int(m.sum()), lo, hi)
        for site in ("ln1", "ln2", "ff_over_ln1"):
            tot = np.stack([p[f"norm_{site}"] for p in per], axis=1)
            tot2 = np.stack([p[f"norm2_{site}"] for p in per], axis=1)
            mean, cv = _norm_stats(tot, tot2, m, boot.weights)
            emit("tokens", tok_layers, [site] * len(tok_layers), "norm_mean", mean[0], mean[1:], int(m.sum()))
            if site != "ff_over_ln1":
                emit("tokens", tok_layers, [site] * len(tok_layers), "norm_cv", cv[0], cv[1:], int(m.sum()))
    return pd.DataFrame(rows)
