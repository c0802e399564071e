"""One room per analysis: every analysis of ``bertology analyze`` declared once.

An entry (:class:`Analysis`) says

- its ``name`` and the ``tables`` it writes (:class:`Table`: name, per row or a summary, the key columns of a
  per-row table, whether the report reads it);
- what it ``requires``: a predicate over the store's :class:`~bertology.store.capabilities.Capabilities`,
  what ``analyze`` was given (:class:`Inputs`) and the options, which answers None or the reason and the fix;
  and which analyses it ``depends`` on (their tables are its input);
- the ``options`` of :class:`~.options.AnalyzeConfig` it reads;
- its report ``sections`` (keys of :mod:`bertology.reports.sections`), in the order the report shows them;
- the function that ``computes`` it (``module:function`` in this package, imported when it runs: the
  registry itself stays light enough for the Snakefile and the index to import).

Everything else derives from this tuple: ``analyze``'s plan and its skipped lines (:func:`plan`), the
Snakefile's declared outputs (:func:`workflow_tables`), the index's tables and keys (:data:`TABLES`), the report's
sections and the explorer's "available" flags (:func:`store_supports`). The README's "Adding an analysis"
walks through one entry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from bertology.store.capabilities import Capabilities

from .options import AnalyzeConfig


@dataclass(frozen=True)
class Table:
    """A table ``analyze`` writes (``NAME.parquet``, the index table ``NAME``). ``per_row``: one row per
    sample, token, pair or layer of a sample (with its ``keys``), not a summary; ``report``: a per-row table
    the report reads; ``requires``: a condition of its own beyond its analysis's."""

    name: str
    doc: str
    per_row: bool = False
    keys: tuple[str, ...] = ()
    report: bool = False
    requires: Callable | None = None


@dataclass(frozen=True)
class Inputs:
    """What ``analyze`` was given beside the store: a train store, an intervention sweep, a pre-trained
    model's store of the same samples."""

    train: bool = False
    sweep: bool = False
    pretrained: bool = False


@dataclass(frozen=True)
class Analysis:
    name: str
    tables: tuple[Table, ...]
    computes: str
    requires: Callable[[Capabilities, Inputs, AnalyzeConfig], str | None] = lambda caps, inputs, cfg: None
    depends: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    sections: tuple[str, ...] = ()
    doc: str = ""

    def compute(self, ctx) -> dict:
        """Run the analysis on a :class:`~.context.Context`: its tables by name."""
        module, function = self.computes.split(":")
        return getattr(importlib.import_module(f"{__package__}.{module}"), function)(ctx)


# ---- what analyses need ------------------------------------------------------------------------------


class NotAsked(str):
    """A reason that is no shortcoming of the store: the user's own choice (an optional input not given, an
    option that turns the analysis off), or an analysis that does not apply to the task. ``analyze`` skips
    the analysis without a line. Every other reason is said."""


def _attention(caps: Capabilities, inputs: Inputs, cfg: AnalyzeConfig) -> str | None:
    if not cfg.attention:
        return NotAsked("--no-attention was given")
    why = caps.missing_attention()
    return None if why is None else f"needs attention maps: {why}"


def _pair_attention(caps: Capabilities, inputs: Inputs, cfg: AnalyzeConfig) -> str | None:
    if not caps.pairs:
        return NotAsked("is about text pairs; the task's samples have one text")
    return _attention(caps, inputs, cfg)


def _attention_change(caps: Capabilities, inputs: Inputs, cfg: AnalyzeConfig) -> str | None:
    if not inputs.pretrained:
        return NotAsked("needs the pre-trained model's attention on the same samples: pass --pretrained-store "
                        "(from `bertology extract --attention-only` with the base model)")
    return _attention(caps, inputs, cfg)


def _attribution(caps: Capabilities, inputs: Inputs, cfg: AnalyzeConfig) -> str | None:
    if not cfg.attribution_samples:
        return NotAsked("--attribution-samples 0 was given")
    why = caps.missing_full_capture()
    return None if why is None else f"needs {why}"


