"""``bertology compare A B --out DIR``: two runs of the same samples, compared sample by sample.

A and B are analysis folders (``bertology analyze --out``); each records its store. The runs may be two
fine-tuning seeds, two checkpoints, two models of equal depth, or the pre-trained and the fine-tuned model.
Every difference is A − B, and every interval is *paired*: the samples are matched by their ids, and one
Poisson-bootstrap weight per sample (keyed by the id and ``seed``, :mod:`bootstrap`) is applied to both runs,
so what the two runs share cancels and the interval measures how they differ on the same sentences.

Tables (``DIR/NAME.parquet``, with ``compare.json`` beside them):

- ``compare_samples``: one row per matched sample: ``sample_id``, the label, and per run the prediction,
  ``correct`` and ``margin`` p(predicted) − p(true) (suffix ``_a``/``_b``); ``flipped``: one run right and the
  other wrong; ``margin_delta`` A − B.
- ``compare_summary``: ``accuracy_a``, ``accuracy_b`` (Wilson intervals), ``delta_accuracy`` (percentile
  interval, McNemar mid-p) and ``delta_mean_margin`` (percentile interval).
- ``compare_layers``: per layer and readout (``probe``, ``centroid``: the layer predictions of
  ``analyze``), each run's accuracy and the paired ``delta_accuracy`` with its McNemar mid-p, corrected
  across layers. Runs of different depth get no per-layer table (said in one line).
- ``compare_interventions``: per intervention both runs' sweeps hold (``skip:l``, ``head:l.h``, …), each
  run's accuracy under it and the paired Δ, corrected across interventions.
- ``compare_heads``: per head and attention feature (Kovaleva's vertical, diagonal, block, self, and the
  attention to [CLS], [SEP], punctuation and other tokens), each run's mean over the samples and the paired
  Δ with its bootstrap interval and p-value (:func:`bootstrap.bootstrap_p`), corrected across heads per
  feature; read from both stores' attention maps (a sample without a value, e.g. ``block`` of one text, is
  left out). And per head and pattern type (``type_vertical``, …, ``type_heterogeneous``: the share of
  samples whose map is of that type, with the analyses' classifier), the paired Δ of the shares.
- ``compare_separability``: per layer, site and statistic (the debiased Fisher trace ratio, centroid ratio
  and between-class energy of [CLS]), each run's estimate and the paired Δ, its jackknife interval and p,
  corrected across layers and sites per statistic: both runs' [CLS] states are one source of series over the
  matched samples, so each leave-one-out drops a sample from both runs at once (:class:`PairedSource`).
- ``compare_ffn``: per layer, vector (``update`` = ln2 − ln1, ``ff``) and part of the FFN decomposition
  (structural, classification, within, total energy, structural share), the same paired Δ.
- ``compare_attribution``: per layer (and the model's mean) and attribution scope, the Δ of the Spearman
  similarity with the previous scope. The analyses keep each run's mean and interval, not the per-sentence
  values, so this Δ is *unpaired* (normal, from the two intervals; ``ci_method`` ``unpaired_normal``):
  conservative where the runs share their sentences.

Samples of A missing from B (or B from A) are refused, unless ``intersect``: then the comparison is made on
the samples both hold, and says how many those are.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bertology import BertologyError
from bertology.store import open_store
from bertology.store.location import locate
from bertology.store.schema import is_regression

from .bootstrap import DEFAULT_RESAMPLES, Bootstrap, adjust, bootstrap_p, percentile_ci
from .confident_errors import margins
from .index.build import analysed_store
from .index.schema import COMPARE_FORMAT, COMPARE_TABLES
from .intervals import CI_LEVEL, normal_p, share_interval, z_value
from .moments import MIN_PER_CLASS, SampleSums, energies_with_ci, min_class_count
from .regression import ERROR_THRESHOLD, NO_BINS, class_codes, paired_pearson_change, pearson
from .stats import paired_difference

READOUTS = ("probe", "centroid")


class Run:
    """One side of a comparison: an analysis folder, its ``analysis.json`` and its store."""

    def __init__(self, folder: str | Path, side: str):
        self.folder = locate(folder)
        info = self.folder / "analysis.json"
        if not info.isfile():
            raise BertologyError(f"{self.folder}: not an analysis folder (no analysis.json); give the --out folder "
                                 f"of `bertology analyze` as {side}")
        self.info = json.loads(info.read_text())
        self.store = analysed_store(self.folder, self.info)
        self.ds = open_store(self.store, dask=False)
        self.ids = np.asarray(self.ds["sample"].values, dtype=np.int64)

    def table(self, name: str) -> pd.DataFrame | None:
        path = self.folder / f"{name}.parquet"
        return pd.read_parquet(io.BytesIO(path.read_bytes())) if path.isfile() else None

    @property
    def regression(self) -> bool:
        return is_regression(self.ds.attrs)

    @property
    def threshold(self) -> float:
        """A regression's error threshold, as the run's analysis used it."""
        return float(self.info.get("config", {}).get("error_threshold", ERROR_THRESHOLD))

    def classes(self, pos, table: str) -> tuple[np.ndarray, int] | None:
        """The class codes of the samples at ``pos`` (a regression's: its analysis's score bins) and their
        number; None, said once, where a regression was analysed without bins."""
        codes = class_codes(self.ds, self.info.get("config", {}).get("bins"))
        if codes is None:
            print(f"bertology compare: skipped {table}: {NO_BINS} (in `bertology analyze`)", file=sys.stderr,
                  flush=True)
            return None
        return codes[0][pos], codes[1]


def match_samples(a: Run, b: Run, intersect: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sample ids both runs hold, and their positions in A's and B's stores; refused when the runs hold
    other samples (unless ``intersect``) or other texts under one id."""
    for key in ("task", "split"):
        if a.ds.attrs.get(key) != b.ds.attrs.get(key):
            raise BertologyError(f"{a.folder} and {b.folder}: runs of another {key} ({a.ds.attrs.get(key)} and "
                                 f"{b.ds.attrs.get(key)}); compare runs of the same samples")
    common = np.intersect1d(a.ids, b.ids)
    only_a, only_b = len(a.ids) - len(common), len(b.ids) - len(common)
    if (only_a or only_b) and not intersect:
        raise BertologyError(f"{a.folder} and {b.folder}: the runs hold different samples ({only_a} only in A, "
                             f"{only_b} only in B, {len(common)} in both); pass --intersect to compare the "
                             f"{len(common)} they share")
    if not len(common):
        raise BertologyError(f"{a.folder} and {b.folder}: no sample in common")
    pos_a, pos_b = (_positions(run.ids, common) for run in (a, b))
    for var in ("text_a", "text_b", "label"):
        va = [str(t) for t in a.ds[var].values[pos_a]]
        vb = [str(t) for t in b.ds[var].values[pos_b]]
        if va != vb:
            k = next(k for k, (x, y) in enumerate(zip(va, vb)) if x != y)
            raise BertologyError(f"sample {common[k]} has another {var} in {b.store} than in {a.store}: the runs "
                                 f"read different data files")
    if only_a or only_b:
        print(f"bertology compare: {len(common)} samples in both runs ({only_a} only in A, {only_b} only in B "
              f"left out)", file=sys.stderr, flush=True)
    return common, pos_a, pos_b


