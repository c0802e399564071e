"""Numbers the mission's papers publish for BERT-base, shown beside ours (always labelled as published): the
one place they are written, read by the analyses (e.g. ``attribution_similarity.published``) and the report.

Only values the papers state are here; where they give a trend's end points, only the end points are given.
BERT-base has 12 layers, so a published value at layer l sits at relative depth l/12 beside a model of
another depth (MiniLM-L6: layer 3 is depth 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

from .vocabulary import SCOPES

LABEL = "published, BERT-base"


@dataclass(frozen=True)
class Published:
    quantity: str
    value: str            # as the paper states it
    low: float            # numeric form (a point value has low == high)
    high: float
    layer: int | None = None
    of_layers: int = 12
    source: str = ""

    @property
    def depth(self) -> float | None:
        return None if self.layer is None else self.layer / self.of_layers


def nearest_layer(p: Published, n_layers: int) -> int:
    """The layer of an ``n_layers``-deep model at the published layer's relative depth (first maps to first)."""
    return max(1, round(p.depth * n_layers))


FINDINGS = "the mission's findings (BERT-base fine-tuned on GLUE)"

#: Finding 2: structural / classification energy ratio of the FFN update, per layer
FFN_RATIO = (
    Published("ffn_structural_over_classification", "~150×", 150.0, 150.0, layer=1, source=FINDINGS),
    Published("ffn_structural_over_classification", "~2×", 2.0, 2.0, layer=12, source=FINDINGS),
)
#: Finding 2: share of the FFN update's energy that is structural (class-common), front layers
FFN_STRUCTURAL_SHARE_FRONT = Published("ffn_structural_share", "~92% (front layers)", 0.92, 0.92, source=FINDINGS)
#: Finding 3: share of misclassifications with margin > 0.3, range over tasks
CONFIDENT_SHARE = Published("confident_share", "60–93% (range over tasks)", 0.60, 0.93, source=FINDINGS)
#: Finding 1: layer skipping with a compensation classifier
SKIP_LOSSLESS = Published("lossless_skip_tasks", "lossless on 3 of 5 GLUE tasks", 3, 3, source=FINDINGS)
SKIP_APRIORI_HITS = Published("apriori_top1_hits", "a-priori choice matched the actual skip on 4 of 5 tasks", 4, 4,
                              source=FINDINGS)

KOVALEVA = "Kovaleva et al. 2019, Revealing the Dark Secrets of BERT"
#: Share of heterogeneous attention heads, BERT-base fine-tuned on GLUE: lowest (MRPC) to highest (QQP)
HETEROGENEOUS_SHARE = Published("heterogeneous_share", "32% (MRPC) – 61% (QQP)", 0.32, 0.61, source=KOVALEVA)
#: Where fine-tuning changes attention most
FINETUNE_CHANGE = Published("finetune_change", "mostly the last two layers", float("nan"), float("nan"),
                            source=KOVALEVA)

#: Spearman ρ of each scope's attribution map with the previous scope's, BERT-base on Wikipedia text (Kobayashi et
#: al. 2023, Analyzing Feed-Forward Blocks in Transformers through the Lens of Attention Maps)
SCOPE_SIMILARITY = dict(zip(SCOPES[1:], (0.48, 0.41, 0.91, 0.79, 0.96, 0.73)))

#: Kovaleva et al. 2019, Table 1: each task's dev metric (in %) for the pre-trained model without fine-tuning,
#: a randomly initialised model fine-tuned on the task, and the pre-trained model fine-tuned on the task
#: (BERT-base). MRPC and QQP give F1/accuracy; the accuracies make the paper's "fine-tuning improves performance
#: by 35.9 points on average" over the pre-trained model (a test re-derives it). CoLA and WNLI were not
#: studied; STS-B's value is the paper's "Acc" column.
KOVALEVA_BASELINES: dict[str, dict[str, dict[str, float]]] = {
    "mrpc": {"pretrained": {"f1": 0.0, "accuracy": 31.6}, "random_init": {"f1": 81.2, "accuracy": 68.3},
             "finetuned": {"f1": 87.9, "accuracy": 82.3}},
    # STS-B: the task's metric, Pearson's r (× 100)
    "stsb": {"pretrained": {"pearson": 33.1}, "random_init": {"pearson": 2.9}, "finetuned": {"pearson": 82.7}},
    "sst2": {"pretrained": {"accuracy": 49.1}, "random_init": {"accuracy": 80.5}, "finetuned": {"accuracy": 92.0}},
    "qqp": {"pretrained": {"f1": 0.0, "accuracy": 60.9}, "random_init": {"f1": 0.0, "accuracy": 63.2},
            "finetuned": {"f1": 65.2, "accuracy": 78.6}},
    "rte": {"pretrained": {"accuracy": 52.7}, "random_init": {"accuracy": 52.7}, "finetuned": {"accuracy": 64.6}},
    "qnli": {"pretrained": {"accuracy": 52.8}, "random_init": {"accuracy": 49.5}, "finetuned": {"accuracy": 84.4}},
    "mnli": {"pretrained": {"accuracy": 31.7}, "random_init": {"accuracy": 61.0}, "finetuned": {"accuracy": 78.6}},
}
#: The paper's average gain of fine-tuning over the pre-trained model, in accuracy points.
KOVALEVA_FINETUNE_GAIN = 35.9
