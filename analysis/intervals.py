"""Confidence intervals from an estimate and its standard error, kept inside the statistic's range.

A statistic that cannot be negative (an energy, a ratio of energies) or leave [0, 1] (a share) has its
population value on or near the edge of that range exactly where findings are decided: a layer that adds no
separability has a between-class energy of 0. Clipping a symmetric interval at the edge would cover a value
on the edge every time the unclipped lower bound falls below it (97.5% for a nominal 95%), and an interval
that leaves the range is no interval for the statistic at all. :func:`bounded_interval` uses instead the
*unified* interval of Feldman & Cousins (1998, Phys. Rev. D 57, 3873) for a normal estimate of a bounded
mean: the Neyman construction whose acceptance regions are ordered by the likelihood ratio against the best
value inside the range. It covers at its nominal level for every value in the range, the edge included;
it never leaves the range; it always contains the estimate moved into the range; and far from the edge it is
the ordinary ``estimate ± z·se``.

Every interval bertology emits is named in the ``ci_method`` column (:data:`CI_METHODS`) and its coverage is
measured by simulation in ``bench/coverage.py``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import stats as sps

CI_LEVEL = 0.95

#: How a row's interval was made (the ``ci_method`` column):
#:
#: - ``jackknife``: estimate ± z·se with the jackknife standard error of a debiased energy statistic,
#:   corrected for the jackknife's double count of the pairwise-noise variance (:mod:`moments`); at the edge
#:   of the statistic's range, the Feldman–Cousins interval with that standard error;
#: - ``percentile``: the Poisson-bootstrap percentile interval of a mean or a ratio of per-sample sums;
#: - ``wilson``: Wilson's score interval of a share, with the effective sample size of its clustered
#:   (per-sample) variance;
#: - ``permutation``: the range of the statistic under label permutations (a chance level, not a CI).
CI_METHODS = ("jackknife", "percentile", "wilson", "permutation")

#: Beyond this many standard errors from the edge the unified interval is the central one (to < 1e-6).
_FAR = 6.0


@lru_cache(maxsize=16)
def z_value(level: float = CI_LEVEL) -> float:
    """The two-sided normal quantile of ``level`` (1.96 for 95%)."""
    return float(sps.norm.ppf(0.5 + level / 2))


def _left(mu: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """The x1 < mu with the same likelihood ratio as x2 > mu: R(x2) = exp(−(x2 − mu)² / 2), and
    R(x) = exp(−(x − mu)² / 2) for x ≥ 0, exp(x·mu − mu²/2) for x < 0."""
    x1 = 2 * mu - x2
    with np.errstate(invalid="ignore", divide="ignore"):
        neg = (mu * mu - (x2 - mu) ** 2) / (2 * mu)
    return np.where(x1 >= 0, x1, np.where(mu > 0, neg, -np.inf))


@lru_cache(maxsize=8)
def _belt(level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Feldman–Cousins confidence belt on a grid of mu in [0, _FAR + 4]: (mu, x1(mu), x2(mu)), both
    increasing in mu. [x1, x2] is the acceptance region of an observation x ~ N(mu, 1), mu ≥ 0: the x
    whose likelihood ratio against the best mu in the range, R(x) = φ(x − mu) / φ(x − max(x, 0)), is
    largest, to total probability ``level`` (found by bisection on x2, all grid points at once)."""
    mu = np.concatenate([np.linspace(0.0, 1.0, 2001), np.linspace(1.0, _FAR + 4.0, 4001)[1:]])
    a, b = mu.copy(), mu + 10.0
    for _ in range(60):
        x2 = (a + b) / 2
        inside = sps.norm.cdf(x2 - mu) - sps.norm.cdf(_left(mu, x2) - mu)
        a, b = np.where(inside < level, x2, a), np.where(inside < level, b, x2)
    x2 = (a + b) / 2
    return mu, _left(mu, x2), x2


