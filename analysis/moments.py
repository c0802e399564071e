"""Class-conditional moments, the energy decomposition behind separability and the FFN's dual role, and
estimators of it whose bias does not grow with d/n.

**The decomposition.** For vectors v with class labels, the mean energy splits exactly into three parts:

    E = mean ||v||² = ||μ||²  +  Σ_c π_c ||μ_c − μ||²  +  Σ_c π_c σ_c²
                      structural   classification (between)   within-class residual

with μ the overall mean, μ_c the class means, π_c the class shares and σ_c² the mean squared distance to the
class centroid. Separability statistics are ratios of the same quantities:

- ``fisher_trace`` = tr Σ_B / tr Σ_W = Σ_c π_c ||μ_c − μ||² / Σ_c π_c σ_c²
- ``centroid_ratio`` (two classes) = ||μ_1 − μ_0||² / (σ_0² + σ_1²)
- ``structural_share`` = ||μ||² / E and ``structural_over_classification`` = ||μ||² / Σ_c π_c ||μ_c − μ||²

**The noise floor and its removal.** Plugging sample means into these formulas (the ``*_plugin`` values)
adds the noise of the means themselves. Write v_c = E||μ̂_c − μ_c||² for the variance of class c's sample
mean (tr Σ_c / n_c for one vector per sample). With the class shares fixed, μ̂ = Σ_c π_c μ̂_c and the class
means independent, so

    E Σ_c π_c ||μ̂_c − μ̂||²  =  Σ_c π_c ||μ_c − μ||²  +  Σ_c π_c (1 − π_c) v_c
    E ||μ̂||²               =  ||μ||²               +  Σ_c π_c² v_c
    E Σ_c π_c σ̂_c²          =  Σ_c π_c σ_c²         −  Σ_c π_c v_c        (σ̂_c² = mean ||v − μ̂_c||²)

(expand μ̂_c − μ̂ = (μ_c − μ) + (e_c − Σ_j π_j e_j) with e_c = μ̂_c − μ_c; Σ_c π_c ||e_c − ē||² =
Σ_c π_c ||e_c||² − ||ē||² has mean Σ_c π_c v_c − Σ_c π_c² v_c). The noise term of the between-class energy
is (1 − π_c) tr Σ_c / n summed over classes, about (k − 1)/n · tr Σ_W: divided by tr Σ_W it is the (k−1)/n
floor that the plug-in ``fisher_trace`` never falls below, however little signal there is. Each class's
v_c has an unbiased estimate from the same data,

    v̂_c = Σ_{i∈c} ||s_i − m_i μ̂_c||² / M_c² · n_c / (n_c − 1)

(s_i the sum of sample i's m_i vectors, M_c = Σ_{i∈c} m_i: for one vector per sample this is s_c² / n_c
with s_c² the unbiased within-class variance; for tokens it is the cluster-robust variance of a ratio
estimator, since tokens of one sentence are not independent). Subtracting it gives the **debiased**
energies reported as ``estimate``:

    classification = B̂ − Σ π_c (1 − π_c) v̂_c,  structural = Ŝ − Σ π_c² v̂_c,  within = Ŵ + Σ π_c v̂_c,

whose sum is still the total energy, and the ratios are formed from them (``centroid_ratio`` likewise:
||μ̂_1 − μ̂_0||² − v̂_0 − v̂_1 over σ̂_0² + v̂_0 + σ̂_1² + v̂_1). For one vector per sample the debiased
between-class energy is exactly a U-statistic (only pairs of distinct samples enter), unbiased for every d
and n; a ratio of unbiased energies keeps a bias of order 1/n that does not grow with d. A debiased energy
can fall below 0 when the signal is below the noise: that is information (no detectable signal), and the
reported estimate is moved to the edge of the range (``Estimates.estimate``), and its interval starts there.

**Standard errors.** The debiased statistic is a smooth function of class sums plus a degenerate quadratic
part, the sum over pairs of distinct samples of 2Γ_ab ẽ_iᵀẽ_j / (M_a M_b) (i in class a, j in b, ẽ the
residuals about the class means, Γ_ab = ∂ statistic / ∂(μ_aᵀμ_b)). Its variance is the linear part's plus
the quadratic part's, V_Q = 2 Σ_ab Γ_ab² Σ_{i∈a, j∈b, i≠j} (ẽ_iᵀẽ_j)² / (M_a M_b)². The leave-one-out
jackknife estimates the linear part well but counts the quadratic part twice (Efron & Stein 1981; for
a degenerate U-statistic of degree 2, E V_J = 2 Var), and where the signal is weak that part is most of the
variance. bertology's variance is therefore V̂_Q + w·V̂_L, with V̂_Q from the pairwise Gram products and
V̂_L = V_J − 2 V̂_Q the linear (signal) part, shrunk by w = max(0, 1 − noise²/V̂_L²) towards 0 where it is no
larger than its own noise (the positive-part estimator of a non-negative quantity: a bare max(V̂_L, 0)
would inflate the variance wherever there is no signal). Layer differences use the same with the
cross-layer Gram products. The interval of structural / classification is that of its inverse,
classification / structural (an energy over a well-measured one), inverted: where the classification
energy cannot be told from 0 it has no upper end.

**The signal's variance.** The linear part grows with the signal: V(θ) ≈ V_Q + κθ. Where the signal is
weak its κ measured from the data comes out low exactly when the estimate does, so the interval of an
energy (:func:`intervals.growing_variance_interval`, a Neyman construction with the variance at each
candidate θ) uses κ = max(κ̂, (1 − w) κ₀), κ₀ being the slope were the signal's direction spread over the
within-class variance as the noise is: u_aᵀ Σ_a u_a ≈ ρ_a ||u_a||², ρ_a = tr Σ_a² / tr Σ_a. The coverage of
every interval made this way is measured in ``bench/coverage.py`` (README: "How bertology's intervals are
made and checked"), including where these approximations fall short.

Everything is computed from per-sample sums (a sample contributes its vector, or the sum of its tokens'
vectors, its squared norm(s) and its count), one pass over the samples for the moments, one for the
leave-one-out values and one over pairs of sample blocks for the Gram products (:mod:`engine`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

#: The statistics of the decomposition, with the range each lies in (None: unbounded on that side).
RANGES: dict[str, tuple[float | None, float | None]] = {
    "total": (0.0, None),
    "structural": (0.0, None),
    "classification": (0.0, None),
    "within": (0.0, None),
    "fisher_trace": (0.0, None),
    "centroid_ratio": (0.0, None),
    "structural_share": (0.0, 1.0),
    "structural_over_classification": (0.0, None),
}
STATISTICS = tuple(RANGES)
#: Energies of a mean (and ratios of them) whose variance is the noise's plus a part proportional to the
#: signal itself: their intervals account for it (:func:`intervals.growing_variance_interval`).
#: Statistics far from the edge of their range whose interval is made on their log (logit) scale.
SCALES = ("total", "within", "structural_share")
SIGNAL_ENERGIES = ("structural", "classification", "fisher_trace", "centroid_ratio", "classification_over_structural")
#: Computed for its interval only: the inverse of structural_over_classification (bounded where the latter is not).
_INVERSE = "classification_over_structural"


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


class Moments(NamedTuple):
    """Weighted per-class sums with a leading replicate axis r (the full sample, a permutation, or one
    sample left out): ``count`` (r, C) samples, ``units`` (r, C) vectors Σ m_i, ``s`` (r, C, K, d) Σ s_i,
    ``q`` (r, C, K) Σ q_i, ``ss`` (r, C, K) Σ ||s_i||², ``ms`` (r, C, K, d) Σ m_i s_i, ``mm`` (r, C) Σ m_i²."""

    count: np.ndarray
    units: np.ndarray
    s: np.ndarray
    q: np.ndarray
    ss: np.ndarray
    ms: np.ndarray
    mm: np.ndarray


def centre(sums: SampleSums) -> tuple[SampleSums, np.ndarray]:
    """Shift every vector by the full-sample mean c (K, d): between/within parts are shift-invariant and
    computing them about c avoids the cancellation of ``Q/N − ||μ||²`` far from the origin."""
    c = sums.s.sum(axis=0) / sums.m.sum()                                   # (K, d)
    return _shifted(sums, c), c


def class_moments(sums: SampleSums, labels: np.ndarray, n_classes: int, weights: np.ndarray) -> Moments:
    """Weighted per-class :class:`Moments` of ``sums``; one replicate per row of ``weights`` (r, n).

    ``labels`` is (n,), or (r, n) for one labelling per row (e.g. label permutations, with unit weights).
    """
    lab = np.atleast_2d(labels)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    w = np.broadcast_to(w, (max(w.shape[0], lab.shape[0]), w.shape[1]))
    r = w.shape[0]
    K, d = sums.s.shape[1:]
    unit = bool(np.all(sums.m == 1))            # one vector per sample: ms = s, ss = q, mm = units
    ss = sums.q if unit else np.einsum("nkd,nkd->nk", sums.s, sums.s)
    out = Moments(np.zeros((r, n_classes)), np.zeros((r, n_classes)), np.zeros((r, n_classes, K, d)),
                  np.zeros((r, n_classes, K)), np.zeros((r, n_classes, K)),
                  None if unit else np.zeros((r, n_classes, K, d)), np.zeros((r, n_classes)))
    for c in range(n_classes):
        wc = w * (lab == c)
        out.count[:, c] = wc.sum(axis=1)
        out.units[:, c] = wc @ sums.m
        out.s[:, c] = np.einsum("rn,nkd->rkd", wc, sums.s, optimize=True)
        out.q[:, c] = wc @ sums.q
        out.ss[:, c] = wc @ ss
        out.mm[:, c] = wc @ (sums.m * sums.m)
        if not unit:
            out.ms[:, c] = np.einsum("rn,nkd->rkd", wc, sums.m[:, None, None] * sums.s, optimize=True)
    return out._replace(ms=out.s) if unit else out


def add_moments(*parts: Moments) -> Moments:
    """The moments of the union of disjoint blocks (a block of one vector per sample shares ``s`` as ``ms``)."""
    fields = []
    for name in Moments._fields:
        total = parts[0]._asdict()[name]
        for p in parts[1:]:
            total = total + p._asdict()[name]
        fields.append(total)
    return Moments(*fields)


def jackknife_moments(full: Moments, block: SampleSums, labels: np.ndarray, n_classes: int) -> Moments:
    """Leave-one-out moments (n_block, C, ...) for the samples of ``block``: the full-sample moments
    ``full`` (one replicate) minus each sample's own contribution."""
    oh = np.eye(n_classes)[labels]                                       # (n_block, C)
    ss = np.einsum("nkd,nkd->nk", block.s, block.s)
    m = block.m
    return Moments(full.count - oh, full.units - oh * m[:, None],
                   full.s - oh[:, :, None, None] * block.s[:, None],
                   full.q - oh[:, :, None] * block.q[:, None],
                   full.ss - oh[:, :, None] * ss[:, None],
                   full.ms - oh[:, :, None, None] * (m[:, None, None] * block.s)[:, None],
                   full.mm - oh * (m * m)[:, None])


