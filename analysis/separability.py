"""Layer-wise class separability of the [CLS] vector, its change layer to layer, and a-priori skip candidates.

Layer 0 is the input of layer 1 (the embedding output), so Δ at layer l is what layer l itself adds:
Δ_l = stat(l) − stat(l−1), measured at ``ln2`` (the layer output) by default. Layers whose Δ is ≤ 0 add no
separability: they are the a-priori candidates for skipping, chosen here, before any ablation is run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from bertology.store.schema import is_regression, token_var

from .bootstrap import Bootstrap, adjust, bootstrap_p, percentile_ci
from .intervals import share_interval
from .engine import compute, shared, task
from .moments import MIN_PER_CLASS, SampleSums, energies_with_ci, min_class_count
from .regression import NO_BINS, class_codes, cross_fitted, r2, spearman, spearman_interval
from .requirements import skipped

RATIO_STATISTICS = ("fisher_trace", "centroid_ratio")
#: The energy statistics of the separability table: the two ratios and the between-class energy itself.
SEPARABILITY_STATISTICS = RATIO_STATISTICS + ("classification",)
#: A cross-validated probe needs two folds, each holding every class.
MIN_PROBE_PER_CLASS = 2


class ClsSource:
    """The [CLS] vectors of a store as a streamed source of K = 1 + layers × sites series.

    Series 0 is layer 0, the input of layer 1 (``cls_embed``); then (layer, site) in layer-major order.
    """

    def __init__(self, ds: xr.Dataset, sites=None):
        self.ds = ds
        self.sites = list(sites) if sites is not None else [str(x) for x in ds["site"].values]
        self.keys = [(0, "embed")] + [(int(l), s) for l in ds["layer"].values for s in self.sites]
        self.n, self.K = ds.sizes["sample"], len(self.keys)
        self._site_index = {s: i for i, s in enumerate(str(x) for x in ds["site"].values)}

    def vectors(self, ks: slice, idx: slice) -> np.ndarray:
        """(samples, series, hidden) float64 for a block."""
        keys = self.keys[ks]
        layers = sorted({layer for layer, _ in keys if layer > 0})
        cls = self.ds["cls"].isel(sample=idx, layer=[l - 1 for l in layers]).values if layers else None
        out = []
        for layer, site in keys:                                               # only the layers asked for
            if layer == 0:
                out.append(self.ds["cls_embed"].isel(sample=idx).values)
            else:
                out.append(cls[:, layers.index(layer), self._site_index[site]])
        return np.stack(out, axis=1).astype(np.float64)

    def block(self, ks: slice, idx: slice) -> SampleSums:
        return SampleSums.from_vectors(self.vectors(ks, idx))


class MeanPooledSource:
    """Each sample's mean token vector (padding never stored) at every stored token layer and site.

    Series 0 is layer 0 (``token_embed``) when stored; then (layer, site) for the stored token layers and
    the hidden-width sites among ``attn res1 ln1 ff res2 ln2``.
    """

    def __init__(self, ds: xr.Dataset):
        self.ds = ds
        sites = [s for s in (str(x) for x in ds["site"].values) if token_var(s) in ds]
        if not sites:
            raise ValueError("mean pooling needs token-level states; this store has none (--cls-only?)")
        self.keys = ([(0, "embed")] if "token_embed" in ds else []) + \
            [(int(l), s) for l in ds["token_layer"].values for s in sites]
        self.n, self.K = ds.sizes["sample"], len(self.keys)

    def vectors(self, ks: slice, idx: slice) -> np.ndarray:
        ds = self.ds
        t0, t1, offsets = ds.bertology.spans(idx)
        lengths = ds.bertology.lengths[idx]
        out = []
        for layer, site in self.keys[ks]:
            var = ds[token_var(site)].isel(token=slice(t0, t1))
            x = (var if layer == 0 else var.sel(token_layer=layer)).values.astype(np.float64)
            out.append(np.add.reduceat(x, offsets, axis=0) / lengths[:, None])
        return np.stack(out, axis=1)

    def block(self, ks: slice, idx: slice) -> SampleSums:
        return SampleSums.from_vectors(self.vectors(ks, idx))


def probe_correct(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Per-sample 0/1 correctness of a cross-validated logistic-regression probe (standardised inputs)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(x, dtype=np.float64)
    k = int(min(folds, np.bincount(y).min()))
    if k < 2:
        return np.full(len(y), np.nan)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    pred = cross_val_predict(model, x, y, cv=StratifiedKFold(k, shuffle=True, random_state=seed))
    return (pred == y).astype(np.float64)


def chance_level(null: np.ndarray, estimate: np.ndarray):
    """A ratio's chance level from its values under P label permutations (P, K): the mean and 2.5–97.5%
    range of the reported statistic (moved into its range ≥ 0, as the estimate is) and the permutation
    p-value of the estimate."""
    null = np.maximum(null, 0.0)
    lo, hi = np.quantile(null, [0.025, 0.975], axis=0)
    p = (1 + np.sum(null >= estimate[None], axis=0)) / (1 + null.shape[0])
    return null.mean(axis=0), lo, hi, p


def _series_probe(src, k: int, y: np.ndarray, seed: int) -> np.ndarray:
    """The probe of series ``k`` (one task: it reads that series for every sample)."""
    return probe_correct(src.vectors(slice(k, k + 1), slice(None))[:, 0], y, seed=seed)


def _series_ridge(src, k: int, y: np.ndarray, seed: int) -> np.ndarray:
    """A regression's probe of series ``k``: out-of-fold ridge predictions of the score (one task)."""
    return cross_fitted(src.vectors(slice(k, k + 1), slice(None))[:, 0], y, seed=seed)


