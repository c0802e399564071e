"""Attention heads as Kovaleva et al. (2019), "Revealing the Dark Secrets of BERT", read them.

Every head's map on every sample (query i, key j, α_ij; padding is never stored) is described by explicit
features, each a share of attention mass averaged over the queries of the sample (so a sequence's length does
not weigh it, as in the paper's Figure 5):

- ``vertical``: mass on the special-token columns, [CLS] (position 0) and [SEP] (every other special token);
- ``diagonal``: mass on the neighbouring tokens, keys i−1 and i+1;
- ``block``: mass on keys in the query's own segment of a sentence pair (segment 0 runs to the first [SEP],
  segment 1 is the rest); undefined (NaN) for single-sentence inputs;
- ``self``: mass on the key i itself (reported, not used by the rules);
- ``attention_to_<class>`` for the token classes ``cls``, ``sep``, ``punct`` (every character Unicode
  punctuation or a symbol) and ``other``.

:class:`PatternClassifier` labels each (sample, head) map with one of the paper's five types by documented
thresholds, checked in this order:

1. ``vertical+diagonal``: vertical ≥ ``mixed_each`` and diagonal ≥ ``mixed_each`` and their sum ≥ ``mixed_sum``;
2. ``vertical``: vertical ≥ ``vertical``;
3. ``diagonal``: diagonal ≥ ``diagonal``;
4. ``block``: block ≥ ``block`` (pairs only);
5. ``heterogeneous``: the rest.

A user with hand-labelled maps calibrates the thresholds with :meth:`PatternClassifier.fit` (a grid search
for the highest accuracy). Fine-tuning change is the cosine similarity of the flattened maps of the
pre-trained and the fine-tuned model on the same inputs, per sample, averaged. Every share and mean carries a
percentile bootstrap CI over samples.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import pandas as pd
import xarray as xr

from bertology import BertologyError
from bertology.store.reader import sample_attention

from .bootstrap import Bootstrap, percentile_ci
from .intervals import share_interval
from .engine import compute, concat, sample_blocks, shared, task
from .token_strength import is_punctuation, is_special
from .vocabulary import PATTERNS, TOKEN_CLASSES, UNITS  # noqa: F401  (re-exported)

FEATURES = ("vertical", "diagonal", "block", "self") + tuple(f"attention_to_{c}" for c in TOKEN_CLASSES)
@dataclass(frozen=True)
class PatternThresholds:
    """The classifier's thresholds (shares of attention mass, averaged over queries)."""

    vertical: float = 0.5
    diagonal: float = 0.5
    mixed_each: float = 0.2
    mixed_sum: float = 0.6
    block: float = 0.8


class PatternClassifier:
    """Kovaleva's five pattern types from the explicit features, scikit-learn style: ``thresholds`` is the
    constructor's setting and stays as given; :meth:`fit` learns ``thresholds_`` (and ``accuracy_``)."""

    def __init__(self, thresholds: PatternThresholds | None = None):
        self.thresholds = thresholds

    @property
    def active_thresholds(self) -> PatternThresholds:
        """What :meth:`predict` applies: the fitted ``thresholds_``, else the constructor's (else the defaults)."""
        return getattr(self, "thresholds_", None) or self.thresholds or PatternThresholds()

    def predict(self, vertical, diagonal, block) -> np.ndarray:
        """Pattern index into :data:`PATTERNS` for feature arrays of one shape."""
        t = self.active_thresholds
        v, d = np.asarray(vertical, dtype=np.float64), np.asarray(diagonal, dtype=np.float64)
        b = np.nan_to_num(np.asarray(block, dtype=np.float64), nan=-1.0)
        out = np.full(v.shape, PATTERNS.index("heterogeneous"), dtype=np.int8)
        rules = [(PATTERNS.index("block"), b >= t.block), (PATTERNS.index("diagonal"), d >= t.diagonal),
                 (PATTERNS.index("vertical"), v >= t.vertical),
                 (PATTERNS.index("vertical+diagonal"), (v >= t.mixed_each) & (d >= t.mixed_each) & (v + d >= t.mixed_sum))]
        for code, hit in rules:                      # last assignment wins: the list runs lowest priority first
            out[hit] = code
        return out

    def fit(self, vertical, diagonal, block, labels, grid: dict[str, np.ndarray] | None = None) -> "PatternClassifier":
        """Calibrate the thresholds on hand-labelled maps (``labels``: names from :data:`PATTERNS`): the grid
        point with the highest accuracy, ties to the one nearest the defaults. Sets ``thresholds_`` and
        ``accuracy_``; the constructor's ``thresholds`` are left as given."""
        y = np.array([PATTERNS.index(str(x)) for x in labels])
        grid = grid or {f.name: np.round(np.arange(0.1, 0.95, 0.1), 2) for f in fields(PatternThresholds)}
        default = asdict(PatternThresholds())
        best, best_key = None, None
        names = list(grid)
        for values in itertools.product(*(grid[n] for n in names)):
            cand = replace(PatternThresholds(), **dict(zip(names, map(float, values))))
            acc = float(np.mean(PatternClassifier(cand).predict(vertical, diagonal, block) == y))
            key = (acc, -sum(abs(getattr(cand, n) - default[n]) for n in names))
            if best_key is None or key > best_key:
                best, best_key = cand, key
        self.thresholds_, self.accuracy_ = best, best_key[0]
        return self