class Energies(NamedTuple):
    """The decomposition for each replicate: ``value`` (debiased) and ``plugin`` dicts of (r, K) arrays over
    :data:`STATISTICS` (plus the internal inverse ratio), and ``gamma``: for each statistic, (r, C, C, K) its
    derivative Γ_ab with respect to the class-mean inner products μ_aᵀμ_b (what its pairwise noise is made
    of; see the module docstring); ``parts``: the debiased class-mean inner products about the origin
    ``gram`` (r, C, C, K), the residual energy of each class's sample sums ``resid`` (r, C, K) and the
    denominators of the ratios, from which :func:`_estimates` sizes the signal's share of the variance."""

    value: dict
    plugin: dict
    gamma: dict
    parts: dict


def energies(sums: SampleSums, labels: np.ndarray, n_classes: int, weights: np.ndarray) -> Energies:
    """The debiased and plug-in decomposition and separability statistics for each row of ``weights``
    (shape (r, n)): arrays of shape (r, K)."""
    centred, c = centre(sums)
    return energies_from_moments(class_moments(centred, labels, n_classes, weights), shift=c)


def _ratio(a, ga, b, gb):
    """a / b and its Γ from those of a and b (the quotient rule)."""
    f = a / b
    return f, (ga - f[:, None, None] * gb) / b[:, None, None]


