"""Class-conditional moments and the energy decomposition behind separability and the FFN's dual role.

For vectors v_i with class labels, the mean energy splits exactly into three parts:

    E = mean_i ||v_i||² = ||μ||²  +  Σ_c π_c ||μ_c − μ||²  +  Σ_c π_c σ_c²
                          structural   classification (between)   within-class residual

with μ the overall mean, μ_c the class means, π_c the class shares and σ_c² the mean squared distance to the
class centroid. Separability statistics are ratios of the same quantities:

- ``fisher_trace`` = tr(S_B) / tr(S_W) = Σ_c π_c ||μ_c − μ||² / Σ_c π_c σ_c²
- ``centroid_ratio`` (two classes) = ||μ_1 − μ_0||² / (σ_0² + σ_1²)

Everything is computed from per-sample sums (a sample contributes its vector, or the sum of its tokens'
vectors, its squared norm(s) and its count), so one matrix product per class evaluates all bootstrap
resamples at once, and token-level statistics are resampled by sentence (a cluster bootstrap).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


@dataclass
class SampleSums:
    """Per-sample sufficient statistics for K series (e.g. layers × sites) of d-dimensional vectors.

    ``s``: (n, K, d) sum of the sample's vectors; ``q``: (n, K) sum of their squared norms;
    ``m``: (n,) how many vectors the sample contributes (1 for [CLS], its token count for tokens).
    """

    s: np.ndarray
    q: np.ndarray
    m: np.ndarray

    @classmethod
    def from_vectors(cls, v: np.ndarray) -> "SampleSums":
        """One vector per sample: ``v`` is (n, K, d)."""
        v = np.asarray(v, dtype=np.float64)
        return cls(v, np.einsum("nkd,nkd->nk", v, v), np.ones(v.shape[0]))


def centre(sums: SampleSums) -> tuple[SampleSums, np.ndarray]:
    """Shift every vector by the full-sample mean c (K, d): between/within parts are shift-invariant and
    computing them about c avoids the cancellation of ``Q/N − ||μ||²`` far from the origin."""
    c = sums.s.sum(axis=0) / sums.m.sum()                                   # (K, d)
    return _shifted(sums, c), c


def class_moments(sums: SampleSums, labels: np.ndarray, n_classes: int, weights: np.ndarray):
    """Weighted per-class counts N (B, C), vector sums S (B, C, K, d) and squared-norm sums Q (B, C, K).

    ``labels`` is (n,), or (B, n) for one labelling per row (e.g. label permutations, with unit weights).
    """
    lab = np.atleast_2d(labels)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    w = np.broadcast_to(w, (max(w.shape[0], lab.shape[0]), w.shape[1]))
    B = w.shape[0]
    K, d = sums.s.shape[1:]
    N = np.zeros((B, n_classes))
    S = np.zeros((B, n_classes, K, d))
    Q = np.zeros((B, n_classes, K))
    for c in range(n_classes):
        wc = w * (lab == c)
        N[:, c] = wc @ sums.m
        S[:, c] = np.einsum("bn,nkd->bkd", wc, sums.s, optimize=True)
        Q[:, c] = wc @ sums.q
    return N, S, Q


def jackknife_moments(full, block: SampleSums, labels: np.ndarray, n_classes: int):
    """Leave-one-out moments (n_block, C, ...) for the samples of ``block``: the full-sample moments
    ``full`` = (N, S, Q) minus each sample's own contribution."""
    N, S, Q = full
    onehot = np.eye(n_classes)[labels]                                   # (n_block, C)
    return (N - onehot * block.m[:, None], S - onehot[:, :, None, None] * block.s[:, None],
            Q - onehot[:, :, None] * block.q[:, None])


def energies(sums: SampleSums, labels: np.ndarray, n_classes: int, weights: np.ndarray) -> dict[str, np.ndarray]:
    """The decomposition and separability statistics for each row of ``weights`` (shape (B, n)).

    Returns arrays of shape (B, K): ``total``, ``structural``, ``classification``, ``within``,
    ``fisher_trace``, ``centroid_ratio`` (NaN unless two classes), ``structural_share``,
    ``structural_over_classification``.
    """
    centred, c = centre(sums)
    return energies_from_moments(*class_moments(centred, labels, n_classes, weights), shift=c)


