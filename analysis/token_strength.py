"""Token activation strength: the L2 norm of a token's hidden state ranks tokens.

Rules (documented in the README):

- strength = ‖h‖ at the chosen layer and site (default ``ln2`` at layer 8 for 12-layer models, otherwise the
  layer at 2/3 depth, rounded);
- special tokens ([CLS], [SEP], <s>, </s>, …) are excluded from ranking and reported as their own category;
- a token is HIGH when its strength is ≥ the upper quartile (numpy's linearly interpolated 75th percentile)
  of the non-special tokens — corpus-wide (``threshold='corpus'``) or within its own sentence
  (``threshold='sentence'``); otherwise LOW;
- categories: ``punctuation`` (every character is Unicode punctuation or a symbol), ``function`` (the
  lower-cased word is in scikit-learn's English stop-word list), ``content`` (the rest), ``special``;
- word level: subwords are merged into words (WordPiece: a ``##`` piece continues the previous word;
  byte-level BPE: a piece without the leading ``Ġ`` continues it); a word's strength is the mean of its
  pieces' strengths, and its category is decided on the merged word.

Shares carry bootstrap CIs over sentences (the threshold is held at its full-sample value).
"""

from __future__ import annotations

import unicodedata

import numpy as np
import pandas as pd
import xarray as xr

from bertology.store.schema import token_var

from .bootstrap import Bootstrap, percentile_ci
from .intervals import share_interval
from .engine import compute, concat, sample_blocks, shared, task
from .vocabulary import WORD_CATEGORIES

CATEGORIES = WORD_CATEGORIES
BUCKETS = ("HIGH", "LOW")


def default_layer(n_layers: int) -> int:
    """Layer 8 of 12 as in the mission's Finding 4; the layer at 2/3 depth for other depths."""
    return 8 if n_layers == 12 else max(1, int(round(2 * n_layers / 3)))


def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def is_special(token: str) -> bool:
    return (token.startswith("[") and token.endswith("]")) or (token.startswith("<") and token.endswith(">"))


def is_punctuation(token: str) -> bool:
    """Every character (after a byte-level BPE or SentencePiece word marker) is Unicode punctuation or a
    symbol."""
    bare = token.lstrip("Ġ▁")
    return bool(bare) and all(unicodedata.category(ch)[0] in "PS" for ch in bare)


def category(word: str, stop_words: frozenset[str]) -> str:
    if is_special(word):
        return "special"
    bare = word.lstrip("Ġ▁")
    if is_punctuation(bare):
        return "punctuation"
    return "function" if bare.lower() in stop_words else "content"


def word_ids(tokens: list[str], bpe: bool) -> np.ndarray:
    """Word index of each token within its sentence (special tokens are words of their own)."""
    ids, w = np.zeros(len(tokens), dtype=np.int64), -1
    for i, t in enumerate(tokens):
        special = is_special(t)
        cont = (not bpe and t.startswith("##")) or (bpe and not t.startswith("Ġ") and i > 0 and not special
                                                     and not is_special(tokens[i - 1]))
        if special or not cont or w < 0:
            w += 1
        ids[i] = w
    return ids


def strengths(ds: xr.Dataset, layers, site: str = "ln2", block_size: int | None = None) -> np.ndarray:
    """‖h‖ of every token at each of ``layers`` (one layer: an int) and one site, (tokens,) or (tokens,
    layers): one task per block of samples, reading that block's tokens (float32: float16 squares overflow)."""
    one = np.ndim(layers) == 0
    layers = [int(layers)] if one else [int(l) for l in layers]
    var = token_var(site)
    for layer in layers:
        if var not in ds or layer not in ds["token_layer"].values:
            raise ValueError(f"the store holds no token states for site {site!r} at layer {layer}")
    spans = [ds.bertology.spans(sl)[:2] for sl in sample_blocks(ds.sizes["sample"], block_size)]
    src = shared(ds)
    norms = compute(concat([task(_block_strengths, src, var, layers, t0, t1) for t0, t1 in spans]))[0]
    return norms[:, 0] if one else norms