def _ffn_output(caps: Capabilities, inputs: Inputs, cfg: AnalyzeConfig) -> str | None:
    why = caps.missing_tokens("ff", "ln1")
    return None if why is None else f"needs the ff and ln1 token states: {why}"


def _ffn_outliers(caps: Capabilities, inputs: Inputs, cfg: AnalyzeConfig) -> str | None:
    why = _attribution(caps, inputs, cfg)   # LN2's γ comes from the checkpoint that attribution reads
    if why is None or isinstance(why, NotAsked):
        return why
    return f"reads LN2's γ from the checkpoint, with attribution, which {why}"


def _sweep(caps: Capabilities, inputs: Inputs, cfg: AnalyzeConfig) -> str | None:
    return None if inputs.sweep else NotAsked("needs an intervention sweep of this store: `bertology intervene`, then --sweep")


def _cross_fit(caps: Capabilities, inputs: Inputs, cfg: AnalyzeConfig) -> str | None:
    if inputs.train or not caps.samples or caps.samples >= 2:
        return None
    return f"cross-fitting on the store needs at least 2 samples (or --train-store); it has {caps.samples}"


def _token_strength(caps: Capabilities, inputs: Inputs, cfg: AnalyzeConfig) -> str | None:
    from .token_strength import default_layer

    why = caps.missing_tokens(cfg.strength_site)
    if why is not None:
        return f"needs token states at {cfg.strength_site}: {why}"
    layer = cfg.strength_layer or default_layer(len(caps.layers))
    if layer not in caps.layers:
        return (f"--strength-layer {layer} is past the model's depth (layers 1…{len(caps.layers)}): pass a layer "
                f"of the model")
    if layer not in caps.token_layers:
        return (f"needs token states at layer {layer} (the store has layer(s) "
                f"{', '.join(map(str, caps.token_layers))}): pass --strength-layer, or re-extract with it")
    return None


# ---- the registry ------------------------------------------------------------------------------------

