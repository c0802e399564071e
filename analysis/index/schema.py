"""What the index holds: its tables, their natural keys, its views and its schema version.

A *run* is one complete store, with the analysis tables written for it. Tables (every row carries ``run_id``):

- ``runs``: store path, task, split, ``task_type`` (classification or regression), model, checkpoint and its sha256, the fine-tuning ``seed`` (from the
  checkpoint's ``metrics.json``; NULL for a checkpoint bertology did not fine-tune), sample count, carve-out flag and
  JSON, how per-layer probes were fitted (``layer_fit``), the store metadata as JSON, a fingerprint;
- ``samples``: task, split, sample id, text(s), label, prediction (ids and names), probabilities,
  ``confidence`` p(predicted), ``margin`` p(predicted) − p(true), ``correct``, ``length`` in tokens; a
  regression's (STS-B's) ``label`` and ``pred`` are the gold and predicted scores (the columns are DOUBLE once
  an index holds one), ``abs_error`` their distance, ``correct`` whether it is within the analysis's error
  threshold, and ``confidence``, ``margin`` NULL;
- every analysis table of :mod:`..registry`, under the name of its file (``separability.parquet`` is the table
  ``separability``); per-row tables (``layer_predictions``, ``token_strength``, ``attention_examples``,
  ``attribution_example``, ``intervention_predictions``) never share a name with a summary
  (``token_strength_summary``, ``error_summary``);
- ``compares``: one row per comparison folder (``bertology compare --out``): its ``compare_id``, task, the
  runs A and B (``a_run_id``, ``b_run_id``), the samples compared; and its tables ``compare_samples`` (one row
  per sample: each run's prediction, correctness and margin, ``flipped``), ``compare_summary``,
  ``compare_layers``, ``compare_interventions``, ``compare_heads``, ``compare_separability``, ``compare_ffn``
  and ``compare_attribution`` (differences A − B), each with ``compare_id``;
- ``run_sets``: one row per across-runs folder (``bertology across --out``): its ``set_id``, task, the seeds
  and run ids of the fine-tuned runs (JSON), the pre-trained and random-init baseline folders; and its tables
  ``seed_variability``, ``seed_stability`` and ``baselines`` (:mod:`..across`), each with ``set_id``;
- ``index_info``: the index's schema version (:data:`INDEX_SCHEMA_VERSION`) and the analysis format it reads;
- views ``errors`` (the ``samples`` rows with ``NOT correct``: a regression's errors are those beyond the
  error threshold) and ``confident_errors`` (errors with ``margin > 0.3``; a regression has none, its
  margin being NULL).

Layer numbers mean one thing everywhere: layer ``l`` is the l-th encoder layer, and layer 0 is the
embedding output (site ``embed``, the input of layer 1). A row about no single layer or head has ``layer``
(``head``) NULL and says what it is about: ``unit`` ``layer`` (a layer's mean over its heads) or ``model``
(over every layer), or ``intervention`` ``none`` (the unskipped control of ``layer_skip``).
"""

from __future__ import annotations

from ..options import CONFIDENT_MARGIN
from ..registry import ACROSS_RUNS, TABLES

#: The analysis tables (each file ``NAME.parquet`` becomes the table ``NAME``; see :mod:`..registry`).
ANALYSIS_TABLES = tuple(t.name for t in TABLES)
#: The version of the index's tables and names, in the table ``index_info``; a database of another version
#: is rebuilt from scratch (a newer one is refused). 2: one name per file and table, NULL layers and a ``unit``
#: column instead of ``layer = 0`` for aggregates. 3: analysis format 3 (debiased energy estimates,
#: ``estimate_plugin``, ``se`` and ``bounded`` columns). 4: the comparisons of ``bertology compare``. 5: the
#: runs' ``seed``, and the across-runs folders of ``bertology across``. 6: regression tasks (numeric labels and
#: predictions, ``abs_error``) and the tasks' ``task_type``.
INDEX_SCHEMA_VERSION = 6
RUN_TABLES = ("samples",) + ANALYSIS_TABLES
#: The version of a comparison folder's layout (``bertology compare``), in its ``compare.json``.
COMPARE_FORMAT = 1
#: The tables of a comparison folder (``bertology compare``), each row with its ``compare_id``.
COMPARE_TABLES = ("compare_samples", "compare_summary", "compare_layers", "compare_interventions", "compare_heads",
                  "compare_separability", "compare_ffn", "compare_attribution")
#: The version of an across-runs folder's layout (``bertology across``), in its ``across.json``.
ACROSS_FORMAT = 1
#: The tables of an across-runs folder, each row with its ``set_id``: the registry's across-runs analyses.
ACROSS_TABLES = tuple(t.name for a in ACROSS_RUNS for t in a.tables)
#: Natural keys: no two rows of a table may share them (summary tables are guarded through ``runs``); the
#: per-row tables' keys are the registry's.
PRIMARY_KEYS = {
    "runs": ("run_id",),
    "samples": ("run_id", "sample_index"),
    **{t.name: ("run_id",) + t.keys for t in TABLES if t.keys},
    "compares": ("compare_id",),
    "compare_samples": ("compare_id", "sample_id"),
    "run_sets": ("set_id",),
}
VIEWS = {
    "errors": "SELECT * FROM samples WHERE NOT correct",
    "confident_errors": f"SELECT * FROM samples WHERE NOT correct AND margin > {CONFIDENT_MARGIN}",
}


def schema_version(con) -> int | None:
    """The schema version of an open index (1: before ``index_info``; None: no index at all)."""
    tables = {r[0] for r in con.sql("SELECT table_name FROM information_schema.tables").fetchall()}
    if "index_info" not in tables:
        return 1 if "runs" in tables else None
    return con.sql("SELECT schema_version FROM index_info").fetchall()[0][0]