def _positions(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Where each of ``wanted`` (all present) sits in ``ids``."""
    order = np.argsort(ids)
    return order[np.searchsorted(ids, wanted, sorter=order)]


def sample_table(a: Run, b: Run, ids, pos_a, pos_b) -> pd.DataFrame:
    """One row per matched sample: each run's prediction, correctness and margin (a regression's: predicted
    score, whether it is within the error threshold, and its absolute error)."""
    if a.regression:
        y = a.ds["label"].values[pos_a].astype(np.float64)
        out = {"sample_id": ids, "label": y}
        for side, run, pos in (("a", a, pos_a), ("b", b, pos_b)):
            pred = run.ds["pred"].values[pos].astype(np.float64)
            out.update({f"pred_{side}": pred, f"abs_error_{side}": np.abs(pred - y),
                        f"correct_{side}": np.abs(pred - y) <= a.threshold})
        df = pd.DataFrame(out)
        df["flipped"] = df["correct_a"] != df["correct_b"]
        return df
    labels = a.ds["label"].values[pos_a].astype(int)
    out = {"sample_id": ids, "label": labels}
    for side, run, pos in (("a", a, pos_a), ("b", b, pos_b)):
        pred, _, margin = margins(run.ds["probs"].values[pos], labels)
        out.update({f"pred_{side}": pred, f"correct_{side}": pred == labels, f"margin_{side}": margin})
    df = pd.DataFrame(out)
    df["flipped"] = df["correct_a"] != df["correct_b"]
    df["margin_delta"] = df["margin_a"] - df["margin_b"]
    return df


def summary_table(samples: pd.DataFrame, boot: Bootstrap) -> pd.DataFrame:
    """Each run's accuracy, and the paired differences of accuracy and mean margin (A − B); a regression's
    Pearson's r and its paired Δ (Williams' test), and the paired Δ of the mean absolute error."""
    n = len(samples)
    rows = []
    if "abs_error_a" in samples:
        y = samples["label"].to_numpy(float)
        pa, pb = samples["pred_a"].to_numpy(float), samples["pred_b"].to_numpy(float)
        d = paired_pearson_change(pb, pa, y, boot)
        for side, pred in (("a", pa), ("b", pb)):
            rows.append(dict(statistic=f"pearson_{side}", estimate=pearson(pred, y), n=n))
        rows.append(dict(statistic="delta_pearson", estimate=d["estimate"], ci_low=d["ci_low"],
                         ci_high=d["ci_high"], n=n, p=d["p"], ci_method=d["ci_method"]))
        est, bs = boot.mean(samples["abs_error_a"].to_numpy(float) - samples["abs_error_b"].to_numpy(float))
        lo, hi = percentile_ci(bs)
        rows.append(dict(statistic="delta_mean_abs_error", estimate=float(est), ci_low=float(lo), ci_high=float(hi),
                         n=n, ci_method="percentile"))
        return pd.DataFrame(rows)
    for side in ("a", "b"):
        est, lo, hi = share_interval(samples[f"correct_{side}"].to_numpy(float), np.ones(n))
        rows.append(dict(statistic=f"accuracy_{side}", estimate=float(est), ci_low=float(lo), ci_high=float(hi),
                         n=n, ci_method="wilson"))
    d = paired_difference(samples["correct_a"].to_numpy(float), samples["correct_b"].to_numpy(float), boot=boot)
    rows.append(dict(statistic="delta_accuracy", estimate=d["estimate"], ci_low=d["ci_low"], ci_high=d["ci_high"],
                     n=n, p=d["p"], ci_method=d["ci_method"], flipped=d["discordant"]))
    est, bs = boot.mean(samples["margin_delta"].to_numpy(float))
    lo, hi = percentile_ci(bs)
    rows.append(dict(statistic="delta_mean_margin", estimate=float(est), ci_low=float(lo), ci_high=float(hi), n=n,
                     ci_method="percentile"))
    return pd.DataFrame(rows)


def readout_rows(la: pd.DataFrame, lb: pd.DataFrame, ids, boot: Bootstrap) -> list[dict]:
    """Per layer both runs' layer predictions hold, and readout (:data:`READOUTS`): each run's accuracy on the
    samples ``ids`` and the paired Δ (A − B); a layer where a run lacks some of the samples is left out."""
    rows = []
    for layer in sorted(set(la["layer"]) & set(lb["layer"])):
        ra = la[la["layer"] == layer].set_index("sample_id").reindex(ids)
        rb = lb[lb["layer"] == layer].set_index("sample_id").reindex(ids)
        if ra["site"].isna().any() or rb["site"].isna().any():
            continue
        for readout in READOUTS:
            ca, cb = ra[f"{readout}_correct"].to_numpy(float), rb[f"{readout}_correct"].to_numpy(float)
            d = paired_difference(ca, cb, boot=boot)
            rows.append(dict(layer=int(layer), site=str(ra["site"].iloc[0]), readout=readout,
                             statistic="delta_accuracy", accuracy_a=float(ca.mean()), accuracy_b=float(cb.mean()),
                             estimate=d["estimate"], ci_low=d["ci_low"], ci_high=d["ci_high"], n=len(ids),
                             p=d["p"], flipped=d["discordant"], ci_method=d["ci_method"]))
    return rows


def layer_table(a: Run, b: Run, ids, boot: Bootstrap, correction: str) -> pd.DataFrame | None:
    """Per layer and readout: each run's accuracy and the paired Δ (A − B); None where it cannot be made."""
    la, lb = a.table("layer_predictions"), b.table("layer_predictions")
    if la is None or lb is None:
        print("bertology compare: skipped compare_layers: it needs both runs' layer_predictions (analysed with at "
              "least 2 samples or a --train-store)", file=sys.stderr, flush=True)
        return None
    if int(a.ds.attrs["n_layers"]) != int(b.ds.attrs["n_layers"]):
        print(f"bertology compare: skipped compare_layers: the models have {a.ds.attrs['n_layers']} and "
              f"{b.ds.attrs['n_layers']} layers; per-layer differences need equal depth", file=sys.stderr, flush=True)
        return None
    fits = {str(a.info.get("layer_fit")), str(b.info.get("layer_fit"))}
    if len(fits) > 1:
        print(f"bertology compare: the runs' layer readouts were fitted differently ({' and '.join(sorted(fits))}): "
              f"compare_layers differs by that too", file=sys.stderr, flush=True)
    rows = readout_rows(la, lb, ids, boot)
    df = pd.DataFrame(rows)
    if not len(df):
        return None
    for readout in READOUTS:
        sel = df["readout"] == readout
        df.loc[sel, "p_adj"] = adjust(df.loc[sel, "p"].to_numpy(), correction)
    return df