def unified_interval(x: np.ndarray, level: float = CI_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """The Feldman–Cousins interval for mu ≥ 0 given x ~ N(mu, 1) (x in units of its standard error)."""
    x = np.asarray(x, dtype=np.float64)
    mu, x1, x2 = _belt(level)
    z = z_value(level)
    # mu_low: the smallest mu whose region reaches x (x2 increasing); mu_high: the largest with x1 ≤ x
    lo = np.interp(x, x2, mu, left=0.0, right=np.nan)
    hi = np.interp(x, np.where(np.isfinite(x1), x1, -1e300), mu, left=0.0, right=np.nan)
    far = x > _FAR
    lo = np.where(far, x - z, lo)
    hi = np.where(far, x + z, hi)
    lo = np.where(x2[0] >= x, 0.0, lo)   # every region up to x2(0) includes mu = 0
    return lo, hi


def bounded_interval(estimate: np.ndarray, se: np.ndarray, low: float | None = 0.0, high: float | None = None,
                     level: float = CI_LEVEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, ci_low, ci_high) for a normal estimate with standard error ``se`` of a statistic whose
    range is [low, high] (``None``: unbounded on that side).

    The returned estimate is moved into the range (the maximum-likelihood value there); the interval is the
    unified interval about the nearer edge, which is the central interval ``estimate ± z·se`` far from it.
    Where ``se`` is 0 the interval is the (moved) estimate itself; where it is not finite, NaN.
    """
    est = np.asarray(estimate, dtype=np.float64)
    se = np.asarray(se, dtype=np.float64)
    z = z_value(level)
    lo, hi = est - z * se, est + z * se
    with np.errstate(invalid="ignore", divide="ignore"):
        if low is not None:
            x = (est - low) / se
            ulo, uhi = unified_interval(np.where(np.isfinite(x), x, 0.0), level)
            near = (x < _FAR) & (se > 0) & np.isfinite(x)
            if high is not None:   # the nearer edge decides
                near &= (est - low) <= (high - est)
            lo = np.where(near, low + ulo * se, lo)
            hi = np.where(near, low + uhi * se, hi)
        if high is not None:
            x = (high - est) / se
            ulo, uhi = unified_interval(np.where(np.isfinite(x), x, 0.0), level)
            near = (x < _FAR) & (se > 0) & np.isfinite(x)
            if low is not None:
                near &= (high - est) < (est - low)
            lo = np.where(near, high - uhi * se, lo)
            hi = np.where(near, high - ulo * se, hi)
    clip_lo = -np.inf if low is None else low
    clip_hi = np.inf if high is None else high
    est = np.clip(est, clip_lo, clip_hi)
    lo = np.clip(lo, clip_lo, clip_hi)
    hi = np.clip(hi, clip_lo, clip_hi)
    bad = ~np.isfinite(se) | ~np.isfinite(est)
    return est, np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)


def _belt_at(m: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """The unified acceptance region [x1(m), x2(m)] at m ≥ 0 (interpolated; central beyond the grid)."""
    mu, x1, x2 = _belt(level)
    z = z_value(level)
    far = m > mu[-1]
    lo = np.interp(np.minimum(m, mu[-1]), mu[1:], x1[1:], left=-np.inf)
    lo = np.where(m <= 0, -np.inf, lo)
    hi = np.interp(np.minimum(m, mu[-1]), mu, x2)
    return np.where(far, m - z, lo), np.where(far, m + z, hi)


def growing_variance_interval(estimate: np.ndarray, se: np.ndarray, se_edge: np.ndarray, low: float = 0.0,
                              level: float = CI_LEVEL, slope_floor: np.ndarray | float = 0.0,
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, ci_low, ci_high) of a statistic θ ≥ ``low`` whose variance grows with its value:
    V(θ) = se_edge² + κ (θ − low), as for an energy, whose noise-only variance ``se_edge``² is joined by a
    signal term proportional to the signal (κ from the variance at the estimate, V(θ̂) = se², and at least
    ``slope_floor``).

    A Wald interval with the variance at the estimate is too short above exactly the estimates that came
    out low (their standard error came out low with them). This is the Neyman construction for θ̂ ~ N(θ,
    V(θ)): each θ accepts the estimates of its own unified (Feldman–Cousins) region scaled by its own
    standard error √V(θ), and the interval is every θ that accepts the estimate. At the edge it is the
    unified interval; far from it, the score interval |θ̂ − θ| ≤ z √V(θ) (Wilson's construction for a
    variance that depends on the parameter)."""
    est = np.asarray(estimate, dtype=np.float64)
    se = np.asarray(se, dtype=np.float64)
    z = z_value(level)
    shape = np.broadcast(est, se).shape
    est, se = np.broadcast_to(est, shape).astype(np.float64), np.broadcast_to(se, shape).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.maximum(np.minimum(np.broadcast_to(np.asarray(se_edge, dtype=np.float64), shape), se),
                       1e-12 * se + 1e-300)
        kappa = np.maximum(np.maximum(se * se - a * a, 0.0) / np.maximum(est - low, z * a), slope_floor)
        x = est - low

        def sigma(t):
            return np.sqrt(a * a + kappa * t)

        def edges(t):   # θ's acceptance region [f_lo, f_hi], in the estimate's units
            s = sigma(t)
            m = t / s
            x1, x2 = _belt_at(m, level)
            return t + s * (x1 - m), t + s * (x2 - m)

        def solve(which):   # the θ ≥ 0 where the region's ``which`` end meets x (both ends increase with θ)
            lo_t = np.zeros(shape)
            hi_t = np.maximum(x, 0.0) + 10 * sigma(np.maximum(x, 0.0)) + 25 * kappa + 1e-300
            for _ in range(60):
                mid = (lo_t + hi_t) / 2
                below = edges(mid)[which] < x
                lo_t, hi_t = np.where(below, mid, lo_t), np.where(below, hi_t, mid)
            return (lo_t + hi_t) / 2

        reaches = edges(np.zeros(shape))[1] >= x             # θ = 0 accepts x: the interval starts at the edge
        lo = np.where(reaches, 0.0, solve(1)) + low
        hi = solve(0) + low
    bad = ~np.isfinite(se) | ~np.isfinite(est)
    zero = (se == 0) & np.isfinite(est)
    est = np.maximum(est, low)
    lo = np.where(zero, est, np.minimum(lo, est))
    hi = np.where(zero, est, np.maximum(hi, est))
    return est, np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)


