"""The FFN's dual role: how much of each FFN block's update is class-common versus class-specific.

The FFN block of layer l maps ``ln1`` to ``ln2``; its update is Δ = ``ln2 − ln1`` (and the raw FFN output is
``ff``). Δ's mean energy splits into the class-common mean μ ("structural"), the class-specific shifts
μ_c − μ ("classification") and the within-class residual (see :mod:`moments`). The published claim for
BERT-base is a structural/classification ratio of ~150× at layer 1 falling to ~2× at layer 12, with ~92%
of the energy structural in the front layers; ``structural_over_classification`` and ``structural_share``
are those two numbers. Alongside: norm normalisation (mean and coefficient of variation of ‖·‖ before and
after the block). The FFN output against the bypass it is added to, ‖ff‖/‖ln1‖, and its outlier
dimensions are the tables ``ff_norm_ratio`` and ``ffn_outlier_dims`` (:func:`ffn_output_tables`).

Each row's ``vector`` says what was measured: ``update`` (ln2 − ln1, which is no single site; ``site`` is
NULL), or the site itself (``ff``, ``ln1``, ``ln2``; ``site`` holds it too).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from bertology.store.params import ModelParameters
from bertology.store.schema import SITES, token_var

from .bootstrap import Bootstrap, adjust, percentile_ci
from .engine import compute, concat, sample_blocks, shared, task, tree_sum
from .moments import MIN_PER_CLASS, SampleSums, energies_with_ci, min_class_count
from .regression import NO_BINS, class_codes
from .requirements import skipped

PARTS = ("total", "structural", "classification", "within", "structural_share", "structural_over_classification")
TARGETS = ("update", "ff")   # update = ln2 − ln1 (the whole block), ff = raw FFN output


def _tokens(ds, site, layer, t0, t1) -> np.ndarray:
    return ds[token_var(site)].sel(token_layer=layer).isel(token=slice(t0, t1)).values.astype(np.float64)


class ClsUpdateSource:
    """Per-sample [CLS] FFN update (ln2 − ln1) and ff output: series (layer, target), layer-major."""

    def __init__(self, ds: xr.Dataset):
        self.ds = ds
        self.keys = [(int(l), t) for l in ds["layer"].values for t in TARGETS]
        self.n, self.K = ds.sizes["sample"], len(self.keys)

    def block(self, ks: slice, idx: slice) -> SampleSums:
        cls = self.ds["cls"].sel(site=["ln1", "ff", "ln2"]).isel(sample=idx).values.astype(np.float64)
        vec = {"update": cls[:, :, 2] - cls[:, :, 0], "ff": cls[:, :, 1]}
        return SampleSums.from_vectors(np.stack([vec[t][:, l - 1] for l, t in self.keys[ks]], axis=1))


class TokenUpdateSource:
    """Per-sample sums over every token of the FFN update and ff output, read one token block at a time."""

    def __init__(self, ds: xr.Dataset):
        self.ds = ds
        self.keys = [(int(l), t) for l in ds["token_layer"].values for t in TARGETS]
        self.n, self.K = ds.sizes["sample"], len(self.keys)

    def block(self, ks: slice, idx: slice) -> SampleSums:
        keys = self.keys[ks]
        i0 = idx.start or 0
        nb = (self.n if idx.stop is None else idx.stop) - i0
        s = np.zeros((nb, len(keys), self.ds.sizes["hidden"]))
        q = np.zeros((nb, len(keys)))
        starts = self.ds.bertology.starts
        for b0, b1, t0, t1 in self.ds.bertology.token_blocks(idx):
            rel = starts[b0:b1] - t0
            for layer in sorted({l for l, _ in keys}):
                ln1, ln2 = _tokens(self.ds, "ln1", layer, t0, t1), _tokens(self.ds, "ln2", layer, t0, t1)
                vec = {"update": ln2 - ln1, "ff": _tokens(self.ds, "ff", layer, t0, t1)}
                for k, (l, t) in enumerate(keys):
                    if l == layer:
                        s[b0 - i0:b1 - i0, k] = np.add.reduceat(vec[t], rel, axis=0)
                        q[b0 - i0:b1 - i0, k] = np.add.reduceat(np.einsum("td,td->t", vec[t], vec[t]), rel)
        return SampleSums(s, q, self.ds["length"].values[idx].astype(np.float64))


NORM_SITES = ("ln1", "ln2")


def norm_sums(ds: xr.Dataset, scope: str, block_size: int | None = None) -> tuple[list[int], dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Per-sample sums of ‖ln1‖ and ‖ln2‖ (and of their squares) per layer, (n, L) each."""
    n = ds.sizes["sample"]
    if scope == "cls":
        layers = [int(l) for l in ds["layer"].values]
        cls = ds["cls"].sel(site=list(NORM_SITES)).values.astype(np.float64)
        nrm = {site: np.linalg.norm(cls[:, :, k], axis=2) for k, site in enumerate(NORM_SITES)}
        return layers, {k: (v, v * v) for k, v in nrm.items()}, np.ones(n)
    layers = [int(l) for l in ds["token_layer"].values]
    shared_ds = shared(ds)
    out = compute(concat([task(_block_norm_sums, shared_ds, layers, sl) for sl in sample_blocks(n, block_size)]))[0]
    return layers, out, ds["length"].values.astype(np.float64)


