"""Coverage of the interval over fine-tuning seeds (`bertology across`, :func:`analysis.across.crossed_interval`)
against the textbook alternative, Satterthwaite's pooled degrees of freedom, by simulation.

    .venv/bin/python bench/seed_interval_coverage.py      # → bench/results/seed_interval_coverage.md

A study is S seeds on the same n = 200 sentences; sentence i of seed s scores θ_s + u_i + v_si (θ_s ~ N(0, τ²)
the seed's effect, u_i ~ N(0, σ_u²) the sentence's, shared by every seed, v_si ~ N(0, σ_v²) the seed's own
noise on it). Each seed reports its mean and standard error; the target, the mean over seeds and sentences,
is 0. 20,000 studies per regime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import stats

from bertology.analysis.across import crossed_interval

REGIMES = [(0.5, 1.0, 0.2, "seeds dominate"), (0.3, 1.0, 0.2, "seeds dominate"), (0.1, 1.0, 0.2, "comparable"),
           (0.05, 1.0, 0.2, "shared sentences dominate"), (0.0, 1.0, 0.2, "no seed effect"),
           (0.1, 0.3, 1.0, "each seed's own noise"), (0.05, 0.05, 1.0, "each seed's own noise")]


def study(S: int, n: int, tau: float, shared: float, own: float, reps: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, tau, (reps, S, 1)) + rng.normal(0, shared, (reps, 1, n)) + rng.normal(0, own, (reps, S, n))
    return x.mean(-1), x.std(-1, ddof=1) / np.sqrt(n)


def satterthwaite(est, se, n):
    S = est.shape[-1]
    m, a, b = est.mean(-1), est.var(-1, ddof=1) / S, (se ** 2).mean(-1)
    df = (a + b) ** 2 / (a ** 2 / (S - 1) + b ** 2 / (n - 1))
    half = stats.t.ppf(0.975, df) * np.sqrt(a + b)
    return m - half, m + half


def main() -> str:
    lines = ["# Coverage of the interval over seeds (nominal 95%)", "", __doc__.split("\n\n", 2)[2].strip(), "",
             "| seeds | τ | σ_u | σ_v | regime | crossed interval (bertology) | Satterthwaite |",
             "|---|---|---|---|---|---|---|"]
    for S in (2, 3, 5, 10):
        for k, (tau, su, sv, what) in enumerate(REGIMES):
            est, se = study(S, 200, tau, su, sv, 20000, seed=100 * S + k)
            ci = crossed_interval(est, se, 200)
            ours = np.mean((ci["ci_low"] <= 0) & (0 <= ci["ci_high"]))
            lo, hi = satterthwaite(est, se, 200)
            theirs = np.mean((lo <= 0) & (0 <= hi))
            lines.append(f"| {S} | {tau} | {su} | {sv} | {what} | {ours:.3f} | {theirs:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    text = main()
    out = Path(__file__).parent / "results" / "seed_interval_coverage.md"
    out.write_text(text)
    print(text)