REGISTRY: tuple[Analysis, ...] = (
    Analysis("task_metrics", (Table("task_metrics", "accuracy, F1 and MCC of the classifier on the stored samples "
                                                    "(a regression: Pearson, Spearman, MSE)"),),
             "task_metrics:analyze", sections=("metrics",), options=("resamples", "seed"),
             doc="the classifier's own score"),
    Analysis("separability",
             (Table("separability", "class separability of [CLS] per layer and site, its Δ and chance level"),
              Table("skip_candidates", "the a-priori layer-skip candidates (Δ separability ≤ 0)")),
             "separability:analyze", sections=("separability",),
             options=("probe", "pooling", "permutations", "seed", "correction", "skip_statistic", "skip_rule",
                      "skip_k", "block_size", "bins"),
             doc="Finding 1's premise: separability per layer and the a-priori skip candidates"),
    Analysis("interventions",
             (Table("interventions", "Δ accuracy of each intervention (skip, ffn, attn, heads, head)"),
              Table("layer_skip", "each layer skipped, with and without a compensation classifier"),
              Table("apriori_validation", "the a-priori skip choice against the actual skips"),
              Table("intervention_predictions", "per sample and intervention: prediction, correct, flipped",
                    per_row=True, keys=("intervention", "sample_index"))),
             "interventions:analyze", requires=_sweep, depends=("separability",), sections=("skip", "removals"),
             options=("resamples", "seed", "correction", "skip_statistic", "bins", "error_threshold"),
             doc="Finding 1 and Kovaleva's head disabling: what each intervention costs"),
    Analysis("attention_heads",
             (Table("attention_patterns", "Kovaleva's pattern types and their features, per head and layer"),
              Table("attention_token_classes", "attention to [CLS], [SEP], punctuation and other tokens"),
              Table("attention_examples", "one attention map of each pattern type (per query, key)",
                    per_row=True, report=True)),
             "attention_heads:analyze", requires=_attention, sections=("attention",),
             options=("attention", "resamples", "seed", "block_size"), doc="Kovaleva et al.'s head patterns"),
    Analysis("attention_change",
             (Table("attention_finetune_change", "cosine of pre-trained and fine-tuned attention maps"),),
             "attention_heads:analyze_change", requires=_attention_change,
             options=("attention", "resamples", "seed", "block_size"),
             doc="the attention change through fine-tuning (shown in the attention section)"),
    Analysis("word_matching",
             (Table("word_matching", "attention from a word to the same word in the other sentence of a pair, "
                                     "against a word at a matched distance, per head"),),
             "word_matching:analyze", requires=_pair_attention, sections=("word_matching",),
             options=("attention", "resamples", "seed", "correction", "block_size"),
             doc="Kovaleva et al.'s cross-sentence word matching"),
    Analysis("attribution",
             (Table("attribution_similarity", "Spearman ρ of each attribution scope's map with the previous"),
              Table("attribution_completeness", "how exactly each scope's maps sum to the layer's output"),
              Table("ff_amp_pairs", "token pairs the FFN amplifies (FF-amp), bootstrap-tested"),
              Table("ff_amp_wordsplit", "FF-amp of subword pairs within a word against other pairs"),
              Table("attention_norms", "α, ‖f(x)‖ and ‖αf(x)‖ by token class (Kobayashi et al. 2020)"),
              Table("attribution_example", "every scope's attribution map of one sentence (per query, key)",
                    per_row=True, report=True)),
             "attribution:analyze", requires=_attribution, sections=("attribution",),
             options=("attribution_samples", "ig_steps", "resamples", "seed", "correction"),
             doc="Kobayashi et al.'s norm-based attribution through the whole layer"),
    Analysis("ffn_roles",
             (Table("ffn_roles", "structural / classification energy of the FFN update; norms around it"),),
             "ffn_roles:analyze", sections=("ffn",),
             options=("resamples", "seed", "correction", "block_size", "bins"),
             doc="Finding 2: the FFN's dual role"),
    Analysis("ffn_output",
             (Table("ff_norm_ratio", "‖ff‖ / ‖ln1‖: the FFN output beside the bypass it is added to"),
              Table("ffn_outlier_dims", "the FFN output's outlier dimensions and LN2's γ at them",
                    requires=_ffn_outliers)),
             "ffn_roles:analyze_output", requires=_ffn_output, options=("resamples", "seed", "block_size"),
             doc="the FFN output against its bypass (shown in the attribution section)"),
    Analysis("layer_predictions",
             (Table("layer_predictions", "per sample and layer: centroid and probe predictions of [CLS]",
                    per_row=True, keys=("sample_index", "layer")),),
             "layer_predictions:analyze", requires=_cross_fit, options=("seed", "error_threshold"),
             doc="what each layer's [CLS] predicts"),
    Analysis("confident_errors",
             (Table("error_summary", "confident-wrong errors: rate, share with margin > 0.3, no layer right"),),
             "confident_errors:analyze", depends=("layer_predictions",), sections=("errors",),
             options=("confident_margin", "error_threshold", "resamples", "seed"),
             doc="Finding 3: confident-wrong errors"),
    Analysis("token_strength",
             (Table("token_strength_summary", "content / function shares of the HIGH and LOW strength buckets"),
              Table("token_strength", "per token at the strength layer: strength, category, buckets",
                    per_row=True, keys=("sample", "position"))),
             "token_strength:analyze", requires=_token_strength, sections=("tokens",),
             options=("strength_layer", "strength_site", "resamples", "seed", "block_size"),
             doc="Finding 4: token activation strength"),
)
#: The analyses of several runs of one task (``bertology across``, over ``analyze``'s folders): not part of
#: ``analyze``'s plan; their tables go to the index with the across-runs folder (``set_id``).
ACROSS_RUNS: tuple[Analysis, ...] = (
    Analysis("seed_variability",
             (Table("seed_variability", "each headline statistic over fine-tuning seeds: mean, between-seed sd, "
                                        "an interval for seeds and sentences"),
              Table("seed_stability", "the share of seeds in which each yes/no finding holds")),
             "across:across", sections=("across",), doc="a finding or seed noise?"),
    Analysis("baselines",
             (Table("baselines", "Kovaleva et al.'s Table 1: pre-trained (probe), random init + fine-tuning, "
                                 "fine-tuned, with the published values"),),
             "across:across", sections=("across",), doc="what fine-tuning and pre-training each add"),
)
BY_NAME: dict[str, Analysis] = {a.name: a for a in REGISTRY}
#: Every table, in registry order.
TABLES: tuple[Table, ...] = tuple(t for a in REGISTRY for t in a.tables)
TABLE_BY_NAME: dict[str, Table] = {t.name: t for t in TABLES}
PER_ROW = frozenset(t.name for t in TABLES if t.per_row)
#: The version of the analysis folder's layout and meanings; ``analysis.json`` records it (none: version 1).
#: 3: the energy statistics' ``estimate`` is debiased, with ``estimate_plugin`` beside it (was ``estimate_bc``).
ANALYSIS_FORMAT = 3
#: Table files of earlier formats (version 1 wrote ``errors`` and ``token_buckets``).
RETIRED = frozenset({"errors", "token_buckets"})


