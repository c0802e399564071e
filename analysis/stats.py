"""bertology's statistics over in-memory arrays: the notebook API.

    >>> from bertology.analysis import stats
    >>> stats.separability(x, labels)            # x: (n, d) NumPy array or xarray DataArray
    >>> stats.ffn_energy(update, labels)         # e.g. ln2 − ln1 of one layer's [CLS]
    >>> stats.paired_difference(correct_a, correct_b)

Each function runs the same estimator as ``bertology analyze`` (the debiased energies and their intervals of
:mod:`moments`, the paired accuracy difference of :mod:`interventions`), so a notebook and the analysis of
a store cannot disagree. Every result is a pandas DataFrame with one row per statistic and the columns
``statistic, estimate, estimate_plugin, ci_low, ci_high, ci_method`` (plus ``se``, ``bounded``, ``n``).
``estimate`` is the statistic the interval is about; ``estimate_plugin`` the value of the textbook
formula with sample means plugged in, which carries the (k − 1)/n noise floor (see :mod:`moments`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from .bootstrap import DEFAULT_RESAMPLES, Bootstrap, percentile_ci
from .intervals import CI_LEVEL, share_interval
from .moments import MIN_PER_CLASS, SampleSums, energies_with_ci

COLUMNS = ["statistic", "estimate", "estimate_plugin", "ci_low", "ci_high", "ci_method", "se", "bounded", "n"]


def _matrix(x) -> np.ndarray:
    """(n, d) float64 from a NumPy array or an xarray DataArray (the sample dimension first)."""
    values = getattr(x, "values", x)
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"x must be (samples, features); got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("x holds NaN or infinite values")
    return arr


def _labels(labels, n: int) -> tuple[np.ndarray, list]:
    """Labels as codes 0..k−1 (sorted label values) and the values they stand for."""
    lab = np.asarray(getattr(labels, "values", labels))
    if lab.shape != (n,):
        raise ValueError(f"labels must be one per sample ({n}); got shape {lab.shape}")
    classes, codes = np.unique(lab, return_inverse=True)
    counts = np.bincount(codes)
    if len(classes) < 2:
        raise ValueError("labels hold a single class: separability needs at least two")
    if counts.min() < MIN_PER_CLASS:
        raise ValueError(f"each class needs at least {MIN_PER_CLASS} samples (two for its within-class "
                         f"scatter, one more for the jackknife); the counts are "
                         f"{dict(zip(classes.tolist(), counts.tolist()))}")
    return codes, classes.tolist()


def _energy_rows(arr: np.ndarray, codes: np.ndarray, n_classes: int, names, level: float,
                 permutations: int = 0, seed: int = 0) -> pd.DataFrame:
    from .separability import RATIO_STATISTICS, chance_level

    res = energies_with_ci(SampleSums.from_vectors(arr[:, None, :]), codes, n_classes, level=level,
                           permutations=permutations, seed=seed)
    rows = []
    for name in names:
        e = res.series[name]
        rows.append(dict(statistic=name, estimate=e.estimate[0], estimate_plugin=e.plugin[0], ci_low=e.ci_low[0],
                         ci_high=e.ci_high[0], ci_method=e.ci_method[0], se=e.se[0], bounded=bool(e.bounded[0]),
                         n=len(arr)))
    for name in names:
        e = res.series[name]
        if e.null is not None and name in RATIO_STATISTICS:
            mean, lo, hi, p = (v[0] for v in chance_level(e.null, e.estimate))
            rows.append(dict(statistic=f"chance_{name}", estimate=mean, ci_low=lo, ci_high=hi,
                             ci_method="permutation", bounded=True, n=len(arr), p=p))
    return pd.DataFrame(rows, columns=COLUMNS + (["p"] if permutations else []))


def separability(x, labels, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = CI_LEVEL,
                 probe: bool = False) -> pd.DataFrame:
    """Class separability of the vectors ``x`` (n, d) with class ``labels`` (n,): ``fisher_trace``
    (tr Σ_B / tr Σ_W), ``centroid_ratio`` (two classes: ||μ₁ − μ₀||² / (σ₀² + σ₁²)) and the between-class
    energy ``classification`` (Σ_c π_c ||μ_c − μ||²), each debiased, with its interval.

    ``resamples`` random relabellings of the samples (drawn with ``seed``; 0: none) give each ratio's chance
    level, ``chance_fisher_trace`` (``chance_centroid_ratio``): its mean, 2.5–97.5% range and permutation
    p-value (``p``), what noise alone makes of the ratio at this n and d.

    ``probe=True`` adds ``probe_accuracy``: the 5-fold cross-validated accuracy of a logistic-regression
    probe (folds drawn with ``seed``), with Wilson's interval over samples. It estimates the expected
    accuracy of a probe trained on four fifths of these samples, not of one trained on all of them.
    """
    arr = _matrix(x)
    codes, classes = _labels(labels, len(arr))
    names = ["fisher_trace"] + (["centroid_ratio"] if len(classes) == 2 else []) + ["classification"]
    out = _energy_rows(arr, codes, len(classes), names, level, resamples, seed)
    if probe:
        from .separability import probe_correct

        correct = probe_correct(arr, codes, seed=seed)
        est, lo, hi = share_interval(correct, np.ones(len(arr)), level)
        out.loc[len(out)] = dict(statistic="probe_accuracy", estimate=float(est), estimate_plugin=float(est),
                                 ci_low=float(lo), ci_high=float(hi), ci_method="wilson",
                                 se=float(np.sqrt(est * (1 - est) / len(arr))), bounded=True, n=len(arr))
    return out


def ffn_energy(x, labels, *, level: float = CI_LEVEL) -> pd.DataFrame:
    """The energy decomposition of the vectors ``x`` (n, d), e.g. an FFN block's update: ``total`` =
    ``structural`` (||μ||², class-common) + ``classification`` (class-specific) + ``within``, and the ratios
    ``structural_share`` and ``structural_over_classification``. Where the classification energy cannot be
    told from 0 the last has no upper bound: ``ci_high`` is +inf and ``bounded`` False."""
    names = ["total", "structural", "classification", "within", "structural_share",
             "structural_over_classification"]
    arr = _matrix(x)
    codes, classes = _labels(labels, len(arr))
    return _energy_rows(arr, codes, len(classes), names, level)


def paired_difference(correct_a, correct_b, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                      level: float = CI_LEVEL, boot: Bootstrap | None = None) -> dict | pd.DataFrame:
    """Accuracy of A minus accuracy of B on the same samples (``correct_a``, ``correct_b``: 0/1 per sample).

    The interval is the Poisson-bootstrap percentile interval of the paired difference (one weight per
    sample, applied to both); the p-value is McNemar's mid-p test on the discordant samples (exact
    binomial, less half the probability of the observed count: Fagerland et al. 2013), whose p-values are
    close to uniform under the null where the exact test's are conservative. Called from a notebook it
    returns a one-row DataFrame; the analyses pass ``boot`` and get the row as a dict.
    """
    a = np.asarray(correct_a, dtype=np.float64)
    b = np.asarray(correct_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"correct_a and correct_b must be equal-length vectors; got {a.shape} and {b.shape}")
    row = _paired(a, b, boot or Bootstrap.draw(len(a), resamples, seed), level)
    return row if boot is not None else pd.DataFrame([row])


def _paired(a: np.ndarray, b: np.ndarray, boot: Bootstrap, level: float) -> dict:
    d, d_b = boot.mean(a - b)
    lo, hi = percentile_ci(d_b, level)
    return dict(statistic="delta_accuracy", estimate=float(d), estimate_plugin=float(d), ci_low=float(lo),
                ci_high=float(hi), ci_method="percentile", p=mcnemar_midp(a > 0.5, b > 0.5),
                discordant=int(np.sum((a > 0.5) != (b > 0.5))), n=len(a))


def mcnemar_midp(right_a: np.ndarray, right_b: np.ndarray) -> float:
    """Two-sided McNemar mid-p value: of the samples where exactly one of A and B is right, is each side
    equally likely? 1.0 when no sample is discordant."""
    n01 = int(np.sum(right_a & ~right_b))
    n10 = int(np.sum(~right_a & right_b))
    m = n01 + n10
    if m == 0:
        return 1.0
    k = min(n01, n10)
    return float(min(1.0, 2 * sps.binom.cdf(k, m, 0.5) - sps.binom.pmf(k, m, 0.5)))