def intervention_table(a: Run, b: Run, ids, boot: Bootstrap, correction: str) -> pd.DataFrame | None:
    """Per intervention both sweeps hold: each run's accuracy and the paired Δ (A − B)."""
    ia, ib = a.table("intervention_predictions"), b.table("intervention_predictions")
    if ia is None or ib is None:
        return None
    rows = []
    for name in [n for n in ia["intervention"].unique() if n in set(ib["intervention"])]:
        ra = ia[ia["intervention"] == name].set_index("sample_id").loc[ids]
        rb = ib[ib["intervention"] == name].set_index("sample_id").loc[ids]
        ca, cb = ra["correct"].to_numpy(float), rb["correct"].to_numpy(float)
        d = paired_difference(ca, cb, boot=boot)
        rows.append(dict(intervention=name, kind=str(ra["kind"].iloc[0]), layer=ra["layer"].iloc[0],
                         head=ra["head"].iloc[0], statistic="delta_accuracy", accuracy_a=float(ca.mean()),
                         accuracy_b=float(cb.mean()), estimate=d["estimate"], ci_low=d["ci_low"],
                         ci_high=d["ci_high"], n=len(ids), p=d["p"], flipped=d["discordant"],
                         ci_method=d["ci_method"]))
    df = pd.DataFrame(rows)
    if len(df):
        family = df["intervention"] != "none"              # the unintervened models: compare_summary's Δ
        df["p_adj"] = np.nan
        df.loc[family, "p_adj"] = adjust(df.loc[family, "p"].to_numpy(), correction)
        df[["layer", "head"]] = df[["layer", "head"]].astype("Int64")
    return df


