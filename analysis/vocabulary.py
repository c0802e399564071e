"""The analyses' vocabulary, defined once: what the values of a table's categorical columns may be.

The store's sites (``attn``, ``res1``, ``ln1``, ``ff``, ``res2``, ``ln2``, ``ff_act``, ``embed``) are in
:mod:`bertology.store.schema`; these are the analyses' own terms, imported by the analyses, the index's views
and the report alike.
"""

from __future__ import annotations

from bertology.store.schema import SITES

#: Kovaleva et al. 2019's attention pattern types (``attention_patterns.statistic`` is ``share_<type>``).
PATTERNS: tuple[str, ...] = ("vertical", "diagonal", "vertical+diagonal", "block", "heterogeneous")
#: Token classes that attention is measured to (``attention_token_classes``, ``attention_norms``).
TOKEN_CLASSES: tuple[str, ...] = ("cls", "sep", "punct", "other")
#: Kobayashi et al.'s attribution scopes through a post-LN layer, in forward order: the attention weights,
#: then the norm of what reaches each output after attention, +RES1, +LN1, +FF, +RES2, +LN2.
SCOPES: tuple[str, ...] = ("ATTN-W", "ATTN-N", "ATTNRES-N", "ATTNRESLN-N", "ATTNRESLNFF-N", "ATTNRESLNFFRES-N",
                           "ATTNRESLNFFRESLN-N")
#: The store site each vector scope sums to (ATTN-N to ``attn``, … , ATTNRESLNFFRESLN-N to ``ln2``).
SCOPE_SITE: dict[str, str] = dict(zip(SCOPES[1:], SITES))
#: Word categories of token strength (``token_strength.category``).
WORD_CATEGORIES: tuple[str, ...] = ("content", "function", "punctuation", "special")
#: What a row of a per-head statistic is about (its ``unit``): one head, a layer's mean over its heads, or
#: the model's mean over every head (``head``, and for ``model`` ``layer``, NULL).
UNITS: tuple[str, ...] = ("head", "layer", "model")