def energies_from_moments(N: np.ndarray, S: np.ndarray, Q: np.ndarray, shift: np.ndarray | None = None,
                          ) -> dict[str, np.ndarray]:
    """The statistics of :func:`energies` from per-class moments with a leading replicate axis.

    ``shift`` (K, d) is the point the moments were taken about (see :func:`centre`); ``structural`` and
    ``total`` are reported about the origin. Where every vector coincides (e.g. the [CLS] embedding, the same
    for every input) there is no spread at all and the separability ratios are 0 by definition.
    """
    n_classes = N.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        Ntot = N.sum(axis=1)                                     # (B,)
        mu_c = S / N[:, :, None, None]                          # (B, C, K, d)
        mu = S.sum(axis=1) / Ntot[:, None, None]                # (B, K, d)
        pi = N / Ntot[:, None]                                  # (B, C)
        total = Q.sum(axis=1) / Ntot[:, None]                   # (B, K)
        structural = np.einsum("bkd,bkd->bk", mu, mu)
        dev = mu_c - mu[:, None]
        between = np.einsum("bc,bckd,bckd->bk", pi, dev, dev)
        sq_c = np.einsum("bckd,bckd->bck", mu_c, mu_c)
        sigma2 = Q / N[:, :, None] - sq_c                       # (B, C, K)
        within = np.einsum("bc,bck->bk", pi, sigma2)
        spread = between + within
        if shift is not None:  # back to the origin: x = (x − c) + c
            cc = np.einsum("kd,kd->k", shift, shift)[None]
            total = total + 2 * np.einsum("bkd,kd->bk", mu, shift) + cc
            structural = np.einsum("bkd,bkd->bk", mu + shift[None], mu + shift[None])
        degenerate = spread <= 1e-9 * np.maximum(total, 1e-300)
        between = np.where(degenerate, 0.0, between)
        within = np.where(degenerate, 0.0, within)
        out = {
            "total": total,
            "structural": structural,
            "classification": between,
            "within": within,
            "fisher_trace": np.where(degenerate, 0.0, between / within),
            "structural_share": structural / total,
            "structural_over_classification": structural / between,
        }
        if n_classes == 2:
            diff = mu_c[:, 1] - mu_c[:, 0]
            out["centroid_ratio"] = np.where(
                degenerate, 0.0, np.einsum("bkd,bkd->bk", diff, diff) / (sigma2[:, 0] + sigma2[:, 1]))
        else:
            out["centroid_ratio"] = np.full_like(total, np.nan)
    return out


class Estimates(NamedTuple):
    """One statistic for K series: full-sample estimate (K,), resamples (B, K), CI bounds (K,), and the
    leave-one-out values (n, K) that BCa intervals of derived quantities (e.g. layer differences) need,
    (with permutations) the statistic under P random relabellings (P, K): its chance level, and the method
    of each interval."""

    estimate: np.ndarray
    resamples: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    jackknife: np.ndarray
    null: np.ndarray | None = None
    ci_method: np.ndarray | None = None   # (K,) how each interval was made (bootstrap.CI_METHODS)


class ArraySource:
    """In-memory per-sample sums, served in (series, sample) blocks: the reference source."""

    def __init__(self, sums: SampleSums):
        self.sums = sums
        self.n, self.K = sums.s.shape[0], sums.s.shape[1]

    def block(self, ks: slice, idx: slice) -> SampleSums:
        return SampleSums(self.sums.s[idx, ks], self.sums.q[idx, ks], self.sums.m[idx])


def _shifted(b: SampleSums, c: np.ndarray) -> SampleSums:
    s = b.s - b.m[:, None, None] * c[None]
    q = b.q - 2 * np.einsum("nkd,kd->nk", b.s, c) + b.m[:, None] * np.einsum("kd,kd->k", c, c)[None]
    return SampleSums(s, q, b.m)