def token_classes(tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Class index (into :data:`TOKEN_CLASSES`) and segment (0, 1) of each token of one sequence."""
    cls = np.full(len(tokens), TOKEN_CLASSES.index("other"), dtype=np.int8)
    for k, tok in enumerate(tokens):
        if k == 0:
            cls[k] = TOKEN_CLASSES.index("cls")
        elif is_special(tok):
            cls[k] = TOKEN_CLASSES.index("sep")
        elif is_punctuation(tok.lstrip("Ġ▁#")):                          # a WordPiece "##." too
            cls[k] = TOKEN_CLASSES.index("punct")
    seps = np.flatnonzero(cls == TOKEN_CLASSES.index("sep"))
    segment = np.zeros(len(tokens), dtype=np.int8)
    if len(seps) and seps[0] < len(tokens) - 1:           # a pair: tokens after the first [SEP] run
        first_end = seps[0]
        while first_end + 1 < len(tokens) and cls[first_end + 1] == TOKEN_CLASSES.index("sep"):
            first_end += 1                               # RoBERTa's </s></s>: both close segment 0
        segment[first_end + 1:] = 1
    return cls, segment


def map_features(maps: np.ndarray, classes: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Features (:data:`FEATURES`) of one sequence's maps ``(..., n, n)`` (query, key): shape ``(..., F)``."""
    a = np.asarray(maps, dtype=np.float64)
    n = a.shape[-1]
    onehot = np.eye(len(TOKEN_CLASSES))[classes]                      # (n, C)
    to_class = (a @ onehot).mean(axis=-2)                             # (..., C): mean over queries
    idx = np.arange(n)
    neighbours = np.zeros((n, n))
    neighbours[idx[1:], idx[:-1]] = 1.0
    neighbours[idx[:-1], idx[1:]] = 1.0
    diagonal = (a * neighbours).sum(axis=(-2, -1)) / n
    self_ = np.trace(a, axis1=-2, axis2=-1) / n
    vertical = to_class[..., TOKEN_CLASSES.index("cls")] + to_class[..., TOKEN_CLASSES.index("sep")]
    if segment.max() > 0:
        same = (segment[:, None] == segment[None, :]).astype(np.float64)
        block = (a * same).sum(axis=(-2, -1)) / n
    else:
        block = np.full(vertical.shape, np.nan)
    return np.concatenate([np.stack([vertical, diagonal, block, self_], axis=-1), to_class], axis=-1)


def _sample_maps(ds: xr.Dataset, idx: slice | None = None, block: int = 64):
    """Yield (sample index, (L, h, n, n) float32 maps, tokens) for the samples ``idx`` (default: all),
    reading blocks of samples."""
    if "attention" not in ds:
        raise BertologyError("this store holds no attention maps (extracted with --no-attention or --cls-only)")
    lay = ds.bertology
    lengths = lay.lengths
    idx = idx or slice(0, len(lengths))
    t0, t1, offsets = lay.spans(idx)
    text = ds["token_text"].isel(token=slice(t0, t1)).values
    for b0 in range(idx.start, idx.stop, block):
        b1 = min(b0 + block, idx.stop)
        lo, hi = lay.pair_span(slice(b0, b1))
        flat = np.asarray(ds["attention"].isel(pair=slice(lo, hi)).values, dtype=np.float32)
        for i in range(b0, b1):
            n = int(lengths[i])
            pairs = lay.pair_slice(i)
            rows = flat[pairs.start - lo: pairs.stop - lo]
            maps = rows.reshape(n, n, rows.shape[1], rows.shape[2]).transpose(2, 3, 0, 1)
            first = int(offsets[i - idx.start])
            yield i, maps, [str(t) for t in text[first:first + n]]


def head_features(ds: xr.Dataset, block_size: int | None = None) -> xr.DataArray:
    """(sample, layer, head, feature) features of every head's map on every sample of a store: one task per
    block of samples."""
    src = shared(ds)
    out = compute(concat([task(_block_features, src, sl) for sl in sample_blocks(ds.sizes["sample"], block_size)]))[0]
    return xr.DataArray(out, dims=("sample", "layer", "head", "feature"),
                        coords={"sample": ds["sample"].values, "layer": ds["layer"].values,
                                "head": ds["head"].values, "feature": list(FEATURES)})


def token_shares(ds: xr.Dataset) -> np.ndarray:
    """(sample, class) share of each token class among a sample's tokens: the mass uniform attention gives."""
    out = np.zeros((ds.sizes["sample"], len(TOKEN_CLASSES)))
    lay, text = ds.bertology, ds["token_text"].values
    for i in range(ds.sizes["sample"]):
        cls, _ = token_classes([str(t) for t in text[lay.token_slice(i)]])
        out[i] = np.bincount(cls, minlength=len(TOKEN_CLASSES)) / lay.lengths[i]
    return out


def _mean_rows(values: np.ndarray, boot: Bootstrap, keys: list[dict], statistic: str,
               share: bool = False) -> list[dict]:
    """Rows of means over samples (axis 0 of ``values``, (n, K)) with percentile CIs, or for a ``share``
    (per-sample values in [0, 1] whose mean is a share of samples, e.g. a head's pattern type) Wilson's
    interval on the clustered effective n; NaN samples left out."""
    ok = np.isfinite(values)
    if share:
        est, lo, hi = share_interval(np.where(ok, values, 0.0), ok.astype(np.float64))
    else:
        est, bs = boot.ratio(np.where(ok, values, 0.0), ok.astype(np.float64))
        lo, hi = percentile_ci(bs)
    n = ok.sum(axis=0)
    method = "wilson" if share else "percentile"
    return [dict(**k, statistic=statistic, estimate=float(est[j]), ci_low=float(lo[j]), ci_high=float(hi[j]),
                 n=int(n[j]), ci_method=method) for j, k in enumerate(keys)]


def _units(per_sample: np.ndarray, layers, heads) -> tuple[np.ndarray, list[dict]]:
    """(n, L, h) per-sample values → (n, L·h + L + 1) columns: each head, each layer's mean over its heads,
    and the mean over the model; with their keys (``unit`` head, layer or model; ``head`` is NULL for a
    layer's mean, ``layer`` and ``head`` for the model's)."""
    n, L, H = per_sample.shape
    with warnings.catch_warnings():                       # block on single sentences: all NaN, stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        cols = [per_sample.reshape(n, L * H), np.nanmean(per_sample, axis=2),
                np.nanmean(per_sample.reshape(n, -1), axis=1, keepdims=True)]
    one_head, one_layer, whole_model = UNITS
    keys = ([dict(unit=one_head, layer=int(l), head=int(h)) for l in layers for h in heads]
            + [dict(unit=one_layer, layer=int(l), head=None) for l in layers]
            + [dict(unit=whole_model, layer=None, head=None)])
    return np.concatenate(cols, axis=1), keys