def head_table(a: Run, b: Run, pos_a, pos_b, boot: Bootstrap, correction: str) -> pd.DataFrame | None:
    """Per head and attention feature: each run's mean and the paired Δ (A − B) over the matched samples."""
    from .attention_heads import head_features

    if "attention" not in a.ds or "attention" not in b.ds:
        return None
    if (a.ds.sizes["layer"], a.ds.sizes["head"]) != (b.ds.sizes["layer"], b.ds.sizes["head"]):
        print("bertology compare: skipped compare_heads: the models have other numbers of layers or heads",
              file=sys.stderr, flush=True)
        return None
    from .attention_heads import FEATURES

    fa = head_features(a.ds).values[pos_a]                 # (n, L, H, F)
    fb = head_features(b.ds).values[pos_b]
    defined = [k for k in range(len(FEATURES)) if not (np.isnan(fa[..., k]).all() or np.isnan(fb[..., k]).all())]
    fa, fb = fa[..., defined], fb[..., defined]            # e.g. ``block``: pairs only
    names = np.array(FEATURES, dtype=object)[defined]
    n, L, H, F = fa.shape
    d = (fa - fb).reshape(n, -1)
    ok = np.isfinite(d)                                     # a sample without a value (e.g. one text) is left out
    est, bs = boot.ratio(np.where(ok, d, 0.0), ok.astype(np.float64))
    lo, hi = percentile_ci(bs)
    p = np.where(np.all(np.where(ok, d, 0.0) == 0, axis=0), 1.0, bootstrap_p(bs))
    mean = lambda f: np.nanmean(f.reshape(n, -1), axis=0)   # noqa: E731
    layer, head, feature = np.meshgrid(a.ds["layer"].values, a.ds["head"].values, np.arange(F), indexing="ij")
    df = pd.DataFrame({"layer": layer.reshape(-1), "head": head.reshape(-1),
                       "feature": names[feature.reshape(-1)],
                       "statistic": "delta_mean", "mean_a": mean(fa), "mean_b": mean(fb), "estimate": est,
                       "ci_low": lo, "ci_high": hi, "n": ok.sum(axis=0), "p": p, "ci_method": "percentile"})
    df = pd.concat([df, _pattern_rows(a, fa, fb, list(names), boot)], ignore_index=True)
    df["p_adj"] = np.nan
    for name in df["feature"].unique():
        sel = df["feature"] == name
        df.loc[sel, "p_adj"] = adjust(df.loc[sel, "p"].to_numpy(), correction)
    return df


