"""What each intervention does to accuracy, layer skipping with a compensation classifier, and whether the
a-priori skip candidates (chosen from separability, before any ablation) are the layers that skip best.

Every accuracy change is paired: the same bootstrap weights resample the samples under the plain and the
intervened model, and McNemar's mid-p test (a binomial test on the samples that flip) gives its p-value,
corrected across each family of interventions (Holm by default). With any number of classes this is the
paired comparison of accuracies: McNemar's test is the exact test of two paired proportions.

A regression task (STS-B) reports Δ Pearson's r instead (:func:`regression.paired_pearson_change`: paired
bootstrap interval, Williams' test), and its compensation model for a skipped layer is a small MLP regressor.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats as sps

from bertology.store.schema import is_regression

from .bootstrap import Bootstrap, adjust
from .intervals import share_interval
from .regression import ERROR_THRESHOLD, paired_pearson_change, pearson
from .stats import paired_difference

HIDDEN_SIZES = (4, 8, 16)


def paired_change(base_right: np.ndarray, new_right: np.ndarray, boot: Bootstrap) -> dict:
    """Accuracy of the new predictions (Wilson's interval) and its paired change from the base
    (:func:`stats.paired_difference`: percentile CI, McNemar mid-p)."""
    n = len(base_right)
    acc, lo, hi = share_interval(new_right.astype(np.float64), np.ones(n))
    d = paired_difference(new_right.astype(np.float64), base_right.astype(np.float64), boot=boot)
    return dict(accuracy=float(acc), accuracy_ci_low=float(lo), accuracy_ci_high=float(hi),
                estimate=d["estimate"], ci_low=d["ci_low"], ci_high=d["ci_high"], ci_method=d["ci_method"],
                p=d["p"], flipped=d["discordant"], n=n)


def _change(base_pred: np.ndarray, new_pred: np.ndarray, y: np.ndarray, boot: Bootstrap, regression: bool,
            prefix: str = "") -> dict:
    """The new predictions' score and its paired change from the base's: accuracy (``delta_accuracy``) or a
    regression's Pearson's r (``delta_pearson``), with ``baseline_*`` beside it."""
    if regression:
        row = paired_pearson_change(base_pred, new_pred, y, boot)
        return dict(statistic=f"delta_{prefix}pearson", baseline_pearson=pearson(base_pred, y), **row)
    base = base_pred == y
    return dict(statistic=f"delta_{prefix}accuracy", baseline_accuracy=float(base.mean()),
                **paired_change(base, new_pred == y, boot))


def intervention_effects(sw: xr.Dataset, boot: Bootstrap, correction: str = "holm") -> pd.DataFrame:
    """Per intervention: accuracy, Δ accuracy from the plain model (``statistic`` ``delta_accuracy``) with CI,
    McNemar mid-p and ``p_adj`` corrected within its family (``kind``); a regression's Δ Pearson's r."""
    y = sw["label"].values
    pred = sw["pred"].values
    base = pred[list(sw["intervention"].values).index("none")]
    rows = []
    for k, name in enumerate(sw["intervention"].values):
        if name == "none":
            continue
        rows.append(dict(intervention=name, kind=str(sw["kind"].values[k]), layer=int(sw["layer"].values[k]),
                         head=int(sw["head"].values[k]) or None,
                         **_change(base, pred[k], y, boot, is_regression(sw.attrs))))
    df = pd.DataFrame(rows)
    df["p_adj"] = np.nan
    for _, idx in df.groupby("kind").groups.items():
        df.loc[idx, "p_adj"] = adjust(df.loc[idx, "p"].to_numpy(), correction)
    return df


def _mlp(h: int, seed: int, regression: bool = False):
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    kind = MLPRegressor if regression else MLPClassifier
    return make_pipeline(StandardScaler(), kind(hidden_layer_sizes=(h,), max_iter=600, random_state=seed))


def compensate(x_train: np.ndarray, y_train: np.ndarray, x_dev: np.ndarray, sizes=HIDDEN_SIZES,
               seed: int = 0, regression: bool = False) -> tuple[int, np.ndarray, dict[int, float]]:
    """The compensation classifier: a one-hidden-layer MLP on the final [CLS] of a layer-skipped model (a
    regression's: an MLP regressor of the score).

    The hidden size (from ``sizes``) is chosen on a seeded 20% validation part of train, then refitted on
    all of train. Returns (chosen size, dev predictions, validation accuracy (a regression's: Pearson's r)
    per size)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    rng = np.random.default_rng(seed)
    val = np.zeros(len(y_train), dtype=bool)
    val[rng.permutation(len(y_train))[: max(1, len(y_train) // 5)]] = True
    scores = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for h in sizes:
            m = _mlp(h, seed, regression).fit(x_train[~val], y_train[~val])
            got = m.predict(x_train[val])
            scores[h] = pearson(got, y_train[val]) if regression else float(np.mean(got == y_train[val]))
        best = max(sizes, key=lambda h: (scores[h], -h))       # ties: the smaller classifier
        pred = _mlp(best, seed, regression).fit(x_train, y_train).predict(x_dev)
    return best, pred, scores


def layer_skip(sw: xr.Dataset, boot: Bootstrap, candidates: pd.DataFrame | None = None, seed: int = 0,
               correction: str = "holm", sizes=HIDDEN_SIZES) -> pd.DataFrame:
    """Finding 1's layout, per skipped layer (``intervention`` ``skip:l``; and ``none``, ``layer`` NULL: nothing
    skipped, the compensation classifier's control):
    baseline accuracy, accuracy of the skipped model with the original head, accuracy with the compensation
    classifier, its Δ from the baseline (CI, McNemar mid-p, corrected), FLOPs and wall time saved, and
    whether the layer was an a-priori skip candidate."""
    y = sw["label"].values
    names = list(sw["intervention"].values)
    pred = sw["pred"].values
    regression = is_regression(sw.attrs)
    metric = "pearson" if regression else "accuracy"
    base = pred[names.index("none")]
    flops, wall = sw["flops"].values, sw["wall_seconds"].values
    cand = set()
    if candidates is not None and len(candidates):
        cand = set(candidates.loc[candidates["candidate"].astype(bool), "layer"].astype(int))
    rows = []
    for k, skip in enumerate(sw["skip"].values.astype(int)):     # 0 first, then the swept layers
        size, comp, scores = compensate(sw["train_cls_final"].values[k], sw["train_label"].values,
                                        sw["cls_final"].values[k], sizes, seed, regression)
        skipped = base if skip == 0 else pred[names.index(f"skip:{skip}")]
        row = _change(base, comp, y, boot, regression, prefix="compensated_")
        rows.append(dict(layer=int(skip) if skip else None, intervention=f"skip:{skip}" if skip else "none",
                         statistic=row.pop("statistic"), **{f"baseline_{metric}": row.pop(f"baseline_{metric}")},
                         **{f"skipped_{metric}": pearson(skipped, y) if regression else float((skipped == y).mean())},
                         **{f"compensated_{metric}": row.pop(metric),
                            "compensated_ci_low": row.pop(f"{metric}_ci_low"),
                            "compensated_ci_high": row.pop(f"{metric}_ci_high")},
                         hidden_units=size, **{f"validation_{metric}_h{h}": s for h, s in scores.items()}, **row,
                         flops_saved=float(1 - flops[k] / flops[0]), wall_saved=float(1 - wall[k] / wall[0]),
                         apriori_candidate=bool(skip in cand)))
    df = pd.DataFrame(rows)
    df["p_adj"] = np.nan
    real = df["layer"].notna()
    df.loc[real, "p_adj"] = adjust(df.loc[real, "p"].to_numpy(), correction)
    return df


def apriori_validation(skip: pd.DataFrame, separability: pd.DataFrame, statistic: str = "fisher_trace",
                       n_layers: int | None = None) -> pd.DataFrame:
    """Did separability pick the right layer? The a-priori candidate(s) against the best actual skip (the
    layer whose skipping loses least: original head and compensated), and the Spearman correlation between
    each layer's Δ separability and the accuracy change its skip causes.

    Both need every layer skipped: when the sweep skipped only some layers (``n_layers`` says how many the
    model has), the best of the swept layers is reported but ``top1_hit`` is left undefined (NA)."""
    s = skip[skip["layer"].notna()]
    d = separability[(separability["statistic"] == f"delta_{statistic}") & (separability["pooling"] == "cls")]
    d = d.set_index("layer")["estimate"].reindex(s["layer"])
    cand = sorted(s.loc[s["apriori_candidate"], "layer"].astype(int))
    rows = []
    metric = "pearson" if "baseline_pearson" in s else "accuracy"
    for which, col in (("original_head", f"skipped_{metric}"), ("compensated", f"compensated_{metric}")):
        change = s[col].to_numpy() - s[f"baseline_{metric}"].to_numpy()
        best = int(s["layer"].to_numpy()[np.argmax(change)])
        ok = np.isfinite(d.to_numpy())
        x, yv = d.to_numpy()[ok], change[ok]
        varied = ok.sum() >= 3 and np.ptp(x) > 0 and np.ptp(yv) > 0     # else the correlation is undefined
        rho, p = sps.spearmanr(x, yv) if varied else (np.nan, np.nan)
        every_layer = n_layers is None or len(s) == n_layers
        rows.append(dict(accuracy=which, candidates=",".join(map(str, cand)), best_skip=best,
                         layers_swept=",".join(map(str, s["layer"].astype(int))),
                         top1_hit=(best in cand) if every_layer else pd.NA,
                         statistic=f"spearman_delta_{statistic}_vs_{metric}_change",
                         estimate=float(rho), p=float(p), n=int(ok.sum())))
    return pd.DataFrame(rows)


def _null_zero(values: np.ndarray) -> pd.arrays.IntegerArray:
    """The sweep's layer (head) numbers with its 0 (no layer: the plain model; no single head) as NULL."""
    return pd.arrays.IntegerArray(values.astype(np.int64), values == 0)


def prediction_rows(sw: xr.Dataset, threshold: float = ERROR_THRESHOLD) -> pd.DataFrame:
    """One row per sample and intervention: the prediction, whether it is right, whether it flipped (a
    regression's prediction is right within ``threshold`` of the gold score; it flips when that changes)."""
    y = sw["label"].values
    pred = sw["pred"].values
    names = list(sw["intervention"].values)
    base = pred[names.index("none")]
    k, n = pred.shape
    if is_regression(sw.attrs):
        right = np.abs(pred - y[None]) <= threshold
        flipped = right != right[names.index("none")][None]
    else:
        right, flipped = pred == y[None], pred != base[None]
    return pd.DataFrame({
        "intervention": np.repeat(np.array(names, dtype=object), n),
        "kind": np.repeat(sw["kind"].values.astype(object), n),
        "layer": _null_zero(np.repeat(sw["layer"].values, n)), "head": _null_zero(np.repeat(sw["head"].values, n)),
        "sample_index": np.tile(np.arange(n), k), "sample_id": np.tile(sw["sample"].values, k),
        "pred": pred.ravel(), "correct": right.ravel(), "flipped": flipped.ravel(),
    })


def analyze(ctx) -> dict:
    """The registry's entry: what each intervention of the store's sweep costs, each layer skipped with and
    without compensation, and the a-priori skip choice against the actual skips."""
    from bertology import BertologyError
    from bertology.store.sweep import open_sweep

    from .separability import skip_statistic

    ds, cfg = ctx.ds, ctx.cfg
    sw = open_sweep(ctx.sweep)
    if sw.attrs["model_sha256"] != ds.attrs["model_sha256"] or list(sw["sample"].values) != list(ds["sample"].values):
        raise BertologyError(f"{ctx.sweep}: intervention sweep of another checkpoint or other samples than {ctx.store}")
    candidates = ctx.tables.get("skip_candidates")
    skip = layer_skip(sw, ctx.boot, candidates, seed=cfg.seed, correction=cfg.correction)
    tables = {"interventions": intervention_effects(sw, ctx.boot, cfg.correction), "layer_skip": skip,
              "intervention_predictions": prediction_rows(sw, cfg.error_threshold)}
    if candidates is None:
        from .requirements import skipped

        skipped("apriori_validation: it needs the a-priori skip candidates, which were skipped (see above)")
    else:
        statistic = skip_statistic(cfg.skip_statistic, ctx.caps.regression, cfg.bins)
        tables["apriori_validation"] = apriori_validation(skip, ctx.tables["separability"], statistic,
                                                          n_layers=int(sw.attrs["n_layers"]))
    return tables