def pattern_table(feats: xr.DataArray, boot: Bootstrap, classifier: PatternClassifier | None = None) -> pd.DataFrame:
    """Share of each pattern type per head, per layer and over the model (``share_<type>``), the mean of every
    feature at the same units (``feature_<name>``), and per head its ``dominant`` type."""
    clf = classifier or PatternClassifier()
    f = feats.sel(feature=["vertical", "diagonal", "block"]).values
    codes = clf.predict(f[..., 0], f[..., 1], f[..., 2])              # (n, L, h)
    layers, heads = feats["layer"].values, feats["head"].values
    pair_task = bool(np.isfinite(f[..., 2]).any())
    rows = []
    for k, name in enumerate(PATTERNS):
        if name == "block" and not pair_task:
            continue                                                  # undefined without a second segment
        values, keys = _units((codes == k).astype(np.float64), layers, heads)
        rows += _mean_rows(values, boot, keys, f"share_{name}", share=True)
    for name in FEATURES:
        values, keys = _units(feats.sel(feature=name).values, layers, heads)
        if np.isfinite(values).any():
            rows += _mean_rows(values, boot, keys, f"feature_{name}")
    df = pd.DataFrame(rows)
    shares = df[(df["unit"] == "head") & df["statistic"].str.startswith("share_")]
    dom = shares.loc[shares.groupby(["layer", "head"])["estimate"].idxmax()]
    dominant = {(r.layer, r.head): r.statistic.removeprefix("share_") for r in dom.itertuples()}
    df["dominant"] = [dominant.get((r.layer, r.head)) if r.unit == "head" else None for r in df.itertuples()]
    thresholds = asdict(clf.active_thresholds)
    df["thresholds"] = ", ".join(f"{k}={v:g}" for k, v in thresholds.items())
    return df


