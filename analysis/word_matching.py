"""Cross-sentence word matching (Kovaleva et al. 2019, §4.4): which heads attend from a word in one sentence
of a pair to the same word in the other.

For a text pair, words are the tokenizer's words (WordPiece ``##`` pieces, or BPE pieces, joined; a
punctuation token is a word of its own; special tokens and punctuation take no part), compared by their
lowercased form. The attention from word q to word k of one head is the attention each of q's pieces gives
each of k's pieces, averaged over both: per piece, so that a word split into more pieces draws no more
attention by that alone (Clark et al. 2019 sum over the key word's pieces, which would give a uniform head
a score of (pieces(m) − pieces(c))/n). For every word q whose form occurs in the other sentence, at the word
m there (each such m):

- ``match`` = att(q → m);
- ``control`` = att(q → c), c the word of the other sentence with another form whose distance from q (in
  tokens) is nearest to m's (ties: the earlier word), so that a head attending by position alone scores the
  same on both.

Per sample and head, the means over its (q, m) pairs; the statistic ``match_minus_control`` is the mean over
the samples that have at least one pair of (match − control): 0 for a head that ignores word identity (a
uniform head scores exactly 0), positive for a head that matches words. Its
interval is the run's Poisson bootstrap over samples; its p-value a two-sided one-sample t-test over
samples, corrected across every head (``--correction``); heads are ranked by the estimate.

Kovaleva et al. compare lemmas; here word forms are compared (``Cats`` matches ``cats``, not ``cat``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats as sps

from .attention_heads import token_classes
from .bootstrap import adjust, percentile_ci
from .engine import compute, concat, sample_blocks, shared, task
from .token_strength import word_ids
from .vocabulary import TOKEN_CLASSES

#: The per-sample quantities, in this order on the last axis of :func:`sample_matching`'s result.
PARTS = ("match", "control")


def words_of(tokens: list[str], bpe: bool) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """The words of one tokenised pair: each token's word index, each word's lowercased form, segment and
    whether it takes part (not special, not punctuation)."""
    classes, segment = token_classes(tokens)
    punct = classes == TOKEN_CLASSES.index("punct")
    pieces_of = word_ids(tokens, bpe)
    starts = np.ones(len(tokens), dtype=bool)          # a new word: a new tokenizer word, or punctuation
    starts[1:] = (pieces_of[1:] != pieces_of[:-1]) | punct[1:] | punct[:-1]
    wid = np.cumsum(starts) - 1
    n_words = int(wid.max()) + 1 if len(wid) else 0
    pieces = [t[2:] if t.startswith("##") else t.replace("Ġ", "").replace("▁", "") for t in tokens]
    forms = ["".join(p for p, w in zip(pieces, wid) if w == k).lower() for k in range(n_words)]
    first = np.array([int(np.flatnonzero(wid == k)[0]) for k in range(n_words)], dtype=np.int64)
    word_segment = segment[first]
    word_ok = classes[first] == TOKEN_CLASSES.index("other")
    return wid, forms, word_segment, word_ok


def word_attention(maps: np.ndarray, wid: np.ndarray) -> np.ndarray:
    """Word-to-word attention (..., words, words) of token maps (..., n, n): the mean over the query word's
    pieces and the key word's pieces."""
    n_words = int(wid.max()) + 1
    member = (wid[None, :] == np.arange(n_words)[:, None]).astype(np.float64)       # (words, n)
    mean = member / member.sum(axis=1, keepdims=True)
    return mean @ np.asarray(maps, dtype=np.float64) @ mean.T


def matching_pairs(forms: list[str], word_segment: np.ndarray, word_ok: np.ndarray,
                   positions: np.ndarray) -> list[tuple[int, int, int]]:
    """(query word, matching word, control word) triples of one pair (see the module docstring)."""
    triples = []
    for q, form in enumerate(forms):
        if not word_ok[q]:
            continue
        other = [k for k in range(len(forms)) if word_ok[k] and word_segment[k] != word_segment[q]]
        matches = [k for k in other if forms[k] == form]
        controls = [k for k in other if forms[k] != form]
        if not matches or not controls:
            continue
        for m in matches:
            d = abs(positions[m] - positions[q])
            c = min(controls, key=lambda k: (abs(abs(positions[k] - positions[q]) - d), positions[k]))
            triples.append((q, m, c))
    return triples