def ridge_rows(src, y: np.ndarray, boot: Bootstrap, deltas, chain_layers, delta_site: str, seed: int,
               correction: str) -> list[dict]:
    """A regression's readout per (layer, site): the cross-validated ridge probe's R² (bootstrap percentile
    interval over samples, the folds fixed) and Spearman ρ (Fisher z), and Δ R² layer to layer (paired
    bootstrap, two-sided bootstrap p, corrected across layers)."""
    shared_src, shared_y = shared(src), shared(y)
    pred = np.stack(compute(*(task(_series_ridge, shared_src, k, shared_y, seed) for k in range(src.K))), axis=1)
    n = len(y)
    rows = []
    boot_r2 = []
    for k, (layer, site) in enumerate(src.keys):
        b = r2(pred[:, k], y, boot.weights)
        boot_r2.append(b)
        lo, hi = percentile_ci(b[:, None])
        rows.append(dict(layer=layer, site=site, statistic="probe_r2", estimate=r2(pred[:, k], y), ci_low=lo[0],
                         ci_high=hi[0], ci_method="percentile"))
        rho = spearman(pred[:, k], y)
        slo, shi = spearman_interval(rho, n)
        rows.append(dict(layer=layer, site=site, statistic="probe_spearman", estimate=rho, ci_low=slo, ci_high=shi,
                         ci_method="fisher_z"))
    if deltas:
        diffs = [boot_r2[k1] - boot_r2[k0] for k0, k1 in deltas]
        p = np.array([float(bootstrap_p(d)) for d in diffs])
        p_adj = adjust(p, correction)
        for i, ((k0, k1), layer) in enumerate(zip(deltas, chain_layers)):
            lo, hi = percentile_ci(diffs[i][:, None])
            rows.append(dict(layer=int(layer), site=delta_site, statistic="delta_probe_r2",
                             estimate=r2(pred[:, k1], y) - r2(pred[:, k0], y), ci_low=lo[0], ci_high=hi[0], p=p[i],
                             p_adj=p_adj[i], ci_method="percentile"))
    return rows


def separability(ds: xr.Dataset, boot: Bootstrap, *, probe: bool = True, delta_site: str = "ln2",
                 seed: int = 0, correction: str = "holm",
                 pooling: tuple[str, ...] = ("cls",), permutations: int = 200,
                 block_size: int | None = None, bins=None) -> pd.DataFrame:
    """Separability rows for each pooling: ``cls`` (the [CLS] vector) and/or ``mean`` (mean-pooled tokens,
    the stored token layers and sites); a ``pooling`` column tells them apart.

    ``chance_<ratio>`` rows give each ratio's chance level: its mean under ``permutations`` random
    relabellings (with the 2.5–97.5% range as ``ci_low``/``ci_high``) and, as ``p``, the permutation p-value
    of the observed value. The ratios are debiased, so without signal they sit at 0 rather than on the
    plug-in's (k−1)/n floor; this row shows how far above 0 noise alone takes them.

    A regression task's classes are its score ``bins`` (without them the energy statistics are left out),
    and its probe is a ridge regression of the score (:func:`ridge_rows`).
    """
    frames = []
    for pool in pooling:
        if pool == "cls":
            src = ClsSource(ds)
        elif pool == "mean":
            src = MeanPooledSource(ds)
        else:
            raise ValueError(f"unknown pooling {pool!r}; use 'cls' or 'mean'")
        frames.append(_separability(ds, src, boot, probe=probe, delta_site=delta_site, seed=seed,
                                    correction=correction, permutations=permutations,
                                    block_size=block_size, bins=bins).assign(pooling=pool))
    return pd.concat(frames, ignore_index=True)


