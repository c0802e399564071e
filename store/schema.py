"""The activation store's schema: one vocabulary of sites, dimensions and variable names.

Inside a post-LN BERT layer ``l`` (numbered from 1, as the papers do), with ``x`` the layer input:

=========  ================================================================================
site       meaning
=========  ================================================================================
``attn``   multi-head attention output after W_O (bias included), before the residual
``res1``   ``x + attn``: the first residual sum, the input of LayerNorm 1
``ln1``    ``LN1(res1)``: the attention block's output
``ff_act`` the FFN hidden activation, ``GELU(W_1 ln1 + b_1)``, 4H wide (stored apart)
``ff``     the FFN output ``W_2 ff_act + b_2``, before the residual
``res2``   ``ln1 + ff``: the second residual sum, the input of LayerNorm 2
``ln2``    ``LN2(res2)``: the layer output (= HF's ``hidden_states[l]``)
=========  ================================================================================

``embed`` is the embedding output (= HF's ``hidden_states[0]``), the input of layer 1.
The same names are used in code, in the store, in SQL and in reports.
"""

from __future__ import annotations

SCHEMA_VERSION = 1
FORMAT_NAME = "bertology-activation-store"

#: The hidden-width sites of a post-LN layer, in forward order (the ``site`` coordinate of ``cls``).
SITES: tuple[str, ...] = ("attn", "res1", "ln1", "ff", "res2", "ln2")
#: The FFN hidden activation, 4H wide, stored in variables of its own.
FF_ACT = "ff_act"
#: The embedding output, the input of layer 1.
EMBED = "embed"
#: Every site that token-level capture can store.
TOKEN_SITES: tuple[str, ...] = (EMBED, "attn", "res1", "ln1", FF_ACT, "ff", "res2", "ln2")

# Dimensions.
SAMPLE, LAYER, SITE, HIDDEN, FF_HIDDEN = "sample", "layer", "site", "hidden", "ff_hidden"
CLASS, TOKEN, TOKEN_LAYER, PAIR, HEAD = "class", "token", "token_layer", "pair", "head"

# Group attributes.
META_KEY = "bertology"          # the metadata dict (schema version, model, data, capture settings)
PROGRESS_KEY = "bertology_progress"  # {"complete": bool, "windows_done": int}


#: Per-sample and per-token metadata that the reader presents as coordinates (they label the data).
SAMPLE_COORDS: tuple[str, ...] = ("label", "length", "token_start", "pair_start", "text_a", "text_b")
TOKEN_COORDS: tuple[str, ...] = ("token_sample", "token_position", "token_id", "token_segment", "token_text")


def token_var(site: str) -> str:
    """Name of the ragged token-level variable for a site, e.g. ``token_ln2``."""
    if site not in TOKEN_SITES:
        raise ValueError(f"unknown site {site!r}; token-level sites are {', '.join(TOKEN_SITES)}")
    return f"token_{site}"


def is_regression(attrs) -> bool:
    """Whether a store's (or sweep's) task is a regression (STS-B, a user's scores): one output, no classes."""
    return attrs.get("task_type") == "regression"


#: Every variable of a store and its dimensions, as the README's schema table documents them (a test checks an
#: extracted store against it).
VARIABLES: dict[str, tuple[tuple[str, ...], str]] = {
    "cls": ((SAMPLE, LAYER, SITE, HIDDEN), "[CLS] (first-token) vector at every layer and site"),
    "cls_ff_act": ((SAMPLE, LAYER, FF_HIDDEN), "[CLS] FFN hidden activation at every layer"),
    "cls_embed": ((SAMPLE, HIDDEN), "[CLS] embedding output (input of layer 1)"),
    "label": ((SAMPLE,), "gold class index (a regression task: the gold score, float64)"),
    "logits": ((SAMPLE, CLASS), "classifier logits (float32)"),
    "probs": ((SAMPLE, CLASS), "softmax of the logits (float32)"),
    "pred": ((SAMPLE,), "predicted class index (argmax of logits; a regression task: the predicted score, float64)"),
    "length": ((SAMPLE,), "number of tokens, special tokens included, no padding"),
    "token_start": ((SAMPLE,), "offset of the sample's first token on the flat token axis"),
    "pair_start": ((SAMPLE,), "offset of the sample's first (query, key) pair on the flat pair axis"),
    "text_a": ((SAMPLE,), "first (or only) text"),
    "text_b": ((SAMPLE,), "second text of a pair ('' for single-sentence tasks)"),
    "token_sample": ((TOKEN,), "sample index (position on the sample axis) of each token"),
    "token_position": ((TOKEN,), "position of the token in its sequence"),
    "token_id": ((TOKEN,), "vocabulary id"),
    "token_text": ((TOKEN,), "the token's string as the tokenizer writes it"),
    "token_segment": ((TOKEN,), "segment (token type) id: 0 first text, 1 second text"),
    "token_<site>": ((TOKEN, TOKEN_LAYER, HIDDEN), "token states at a site (embed: (token, hidden); "
                     "ff_act: (token, token_layer, ff_hidden))"),
    "attention": ((PAIR, LAYER, HEAD), "attention probability of query i to key j, pairs i*n+j per sample"),
}