def sample_matching(maps: np.ndarray, tokens: list[str], bpe: bool) -> np.ndarray | None:
    """(layer, head, part) mean ``match`` and ``control`` attention of one pair's maps (layer, head, n, n);
    None when it has no matching word with a control."""
    wid, forms, word_segment, word_ok = words_of(tokens, bpe)
    if not len(forms):
        return None
    positions = np.array([int(np.flatnonzero(wid == k)[0]) for k in range(len(forms))])
    triples = matching_pairs(forms, word_segment, word_ok, positions)
    if not triples:
        return None
    w = word_attention(maps, wid)                                                  # (L, H, words, words)
    q, m, c = (np.array(x) for x in zip(*triples))
    return np.stack([w[..., q, m].mean(axis=-1), w[..., q, c].mean(axis=-1)], axis=-1)


def _block_matching(ds: xr.Dataset, idx: slice, bpe: bool) -> tuple[np.ndarray, np.ndarray]:
    """One task: per sample of ``idx``, (layer, head, part) values and whether the sample has pairs."""
    L, H = ds.sizes["layer"], ds.sizes["head"]
    values = np.zeros((idx.stop - idx.start, L, H, len(PARTS)))
    has = np.zeros(idx.stop - idx.start, dtype=bool)
    lay = ds.bertology
    for j, i in enumerate(range(idx.start, idx.stop)):
        tokens = [str(t) for t in lay.tokens(i, "token_text").values]
        got = sample_matching(lay.attention(i).values, tokens, bpe)
        if got is not None:
            values[j], has[j] = got, True
    return values, has


def matching_values(ds: xr.Dataset, block_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every sample's (layer, head, part) values, and which samples have a matching word: one task per block
    of samples."""
    bpe = ds.attrs.get("model_type") == "roberta"
    src = shared(ds)
    blocks = sample_blocks(ds.sizes["sample"], block_size)
    values, has = compute(concat([task(_block_matching, src, sl, bpe) for sl in blocks]))[0]
    return values, has


def matching_table(ds: xr.Dataset, values: np.ndarray, has: np.ndarray, boot, correction: str) -> pd.DataFrame:
    """The ``word_matching`` rows: one per head, ranked."""
    diff = values[..., 0] - values[..., 1]                                           # (n, L, H)
    n_pairs = int(has.sum())
    L, H = diff.shape[1:]
    flat = diff.reshape(len(diff), -1)
    est, bs = boot.ratio(flat * has[:, None], has.astype(float))
    lo, hi = percentile_ci(bs)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = sps.ttest_1samp(flat[has], 0.0, axis=0).pvalue if n_pairs >= 2 else np.full(L * H, np.nan)
    match = values[has, ..., 0].mean(axis=0).reshape(-1) if n_pairs else np.full(L * H, np.nan)
    control = values[has, ..., 1].mean(axis=0).reshape(-1) if n_pairs else np.full(L * H, np.nan)
    rank = np.empty(L * H, dtype=np.int64)
    rank[np.argsort(-np.nan_to_num(np.asarray(est, float), nan=-np.inf), kind="stable")] = np.arange(1, L * H + 1)
    layers, heads = ds["layer"].values, ds["head"].values
    return pd.DataFrame({"layer": np.repeat(layers, H).astype(int), "head": np.tile(heads, L).astype(int),
                         "statistic": "match_minus_control", "estimate": np.asarray(est, float),
                         "ci_low": lo, "ci_high": hi, "n": n_pairs, "p": p, "p_adj": adjust(p, correction),
                         "ci_method": "percentile", "match": match, "control": control, "rank": rank})


def analyze(ctx) -> dict:
    """The registry's entry: the ``word_matching`` table of a text-pair store."""
    values, has = matching_values(ctx.ds, ctx.cfg.block_size)
    return {"word_matching": matching_table(ctx.ds, values, has, ctx.boot, ctx.cfg.correction)}