def energies_from_moments(mo: Moments, shift: np.ndarray | None = None) -> Energies:
    """The statistics of :func:`energies` from per-class :class:`Moments` with a leading replicate axis.

    ``shift`` (K, d) is the point the moments were taken about (see :func:`centre`); ``structural`` and
    ``total`` are reported about the origin. Where every vector coincides (e.g. the [CLS] embedding, the same
    for every input) there is no spread at all and the separability ratios are 0 by definition.
    """
    C = mo.count.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        M = mo.units.sum(axis=1)                                   # (r,)
        mu_c = mo.s / mo.units[:, :, None, None]                   # (r, C, K, d)
        pi = mo.units / M[:, None]                                 # (r, C)
        mu = np.einsum("rc,rckd->rkd", pi, mu_c)
        sq_c = np.einsum("rckd,rckd->rck", mu_c, mu_c)
        # variance of each class mean: the residual energy of its samples' sums, Σ_i ||s_i − m_i μ_c||²
        resid = mo.ss - 2 * np.einsum("rckd,rckd->rck", mu_c, mo.ms) + sq_c * mo.mm[:, :, None]
        v = resid / mo.units[:, :, None] ** 2 * (mo.count / (mo.count - 1))[:, :, None]
        v = np.maximum(v, 0.0)
        total = mo.q.sum(axis=1) / M[:, None]                      # about the shift
        dev = mu_c - mu[:, None]
        between = np.einsum("rc,rckd,rckd->rk", pi, dev, dev)
        sigma2 = mo.q / mo.units[:, :, None] - sq_c                # (r, C, K)
        within = np.einsum("rc,rck->rk", pi, sigma2)
        spread = between + within
        structural = np.einsum("rkd,rkd->rk", mu, mu)
        if shift is not None:  # back to the origin: x = (x − c) + c
            total = total + 2 * np.einsum("rkd,kd->rk", mu, shift) + np.einsum("kd,kd->k", shift, shift)[None]
            structural = np.einsum("rkd,rkd->rk", mu + shift[None], mu + shift[None])
        degenerate = spread <= 1e-9 * np.maximum(total, 1e-300)
        between = np.where(degenerate, 0.0, between)
        within = np.where(degenerate, 0.0, within)
        v = np.where(degenerate[:, None], 0.0, v)
        # the noise each plug-in energy carries (module docstring), and the debiased energies
        cls_d = between - np.einsum("rc,rck->rk", pi * (1 - pi), v)
        str_d = structural - np.einsum("rc,rck->rk", pi * pi, v)
        win_d = within + np.einsum("rc,rck->rk", pi, v)
        K = total.shape[1]
        eye = np.eye(C)[None, :, :, None]
        g_str = np.broadcast_to((pi[:, :, None] * pi[:, None, :])[..., None], pi.shape + (C, K))
        g_cls = eye * pi[:, :, None, None] - g_str
        g_win = -eye * pi[:, :, None, None] * np.ones((1, 1, 1, K))
        g_tot = np.zeros_like(g_cls)
        value = {"total": total, "structural": str_d, "classification": cls_d, "within": win_d}
        plugin = {"total": total, "structural": structural, "classification": between, "within": within}
        gamma = {"total": g_tot, "structural": g_str, "classification": g_cls, "within": g_win}
        value["fisher_trace"], gamma["fisher_trace"] = _ratio(cls_d, g_cls, win_d, g_win)
        plugin["fisher_trace"] = between / within
        value["structural_share"], gamma["structural_share"] = _ratio(str_d, g_str, total, g_tot)
        plugin["structural_share"] = structural / total
        value[_INVERSE], gamma[_INVERSE] = _ratio(cls_d, g_cls, str_d, g_str)
        plugin[_INVERSE] = between / structural
        value["structural_over_classification"] = np.where(cls_d > 0, str_d / cls_d, np.inf)
        gamma["structural_over_classification"] = gamma[_INVERSE]   # its interval is made on the inverse
        plugin["structural_over_classification"] = structural / between
        if C == 2:
            diff = mu_c[:, 1] - mu_c[:, 0]
            d2 = np.einsum("rkd,rkd->rk", diff, diff)
            den = sigma2[:, 0] + sigma2[:, 1]
            d2_d, den_d = d2 - v[:, 0] - v[:, 1], den + v[:, 0] + v[:, 1]
            g_d2 = np.array([[1.0, -1.0], [-1.0, 1.0]])[None, :, :, None] * np.ones((1, 1, 1, K))
            value["centroid_ratio"], gamma["centroid_ratio"] = _ratio(d2_d, g_d2, den_d, -eye * np.ones((1, 1, 1, K)))
            plugin["centroid_ratio"] = d2 / den
        else:
            value["centroid_ratio"] = plugin["centroid_ratio"] = np.full_like(total, np.nan)
            gamma["centroid_ratio"] = np.zeros_like(g_cls)
        for name in ("fisher_trace", "centroid_ratio", _INVERSE):
            value[name] = np.where(degenerate, 0.0, value[name])
            plugin[name] = np.where(degenerate, 0.0, plugin[name])
            gamma[name] = np.where(degenerate[:, None, None], 0.0, gamma[name])
        mu_o = mu_c + shift[None, None] if shift is not None else mu_c
        gram = np.einsum("rakd,rbkd->rabk", mu_o, mu_o) - eye * v[:, :, None, :]
        parts = {"gram": gram, "resid": resid, "within": win_d, "structural": str_d,
                 "centroid_den": den_d if C == 2 else np.full_like(total, np.nan),
                 "gamma_centroid": g_d2 if C == 2 else np.zeros_like(g_cls)}
    return Energies(value, plugin, gamma, parts)


