"""Layer-wise class separability of the [CLS] vector, its change layer to layer, and a-priori skip candidates.

Layer 0 is the input of layer 1 (the embedding output), so Δ at layer l is what layer l itself adds:
Δ_l = stat(l) − stat(l−1), measured at ``ln2`` (the layer output) by default. Layers whose Δ is ≤ 0 add no
separability: they are the a-priori candidates for skipping, chosen here, before any ablation is run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from .bootstrap import Bootstrap, adjust, bootstrap_p, percentile_ci
from .moments import SampleSums, energies_with_ci

RATIO_STATISTICS = ("fisher_trace", "centroid_ratio")


def cls_matrix(ds: xr.Dataset, sites=None) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """The [CLS] vectors as (n, K, d) float64 with K = (layer 0 'embed') + layers × sites, and the K labels."""
    sites = list(sites) if sites is not None else [str(s) for s in ds["site"].values]
    cls = ds["cls"].sel(site=sites).astype("float32").values            # (n, L, S, d)
    n, L, S, d = cls.shape
    v = np.concatenate([ds["cls_embed"].astype("float32").values[:, None, :], cls.reshape(n, L * S, d)], axis=1)
    keys = [(0, "embed")] + [(int(l), s) for l in ds["layer"].values for s in sites]
    return v.astype(np.float64), keys


def probe_correct(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Per-sample 0/1 correctness of a cross-validated logistic-regression probe (standardised inputs)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    k = int(min(folds, np.bincount(y).min()))
    if k < 2:
        return np.full(len(y), np.nan)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    pred = cross_val_predict(model, x, y, cv=StratifiedKFold(k, shuffle=True, random_state=seed))
    return (pred == y).astype(np.float64)


def separability(ds: xr.Dataset, boot: Bootstrap, *, probe: bool = True, delta_site: str = "ln2",
                 seed: int = 0, correction: str = "holm", ci: str = "bca") -> pd.DataFrame:
    """Separability per layer × site with bootstrap CIs, plus ``delta_*`` rows with paired tests.

    Rows: statistic ∈ {fisher_trace, centroid_ratio, probe_accuracy} at each (layer, site), layer 0 being
    the embedding output (site ``embed``); and ``delta_<statistic>`` at ``delta_site`` for layers 1..L with a
    two-sided bootstrap p-value and its correction across layers. Ratio CIs are BCa (``ci='bca'``) or
    percentile; probe-accuracy and Δ CIs are percentile intervals of the (paired) resamples.
    """
    y = ds["label"].values.astype(int)
    C = len(ds["class"])
    v, keys = cls_matrix(ds)
    res = energies_with_ci(SampleSums.from_vectors(v), y, C, boot, method=ci)
    stats = {s: res[s] for s in RATIO_STATISTICS if C == 2 or s != "centroid_ratio"}
    if probe:
        correct = np.stack([probe_correct(v[:, k], y, seed=seed) for k in range(v.shape[1])], axis=1)  # (n, K)
        bs = (boot.weights @ correct) / boot.n
        stats["probe_accuracy"] = (correct.mean(axis=0), bs, *percentile_ci(bs))
    rows = []
    for name, (est, bs, lo, hi) in stats.items():
        for k, (layer, site) in enumerate(keys):
            rows.append(dict(layer=layer, site=site, statistic=name, estimate=est[k], ci_low=lo[k], ci_high=hi[k]))
    # Δ from layer l−1 to l at the delta site (layer 0: the embedding output), paired over resamples
    chain = [keys.index((0, "embed"))] + [keys.index((int(l), delta_site)) for l in ds["layer"].values]
    for name, (est, bs, _, _) in stats.items():
        d_est = est[chain[1:]] - est[chain[:-1]]
        d_bs = bs[:, chain[1:]] - bs[:, chain[:-1]]
        lo, hi = percentile_ci(d_bs)
        p = bootstrap_p(d_bs)
        p_adj = adjust(p, correction)
        for i, layer in enumerate(ds["layer"].values):
            rows.append(dict(layer=int(layer), site=delta_site, statistic=f"delta_{name}", estimate=d_est[i],
                             ci_low=lo[i], ci_high=hi[i], p=p[i], p_adj=p_adj[i]))
    out = pd.DataFrame(rows)
    out["n"] = len(y)
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