def _block_norm_sums(ds: xr.Dataset, layers: list[int], idx: slice) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One task: per-sample sums of the token norms ‖ln1‖, ‖ln2‖ and of their squares, for samples ``idx``."""
    nb = idx.stop - idx.start
    out = {k: (np.zeros((nb, len(layers))), np.zeros((nb, len(layers)))) for k in NORM_SITES}
    starts = ds.bertology.starts
    for b0, b1, t0, t1 in ds.bertology.token_blocks(idx):
        rel = starts[b0:b1] - t0
        for j, layer in enumerate(layers):
            for k in NORM_SITES:
                x = np.linalg.norm(_tokens(ds, k, layer, t0, t1), axis=1)
                out[k][0][b0 - idx.start:b1 - idx.start, j] = np.add.reduceat(x, rel)
                out[k][1][b0 - idx.start:b1 - idx.start, j] = np.add.reduceat(x * x, rel)
    return out


def _norm_stats(total, total2, count, boot: Bootstrap):
    """Mean and coefficient of variation of a norm from per-sample sums: row 0 the full sample, then the
    resamples."""
    mean = np.vstack(boot.ratio(total, count))
    second = np.vstack(boot.ratio(total2, count))
    cv = np.sqrt(np.maximum(second - mean ** 2, 0)) / mean
    return mean, cv


def ffn_roles(ds: xr.Dataset, boot: Bootstrap, *, tokens: bool = True, correction: str = "holm",
              block_size: int | None = None, bins=None) -> pd.DataFrame:
    """Per layer: the energy decomposition of the FFN update and of ``ff``, its change from the layer
    before (``delta_*`` rows, with p-values corrected across layers), and norm normalisation.

    ``positions='cls'`` uses the [CLS] vector; ``positions='tokens'`` every (non-padding) token, resampled by
    sample. The energies are the debiased estimators of :mod:`moments` (``estimate_plugin`` beside them),
    with jackknife intervals; ``structural_over_classification`` has ``ci_high`` = +inf and ``bounded``
    False where the classification energy cannot be told from 0 (the ratio then has only a lower bound).
    A regression task's classes are its score ``bins`` (:func:`regression.class_codes`); without them only
    the norms are measured.
    """
    classes = class_codes(ds, bins)
    y, C = classes if classes is not None else (np.zeros(ds.sizes["sample"], dtype=int), 1)
    rows = []
    scopes = [("cls", ClsUpdateSource(ds))]
    if tokens and all(token_var(s) in ds for s in ("ln1", "ff", "ln2")):
        scopes.append(("tokens", TokenUpdateSource(ds)))
    short = min_class_count(y, C) if classes is not None else 0
    if classes is None:
        skipped(f"FFN energy decomposition: {NO_BINS}")
    elif short < MIN_PER_CLASS:
        skipped(f"FFN energy decomposition: needs at least {MIN_PER_CLASS} samples of each class; the smallest "
                f"class has {short}")
    for scope, src in scopes:
        layers, norms, count = norm_sums(ds, scope, block_size)
        n_units = int(count.sum())
        if short >= MIN_PER_CLASS:
            rows += _energy_rows(scope, src, y, C, n_units, correction, block_size)
        for site, (tot, tot2) in norms.items():
            mean, cv = _norm_stats(tot, tot2, count, boot)
            for name, values in (("norm_mean", mean), ("norm_cv", cv)):
                lo, hi = percentile_ci(values[1:])
                for j, layer in enumerate(layers):
                    rows.append(dict(positions=scope, layer=layer, site=site, vector=site, statistic=name,
                                     estimate=values[0, j], ci_low=lo[j], ci_high=hi[j], n=n_units,
                                     ci_method="percentile"))
    return pd.DataFrame(rows)


def _energy_rows(scope: str, src, y: np.ndarray, C: int, n_units: int, correction: str, block_size) -> list[dict]:
    """The decomposition's rows for one scope, and each part's change from the layer before (same vector)."""
    keys = src.keys
    deltas = [(keys.index((l0, t)), keys.index((l1, t))) for t in TARGETS
              for l0, l1 in zip(sorted({l for l, _ in keys}), sorted({l for l, _ in keys})[1:])]
    res = energies_with_ci(src, y, C, deltas=deltas, sample_block=block_size)
    rows = []
    for part in PARTS:
        e = res.series[part]
        for k, (layer, target) in enumerate(keys):
            rows.append(dict(positions=scope, layer=layer, site=target if target in SITES else None, vector=target,
                             statistic=part, estimate=e.estimate[k], estimate_plugin=e.plugin[k],
                             ci_low=e.ci_low[k], ci_high=e.ci_high[k], bounded=bool(e.bounded[k]), n=n_units,
                             ci_method=e.ci_method[k], se=e.se[k]))
        if part in res.deltas:
            d = res.deltas[part]
            for target in TARGETS:
                idx = [i for i, (_, k1) in enumerate(deltas) if keys[k1][1] == target]
                p_adj = adjust(d.p[idx], correction)
                for j, i in enumerate(idx):
                    layer = keys[deltas[i][1]][0]
                    rows.append(dict(positions=scope, layer=layer, site=target if target in SITES else None,
                                     vector=target, statistic=f"delta_{part}", estimate=d.estimate[i],
                                     estimate_plugin=d.plugin[i], ci_low=d.ci_low[i], ci_high=d.ci_high[i],
                                     bounded=True, n=n_units, ci_method=d.ci_method[i], se=d.se[i], p=d.p[i],
                                     p_adj=p_adj[j]))
    return rows


def ffn_output_tables(ds: xr.Dataset, boot: Bootstrap, params: ModelParameters | None = None,
                      top: int = 3, block_size: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The FFN output against what it bypasses and its outlier dimensions, reading each layer's ``ff`` once.

    ``ff_norm_ratio``: ‖ff_i‖ / ‖ln1_i‖ per layer, how large the FFN's output is beside the vector it
    bypasses (RES2), the mean over tokens with a cluster bootstrap over sentences. ``ffn_outlier_dims``: per
    layer, the hidden dimensions where the FFN output is largest (mean |ff| over tokens, as a multiple of the
    median dimension's) and LN2's γ at them, with γ's rank by |γ| among all dimensions (``None`` without the
    model's ``params``: the ratio needs only the store)."""
    layers = [int(l) for l in ds["token_layer"].values]
    src = shared(ds)
    blocks = sample_blocks(ds.sizes["sample"], block_size)
    per_sample = concat([task(_block_ff_ratio, src, layers, sl) for sl in blocks])   # (n, L) ratio sums
    abs_ff = tree_sum([task(_block_abs_ff, src, layers, sl) for sl in blocks])        # (L, d) Σ|ff| over tokens
    num, abs_sum = compute(per_sample, abs_ff)
    den = ds["length"].values.astype(np.float64)
    n_tokens = int(den.sum())
    ratios, outliers = [], []
    for j, layer in enumerate(layers):
        est, bs = boot.ratio(num[:, j], den)
        lo, hi = percentile_ci(bs)
        ratios.append(dict(layer=int(layer), statistic="ff_over_bypass_norm", estimate=float(est), ci_low=float(lo),
                           ci_high=float(hi), n=n_tokens))
        if params is None:
            continue
        m = abs_sum[j] / n_tokens
        score = m / np.median(m)
        gamma = params.layer(int(layer)).ln2_gamma
        rank = np.empty(len(gamma), dtype=int)
        rank[np.argsort(-np.abs(gamma))] = np.arange(1, len(gamma) + 1)
        for r, d in enumerate(np.argsort(-score)[:top], start=1):
            outliers.append(dict(layer=int(layer), rank=r, dim=int(d), statistic="ff_mean_abs_over_median",
                                 estimate=float(score[d]), mean_abs_ff=float(m[d]), ln2_gamma=float(gamma[d]),
                                 gamma_abs_rank=int(rank[d]), n=n_tokens))
    return pd.DataFrame(ratios), (pd.DataFrame(outliers) if params is not None else None)


