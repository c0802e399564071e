"""A regression task (STS-B's similarity score, a user's scores) in the analyses' terms.

- **Scores.** The model is scored by Pearson's r (STS-B's metric) and Spearman's ρ between predicted and
  gold scores. Pearson's interval is the bootstrap percentile interval (every resample's weighted r);
  Spearman's is Fisher's z interval with Bonett & Wright's (2000) standard error √((1 + ρ²/2)/(n − 3)).
- **Paired changes.** An intervention changes Pearson's r by Δr = r(new, y) − r(base, y) on the same
  samples: its interval is the paired bootstrap's (one weight per sample, applied to both), its p-value
  Williams' t test for two dependent correlations sharing the gold score (Steiger 1980, eq. 11), which is
  exact under normality and needs no resampling. These are Kovaleva et al.'s STS-B rows.
- **Readouts.** A layer's [CLS] predicts the score through a ridge probe (the penalty chosen by generalised
  cross-validation): out-of-fold predictions give its cross-validated R² and ρ. A prediction is "right" when
  it is within the error threshold (1.0 on STS-B's 0–5 scale) of the gold score.
- **Classes.** Class statistics (separability, the FFN's class-specific energy) need classes: a regression's
  targets are binned by declared edges (``--bins 0,1,2,3,4,5``: bins [0,1) … [4,5]), or those statistics
  are left out with that reason.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

from bertology.store.schema import is_regression

from .bootstrap import Bootstrap, percentile_ci

#: What a regression's class statistics need, said when they are left out.
NO_BINS = ("a regression task has no classes: pass --bins with score edges (e.g. --bins 0,1,2,3,4,5 on STS-B's "
           "0-5 scale) to measure it on score bins")
#: An absolute error above this is an error of a regression (STS-B's 0-5 scale).
ERROR_THRESHOLD = 1.0


def weighted_pearson(weights: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson's r of ``x`` and ``y`` under each row of sample weights (B, n): (B,)."""
    w = np.asarray(weights, dtype=np.float64)
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()                           # centred once: stabler moments
    s = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = (w @ x) / s, (w @ y) / s
        cxy = (w @ (x * y)) / s - mx * my
        vx, vy = (w @ (x * x)) / s - mx ** 2, (w @ (y * y)) / s - my ** 2
        return np.where((vx > 0) & (vy > 0), cxy / np.sqrt(np.maximum(vx * vy, 1e-300)), np.nan)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r, 0 where either side is constant (undefined: nothing is predicted)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's ρ, 0 where either side is constant (as :func:`pearson`)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(sps.spearmanr(x, y)[0])


def _fisher_z_interval(r: float, n: int, se_factor: float, level: float) -> tuple[float, float]:
    """tanh(artanh(r) ± z·se_factor/√(n − 3)): a correlation's interval on Fisher's z scale."""
    if n < 4 or not np.isfinite(r):
        return float("nan"), float("nan")
    z = np.arctanh(np.clip(r, -0.999999, 0.999999))
    half = sps.norm.ppf(0.5 + level / 2) * se_factor / np.sqrt(n - 3)
    return float(np.tanh(z - half)), float(np.tanh(z + half))


