"""Bootstrap inference shared by every statistic: resample weights, confidence intervals, paired tests.

A bootstrap resample is represented by its weight vector: how often each sample was drawn. bertology uses
the *Poisson bootstrap* (Hanley & MacGibbon 2006; Chamandy et al. 2012): in resample b, sample i gets the
weight w_bi ~ Poisson(1), and w_bi is a fixed function of (seed, b, the sample's id), computed by a
counter-based hash. A sample's weights therefore do not depend on which other samples exist, how the store
is chunked, how many workers read it or in which order blocks finish: any block of samples computes its own
weights, and partial sums over blocks add up to the same result. A statistic built from per-sample sums is
evaluated for all B resamples at once as ``W @ X``. One seed serves every statistic of an analysis, so
differences between layers (and between two stores of the same samples) are *paired*.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import stats as sps

DEFAULT_RESAMPLES = 1000
CI_LEVEL = 0.95
#: Poisson(1) cumulative probabilities P(W <= k), k = 0..19 (P(W > 19) < 1e-17).
_POISSON1_CDF = np.cumsum([np.exp(-1.0) / np.prod(np.arange(1, k + 1, dtype=np.float64)) for k in range(20)])


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection of uint64 whose outputs pass as independent uniform bits."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def poisson_weights(seed: int, keys: np.ndarray, resamples: int) -> np.ndarray:
    """The (resamples, len(keys)) Poisson(1) weights of the samples with ids ``keys``: entry (b, i) depends
    only on ``seed``, ``b`` and ``keys[i]``."""
    with np.errstate(over="ignore"):
        k = _mix(np.asarray(keys, dtype=np.int64).astype(np.uint64) ^ _mix(np.full(1, seed, dtype=np.uint64)
                                                                           + np.uint64(0x9E3779B97F4A7C15)))
        b = _mix(np.arange(1, resamples + 1, dtype=np.uint64) * np.uint64(0xD1B54A32D192ED03))
        bits = _mix(k[None, :] ^ b[:, None])
    u = (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    return np.searchsorted(_POISSON1_CDF, u, side="right").astype(np.float64)


@dataclass(frozen=True)
class Bootstrap:
    """Poisson bootstrap weights of ``resamples`` resamples of the samples with ids ``keys`` (data-row ids),
    drawn from ``seed``. :meth:`block` gives the weights of a slice of samples; :attr:`weights` all (B, n)."""

    keys: np.ndarray
    resamples: int
    seed: int

    @classmethod
    def draw(cls, n: int, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
             keys: np.ndarray | None = None) -> "Bootstrap":
        """The bootstrap of ``n`` samples (ids ``keys``, default 0..n−1)."""
        keys = np.arange(n, dtype=np.int64) if keys is None else np.asarray(keys, dtype=np.int64)
        if len(keys) != n:
            raise ValueError(f"{len(keys)} sample ids for {n} samples")
        return cls(keys, int(resamples), int(seed))

    @classmethod
    def of(cls, ds, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> "Bootstrap":
        """The bootstrap of a store's samples, keyed by their data-row ids (the ``sample`` coordinate)."""
        ids = np.asarray(ds["sample"].values, dtype=np.int64)
        return cls.draw(len(ids), resamples, seed, ids)

    def block(self, idx) -> np.ndarray:
        """Weights (B, k) of the samples at positions ``idx`` (a slice or index array) of the sample axis."""
        return poisson_weights(self.seed, self.keys[idx], self.resamples)

    @cached_property
    def weights(self) -> np.ndarray:
        """Every weight, (B, n)."""
        return self.block(slice(None))

    @property
    def n(self) -> int:
        return len(self.keys)

    def __reduce__(self):  # the ids and the seed travel to workers, never the (B, n) matrix
        return (Bootstrap, (self.keys, self.resamples, self.seed))

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

    def mean(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The mean over samples of per-sample ``values`` (n,) or (n, K), and under every resample."""
        values = np.asarray(values, dtype=np.float64)
        return self.ratio(values, np.ones(values.shape[0]))


def percentile_ci(boot: np.ndarray, level: float = CI_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the resample axis (axis 0); NaN resamples are ignored."""
    a = (1 - level) / 2
    return np.nanquantile(boot, a, axis=0), np.nanquantile(boot, 1 - a, axis=0)


#: How a row's interval was made (the ``ci_method`` column): BCa; the basic interval, where the estimate lies
#: beyond (nearly) every resample and BCa's bias correction saturates; the percentile interval; or the range
#: of the statistic under label permutations (a chance level, not a confidence interval).
CI_METHODS = ("bca", "basic", "percentile", "permutation")


def bias_corrected(boot: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """The bootstrap bias-corrected estimate 2θ̂ − mean(θ*) (Efron & Tibshirani 1993, §10.6): the plug-in
    estimate minus the resampling bias. Where the bias is larger than the spread of the resamples, an
    interval that corrects for it can exclude θ̂ itself, but not this estimate."""
    with np.errstate(invalid="ignore"):
        return 2 * np.asarray(estimate, dtype=np.float64) - np.nanmean(np.asarray(boot, dtype=np.float64), axis=0)


def bca_ci(boot: np.ndarray, estimate: np.ndarray, jack: np.ndarray,
           level: float = CI_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Bias-corrected and accelerated interval (Efron 1987) over axis 0.

    ``boot``: (B, ...) resample values; ``estimate``: (...) the full-sample value; ``jack``: (n, ...)
    leave-one-out values. Where the estimate lies outside (nearly) all resamples the basic interval is used;
    where the correction is undefined, the percentile interval (:func:`bca_interval` says which, per value).
    """
    return bca_interval(boot, estimate, jack, level)[:2]


def bca_interval(boot: np.ndarray, estimate: np.ndarray, jack: np.ndarray,
                 level: float = CI_LEVEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`bca_ci` and, per value, the method used (``'bca'``, ``'basic'`` or ``'percentile'``)."""
    boot = np.asarray(boot, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _bca(boot, np.asarray(estimate, dtype=np.float64), np.asarray(jack, dtype=np.float64), level)


def _bca(boot, estimate, jack, level):
    prop = (np.sum(boot < estimate, axis=0) + 0.5 * np.sum(boot == estimate, axis=0)) / np.sum(np.isfinite(boot), axis=0)
    z0 = sps.norm.ppf(np.clip(prop, 1e-6, 1 - 1e-6))
    d = np.nanmean(jack, axis=0) - jack
    acc = np.sum(d ** 3, axis=0) / (6.0 * np.sum(d ** 2, axis=0) ** 1.5 + 1e-300)
    a = (1 - level) / 2
    out, levels = [], []
    for z in (sps.norm.ppf(a), sps.norm.ppf(1 - a)):
        adj = sps.norm.cdf(z0 + (z0 + z) / (1 - acc * (z0 + z)))
        q = np.where(np.isfinite(adj), adj, 0.5)
        flat_b = boot.reshape(boot.shape[0], -1)
        vals = np.array([np.nanquantile(flat_b[:, k], qk) for k, qk in enumerate(np.ravel(q))])
        out.append(vals.reshape(np.shape(q)))
        levels.append(q)
    lo, hi = out
    plo, phi = percentile_ci(boot, level)
    # Where (almost) every resample lies on one side of the estimate, BCa's bias correction saturates and the
    # interval collapses onto the most extreme resamples (its adjusted levels leave fewer than two resamples
    # between them): use the basic interval 2θ̂ − q, which reflects the resampling bias back around the
    # estimate.
    B = np.sum(np.isfinite(boot), axis=0)
    saturated = (prop * B < 1) | (prop * B > B - 1) | ((levels[1] - levels[0]) * B < 2)
    lo = np.where(saturated, 2 * estimate - phi, lo)
    hi = np.where(saturated, 2 * estimate - plo, hi)
    bad = ~np.isfinite(lo) | ~np.isfinite(hi)
    method = np.where(bad, "percentile", np.where(saturated, "basic", "bca")).astype(object)
    return np.where(bad, plo, lo), np.where(bad, phi, hi), method


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