def _pattern_rows(a: Run, fa: np.ndarray, fb: np.ndarray, names: list[str], boot: Bootstrap) -> pd.DataFrame:
    """Per head and Kovaleva pattern type: each run's share of samples whose map is of that type, and the
    paired Δ (features (n, L, H, F) of the matched samples; the analyses' default classifier)."""
    from .attention_heads import PATTERNS, PatternClassifier

    if not {"vertical", "diagonal"} <= set(names):
        return pd.DataFrame()
    get = lambda f, k: f[..., names.index(k)] if k in names else np.full(f.shape[:-1], np.nan)   # noqa: E731
    clf = PatternClassifier()
    ta = clf.predict(get(fa, "vertical"), get(fa, "diagonal"), get(fa, "block"))
    tb = clf.predict(get(fb, "vertical"), get(fb, "diagonal"), get(fb, "block"))
    n, L, H = ta.shape
    layer, head = np.meshgrid(a.ds["layer"].values, a.ds["head"].values, indexing="ij")
    frames = []
    for pattern in PATTERNS:
        code = PATTERNS.index(pattern)
        xa, xb = (ta == code).reshape(n, -1).astype(float), (tb == code).reshape(n, -1).astype(float)
        est, bs = boot.mean(xa - xb)
        lo, hi = percentile_ci(bs)
        p = np.where(np.all(xa == xb, axis=0), 1.0, bootstrap_p(bs))
        frames.append(pd.DataFrame({"layer": layer.reshape(-1), "head": head.reshape(-1),
                                    "feature": f"type_{pattern}", "statistic": "delta_share",
                                    "mean_a": xa.mean(axis=0), "mean_b": xb.mean(axis=0), "estimate": est,
                                    "ci_low": lo, "ci_high": hi, "n": n, "p": p, "ci_method": "percentile"}))
    return pd.concat(frames, ignore_index=True)


class PairedSource:
    """Two runs' series over their matched samples as one source, A's K series then B's: A − B is then a
    difference between series of :func:`moments.energies_with_ci`, and its jackknife leaves each sample out of
    both runs at once, which is what pairs them."""

    def __init__(self, a, b, pos_a: np.ndarray, pos_b: np.ndarray):
        self.a, self.b, self.pos_a, self.pos_b = a, b, np.asarray(pos_a), np.asarray(pos_b)
        self.n, self.K = len(self.pos_a), a.K + b.K

    def block(self, ks: slice, idx: slice) -> SampleSums:
        parts = []
        for src, off, pos in ((self.a, 0, self.pos_a), (self.b, self.a.K, self.pos_b)):
            lo, hi = max(ks.start or 0, off), min(self.K if ks.stop is None else ks.stop, off + src.K)
            if lo < hi:
                parts.append(src.block(slice(lo - off, hi - off), pos[idx]))
        return SampleSums(np.concatenate([p.s for p in parts], axis=1), np.concatenate([p.q for p in parts], axis=1),
                          parts[0].m)