@dataclass
class Step:
    """One analysis in a plan: run it (``reason`` None), or skip it with the reason; and the tables it writes."""

    analysis: Analysis
    reason: str | None
    tables: list[str] = field(default_factory=list)


def plan(caps: Capabilities, inputs: Inputs, cfg: AnalyzeConfig) -> list[Step]:
    """What ``analyze`` does with a store: every analysis in order, run or skipped with the reason."""
    steps, ran = [], set()
    for a in REGISTRY:
        reason = a.requires(caps, inputs, cfg)
        missing = [d for d in a.depends if d not in ran]
        if reason is None and missing:
            reason = f"needs {', '.join(missing)}, which {'was' if len(missing) == 1 else 'were'} skipped"
        tables = [] if reason else [t.name for t in a.tables if t.requires is None or t.requires(caps, inputs, cfg) is None]
        steps.append(Step(a, reason, tables))
        if reason is None:
            ran.add(a.name)
    return steps


def tables_for(caps: Capabilities, inputs: Inputs, cfg: AnalyzeConfig) -> list[str]:
    """The tables an analysis of a store like ``caps`` with these inputs and options writes."""
    return [t for step in plan(caps, inputs, cfg) for t in step.tables]


def workflow_tables(*, attention_change: bool, attribution: bool, sweep: bool, pairs: bool = False) -> list[str]:
    """The tables the workflow's ``analyze`` rule declares: those of a full-capture dev store with a train
    store, and the pre-trained store, attribution and sweep as configured. ``pairs``: every task of the
    workflow is a text-pair task (else a table only pair tasks get is written but not declared, since one
    rule's outputs are the same for every task)."""
    return tables_for(Capabilities.full_capture(pairs=pairs),
                      Inputs(train=True, sweep=sweep, pretrained=attention_change),
                      AnalyzeConfig(attribution_samples=1 if attribution else 0))


def store_supports(name: str, caps: Capabilities) -> str | None:
    """Whether a store could support analysis ``name`` at all (None) or why not, whatever the options and
    inputs: what the explorer's "available" flags say."""
    return BY_NAME[name].requires(caps, Inputs(train=True, sweep=True, pretrained=True), AnalyzeConfig())


def sections() -> list[str]:
    """The report's analysis sections, in registry order (the across-runs analyses' last, once each)."""
    return list(dict.fromkeys(s for a in REGISTRY + ACROSS_RUNS for s in a.sections))