def spearman_interval(rho: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Fisher's z interval of Spearman's ρ with Bonett & Wright's standard error √((1 + ρ²/2)/(n − 3))."""
    return _fisher_z_interval(rho, n, np.sqrt(1 + rho ** 2 / 2) if np.isfinite(rho) else np.nan, level)


def pearson_interval(r: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Fisher's z interval of Pearson's r (standard error 1/√(n − 3)), where no resampling is at hand."""
    return _fisher_z_interval(r, n, 1.0, level)


def score_rows(y: np.ndarray, pred: np.ndarray, boot: Bootstrap) -> list[dict]:
    """The task metrics of a regression: ``pearson`` (bootstrap percentile interval), ``spearman`` (Fisher z)
    and ``mse`` (bootstrap percentile interval)."""
    y, pred = np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    n = len(y)
    r = pearson(pred, y)
    lo, hi = percentile_ci(weighted_pearson(boot.weights, pred, y)[:, None])
    rho = spearman(pred, y)
    slo, shi = spearman_interval(rho, n)
    mse, mse_b = boot.mean((pred - y) ** 2)
    mlo, mhi = percentile_ci(mse_b[:, None])
    return [dict(statistic="pearson", estimate=r, ci_low=float(lo[0]), ci_high=float(hi[0]), n=n,
                 ci_method="percentile"),
            dict(statistic="spearman", estimate=rho, ci_low=slo, ci_high=shi, n=n, ci_method="fisher_z"),
            dict(statistic="mse", estimate=float(mse), ci_low=float(mlo[0]), ci_high=float(mhi[0]), n=n,
                 ci_method="percentile")]


def williams_p(r12: float, r13: float, r23: float, n: int) -> float:
    """Two-sided p-value of Williams' t test that r12 = r13, where variable 1 (the gold score) is shared and
    r23 is the correlation of the other two (Steiger 1980, eq. 11; n − 3 degrees of freedom)."""
    if n < 4 or not all(np.isfinite([r12, r13, r23])):
        return float("nan")
    if r12 == r13:
        return 1.0
    det = 1 - r12 ** 2 - r13 ** 2 - r23 ** 2 + 2 * r12 * r13 * r23
    rbar = (r12 + r13) / 2
    den = 2 * ((n - 1) / (n - 3)) * det + rbar ** 2 * (1 - r23) ** 3
    if den <= 0:
        return 0.0
    t = (r12 - r13) * np.sqrt((n - 1) * (1 + r23) / den)
    return float(2 * sps.t.sf(abs(t), n - 3))


def paired_pearson_change(base: np.ndarray, new: np.ndarray, y: np.ndarray, boot: Bootstrap) -> dict:
    """Pearson's r of the new predictions and its paired change from the base predictions' (the module's
    "paired changes"): ``pearson`` with its interval, ``estimate`` = Δr with its interval and ``p``."""
    n = len(y)
    r_new, r_base = pearson(new, y), pearson(base, y)
    b_new, b_base = weighted_pearson(boot.weights, new, y), weighted_pearson(boot.weights, base, y)
    lo, hi = percentile_ci(b_new[:, None])
    dlo, dhi = percentile_ci((b_new - b_base)[:, None])
    return dict(pearson=r_new, pearson_ci_low=float(lo[0]), pearson_ci_high=float(hi[0]),
                estimate=r_new - r_base, ci_low=float(dlo[0]), ci_high=float(dhi[0]), ci_method="percentile",
                p=williams_p(r_new, r_base, pearson(new, base), n), n=n)


# --- readouts -------------------------------------------------------------------------------------------------


def ridge():
    """The ridge probe: standardised features, the penalty chosen by generalised cross-validation."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 15)))


def cross_fitted(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-fold ridge predictions of ``y`` from ``x`` (``folds`` shuffled folds, at most one per sample)."""
    from sklearn.model_selection import KFold

    pred = np.full(len(y), np.nan)
    k = int(min(folds, len(y)))
    if k < 2:
        return pred
    for tr, te in KFold(k, shuffle=True, random_state=seed).split(x):
        pred[te] = ridge().fit(x[tr], y[tr]).predict(x[te])
    return pred


def r2(pred: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """R² = 1 − Σ(y − ŷ)² / Σ(y − ȳ)², on the sample (a number) or under each row of weights (B,)."""
    y, pred = np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if weights is None:
        sst = np.sum((y - y.mean()) ** 2)
        return float(1 - np.sum((y - pred) ** 2) / sst) if sst > 0 else float("nan")
    w = np.asarray(weights, dtype=np.float64)
    s = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (w @ y) / s
        sst = w @ (y ** 2) - s * mean ** 2
        return 1 - (w @ ((y - pred) ** 2)) / sst


# --- classes ---------------------------------------------------------------------------------------------------


def bin_codes(y: np.ndarray, edges) -> np.ndarray:
    """The score bin of each target: [e0, e1), …, [e_{k−1}, e_k] (the last bin closed; targets outside the
    edges go to the nearest end bin)."""
    edges = np.asarray(edges, dtype=np.float64)
    return np.clip(np.searchsorted(edges, np.asarray(y, dtype=np.float64), side="right") - 1, 0, len(edges) - 2)


def bin_names(edges) -> list[str]:
    edges = [f"{e:g}" for e in edges]
    return [f"[{a},{b}{']' if i == len(edges) - 2 else ')'}" for i, (a, b) in enumerate(zip(edges[:-1], edges[1:]))]


def class_codes(ds, bins) -> tuple[np.ndarray, int] | None:
    """The classes the class statistics measure: a classification's labels, a regression's score bins
    (``bins``: the edges), or None (a regression without bins: see :data:`NO_BINS`)."""
    if not is_regression(ds.attrs):
        return np.asarray(ds["label"].values, dtype=int), int(ds.sizes["class"])
    if not bins:
        return None
    return bin_codes(ds["label"].values, bins), len(bins) - 1