def _block_span(ds: xr.Dataset, idx: slice) -> tuple[np.ndarray, int, int]:
    """The token counts of samples ``idx`` and their span (t0, t1) on the token axis."""
    t0, t1, _ = ds.bertology.spans(idx)
    return ds.bertology.lengths[idx], t0, t1


def _block_tokens(ds: xr.Dataset, var: str, layer: int, t0: int, t1: int) -> np.ndarray:
    return np.asarray(ds[var].sel(token_layer=layer).isel(token=slice(t0, t1)).values, np.float32)


def _block_ff_ratio(ds: xr.Dataset, layers: list[int], idx: slice) -> np.ndarray:
    """One task: per sample of ``idx`` and layer, the sum over its tokens of ‖ff‖ / ‖ln1‖, (samples, L)."""
    lengths, t0, t1 = _block_span(ds, idx)
    rel = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    out = np.zeros((len(lengths), len(layers)))
    for j, layer in enumerate(layers):
        ff, ln1 = _block_tokens(ds, "token_ff", layer, t0, t1), _block_tokens(ds, "token_ln1", layer, t0, t1)
        ratio = np.linalg.norm(ff, axis=1) / np.maximum(np.linalg.norm(ln1, axis=1), 1e-12)
        out[:, j] = np.add.reduceat(ratio.astype(np.float64), rel)
    return out


