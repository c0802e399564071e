"""Coverage of every interval kind bertology emits, by simulation from populations with known values.

    python bench/coverage.py                      # the full suite: ≥ 500 data sets per regime (≈ 40 min, 2 cores)
    python bench/coverage.py --datasets 100 --quick
    python bench/coverage.py --only energy --out bench/results/coverage.json

Each regime draws data sets from a population whose statistic is known in closed form, runs the same
function ``bertology analyze`` runs (the notebook API of :mod:`bertology.analysis.stats` and the engine
under it), and counts how often the 95% interval holds the population value. It also checks that no
interval leaves the statistic's range, that each estimate lies inside its own interval, and that p-values
are uniform under the null (Kolmogorov–Smirnov). The target is 93–97% coverage; a regime outside it is
printed as a miss, never tuned away: RESULTS.md and the README list each one with its reason.

Regimes:

- ``energy``: separability and FFN energies of one vector per sample (the [CLS] vector) and their layer
  differences: k = 2 and 3 classes, balanced and unbalanced, d/n = 0.2, 1 and 4 (n = 200), signal none,
  weak (population fisher_trace 0.01) and strong (0.1), isotropic and decaying (λ_j ∝ 1/j) covariance;
- ``tokens``: the same for sums over a sentence's tokens (the token-level FFN decomposition), sentences of
  5–30 correlated tokens;
- ``means``: Poisson-bootstrap intervals of means and ratios of per-sample sums (attention features,
  token-strength shares, error shares): skewed values and rare and common shares, n = 30, 100 and 300;
- ``paired``: paired accuracy differences (interventions) and McNemar's test;
- ``probe``: the cross-validated probe's accuracy, against the expected accuracy of a probe trained on
  four fifths of n samples (what a 5-fold CV estimate estimates).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats as sps

LEVEL = 0.95
TARGET = (0.93, 0.97)


# ---------------------------------------------------------------------------------------------------------
# energies: populations with known decomposition


@dataclass(frozen=True)
class EnergyRegime:
    k: int = 2
    balance: str = "balanced"        # or "unbalanced"
    ratio: float = 1.0               # d / n
    signal: str = "weak"             # none | weak | strong
    spectrum: str = "isotropic"      # or "decaying"
    n: int = 200
    tokens: bool = False             # sums over a sentence's tokens instead of one vector per sample

    @property
    def d(self) -> int:
        return int(round(self.ratio * self.n))

    @property
    def name(self) -> str:
        return (f"k={self.k} {self.balance} d/n={self.ratio:g} signal={self.signal} {self.spectrum}"
                + (" tokens" if self.tokens else ""))

    @property
    def shares(self) -> np.ndarray:
        if self.balance == "balanced":
            return np.full(self.k, 1.0 / self.k)
        return np.array([0.7, 0.3]) if self.k == 2 else np.array([0.6, 0.3, 0.1])

    @property
    def fisher(self) -> float:
        return {"none": 0.0, "weak": 0.01, "strong": 0.1}[self.signal]


SIGNAL_NAMES = ("none", "weak", "strong")
STRUCTURAL_OVER_TOTAL = 0.5     # the class-common mean carries half the energy of series 1


class EnergyPopulation:
    """Three series of one regime: series 0 (``x``), series 1 with the same population statistics
    (x' = (x + z) / √2, z independent with class means (√2 − 1)·μ_c: every Δ is 0) and series 2 with twice
    the between-class energy (z's class means μ_c): known Δ.

    Every data set draws its own class-mean directions and class-common offset, as normal vectors with the
    within-class covariance (signal spread over the dimensions as the noise is), scaled to the regime's
    population values: coverage is averaged over the directions a signal can take."""

    def __init__(self, regime: EnergyRegime, seed: int = 0):
        self.r = regime
        d = regime.d
        lam = np.ones(d) if regime.spectrum == "isotropic" else 1.0 / np.arange(1, d + 1)
        self.scale = np.sqrt(lam * d / lam.sum())                      # tr Σ = d
        if regime.tokens:   # a token = sentence effect (60% of the variance) + its own noise (40%)
            self.sentence_scale, self.token_scale = np.sqrt(0.6) * self.scale, np.sqrt(0.4) * self.scale
        self.c_same = np.sqrt(2.0) - 1.0

    def directions(self, rng) -> tuple[np.ndarray, np.ndarray]:
        """Class means (k, d) with Σ π_c ||μ_c − μ̄||² = fisher · tr Σ and μ̄ = 0, and an offset carrying
        half of series 0's energy."""
        r = self.r
        pi, d, k = r.shares, r.d, r.k
        dirs = rng.normal(size=(k, d)) * self.scale
        dirs -= pi @ dirs
        b = np.sum(pi * np.sum(dirs ** 2, axis=1))
        mu = dirs * np.sqrt(r.fisher * d / b) if r.fisher > 0 else np.zeros((k, d))
        off = rng.normal(size=d) * self.scale
        energy = d * (1 + r.fisher)                                    # within + between of series 0
        offset = off / np.linalg.norm(off) * np.sqrt(STRUCTURAL_OVER_TOTAL / (1 - STRUCTURAL_OVER_TOTAL) * energy)
        return mu, offset

    def draw(self, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One data set: labels (n,), per-sample sums (n, 3, d), sums of squared norms (n, 3), token counts."""
        r = self.r
        self.mu, self.offset = self.directions(rng)
        y = rng.choice(r.k, size=r.n, p=r.shares)
        while np.bincount(y, minlength=r.k).min() < 3:                  # the estimators' minimum
            y = rng.choice(r.k, size=r.n, p=r.shares)
        mean = self.offset + self.mu[y]
        zmean_same = self.c_same * (self.offset + self.mu[y])
        zmean_more = self.offset * self.c_same + self.mu[y]            # twice the between energy, same offset
        if not r.tokens:
            x = mean + rng.normal(size=(r.n, r.d)) * self.scale
            z = rng.normal(size=(r.n, r.d)) * self.scale
            s = np.stack([x, (x + z + zmean_same) / np.sqrt(2), (x + z + zmean_more) / np.sqrt(2)], axis=1)
            return y, s, np.einsum("nkd,nkd->nk", s, s), np.ones(r.n)
        m = rng.integers(5, 31, size=r.n)
        out, q = np.zeros((r.n, 3, r.d)), np.zeros((r.n, 3))
        for i in range(r.n):
            def tokens():
                return (rng.normal(size=r.d) * self.sentence_scale
                        + rng.normal(size=(m[i], r.d)) * self.token_scale)
            x, z = mean[i] + tokens(), tokens()
            for k, t in enumerate((x, (x + z + zmean_same[i]) / np.sqrt(2), (x + z + zmean_more[i]) / np.sqrt(2))):
                out[i, k], q[i, k] = t.sum(0), np.sum(t * t)
        return y, out, q, m.astype(float)

    def truth(self) -> dict[str, np.ndarray]:
        """Population values of every statistic for the 3 series of the last data set drawn."""
        r = self.r
        pi = r.shares
        W = float(r.d)
        out: dict[str, list] = {}
        for mu in (self.mu, self.mu, self.mu * np.sqrt(2)):
            B = float(np.sum(pi * np.sum(mu ** 2, axis=1)))
            S = float(np.sum((self.offset + pi @ mu) ** 2))
            T = S + B + W
            vals = {"total": T, "structural": S, "classification": B, "within": W, "fisher_trace": B / W,
                    "structural_share": S / T,
                    "structural_over_classification": S / B if B > 0 else np.inf}
            if r.k == 2:
                vals["centroid_ratio"] = float(np.sum((mu[1] - mu[0]) ** 2)) / (2 * W)
            for key, v in vals.items():
                out.setdefault(key, []).append(v)
        return {key: np.array(v) for key, v in out.items()}


def energy_regimes(tokens: bool = False) -> list[EnergyRegime]:
    if tokens:
        return [EnergyRegime(2, "balanced", ratio, signal, "isotropic", n=200, tokens=True)
                for ratio in (0.2, 1.0, 4.0) for signal in SIGNAL_NAMES]
    return [EnergyRegime(k, bal, ratio, signal, spec)
            for k in (2, 3) for bal in ("balanced", "unbalanced") for ratio in (0.2, 1.0, 4.0)
            for signal in SIGNAL_NAMES for spec in ("isotropic", "decaying")]


@dataclass
class Tally:
    """Per statistic: data sets, covered, out of range, estimate outside its interval; p-values under the null."""

    covered: dict = field(default_factory=dict)
    count: dict = field(default_factory=dict)
    out_of_range: dict = field(default_factory=dict)
    outside: dict = field(default_factory=dict)
    null_p: dict = field(default_factory=dict)

    def add(self, name, lo, hi, est, truth, low=None, high=None):
        lo, hi, est = float(lo), float(hi), float(est)
        self.count[name] = self.count.get(name, 0) + 1
        self.covered[name] = self.covered.get(name, 0) + int(lo <= truth <= hi)
        bad = (low is not None and lo < low - 1e-12) or (high is not None and hi > high + 1e-12)
        self.out_of_range[name] = self.out_of_range.get(name, 0) + int(bad)
        self.outside[name] = self.outside.get(name, 0) + int(not (lo <= est <= hi))

    def p(self, name, p):
        self.null_p.setdefault(name, []).append(float(p))

    def summary(self) -> dict:
        out = {}
        for name, c in self.count.items():
            out[name] = {"coverage": self.covered[name] / c, "datasets": c,
                         "out_of_range": self.out_of_range[name], "estimate_outside": self.outside[name]}
        for name, ps in self.null_p.items():
            ks = sps.kstest(ps, "uniform")
            out.setdefault(name, {})["null_p_ks"] = float(ks.pvalue)
            out[name]["null_p_below_05"] = float(np.mean(np.asarray(ps) <= 0.05))
        return out


RANGE = {"total": (0, None), "structural": (0, None), "classification": (0, None), "within": (0, None),
         "fisher_trace": (0, None), "centroid_ratio": (0, None), "structural_share": (0, 1),
         "structural_over_classification": (0, None)}
DELTA_STATS = ("fisher_trace", "centroid_ratio", "classification")


def run_energy(regime: EnergyRegime, datasets: int, seed: int = 0) -> dict:
    """Coverage of every energy statistic and Δ in one regime."""
    import dask

    from bertology.analysis.moments import SampleSums, energies_with_ci

    pop = EnergyPopulation(regime, seed)
    tally = Tally()
    rng = np.random.default_rng(seed + 1)
    with dask.config.set(scheduler="sync"):
        for _ in range(datasets):
            y, s, q, m = pop.draw(rng)
            truth = pop.truth()
            sums = SampleSums(s, q, m)
            res = energies_with_ci(sums, y, regime.k, deltas=[(0, 1), (0, 2)], level=LEVEL)
            for name, e in res.series.items():
                if name in truth:   # series 0: the others are correlated with it, and reach the same regimes
                    tally.add(name, e.ci_low[0], e.ci_high[0], e.estimate[0], truth[name][0], *RANGE[name])
            for name in DELTA_STATS:
                if name not in truth:
                    continue
                e = res.deltas[name]
                tally.add(f"delta_{name}", e.ci_low[0], e.ci_high[0], e.estimate[0], 0.0)
                tally.p(f"delta_{name}", e.p[0])
                if regime.signal != "none":
                    tally.add(f"delta_{name}", e.ci_low[1], e.ci_high[1], e.estimate[1],
                              truth[name][2] - truth[name][0])
    return tally.summary()


# ---------------------------------------------------------------------------------------------------------
# means and shares over samples (Poisson-bootstrap percentile; Wilson on the clustered effective n)


MEAN_SIZES = (30, 100, 300)


def _clustered(rng, n, p=None):
    """Sentences of 5–30 tokens: per-sentence sums of a token value (sentence effect + token noise, mean
    10) or, with ``p``, counts of tokens in a category whose rate varies by sentence (Beta, mean p)."""
    m = rng.integers(5, 31, size=n).astype(float)
    if p is None:
        total = m * (10 + rng.normal(size=n)) + np.sqrt(m) * rng.normal(size=n)
        return total, m
    rate = rng.beta(4 * p / (1 - p) if p < 0.5 else 4, 4 if p < 0.5 else 4 * (1 - p) / p, size=n)
    return rng.binomial(m.astype(int), rate).astype(float), m


def mean_regimes():
    out = []
    for n in MEAN_SIZES:
        out += [("mean of lognormal values", n, None), ("mean of Beta(2,5) values", n, None),
                ("token mean over sentences", n, None)]
        out += [("share, one 0/1 per sample", n, p) for p in (0.02, 0.1, 0.5)]
        out += [("share of tokens over sentences", n, p) for p in (0.05, 0.3)]
    return out


def run_mean(kind: str, n: int, p, datasets: int, resamples: int = 1000, seed: int = 0) -> dict:
    from bertology.analysis.bootstrap import Bootstrap, percentile_ci
    from bertology.analysis.intervals import share_interval

    rng = np.random.default_rng(seed)
    tally = Tally()
    for r in range(datasets):
        boot = Bootstrap.draw(n, resamples, seed=r)
        if kind == "mean of lognormal values":
            num, den, truth = rng.lognormal(0, 1, n), np.ones(n), float(np.exp(0.5))
        elif kind == "mean of Beta(2,5) values":
            num, den, truth = rng.beta(2, 5, n), np.ones(n), 2 / 7
        elif kind == "token mean over sentences":
            (num, den), truth = _clustered(rng, n), 10.0
        elif kind == "share, one 0/1 per sample":
            num, den, truth = (rng.random(n) < p).astype(float), np.ones(n), p
        else:
            (num, den), truth = _clustered(rng, n, p), p
        est, bs = boot.ratio(num, den)
        lo, hi = percentile_ci(bs)
        share = kind.startswith("share")
        tally.add("percentile", lo, hi, est, truth, *((0, 1) if share else (None, None)))
        if share:
            est, lo, hi = share_interval(num, den)
            tally.add("wilson", lo, hi, est, truth, 0, 1)
    return tally.summary()


# ---------------------------------------------------------------------------------------------------------
# paired accuracy differences (interventions, layer-to-layer probe accuracy)


def paired_regimes():
    return [(n, disc, frac) for n in (100, 300) for disc in (0.04, 0.15) for frac in (0.0, 0.5)]


def run_paired(n: int, disc: float, frac: float, datasets: int, seed: int = 0) -> dict:
    """A and B right on 80% of samples; a share ``disc`` of the samples is discordant, and A wins
    (1 + frac)/2 of those: the true difference is disc · frac."""
    from bertology.analysis.bootstrap import Bootstrap
    from bertology.analysis.stats import paired_difference   # what interventions.paired_change runs

    rng = np.random.default_rng(seed)
    tally = Tally()
    truth = disc * frac
    probs = [0.8 - disc / 2, disc * (1 + frac) / 2, disc * (1 - frac) / 2]
    probs.append(1 - sum(probs))                                     # both right, A only, B only, neither
    exact_below = 0
    for r in range(datasets):
        cell = rng.choice(4, size=n, p=probs)
        a = np.isin(cell, (0, 1)).astype(float)
        b = np.isin(cell, (0, 2)).astype(float)
        row = paired_difference(a, b, boot=Bootstrap.draw(n, 1000, seed=r))
        tally.add("delta_accuracy", row["ci_low"], row["ci_high"], row["estimate"], truth, -1, 1)
        if frac == 0:
            tally.p("mcnemar_midp", row["p"])
            n01, n10 = int(np.sum(cell == 1)), int(np.sum(cell == 2))
            exact = 1.0 if n01 + n10 == 0 else sps.binomtest(min(n01, n10), n01 + n10, 0.5).pvalue
            exact_below += exact <= 0.05
    out = tally.summary()
    if frac == 0:
        out["mcnemar_exact"] = {"null_p_below_05": exact_below / datasets}
    return out


# ---------------------------------------------------------------------------------------------------------
# the cross-validated probe


def probe_regimes():
    return [(n, d) for n in (100, 300) for d in (20, 100)]


def run_probe(n: int, d: int, datasets: int, seed: int = 0) -> dict:
    """Two Gaussian classes 1.2 apart (in units of the noise) along one axis; the truth is the expected
    accuracy of a probe trained on 4n/5 samples (Monte Carlo over 200 training sets, 20,000 test samples)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from bertology.analysis.stats import separability

    rng = np.random.default_rng(seed)
    shift = np.zeros(d)
    shift[0] = 1.2

    def draw(m):
        y = np.arange(m) % 2
        return rng.normal(size=(m, d)) + np.outer(y, shift), y

    xt, yt = draw(20_000)
    accs = []
    for _ in range(200):
        x, y = draw(int(n * 4 / 5))
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x, y)
        accs.append(np.mean(model.predict(xt) == yt))
    truth = float(np.mean(accs))
    tally = Tally()
    for r in range(datasets):
        x, y = draw(n)
        row = separability(x, y, probe=True, seed=r).set_index("statistic").loc["probe_accuracy"]
        tally.add("probe_accuracy", row["ci_low"], row["ci_high"], row["estimate"], truth, 0, 1)
    out = tally.summary()
    out["probe_accuracy"]["truth"] = truth
    return out


ENERGY_COLUMNS = ("fisher_trace", "centroid_ratio", "classification", "structural", "within", "total",
                  "structural_share", "structural_over_classification", "delta_fisher_trace",
                  "delta_centroid_ratio", "delta_classification")
SHORT = {"fisher_trace": "fisher", "centroid_ratio": "centroid", "classification": "class.",
         "structural": "struct.", "within": "within", "total": "total", "structural_share": "share",
         "structural_over_classification": "struct./class.", "delta_fisher_trace": "Δ fisher",
         "delta_centroid_ratio": "Δ centroid", "delta_classification": "Δ class."}


def _cell(v: dict | None) -> str:
    if not v or "coverage" not in v:
        return "–"
    c = v["coverage"]
    mark = "" if TARGET[0] <= c <= TARGET[1] else ("**" if c < TARGET[0] else "*")
    return f"{mark}{100 * c:.1f}{mark}"


def markdown(results: dict) -> str:
    """The coverage tables (percent of data sets whose 95% interval held the population value; ``*x*``
    above 97%, ``**x**`` below 93%), one per kind."""
    out = []
    energy = {k: v for k, v in results.items() if k.startswith(("energy:", "tokens:"))}
    if energy:
        cols = [c for c in ENERGY_COLUMNS if any(c in v for v in energy.values())]
        out.append("| regime | " + " | ".join(SHORT[c] for c in cols) + " | KS p, Δ under the null |")
        out.append("|---" * (len(cols) + 2) + "|")
        for name, v in energy.items():
            ks = v.get("delta_fisher_trace", {}).get("null_p_ks")
            out.append(f"| {name} | " + " | ".join(_cell(v.get(c)) for c in cols)
                       + (f" | {ks:.2f} |" if ks is not None else " | – |"))
        bad = sum(v.get("out_of_range", 0) for r in energy.values() for v in r.values() if isinstance(v, dict))
        outside = sum(v.get("estimate_outside", 0) for r in energy.values() for v in r.values() if isinstance(v, dict))
        out.append(f"\nIntervals outside the statistic's range: {bad}; estimates outside their own interval: "
                   f"{outside}.\n")
    for kind, cols in (("means", ("percentile", "wilson")), ("paired", ("delta_accuracy",)),
                       ("probe", ("probe_accuracy",))):
        rows = {k: v for k, v in results.items() if k.startswith(kind + ":")}
        if not rows:
            continue
        extra = {"paired": " | mid-p: KS p, P(p ≤ 0.05) | exact: P(p ≤ 0.05) |", "probe": " | truth |"}.get(kind, " |")
        out.append("| regime | " + " | ".join(cols) + extra)
        out.append("|---" * (len(cols) + 1 + extra.count("|") - 1) + "|")
        for name, v in rows.items():
            line = f"| {name.split(': ', 1)[1]} | " + " | ".join(_cell(v.get(c)) for c in cols)
            if kind == "paired":
                m = v.get("mcnemar_midp", {})
                e = v.get("mcnemar_exact", {})
                line += (f" | {m['null_p_ks']:.2f}, {m['null_p_below_05']:.3f} | {e['null_p_below_05']:.3f} |"
                         if m else " | – | – |")
            elif kind == "probe":
                line += f" | {v['probe_accuracy']['truth']:.3f} |"
            else:
                line += " |"
            out.append(line)
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", type=int, default=500, help="simulated data sets per regime (default 500)")
    ap.add_argument("--only", nargs="*", choices=KINDS, default=list(KINDS))
    ap.add_argument("--out", default="bench/results/coverage.json")
    ap.add_argument("--quick", action="store_true", help="a few regimes of each kind")
    ap.add_argument("--markdown", metavar="JSON", help="only print the tables of an earlier run's JSON")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return 0
    results = {}
    for kind in args.only:
        for name, fn in KINDS[kind](args.quick):
            t = time.time()
            results[f"{kind}: {name}"] = res = fn(args.datasets)
            miss = {k: round(v["coverage"], 3) for k, v in res.items()
                    if "coverage" in v and not TARGET[0] <= v["coverage"] <= TARGET[1]}
            print(f"{kind}: {name} ({time.time() - t:.0f} s)" + (f"  outside 93–97%: {miss}" if miss else ""),
                  flush=True)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(results, indent=1))
    Path(args.out).with_suffix(".md").write_text(markdown(results) + "\n")
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.md')}")
    return 0


def _energy_kind(tokens):
    def regimes(quick):
        regs = energy_regimes(tokens)
        if quick:
            regs = [r for r in regs if r.k == 2 and r.balance == "balanced" and r.spectrum == "isotropic"]
        return [(r.name, lambda m, r=r: run_energy(r, m)) for r in regs]
    return regimes


KINDS = {
    "energy": _energy_kind(False),
    "tokens": _energy_kind(True),
    "means": lambda quick: [(f"{kind}, n={n}" + (f", p={p}" if p is not None else ""),
                             lambda m, a=(kind, n, p): run_mean(*a, m))
                            for kind, n, p in mean_regimes() if not quick or n == 100],
    "paired": lambda quick: [(f"n={n}, discordant {disc}, difference {disc * frac:g}",
                              lambda m, a=(n, disc, frac): run_paired(*a, m))
                             for n, disc, frac in paired_regimes() if not quick or n == 100],
    "probe": lambda quick: [(f"n={n}, d={d}", lambda m, a=(n, d): run_probe(*a, m))
                            for n, d in probe_regimes() if not quick or (n, d) == (100, 20)],
}


if __name__ == "__main__":
    sys.exit(main())