def _block_strengths(ds: xr.Dataset, var: str, layers: list[int], t0: int, t1: int) -> np.ndarray:
    """One task: the norms of tokens t0..t1 at each layer, (tokens, layers)."""
    h = ds[var].sel(token_layer=layers).isel(token=slice(t0, t1)).values.astype(np.float32)
    return np.linalg.norm(h, axis=2).astype(np.float64)


def token_table(ds: xr.Dataset) -> pd.DataFrame:
    """One row per token, independent of the layer: sample, position, token, word id, word, category."""
    tokens = np.array([str(t) for t in ds["token_text"].values], dtype=object)
    bpe = ds.attrs.get("model_type") == "roberta"
    lay = ds.bertology
    wid = np.concatenate([word_ids(list(tokens[lay.token_slice(i)]), bpe) for i in range(ds.sizes["sample"])])
    sample = ds["token_sample"].values.astype(np.int64)
    # words: consecutive runs of (sample, word id); join their pieces once per word
    new_word = np.ones(len(tokens), dtype=bool)
    new_word[1:] = (sample[1:] != sample[:-1]) | (wid[1:] != wid[:-1])
    bounds = np.append(np.flatnonzero(new_word), len(tokens))
    pieces = [t[2:] if t.startswith("##") else t for t in tokens]
    words = ["".join(pieces[a:b]).replace("Ġ", "") for a, b in zip(bounds[:-1], bounds[1:])]
    stop = _stop_words()
    cats = [category(w, stop) for w in words]
    run = np.diff(bounds)
    df = pd.DataFrame({"sample": sample, "position": ds["token_position"].values.astype(np.int64),
                       "token": tokens, "word_id": wid,
                       "word": np.repeat(np.array(words, dtype=object), run),
                       "category": np.repeat(np.array(cats, dtype=object), run)})
    df.loc[[is_special(t) for t in tokens], "category"] = "special"
    return df


def token_frame(ds: xr.Dataset, layer: int, site: str = "ln2", table: pd.DataFrame | None = None,
                strength: np.ndarray | None = None) -> pd.DataFrame:
    """The token table with each token's strength at ``layer``/``site`` (``strength``: already computed)."""
    table = token_table(ds) if table is None else table
    return table.assign(strength=strengths(ds, layer, site) if strength is None else strength)


def word_frame(tokens: pd.DataFrame) -> pd.DataFrame:
    """Merge subword rows into word rows: strength is the mean over the word's pieces."""
    g = tokens.groupby(["sample", "word_id"], sort=True)
    return g.agg(word=("word", "first"), strength=("strength", "mean"), category=("category", "first"),
                 position=("position", "first")).reset_index()


def buckets(units: pd.DataFrame, threshold: str) -> pd.Series:
    """HIGH/LOW per row by the upper-quartile rule; special tokens get no bucket (NaN)."""
    ranked = units["category"] != "special"
    if threshold == "corpus":
        q = np.quantile(units.loc[ranked, "strength"], 0.75)
        th = pd.Series(q, index=units.index)
    elif threshold == "sentence":
        q = units[ranked].groupby("sample")["strength"].quantile(0.75)   # linear, as numpy's default
        th = units["sample"].map(q)
    else:
        raise ValueError(f"threshold must be 'corpus' or 'sentence', got {threshold!r}")
    out = pd.Series(np.where(units["strength"] >= th, "HIGH", "LOW"), index=units.index, dtype=object)
    out[~ranked] = np.nan
    return out


def _share_rows(units: pd.DataFrame, boot: Bootstrap, n_samples: int, **labels) -> list[dict]:
    """Share of each category within each bucket, with Wilson's interval on the sentence-clustered
    effective sample size (:func:`intervals.share_interval`)."""
    rows = []
    for bucket in BUCKETS:
        inb = units[units["bucket"] == bucket]
        denom = np.bincount(inb["sample"], minlength=n_samples).astype(np.float64)
        for cat in CATEGORIES[:3]:
            num = np.bincount(inb.loc[inb["category"] == cat, "sample"], minlength=n_samples).astype(np.float64)
            est, lo, hi = share_interval(num, denom)
            rows.append(dict(labels, bucket=bucket, category=cat, statistic="share", estimate=float(est),
                             ci_low=float(lo), ci_high=float(hi), n=int(denom.sum()), ci_method="wilson"))
    return rows


