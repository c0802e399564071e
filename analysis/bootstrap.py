"""Bootstrap inference shared by every statistic: resample weights, confidence intervals, paired tests.

A bootstrap resample of n samples is represented by its multinomial count vector (how often each sample
was drawn), so a statistic built from per-sample sums is evaluated for all B resamples at once as a matrix
product ``W @ X``. One weight matrix is drawn per analysis and shared by every layer and site, so
differences between layers are *paired* (each resample's difference uses the same samples).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

DEFAULT_RESAMPLES = 1000
CI_LEVEL = 0.95


@dataclass(frozen=True)
class Bootstrap:
    """Multinomial resample weights for ``n`` samples: ``weights`` is (B, n), row b the counts of draw b."""

    weights: np.ndarray
    seed: int

    @classmethod
    def draw(cls, n: int, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> "Bootstrap":
        rng = np.random.default_rng(seed)
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)
        return cls(w, seed)

    @property
    def resamples(self) -> int:
        return self.weights.shape[0]

    @property
    def n(self) -> int:
        return self.weights.shape[1]

    def ratio(self, num: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A ratio of per-sample sums (a share, or a mean over units nested in samples such as the tokens of
        a sentence): its full-sample value and its value under every resample, a cluster bootstrap.

        ``num`` is (n,) or (n, K); ``den`` is (n,) or the same shape. Returns (estimate, (B,) or (B, K)).
        """
        num = np.asarray(num, dtype=np.float64)
        den = np.asarray(den, dtype=np.float64)
        den = den.reshape(den.shape + (1,) * (num.ndim - den.ndim))
        with np.errstate(invalid="ignore", divide="ignore"):
            return num.sum(axis=0) / den.sum(axis=0), (self.weights @ num) / (self.weights @ den)


def percentile_ci(boot: np.ndarray, level: float = CI_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the resample axis (axis 0); NaN resamples are ignored."""
    a = (1 - level) / 2
    return np.nanquantile(boot, a, axis=0), np.nanquantile(boot, 1 - a, axis=0)


def bca_ci(boot: np.ndarray, estimate: np.ndarray, jack: np.ndarray,
           level: float = CI_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Bias-corrected and accelerated interval (Efron 1987) over axis 0.

    ``boot``: (B, ...) resample values; ``estimate``: (...) the full-sample value; ``jack``: (n, ...)
    leave-one-out values. Where the estimate lies outside (nearly) all resamples the basic interval is used;
    where the correction is undefined, the percentile interval.
    """
    boot = np.asarray(boot, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _bca(boot, np.asarray(estimate, dtype=np.float64), np.asarray(jack, dtype=np.float64), level)


def _bca(boot, estimate, jack, level):
    prop = (np.sum(boot < estimate, axis=0) + 0.5 * np.sum(boot == estimate, axis=0)) / np.sum(np.isfinite(boot), axis=0)
    z0 = sps.norm.ppf(np.clip(prop, 1e-6, 1 - 1e-6))
    d = np.nanmean(jack, axis=0) - jack
    acc = np.sum(d ** 3, axis=0) / (6.0 * np.sum(d ** 2, axis=0) ** 1.5 + 1e-300)
    a = (1 - level) / 2
    out = []
    for z in (sps.norm.ppf(a), sps.norm.ppf(1 - a)):
        adj = sps.norm.cdf(z0 + (z0 + z) / (1 - acc * (z0 + z)))
        q = np.where(np.isfinite(adj), adj, 0.5)
        flat_b = boot.reshape(boot.shape[0], -1)
        vals = np.array([np.nanquantile(flat_b[:, k], qk) for k, qk in enumerate(np.ravel(q))])
        out.append(vals.reshape(np.shape(q)))
    lo, hi = out
    plo, phi = percentile_ci(boot, level)
    # Where (almost) every resample lies on one side of the estimate, BCa's bias correction saturates and the
    # interval collapses onto an extreme resample: use the basic interval 2θ̂ − q, which reflects the
    # resampling bias back around the estimate.
    B = np.sum(np.isfinite(boot), axis=0)
    saturated = (prop * B < 1) | (prop * B > B - 1)
    lo = np.where(saturated, 2 * estimate - phi, lo)
    hi = np.where(saturated, 2 * estimate - plo, hi)
    bad = ~np.isfinite(lo) | ~np.isfinite(hi)
    return np.where(bad, plo, lo), np.where(bad, phi, hi)


def bootstrap_p(boot_diff: np.ndarray, null: float = 0.0) -> np.ndarray:
    """Two-sided bootstrap p-value that a (paired) difference equals ``null``.

    Twice the smaller tail share of resamples on either side of the null, with the +1 correction that keeps
    p > 0 for a finite number of resamples.
    """
    b = np.sum(np.isfinite(boot_diff), axis=0)
    le = np.sum(boot_diff <= null, axis=0)
    ge = np.sum(boot_diff >= null, axis=0)
    return np.minimum(1.0, 2.0 * (np.minimum(le, ge) + 1) / (b + 1))


def adjust(p: np.ndarray, method: str = "holm") -> np.ndarray:
    """Multiple-comparison correction (statsmodels): ``holm`` (FWER) or ``fdr_bh`` (Benjamini–Hochberg)."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method=method)[1]
    return out
