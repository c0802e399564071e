"""Every table ``bertology analyze`` writes: one name for the parquet file, the index table and the SQL user.

A table is either *per row* (one row per sample, token, pair or layer of a sample: the data behind a
statistic) or a *summary* (tidy statistics with confidence intervals); the two never share a name. Which
tables a run has depends on what its store holds (:attr:`Table.needs`):

- ``always``: any store;
- ``tokens``: token-level states (``extract`` without ``--cls-only``; ``ff_norm_ratio``: the ``ff`` and ``ln1``
  sites among them);
- ``attention``: attention maps; ``pretrained``: with ``analyze --pretrained-store`` as well;
- ``full``: a full capture (attention and the ``ff``/``ln1`` token states) with attribution samples > 0;
- ``sweep``: with ``analyze --sweep`` (an intervention sweep of the same store).

The workflow declares exactly the tables its settings make (:func:`tables_for`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    name: str
    needs: str
    per_row: bool
    doc: str


TABLES: tuple[Table, ...] = (
    Table("task_metrics", "always", False, "accuracy, F1 and MCC of the classifier on the stored samples"),
    Table("separability", "always", False, "class separability of [CLS] per layer and site, its Δ and chance level"),
    Table("skip_candidates", "always", False, "the a-priori layer-skip candidates (Δ separability ≤ 0)"),
    Table("ffn_roles", "always", False, "structural / classification energy of the FFN update; norms around it"),
    Table("error_summary", "always", False, "confident-wrong errors: rate, share with margin > 0.3, no layer right"),
    Table("layer_predictions", "always", True, "per sample and layer: centroid and probe predictions of [CLS]"),
    Table("token_strength_summary", "tokens", False, "content / function shares of the HIGH and LOW strength buckets"),
    Table("token_strength", "tokens", True, "per token at the strength layer: strength, category, buckets"),
    Table("attention_patterns", "attention", False, "Kovaleva's pattern types and their features, per head and layer"),
    Table("attention_token_classes", "attention", False, "attention to [CLS], [SEP], punctuation and other tokens"),
    Table("attention_examples", "attention", True, "one attention map of each pattern type (per query, key)"),
    Table("attention_finetune_change", "pretrained", False, "cosine of pre-trained and fine-tuned attention maps"),
    Table("attribution_similarity", "full", False, "Spearman ρ of each attribution scope's map with the previous"),
    Table("attribution_completeness", "full", False, "how exactly each scope's maps sum to the layer's output"),
    Table("ff_amp_pairs", "full", False, "token pairs the FFN amplifies (FF-amp), bootstrap-tested"),
    Table("ff_amp_wordsplit", "full", False, "FF-amp of subword pairs within a word against other pairs"),
    Table("attention_norms", "full", False, "α, ‖f(x)‖ and ‖αf(x)‖ by token class (Kobayashi et al. 2020)"),
    Table("attribution_example", "full", True, "every scope's attribution map of one sentence (per query, key)"),
    Table("ff_norm_ratio", "tokens", False, "‖ff‖ / ‖ln1‖: the FFN output beside the bypass it is added to"),
    Table("ffn_outlier_dims", "full", False, "the FFN output's outlier dimensions and LN2's γ at them"),
    Table("interventions", "sweep", False, "Δ accuracy of each intervention (skip, ffn, attn, heads, head)"),
    Table("layer_skip", "sweep", False, "each layer skipped, with and without a compensation classifier"),
    Table("apriori_validation", "sweep", False, "the a-priori skip choice against the actual skips"),
    Table("intervention_predictions", "sweep", True, "per sample and intervention: prediction, correct, flipped"),
)
BY_NAME = {t.name: t for t in TABLES}
PER_ROW = frozenset(t.name for t in TABLES if t.per_row)
#: The version of the analysis folder's layout and meanings; ``analysis.json`` records it (none: version 1).
#: 3: the energy statistics' ``estimate`` is debiased, with ``estimate_plugin`` beside it (was ``estimate_bc``).
ANALYSIS_FORMAT = 3
#: Table files of earlier formats (version 1 wrote ``errors`` and ``token_buckets``).
RETIRED = frozenset({"errors", "token_buckets"})


def tables_for(*, tokens: bool, attention: bool, pretrained: bool, full: bool, sweep: bool) -> list[str]:
    """The names of the tables an analysis of a store with these contents writes."""
    have = {"always": True, "tokens": tokens, "attention": attention, "pretrained": pretrained and attention,
            "full": full, "sweep": sweep}
    return [t.name for t in TABLES if have[t.needs]]