def _separability(ds: xr.Dataset, src, boot: Bootstrap, *, probe: bool, delta_site: str, seed: int,
                  correction: str, permutations: int = 0, block_size: int | None = None,
                  bins=None) -> pd.DataFrame:
    """Separability per layer × site with confidence intervals, plus ``delta_*`` rows with paired tests.

    Rows: statistic ∈ {fisher_trace, centroid_ratio, classification, probe_accuracy} at each (layer, site),
    layer 0 being the embedding output (site ``embed``); and ``delta_<statistic>`` at ``delta_site`` for
    layers 1..L with a two-sided p-value and its correction across layers. The energy statistics are the
    debiased estimators of :mod:`moments` (``estimate_plugin`` beside them) with their jackknife intervals
    (``ci_method`` ``jackknife``); the probe's accuracy is a mean of per-sample correctness with a bootstrap
    interval, and its Δ the paired difference of :func:`stats.paired_difference`.
    """
    from .stats import paired_difference

    regression = is_regression(ds.attrs)
    classes = class_codes(ds, bins)
    y, C = classes if classes is not None else (np.zeros(ds.sizes["sample"], dtype=int), 1)
    keys = src.keys
    n = len(y)
    layers = [l for l, s in keys if s == delta_site and l > 0]
    start = keys.index((0, "embed")) if (0, "embed") in keys else None
    chain_layers = layers if start is not None else layers[1:]   # Δ needs the layer before
    chain = ([start] if start is not None else [keys.index((layers[0], delta_site))] if layers else []) + \
        [keys.index((l, delta_site)) for l in chain_layers]
    deltas = list(zip(chain[:-1], chain[1:]))
    rows = []
    names = [s for s in SEPARABILITY_STATISTICS if C == 2 or s != "centroid_ratio"]
    short = min_class_count(y, C) if classes is not None else 0
    if classes is None:
        skipped(f"separability ratios: {NO_BINS}")
    elif short >= MIN_PER_CLASS:
        res = energies_with_ci(src, y, C, deltas=deltas, permutations=permutations, seed=seed,
                               sample_block=block_size)
        for name in names:
            e = res.series[name]
            for k, (layer, site) in enumerate(keys):
                rows.append(dict(layer=layer, site=site, statistic=name, estimate=e.estimate[k],
                                 estimate_plugin=e.plugin[k], ci_low=e.ci_low[k], ci_high=e.ci_high[k],
                                 ci_method=e.ci_method[k], se=e.se[k]))
            if e.null is not None and name in RATIO_STATISTICS:   # chance level under random relabellings
                mean, lo, hi, p = chance_level(e.null, e.estimate)
                for k, (layer, site) in enumerate(keys):
                    rows.append(dict(layer=layer, site=site, statistic=f"chance_{name}", estimate=mean[k],
                                     ci_low=lo[k], ci_high=hi[k], p=p[k], ci_method="permutation"))
            if deltas:
                d = res.deltas[name]
                p_adj = adjust(d.p, correction)
                for i, layer in enumerate(chain_layers):
                    rows.append(dict(layer=int(layer), site=delta_site, statistic=f"delta_{name}",
                                     estimate=d.estimate[i], estimate_plugin=d.plugin[i], ci_low=d.ci_low[i],
                                     ci_high=d.ci_high[i], p=d.p[i], p_adj=p_adj[i], ci_method=d.ci_method[i],
                                     se=d.se[i]))
    else:
        skipped(f"separability ratios: need at least {MIN_PER_CLASS} samples of each class; the smallest "
                f"class has {short}")
    if probe and regression:
        if n >= 4:
            rows += ridge_rows(src, ds["label"].values.astype(np.float64), boot, deltas, chain_layers, delta_site,
                               seed, correction)
        else:
            skipped(f"ridge probe: needs at least 4 samples for its folds; the store has {n}")
    elif probe and short >= MIN_PROBE_PER_CLASS:
        # one task per series: each cross-validated probe reads its series for every sample
        shared_src, shared_y = shared(src), shared(y)
        correct = np.stack(compute(*(task(_series_probe, shared_src, k, shared_y, seed) for k in range(src.K))),
                           axis=1)                                              # (n, K)
        est, lo, hi = share_interval(correct, np.ones(n))
        for k, (layer, site) in enumerate(keys):
            rows.append(dict(layer=layer, site=site, statistic="probe_accuracy", estimate=est[k], ci_low=lo[k],
                             ci_high=hi[k], ci_method="wilson"))
        if deltas:
            diffs = [paired_difference(correct[:, k1], correct[:, k0], boot=boot) for k0, k1 in deltas]
            p_adj = adjust(np.array([d["p"] for d in diffs]), correction)
            for i, layer in enumerate(chain_layers):
                rows.append(dict(layer=int(layer), site=delta_site, statistic="delta_probe_accuracy",
                                 estimate=diffs[i]["estimate"], ci_low=diffs[i]["ci_low"],
                                 ci_high=diffs[i]["ci_high"], p=diffs[i]["p"], p_adj=p_adj[i],
                                 ci_method=diffs[i]["ci_method"]))
    elif probe:
        skipped(f"probe accuracy: needs at least {MIN_PROBE_PER_CLASS} samples of each class for its "
                f"cross-validation folds; the smallest class has {short}")
    out = pd.DataFrame(rows)
    out["n"] = n
    return out