def _block_abs_ff(ds: xr.Dataset, layers: list[int], idx: slice) -> np.ndarray:
    """One task: Σ |ff| over the tokens of samples ``idx``, per layer and hidden dimension, (L, d)."""
    _, t0, t1 = _block_span(ds, idx)
    return np.stack([np.abs(_block_tokens(ds, "token_ff", layer, t0, t1)).astype(np.float64).sum(axis=0)
                     for layer in layers])


def analyze(ctx) -> dict:
    """The registry's entry: Finding 2's decomposition of the FFN update, at [CLS] and over tokens."""
    ffn = ffn_roles(ctx.ds, ctx.boot, correction=ctx.cfg.correction, block_size=ctx.cfg.block_size,
                    bins=ctx.cfg.bins)
    return {"ffn_roles": ffn} if len(ffn) else {}


def analyze_output(ctx) -> dict:
    """The registry's entry: ‖ff‖/‖ln1‖ per layer and, where the plan includes it (the checkpoint's LN2 γ is
    read), the FFN output's outlier dimensions."""
    params = ctx.params() if "ffn_outlier_dims" in ctx.planned else None
    ratio, outliers = ffn_output_tables(ctx.ds, ctx.boot, params, block_size=ctx.cfg.block_size)
    return {"ff_norm_ratio": ratio, **({"ffn_outlier_dims": outliers} if outliers is not None else {})}