def token_strength(ds: xr.Dataset, boot: Bootstrap, *, layer: int | None = None, site: str = "ln2",
                   top: int = 20, min_count: int = 5, block_size: int | None = None,
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Bucket shares (subword and word level, corpus and sentence thresholds), top tokens, layer profile.

    Returns (summary table, per-token table at the chosen layer with its buckets).
    """
    L = int(ds.attrs.get("n_layers", ds.sizes["layer"]))
    layer = layer or default_layer(L)
    n = ds.sizes["sample"]
    table = token_table(ds)
    profile = [int(x) for x in ds["token_layer"].values]
    if layer not in profile:
        strengths(ds, layer, site)  # refuses with the reason
    norms = strengths(ds, profile, site, block_size)  # every layer's strengths in one pass over the store
    tok = token_frame(ds, layer, site, table, norms[:, profile.index(layer)])
    rows: list[dict] = []
    units_by_level = {"subword": tok, "word": word_frame(tok)}
    for level, units in units_by_level.items():
        for threshold in ("corpus", "sentence"):
            units = units.copy()
            units["bucket"] = buckets(units, threshold)
            rows += _share_rows(units, boot, n, layer=layer, site=site, level=level, threshold=threshold)
            if level == "subword":
                tok[f"bucket_{threshold}"] = units["bucket"]
    # top tokens by mean strength (non-special, seen at least min_count times)
    ranked = tok[tok["category"] != "special"]
    agg = ranked.groupby("token")["strength"].agg(["mean", "count"])
    agg = agg[agg["count"] >= min_count].sort_values("mean", ascending=False).head(top)
    for token, r in agg.iterrows():
        s = ranked.loc[ranked["token"] == token, "strength"].to_numpy()
        rng = np.random.default_rng(boot.seed)
        bs = rng.choice(s, size=(boot.resamples, len(s))).mean(axis=1)
        lo, hi = percentile_ci(bs[:, None])
        rows.append(dict(layer=layer, site=site, level="subword", statistic="top_token_mean_strength",
                         token=token, category=category(token, _stop_words()),
                         estimate=r["mean"], ci_low=lo[0], ci_high=hi[0], n=int(r["count"])))
    # profile over layers: mean strength by category, corpus-wide HIGH share of content words
    for j, l in enumerate(profile):
        t = tok if l == layer else token_frame(ds, l, site, table, norms[:, j])
        t = t.assign(bucket=buckets(t, "corpus"))
        cat_sum = {c: np.bincount(t.loc[t["category"] == c, "sample"], weights=t.loc[t["category"] == c, "strength"],
                                  minlength=n) for c in CATEGORIES}
        cat_cnt = {c: np.bincount(t.loc[t["category"] == c, "sample"], minlength=n).astype(float) for c in CATEGORIES}
        for c in CATEGORIES:
            if not cat_cnt[c].sum():
                continue
            est, bs = boot.ratio(cat_sum[c], cat_cnt[c])
            lo, hi = percentile_ci(bs[:, None])
            rows.append(dict(layer=l, site=site, level="subword", statistic="profile_mean_strength", category=c,
                             estimate=est, ci_low=lo[0], ci_high=hi[0], n=int(cat_cnt[c].sum())))
        share = [r for r in _share_rows(t, boot, n, layer=l, site=site, level="subword", threshold="corpus")
                 if r["bucket"] == "HIGH" and r["category"] == "content"]
        for r in share:
            r["statistic"] = "profile_high_content_share"
        rows += share
    return pd.DataFrame(rows), tok


def analyze(ctx) -> dict:
    """The registry's entry: Finding 4's HIGH/LOW buckets at the strength layer and site."""
    cfg = ctx.cfg
    summary, per_token = token_strength(ctx.ds, ctx.boot, layer=cfg.strength_layer, site=cfg.strength_site,
                                        block_size=cfg.block_size)
    return {"token_strength_summary": summary, "token_strength": per_token}