class Estimates(NamedTuple):
    """One statistic for K series (or K layer differences).

    ``estimate`` (K,) the debiased estimate moved into the statistic's range, ``plugin`` the plug-in value,
    ``se`` its standard error, ``ci_low``/``ci_high`` the interval (``ci_method``), ``bounded`` False where
    the interval has no finite upper end, ``jackknife`` (n, K) the leave-one-out values, ``null`` (P, K) the
    statistic under P label permutations (its chance level) or None, ``p`` (two-sided, differences only)."""

    estimate: np.ndarray
    plugin: np.ndarray
    se: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    ci_method: np.ndarray
    bounded: np.ndarray
    jackknife: np.ndarray
    null: np.ndarray | None = None
    p: np.ndarray | None = None


class EnergyResult(NamedTuple):
    """:func:`energies_with_ci`'s answer: ``series`` and ``deltas`` map each statistic to its
    :class:`Estimates`, over the K series and over the requested (previous, next) series pairs."""

    series: dict
    deltas: dict

    def __getitem__(self, name):  # res["fisher_trace"] is the per-series estimates
        return self.series[name]

    def __iter__(self):
        return iter(self.series)


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


def min_class_count(labels: np.ndarray, n_classes: int) -> int:
    """The smallest class's number of samples: the energy statistics need 3 (two to estimate a class mean's
    variance, and one more to leave out in the jackknife)."""
    return int(np.bincount(np.asarray(labels, dtype=int), minlength=n_classes).min())