def token_class_table(feats: xr.DataArray, shares: np.ndarray, boot: Bootstrap) -> pd.DataFrame:
    """Attention to [CLS], [SEP], punctuation and other tokens (mass averaged over queries and samples) per
    head, per layer and over the model, beside ``uniform``: the mass uniform attention would give."""
    layers, heads = feats["layer"].values, feats["head"].values
    rows = []
    for k, c in enumerate(TOKEN_CLASSES):
        values, keys = _units(feats.sel(feature=f"attention_to_{c}").values, layers, heads)
        part = pd.DataFrame(_mean_rows(values, boot, keys, f"attention_to_{c}"))
        part["token_class"] = c
        part["uniform"] = float(shares[:, k].mean())
        rows.append(part)
    return pd.concat(rows, ignore_index=True)


def _block_features(ds: xr.Dataset, idx: slice) -> np.ndarray:
    """One task: the head features of samples ``idx``, (samples, layer, head, feature)."""
    out = np.zeros((idx.stop - idx.start, ds.sizes["layer"], ds.sizes["head"], len(FEATURES)))
    for i, maps, tokens in _sample_maps(ds, idx):
        cls, seg = token_classes(tokens)
        out[i - idx.start] = map_features(maps, cls, seg)
    return out


def _block_cosine(ds: xr.Dataset, pretrained: xr.Dataset, idx: slice) -> np.ndarray:
    """One task: the fine-tuned vs pre-trained map cosine of samples ``idx``, (samples, layer, head)."""
    out = np.zeros((idx.stop - idx.start, ds.sizes["layer"], ds.sizes["head"]))
    for (i, a, _), (_, b, _) in zip(_sample_maps(ds, idx), _sample_maps(pretrained, idx)):
        a = a.reshape(a.shape[0], a.shape[1], -1).astype(np.float64)
        b = b.reshape(b.shape[0], b.shape[1], -1).astype(np.float64)
        out[i - idx.start] = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return out


def finetune_cosine(ds: xr.Dataset, pretrained: xr.Dataset, block_size: int | None = None) -> xr.DataArray:
    """(sample, layer, head) cosine similarity of each flattened map (query × key) of the fine-tuned store's
    model and the pre-trained model on the same tokens."""
    for what in ("sample", "length"):
        if not np.array_equal(ds[what].values, pretrained[what].values):
            raise BertologyError(f"the pre-trained store holds other samples than the fine-tuned one ({what} differs); "
                                 "extract the pre-trained model on the same split and --limit")
    if not np.array_equal(ds["token_id"].values, pretrained["token_id"].values):
        raise BertologyError("the pre-trained store tokenised the samples differently; use the same tokenizer")
    a, b = shared(ds), shared(pretrained)
    out = compute(concat([task(_block_cosine, a, b, sl) for sl in sample_blocks(ds.sizes["sample"], block_size)]))[0]
    return xr.DataArray(out, dims=("sample", "layer", "head"),
                        coords={"sample": ds["sample"].values, "layer": ds["layer"].values, "head": ds["head"].values})