def _paired_energies(src_a, src_b, pos_a, pos_b, labels, n_classes: int, statistics, correction: str,
                     keys_name: tuple[str, ...], group=None) -> pd.DataFrame | None:
    """Each statistic of both runs' series (matched by their keys) and the paired Δ (A − B), corrected across
    the series per statistic (and per ``group(key)`` where given)."""
    keys = [k for k in src_a.keys if k in set(src_b.keys)]
    if not keys or min_class_count(labels, n_classes) < MIN_PER_CLASS:
        return None
    ia, ib = [src_a.keys.index(k) for k in keys], [src_b.keys.index(k) for k in keys]
    res = energies_with_ci(PairedSource(src_a, src_b, pos_a, pos_b), labels, n_classes,
                           deltas=[(src_a.K + j, i) for i, j in zip(ia, ib)])
    rows = []
    for name in statistics:
        if name not in res.deltas:
            continue
        d, e = res.deltas[name], res.series[name]
        for m, key in enumerate(keys):
            rows.append(dict(zip(keys_name, key), statistic=name, estimate_a=e.estimate[ia[m]],
                             estimate_b=e.estimate[src_a.K + ib[m]], estimate=d.estimate[m],
                             estimate_plugin=d.plugin[m], ci_low=d.ci_low[m], ci_high=d.ci_high[m], se=d.se[m],
                             p=d.p[m], ci_method=d.ci_method[m], n=len(pos_a)))
    df = pd.DataFrame(rows)
    same = (df["estimate"] == 0) & (df["se"] == 0)          # e.g. [CLS] at the embeddings: one vector for all
    df.loc[same & df["p"].isna(), "p"] = 1.0
    df["p_adj"] = np.nan
    for _, sel in df.groupby(["statistic"] + ([] if group is None else [df.apply(group, axis=1)])).groups.items():
        df.loc[sel, "p_adj"] = adjust(df.loc[sel, "p"].to_numpy(), correction)
    return df


def _same_width(a: Run, b: Run, table: str) -> bool:
    if a.ds.sizes.get("hidden") != b.ds.sizes.get("hidden"):
        print(f"bertology compare: skipped {table}: the models' hidden sizes differ ({a.ds.sizes.get('hidden')} and "
              f"{b.ds.sizes.get('hidden')}); energies compare within one width", file=sys.stderr, flush=True)
        return False
    return True


def separability_table(a: Run, b: Run, pos_a, pos_b, correction: str) -> pd.DataFrame | None:
    """Per layer, site and separability statistic of [CLS]: both runs' estimates and the paired Δ (A − B)."""
    from .separability import SEPARABILITY_STATISTICS, ClsSource

    if not _same_width(a, b, "compare_separability"):
        return None
    classes = a.classes(pos_a, "compare_separability")
    if classes is None:
        return None
    labels, C = classes
    stats = [s for s in SEPARABILITY_STATISTICS if C == 2 or s != "centroid_ratio"]
    return _paired_energies(ClsSource(a.ds), ClsSource(b.ds), pos_a, pos_b, labels, C, stats, correction,
                            ("layer", "site"))


def ffn_table(a: Run, b: Run, pos_a, pos_b, correction: str) -> pd.DataFrame | None:
    """Per layer, vector and part of the FFN decomposition over [CLS]: both runs' estimates and the paired Δ."""
    from .ffn_roles import PARTS, ClsUpdateSource

    sites = {str(s) for s in a.ds["site"].values} & {str(s) for s in b.ds["site"].values}
    if not {"ln1", "ff", "ln2"} <= sites or not _same_width(a, b, "compare_ffn"):
        return None
    classes = a.classes(pos_a, "compare_ffn")
    if classes is None:
        return None
    labels, C = classes
    parts = [p for p in PARTS if p != "structural_over_classification"]   # a ratio: its Δ is not defined
    return _paired_energies(ClsUpdateSource(a.ds), ClsUpdateSource(b.ds), pos_a, pos_b, labels, C, parts,
                            correction, ("layer", "vector"), group=lambda r: r["vector"])


