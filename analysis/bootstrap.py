"""Bootstrap inference shared by every statistic: resample weights, confidence intervals, paired tests.

A bootstrap resample is represented by its weight vector: how often each sample was drawn. bertology uses
the *Poisson bootstrap* (Hanley & MacGibbon 2006; Chamandy et al. 2012): in resample b, sample i gets the
weight w_bi ~ Poisson(1), and w_bi is a fixed function of (seed, b, the sample's id), computed by a
counter-based hash. A sample's weights therefore do not depend on which other samples exist, how the store
is chunked, how many workers read it or in which order blocks finish: any block of samples computes its own
weights, and partial sums over blocks add up to the same result. A statistic built from per-sample sums is
evaluated for all B resamples at once as ``W @ X``. One seed serves every statistic of an analysis, so
differences between layers (and between two stores of the same samples) are *paired*.

The bootstrap serves means and ratios of per-sample sums (shares, accuracies, attention features), whose
percentile intervals are checked for coverage in ``bench/coverage.py``. It does not serve the energy
statistics: a resample that draws a sample twice pairs it with itself, which adds exactly the noise the
debiased energies remove (:mod:`moments` uses the jackknife instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

DEFAULT_RESAMPLES = 1000
CI_LEVEL = 0.95   # the level of every interval (intervals.CI_LEVEL)
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
    """Multiple-comparison correction of the finite p-values of one family: ``holm`` (Holm's step-down,
    family-wise error) or ``fdr_bh`` (Benjamini–Hochberg, false discovery rate). The same values as
    statsmodels' ``multipletests`` (tested), without its Holm path's ``gc.collect()`` on every call, which
    costs a tenth of a second in a process holding a dask graph."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if not m:
        return out
    q = p[ok]
    order = np.argsort(q, kind="stable")
    ranked = q[order]
    if method == "holm":
        adj = np.maximum.accumulate((m - np.arange(m)) * ranked)
    elif method == "fdr_bh":
        adj = np.minimum.accumulate((m / np.arange(1, m + 1) * ranked)[::-1])[::-1]
    else:
        raise ValueError(f"unknown correction {method!r}; use 'holm' or 'fdr_bh'")
    back = np.empty(m)
    back[order] = np.minimum(adj, 1.0)
    out[ok] = back
    return out