MIN_PER_CLASS = 3
#: Samples per block of the pairwise Gram pass (each task holds two blocks of every series).
GRAM_BLOCK = 1024


def energies_with_ci(source, labels: np.ndarray, n_classes: int, *, deltas=(), k_block: int = 8,
                     sample_block: int | None = None, permutations: int = 0, seed: int = 0,
                     level: float = 0.95) -> EnergyResult:
    """Every statistic of the decomposition over the K series of ``source``, debiased, with its standard
    error and interval, and the same for the differences between the series pairs ``deltas``
    ((previous, next) indices: next − previous, e.g. what a layer adds).

    ``source`` is a :class:`SampleSums` or any picklable object with ``n``, ``K`` and ``block(series_slice,
    sample_slice) -> SampleSums`` (e.g. one reading a store). The work is a dask graph (:mod:`engine`) with,
    per block of ``k_block`` series, three rounds of tasks over blocks of ``sample_block`` samples: the
    centre (summed), the class moments under the full sample and every permutation (summed), and the
    leave-one-out values (concatenated); then one round over pairs of sample blocks for the Gram products
    of the pairwise-noise variance (summed). A task holds one or two blocks, so memory depends on the block
    sizes, not on the number of samples.

    ``permutations=P`` also evaluates every statistic under P seeded random relabellings of the samples
    (``Estimates.null``): the level a statistic reaches by chance, about 0 for the debiased statistics.
    Each class needs :data:`MIN_PER_CLASS` samples (``ValueError`` otherwise).
    """
    from .engine import compute, concat, sample_blocks, shared, task, tree_sum

    if isinstance(source, SampleSums):
        source = ArraySource(source)
    n, K = source.n, source.K
    labels = np.asarray(labels)
    if min_class_count(labels, n_classes) < MIN_PER_CLASS:
        counts = np.bincount(labels.astype(int), minlength=n_classes).tolist()
        raise ValueError(f"energy statistics need at least {MIN_PER_CLASS} samples of each class; "
                         f"the classes have {counts}")
    blocks = sample_blocks(n, sample_block)
    rng = np.random.default_rng(seed)
    perm_labels = np.stack([rng.permutation(labels) for _ in range(permutations)]) if permutations else None
    src, lab, perm = shared(source), shared(labels), shared(perm_labels)
    per_series = []
    for k0 in range(0, K, k_block):
        ks = slice(k0, min(k0 + k_block, K))
        total = tree_sum([task(_block_total, src, ks, sl) for sl in blocks])
        moments = tree_sum([task(_block_moments, src, ks, sl, total, lab, n_classes, perm) for sl in blocks])
        jack = concat([task(_block_jackknife, src, ks, sl, total, moments, lab, n_classes) for sl in blocks])
        per_series.append((total, moments, jack))
    means = task(_class_means, *[(t, m) for t, m, _ in per_series])
    pairs = [(k, k) for k in range(K)] + [tuple(map(int, p)) for p in deltas]
    # the Gram products pair every block with every other: larger blocks, fewer reads (the sums are exact,
    # so the result does not depend on the blocks)
    big = sample_blocks(n, max(sample_block or 0, GRAM_BLOCK))
    gram = tree_sum([task(_block_pair_gram, src, K, a, b, means, lab, n_classes, pairs)
                     for i, a in enumerate(big) for b in big[i:]])
    parts = compute(*[task(_block_values, t, m, j) for t, m, j in per_series], gram)
    values, gram = parts[:-1], parts[-1]
    return _estimates(values, gram, pairs, deltas, n, K, level)