def attribution_table(a: Run, b: Run, correction: str) -> pd.DataFrame | None:
    """Per layer (and the model) and attribution scope: each run's Spearman similarity with the previous scope
    and their Δ, unpaired (normal, from the two intervals; the per-sentence values are not kept)."""
    ta, tb = a.table("attribution_similarity"), b.table("attribution_similarity")
    if ta is None or tb is None:
        return None
    keys = ["unit", "layer", "maps", "scope", "previous"]
    m = ta.merge(tb, on=keys + ["statistic"], suffixes=("_a", "_b"))
    if not len(m):
        return None
    z = z_value(CI_LEVEL)
    se = np.hypot((m["ci_high_a"] - m["ci_low_a"]) / (2 * z), (m["ci_high_b"] - m["ci_low_b"]) / (2 * z))
    est = m["estimate_a"] - m["estimate_b"]
    df = m[keys + ["statistic"]].assign(estimate_a=m["estimate_a"], estimate_b=m["estimate_b"], estimate=est,
                                        ci_low=est - z * se, ci_high=est + z * se, se=se,
                                        p=normal_p(est.to_numpy(), se.to_numpy()),
                                        n=np.minimum(m["n_a"], m["n_b"]), ci_method="unpaired_normal")
    df["p_adj"] = np.nan
    for _, sel in df.groupby(["maps", "unit"]).groups.items():
        df.loc[sel, "p_adj"] = adjust(df.loc[sel, "p"].to_numpy(), correction)
    df["layer"] = df["layer"].astype("Int64")
    return df


def compare(a: str | Path, b: str | Path, out: str | Path, *, intersect: bool = False,
            resamples: int = DEFAULT_RESAMPLES, seed: int = 0, correction: str = "holm") -> dict[str, Path]:
    """Compare the analysed runs ``a`` and ``b`` (A − B) and write the tables under ``out`` (see the module
    docstring); each file is written whole or not at all."""
    run_a, run_b = Run(a, "A"), Run(b, "B")
    out = locate(out)
    if out.isfile():
        raise BertologyError(f"{out}: is a file; --out names the folder the comparison is written to")
    ids, pos_a, pos_b = match_samples(run_a, run_b, intersect)
    boot = Bootstrap.draw(len(ids), resamples, seed, keys=ids)
    samples = sample_table(run_a, run_b, ids, pos_a, pos_b)
    tables = {"compare_samples": samples, "compare_summary": summary_table(samples, boot)}
    for name, df in (("compare_layers", layer_table(run_a, run_b, ids, boot, correction)),
                     ("compare_interventions", intervention_table(run_a, run_b, ids, boot, correction)),
                     ("compare_heads", head_table(run_a, run_b, pos_a, pos_b, boot, correction)),
                     ("compare_separability", separability_table(run_a, run_b, pos_a, pos_b, correction)),
                     ("compare_ffn", ffn_table(run_a, run_b, pos_a, pos_b, correction)),
                     ("compare_attribution", attribution_table(run_a, run_b, correction))):
        if df is not None:
            tables[name] = df
    out.mkdir()
    for stale in set(COMPARE_TABLES) - set(tables):   # a table an earlier comparison in this folder wrote
        if (out / f"{stale}.parquet").isfile():
            (out / f"{stale}.parquet").remove()
    written = {}
    for name, df in tables.items():
        buf = io.BytesIO()
        df.assign(task=run_a.ds.attrs["task"]).to_parquet(buf, index=False)
        (out / f"{name}.parquet").write_bytes(buf.getvalue())
        written[name] = (out / f"{name}.parquet").local_path if out.local else out / f"{name}.parquet"
    (out / "compare.json").write_text(json.dumps(
        {"format": COMPARE_FORMAT, "a": run_a.folder.resolved(), "b": run_b.folder.resolved(),
         "a_relative": run_a.folder.relative_from(out), "b_relative": run_b.folder.relative_from(out),
         "store_a": run_a.store.resolved(), "store_b": run_b.store.resolved(),
         "model_a": run_a.ds.attrs["model"], "model_b": run_b.ds.attrs["model"], "task": run_a.ds.attrs["task"],
         "n_samples": int(len(ids)), "only_a": int(len(run_a.ids) - len(ids)),
         "only_b": int(len(run_b.ids) - len(ids)), "resamples": resamples, "seed": seed,
         "correction": correction}, indent=2) + "\n")
    return written