def energies_with_ci(source, labels: np.ndarray, n_classes: int, boot, method: str = "bca",
                     k_block: int = 8, sample_block: int | None = None, permutations: int = 0, seed: int = 0,
                     ) -> dict[str, "Estimates"]:
    """For each statistic, its :class:`Estimates` over the K series.

    ``source`` is a :class:`SampleSums` or any picklable object with ``n``, ``K`` and ``block(series_slice,
    sample_slice) -> SampleSums`` (e.g. one reading a store). The work is a dask graph (:mod:`engine`) with,
    per block of ``k_block`` series, three rounds of tasks over blocks of ``sample_block`` samples: the
    centre (summed), the class moments under the full sample, every bootstrap resample and every permutation
    (summed), and the leave-one-out values (concatenated). A task holds one block and B-sized moments, so
    memory depends on the block sizes and B, not on the number of samples.

    ``method='bca'`` (default) corrects the percentile interval for the bias and skew of these ratio
    estimators, with an exact leave-one-out jackknife; ``'percentile'`` is the plain interval.
    ``permutations=P`` also evaluates every statistic under P seeded random relabellings of the samples
    (``Estimates.null``): the level a statistic reaches by chance, e.g. the noise floor d/n of a ratio.
    """
    from .engine import compute, concat, sample_blocks, shared, task, tree_sum

    if isinstance(source, SampleSums):
        source = ArraySource(source)
    n, K = source.n, source.K
    labels = np.asarray(labels)
    blocks = sample_blocks(n, sample_block)
    rng = np.random.default_rng(seed)
    perm_labels = np.stack([rng.permutation(labels) for _ in range(permutations)]) if permutations else None
    src, lab, bt, perm = shared(source), shared(labels), shared(boot), shared(perm_labels)
    per_series = []
    for k0 in range(0, K, k_block):
        ks = slice(k0, min(k0 + k_block, K))
        total = tree_sum([task(_block_total, src, ks, sl) for sl in blocks])
        moments = tree_sum([task(_block_moments, src, ks, sl, total, lab, n_classes, bt, perm) for sl in blocks])
        jack = (concat([task(_block_jackknife, src, ks, sl, total, moments, lab, n_classes) for sl in blocks])
                if method == "bca" else None)
        per_series.append(task(_block_estimates, total, moments, jack, method, n))
    parts = compute(*per_series)
    names = parts[0].keys()
    return {name: Estimates(*(np.concatenate([p[name][i] for p in parts], axis=-1) for i in range(5)),
                            np.concatenate([p[name][5] for p in parts], axis=-1) if permutations else None,
                            np.concatenate([p[name][6] for p in parts], axis=-1))
            for name in names}


def _block_total(source, ks: slice, sl: slice):
    """Pass 1 (summed over blocks): the sum of the vectors and their count, for the centre."""
    b = source.block(ks, sl)
    return b.s.sum(axis=0), np.array(b.m.sum())


def _centre_of(total) -> np.ndarray:
    s, m = total
    return s / m


def _block_moments(source, ks: slice, sl: slice, total, labels, n_classes: int, boot, perm_labels):
    """Pass 2 (summed over blocks): class moments about the centre under the full sample, each bootstrap
    resample (this block's own weights) and each permutation."""
    b = _shifted(source.block(ks, sl), _centre_of(total))
    ones = np.ones((1, sl.stop - sl.start))
    full = class_moments(b, labels[sl], n_classes, ones)
    resampled = class_moments(b, labels[sl], n_classes, boot.block(sl))
    permuted = class_moments(b, perm_labels[:, sl], n_classes, ones) if perm_labels is not None else ()
    return full, resampled, permuted


def _block_jackknife(source, ks: slice, sl: slice, total, moments, labels, n_classes: int):
    """Pass 3 (concatenated): every statistic with each of the block's samples left out."""
    c = _centre_of(total)
    b = _shifted(source.block(ks, sl), c)
    return energies_from_moments(*jackknife_moments(moments[0], b, labels[sl], n_classes), shift=c)


def _block_estimates(total, moments, jack, method: str, n: int):
    """Per statistic: (estimate, resamples, ci_low, ci_high, jackknife, null, ci_method) for a series block."""
    from .bootstrap import bca_interval, percentile_ci

    c = _centre_of(total)
    full, resampled, permuted = moments
    est = energies_from_moments(*full, shift=c)
    bs = energies_from_moments(*resampled, shift=c)
    null = energies_from_moments(*permuted, shift=c) if permuted else None
    out = {}
    for name in est:
        if method == "bca":
            jk = jack[name]
            lo, hi, how = bca_interval(bs[name], est[name][0], jk)
        else:
            jk = np.full((n, est[name].shape[1]), np.nan)
            lo, hi = percentile_ci(bs[name])
            how = np.full(lo.shape, "percentile", dtype=object)
        out[name] = (est[name][0], bs[name], lo, hi, jk, null[name] if null is not None else None, how)
    return out