def _block_total(source, ks: slice, sl: slice):
    """Pass 1 (summed over blocks): the sum of the vectors and their count, for the centre."""
    b = source.block(ks, sl)
    return b.s.sum(axis=0), np.array(b.m.sum())


def _centre_of(total) -> np.ndarray:
    s, m = total
    return s / m


def _block_moments(source, ks: slice, sl: slice, total, labels, n_classes: int, perm_labels):
    """Pass 2 (summed over blocks): class moments about the centre under the full sample and each
    permutation."""
    b = _shifted(source.block(ks, sl), _centre_of(total))
    ones = np.ones((1, sl.stop - sl.start))
    full = class_moments(b, labels[sl], n_classes, ones)
    permuted = class_moments(b, perm_labels[:, sl], n_classes, ones) if perm_labels is not None else None
    return full, permuted


def _block_jackknife(source, ks: slice, sl: slice, total, moments, labels, n_classes: int):
    """Pass 3 (concatenated): every statistic with each of the block's samples left out."""
    c = _centre_of(total)
    b = _shifted(source.block(ks, sl), c)
    return energies_from_moments(jackknife_moments(moments[0], b, labels[sl], n_classes), shift=c).value


def _class_means(*series_blocks) -> np.ndarray:
    """(C, K, d) every class's mean vector about the origin, from each series block's centre and moments."""
    out = []
    for total, (full, _) in series_blocks:
        out.append(full.s[0] / full.units[0][:, None, None] + _centre_of(total)[None])
    return np.concatenate(out, axis=1)