def finetune_table(cos: xr.DataArray, boot: Bootstrap) -> pd.DataFrame:
    """Mean cosine similarity between pre-trained and fine-tuned maps per head, per layer and overall."""
    values, keys = _units(cos.values, cos["layer"].values, cos["head"].values)
    return pd.DataFrame(_mean_rows(values, boot, keys, "cosine_pretrained_finetuned"))


def example_maps(ds: xr.Dataset, feats: xr.DataArray, classifier: PatternClassifier | None = None,
                 max_tokens: int = 40) -> pd.DataFrame:
    """One map of each type from the data (the clearest: largest margin over its threshold, among samples of
    at most ``max_tokens`` tokens), as long rows (pattern, sample, layer, head, query, key, weight, tokens)."""
    clf = classifier or PatternClassifier()
    t = clf.active_thresholds
    f = feats.sel(feature=["vertical", "diagonal", "block"]).values
    codes = clf.predict(f[..., 0], f[..., 1], f[..., 2])
    short = (ds["length"].values <= max_tokens)[:, None, None]
    score = dict(zip(PATTERNS, (  # how clearly a map is of its type: the margin over the type's threshold
        f[..., 0] - t.vertical, f[..., 1] - t.diagonal, np.minimum(f[..., 0], f[..., 1]) - t.mixed_each,
        np.nan_to_num(f[..., 2], nan=-9.0) - t.block, -np.maximum(f[..., 0], f[..., 1]))))
    rows = []
    for k, name in enumerate(PATTERNS):
        s = np.where((codes == k) & short, score[name], -np.inf)
        if not np.isfinite(s).any():
            continue
        i, li, hi = np.unravel_index(np.argmax(s), s.shape)
        m = sample_attention(ds, int(i)).values[li, hi]
        tokens = [str(t) for t in ds.bertology.tokens(int(i), "token_text").values]
        n = len(tokens)
        rows.append(pd.DataFrame({
            "pattern": name, "sample_id": int(ds["sample"].values[i]), "layer": int(feats["layer"].values[li]),
            "head": int(feats["head"].values[hi]), "query": np.repeat(np.arange(n), n),
            "key": np.tile(np.arange(n), n), "weight": m.reshape(-1).astype(np.float64),
            "query_token": np.repeat(np.array(tokens, dtype=object), n),
            "key_token": np.tile(np.array(tokens, dtype=object), n)}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def attention_tables(ds: xr.Dataset, boot: Bootstrap, pretrained: xr.Dataset | None = None,
                     classifier: PatternClassifier | None = None, block_size: int | None = None,
                     ) -> dict[str, pd.DataFrame]:
    """Every attention-head table of a store (with ``pretrained``: also the fine-tuning change)."""
    feats = head_features(ds, block_size)
    tables = {
        "attention_patterns": pattern_table(feats, boot, classifier),
        "attention_token_classes": token_class_table(feats, token_shares(ds), boot),
        "attention_examples": example_maps(ds, feats, classifier),
    }
    if pretrained is not None:
        tables["attention_finetune_change"] = finetune_table(finetune_cosine(ds, pretrained, block_size), boot)
    return tables


def analyze(ctx) -> dict:
    """The registry's entry: Kovaleva et al.'s pattern types, attention to token classes, example maps."""
    return attention_tables(ctx.ds, ctx.boot, block_size=ctx.cfg.block_size)


def analyze_change(ctx) -> dict:
    """The registry's entry: how far fine-tuning moved each head's attention (cosine with the pre-trained
    model's maps of the same samples)."""
    from bertology.store import open_store

    if "attention" not in ctx.ds:
        raise BertologyError(f"{ctx.store}: no attention maps to compare with {ctx.pretrained}; extract with attention")
    pre = open_store(ctx.pretrained, dask=False)
    if "attention" not in pre:
        raise BertologyError(f"{ctx.pretrained}: holds no attention maps; extract it with --attention-only")
    cos = finetune_cosine(ctx.ds, pre, ctx.cfg.block_size)
    return {"attention_finetune_change": finetune_table(cos, ctx.boot)}