def scale_interval(estimate: np.ndarray, se: np.ndarray, level: float = CI_LEVEL,
                   share: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, ci_low, ci_high) of a positive statistic made on the log scale (delta method: se/θ̂), or
    of a share strictly inside (0, 1) on the logit scale (se/(θ̂(1 − θ̂))): the scales on which a mean
    energy or a share is close to normal, so the interval takes their skew (longer towards the open end)
    and never leaves the range. At a share of 0 or 1, or a non-positive energy, the bounded interval."""
    est = np.asarray(estimate, dtype=np.float64)
    se = np.asarray(se, dtype=np.float64)
    z = z_value(level)
    with np.errstate(invalid="ignore", divide="ignore"):
        if share:
            ok = (est > 0) & (est < 1)
            g = np.log(est / (1 - est))
            gse = se / (est * (1 - est))
            lo, hi = 1 / (1 + np.exp(-(g - z * gse))), 1 / (1 + np.exp(-(g + z * gse)))
            fallback = bounded_interval(est, se, 0.0, 1.0, level)
        else:
            ok = est > 0
            g, gse = np.log(est), se / est
            lo, hi = np.exp(g - z * gse), np.exp(g + z * gse)
            fallback = bounded_interval(est, se, 0.0, None, level)
    out = (np.where(ok, est, fallback[0]), np.where(ok, lo, fallback[1]), np.where(ok, hi, fallback[2]))
    bad = ~np.isfinite(se) | ~np.isfinite(est)
    return out[0], np.where(bad, np.nan, out[1]), np.where(bad, np.nan, out[2])


def normal_p(estimate: np.ndarray, se: np.ndarray, null: float = 0.0) -> np.ndarray:
    """Two-sided p-value of ``estimate`` against ``null`` for a normal estimate with standard error ``se``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.abs(np.asarray(estimate, dtype=np.float64) - null) / np.asarray(se, dtype=np.float64)
    return np.where(np.isfinite(z), 2 * sps.norm.sf(z), np.nan)


def wilson_interval(share: np.ndarray, n_eff: np.ndarray, level: float = CI_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Wilson's score interval of a share observed on an effective sample of ``n_eff`` (Wilson 1927): it
    stays in [0, 1], has no zero width at a share of 0 or 1, and covers near its level down to small n."""
    p = np.asarray(share, dtype=np.float64)
    n = np.asarray(n_eff, dtype=np.float64)
    z = z_value(level)
    with np.errstate(invalid="ignore", divide="ignore"):
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # the score interval contains p; min/max only undo rounding at p = 0 or 1 (e.g. 3e-17 above 0)
    return np.clip(np.minimum(centre - half, p), 0.0, 1.0), np.clip(np.maximum(centre + half, p), 0.0, 1.0)


def share_interval(num: np.ndarray, den: np.ndarray, level: float = CI_LEVEL
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(share, ci_low, ci_high) of a share Σ num / Σ den over samples (``num``, ``den``: (n,) or (n, K) per
    sample; e.g. a sentence's HIGH content tokens over its HIGH tokens, or 0/1 per sample over 1).

    Wilson's interval on the effective sample size of the share's sentence-clustered variance,
    n_eff = R(1 − R) / V with V = Σ_i (num_i − R den_i)² / (Σ den)² · n/(n − 1) (Korn & Graubard 1998); for
    one 0/1 value per sample n_eff = n − 1. Where R is 0 or 1 (no spread to measure) n_eff is the number of
    samples, and it never exceeds the number of units Σ den. Unlike a bootstrap percentile interval it does
    not collapse to a point at a share of 0 or 1, where a rare event in a small sample has been seen never."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    den = np.broadcast_to(den.reshape(den.shape + (1,) * (num.ndim - den.ndim)), num.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        total = den.sum(axis=0)
        r = num.sum(axis=0) / total
        n = np.sum(den > 0, axis=0).astype(np.float64)
        v = np.sum((num - r * den) ** 2, axis=0) / total ** 2 * n / (n - 1)
        spread = r * (1 - r)
        n_eff = np.where((spread > 0) & (v > 0), spread / v, n)
        n_eff = np.minimum(n_eff, total)
    lo, hi = wilson_interval(r, n_eff, level)
    bad = ~np.isfinite(r)
    return r, np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)