def _block_pair_gram(source, K: int, a: slice, b: slice, means, labels, n_classes: int, pairs):
    """Pass 4 (summed over pairs of sample blocks a ≤ b): for each series pair (k, k') of ``pairs`` and
    each class pair, Σ over pairs of distinct samples i ∈ a, j ∈ b of (ẽ_iᵀẽ_j)_k (ẽ_iᵀẽ_j)_k', with ẽ
    the residual of a sample's sum about its class mean (``s_i − m_i μ_c``). Both orders of a pair count."""
    every = slice(0, K)

    def residuals(sl):
        blk = source.block(every, sl)
        return blk.s - blk.m[:, None, None] * means[labels[sl]]          # (n_b, K, d)

    ea = residuals(a)
    eb = ea if a == b else residuals(b)
    ks = sorted({k for p in pairs for k in p})
    gram = {k: ea[:, k] @ eb[:, k].T for k in ks}                            # (n_a, n_b) per series
    if a == b:
        for g in gram.values():
            np.fill_diagonal(g, 0.0)
    oh_a = np.eye(n_classes)[labels[a]]
    oh_b = np.eye(n_classes)[labels[b]]
    out = np.zeros((n_classes, n_classes, len(pairs)))
    for p, (k, k2) in enumerate(pairs):
        prod = gram[k] * gram[k2]
        z = oh_a.T @ prod @ oh_b
        out[:, :, p] = z if a == b else z + z.T
    return out


def _block_values(total, moments, jack):
    """The full-sample and permuted statistics of a series block, and its leave-one-out values."""
    c = _centre_of(total)
    full, permuted = moments
    return (energies_from_moments(full, shift=c), (full.units[0], full.count[0]),
            energies_from_moments(permuted, shift=c).value if permuted is not None else None, jack)


def _pair_variance(gamma_k, gamma_k2, units, gram_pair) -> np.ndarray:
    """V̂_Q's term for series k and k' (C, C) Γ's: 2 Σ_ab Γ_ab Γ'_ab Z_ab / (M_a M_b)²."""
    mm = np.outer(units, units) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return 2 * np.sum(gamma_k * gamma_k2 * gram_pair / mm)