def skip_candidates(sep: pd.DataFrame, statistic: str = "fisher_trace", rule: str = "nonpositive",
                    k: int = 1) -> pd.DataFrame:
    """The a-priori skip candidates from the Δ rows of :func:`separability`.

    ``rule="nonpositive"``: layers whose Δ estimate is ≤ 0 (if none is, the single lowest, flagged so);
    ``rule="k_lowest"``: the ``k`` layers with the lowest Δ. Every layer is listed with its rank.
    """
    d = sep[sep["statistic"] == f"delta_{statistic}"].copy().sort_values("layer")
    d["rank"] = d["estimate"].rank(method="first").astype(int)
    if rule == "nonpositive":
        d["candidate"] = d["estimate"] <= 0
        d["rule"] = "delta<=0"
        if not d["candidate"].any():
            d["candidate"] = d["rank"] <= 1
            d["rule"] = "delta<=0 (none; lowest 1)"
    elif rule == "k_lowest":
        d["candidate"] = d["rank"] <= k
        d["rule"] = f"lowest {k}"
    else:
        raise ValueError(f"unknown skip-candidate rule {rule!r}; use 'nonpositive' or 'k_lowest'")
    return d.reset_index(drop=True)


def skip_statistic(statistic: str, regression: bool, bins) -> str:
    """The statistic whose Δ picks the skip candidates: the one asked for, but a regression's ridge R² where
    it has no classes (no ``bins``) or the asked-for probe is the classifier's."""
    if regression and (not bins or statistic == "probe_accuracy"):
        return "probe_r2"
    return statistic


def apriori_skip_layers(ds: xr.Dataset, statistic: str = "fisher_trace", rule: str = "nonpositive", k: int = 1,
                        seed: int = 0, bins=None) -> list[int]:
    """The layers :func:`skip_candidates` picks from a store's [CLS] separability (the point estimates of
    Δ, which do not depend on the bootstrap), for a sweep that skips only the a-priori candidates."""
    statistic = skip_statistic(statistic, is_regression(ds.attrs), bins)
    sep = separability(ds, Bootstrap.of(ds, 20, seed), probe=statistic in ("probe_accuracy", "probe_r2"),
                       seed=seed, permutations=0, bins=bins)
    cand = skip_candidates(sep, statistic, rule, k)
    return sorted(cand.loc[cand["candidate"], "layer"].astype(int).tolist())


def analyze(ctx) -> dict:
    """The registry's entry: separability per layer (each pooling the store supports) and the a-priori skip
    candidates, chosen from the [CLS] rows before any ablation."""
    cfg = ctx.cfg
    pooling = cfg.pooling
    if "mean" in pooling and not ctx.caps.tokens:
        skipped("mean-pooled separability: it needs token states; the store has none (re-extract without "
                "--cls-only or --attention-only)")
        pooling = tuple(p for p in pooling if p != "mean")
    sep = separability(ctx.ds, ctx.boot, probe=cfg.probe, seed=cfg.seed, correction=cfg.correction,
                       pooling=pooling, permutations=cfg.permutations, block_size=cfg.block_size, bins=cfg.bins)
    if not len(sep):
        skipped("skip candidates: they need the separability rows, which were skipped")
        return {}
    cls_rows = sep[sep["pooling"] == "cls"]
    statistic = skip_statistic(cfg.skip_statistic, ctx.caps.regression, cfg.bins)
    if not (cls_rows["statistic"] == f"delta_{statistic}").any():
        skipped(f"skip candidates: they need the Δ {statistic} rows, which were skipped")
        return {"separability": sep}
    return {"separability": sep,
            "skip_candidates": skip_candidates(cls_rows, statistic, cfg.skip_rule, cfg.skip_k)}