def _estimates(values, gram, pairs, deltas, n: int, K: int, level: float) -> EnergyResult:
    """Standard errors and intervals of every statistic and difference from the gathered pieces."""
    from .intervals import bounded_interval, growing_variance_interval, normal_p, scale_interval

    full = {name: np.concatenate([v[0].value[name][0] for v in values]) for name in values[0][0].value}
    plugin = {name: np.concatenate([v[0].plugin[name][0] for v in values]) for name in values[0][0].plugin}
    gamma = {name: np.concatenate([v[0].gamma[name][0] for v in values], axis=-1) for name in values[0][0].gamma}
    units, count = values[0][1]
    parts = {name: np.concatenate([v[0].parts[name][0] for v in values], axis=-1) for name in values[0][0].parts}
    null = ({name: np.concatenate([v[2][name] for v in values], axis=-1) for name in full}
            if values[0][2] is not None else None)
    jack = {name: np.concatenate([v[3][name] for v in values], axis=-1) for name in full}
    index = {p: i for i, p in enumerate(pairs)}

    def variance(name, terms):
        """Variance of Σ sign·stat over ``terms`` [(sign, k)]: (V, V̂_Q, leave-one-out values, the weight
        the data's own signal part V_L gets). V_J is the jackknife variance, V̂_Q the pairwise-noise
        variance it counts twice."""
        jk = sum(sign * jack[name][:, k] for sign, k in terms)
        vj = (n - 1) / n * np.sum((jk - jk.mean()) ** 2)
        vq = 0.0
        for s1, k1 in terms:
            for s2, k2 in terms:
                key = (k1, k2) if (k1, k2) in index else (k2, k1)
                vq += s1 * s2 * _pair_variance(gamma[name][:, :, k1], gamma[name][:, :, k2], units,
                                               gram[:, :, index[key]])
        vq = max(min(vq, vj), 0.0)
        # V = V_Q + V_L with V_L = V_J − 2 V_Q ≥ 0, shrunk towards 0 by its own noise (the positive-part
        # estimator of a non-negative quantity): where there is no signal, V_J's noise alone would inflate it
        dev2 = (jk - jk.mean()) ** 2
        noise = (n - 1) / n * np.sqrt(n * np.var(dev2))
        vl = vj - 2 * vq
        w = max(0.0, 1.0 - noise ** 2 / vl ** 2) if vl > 0 else 0.0
        # that noise is the pairwise part's: where V_J holds none of it (a plain mean) V_L is not shrunk
        w = 1.0 - (1.0 - w) * min(2 * vq / vj, 1.0) if vj > 0 else w
        return vq + w * vl, vq, jk, w

    def signal_slope(base_gamma, base_value, k) -> float:
        """κ₀: the growth of a base energy's variance per unit of it, were the signal's direction as
        spread over the within-class variance as the noise is (module docstring, "the signal's variance")."""
        n_a = count
        tr2 = np.diag(gram[:, :, index[(k, k)]]) / (n_a * (n_a - 1))             # tr Σ_a² of the sums
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = tr2 / (parts["resid"][:, k] / n_a)
            g = base_gamma[:, :, k]
            u2 = np.diag(g @ parts["gram"][:, :, k] @ g)
            vl = np.sum(4 * n_a * rho * u2 / units ** 2)
            slope = vl / base_value
        return float(slope) if np.isfinite(slope) and slope > 0 else 0.0

    def slope_floor(name, k) -> float:
        if name in ("classification", "fisher_trace", _INVERSE):
            base = signal_slope(gamma["classification"], full["classification"][k], k)
            den = {"classification": 1.0, "fisher_trace": parts["within"][k],
                   _INVERSE: parts["structural"][k]}[name]
        elif name == "centroid_ratio":
            d2 = full["centroid_ratio"][k] * parts["centroid_den"][k]
            base, den = signal_slope(parts["gamma_centroid"], d2, k), parts["centroid_den"][k]
        else:   # structural: a class-common mean need not lie along the within-class variance; it is large
            return 0.0   # wherever it matters, and the data's own slope serves
        return base / den if den > 0 else 0.0

    series = {}
    for name in STATISTICS:
        target = _INVERSE if name == "structural_over_classification" else name
        var = [variance(target, [(1, k)]) for k in range(K)]
        se = np.sqrt([v[0] for v in var])
        low, high = RANGES[target] if target in RANGES else (0.0, None)
        if target in SIGNAL_ENERGIES:   # variance grows with the signal
            # the slope prior counts as far as the data do not measure the signal's variance themselves
            floor = np.array([slope_floor(target, k) * (1 - v[3]) for k, v in enumerate(var)])
            est, lo, hi = growing_variance_interval(full[target], se, np.sqrt([v[1] for v in var]), low, level,
                                                    slope_floor=floor)
        elif target in SCALES:          # a mean energy or a share: skewed, and normal on its own scale
            est, lo, hi = scale_interval(full[target], se, level, share=target == "structural_share")
        else:
            est, lo, hi = bounded_interval(full[target], se, low, high, level)
        bounded = np.isfinite(hi)
        if name == "structural_over_classification":   # the interval of classification/structural, inverted
            with np.errstate(divide="ignore", invalid="ignore"):
                ok = full["structural"] > 0
                est, lo, hi = (np.where(ok, full[name], np.nan), np.where(ok, 1 / hi, np.nan),
                               np.where(ok & (lo > 0), 1 / lo, np.where(ok, np.inf, np.nan)))
                bounded = np.isfinite(hi)
                se = np.full(K, np.nan)
        series[name] = Estimates(est, plugin[name], se, lo, hi, np.full(K, "jackknife", dtype=object), bounded,
                                 jack[target], null[name] if null is not None else None)
    out_deltas = {}
    if len(deltas):
        for name in STATISTICS:
            if name == "structural_over_classification":
                continue
            est = np.array([full[name][k1] - full[name][k0] for k0, k1 in deltas])
            var_jk = [variance(name, [(1, k1), (-1, k0)]) for k0, k1 in deltas]
            se = np.sqrt([v[0] for v in var_jk])
            est, lo, hi = bounded_interval(est, se, None, None, level)
            out_deltas[name] = Estimates(est, np.array([plugin[name][k1] - plugin[name][k0] for k0, k1 in deltas]),
                                         se, lo, hi, np.full(len(deltas), "jackknife", dtype=object),
                                         np.isfinite(hi), np.stack([v[2] for v in var_jk], axis=1),
                                         p=normal_p(est, se))
    return EnergyResult(series, out_deltas)
