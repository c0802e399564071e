"""Two runs of the same task side by side, from the index: per-layer readout curves of both with the paired
difference and its interval, the heads whose attention features differ most, and the samples that flip.

Accuracy and the layer readouts are compared as ``bertology compare`` compares them
(:mod:`bertology.analysis.compare`): samples matched by id (and refused where their texts or labels
differ), one Poisson-bootstrap weight per sample for both runs, A − B. The heads are ranked by the
difference of the two runs' feature means over all their samples (``attention_patterns``): a pointer to
where to look, not a paired test (``bertology compare`` gives that, in ``compare_heads``). Computed on
request from the index, so any two indexed runs of one task compare, with or without a compare folder.
"""

from __future__ import annotations

import numpy as np

from bertology.analysis.bootstrap import Bootstrap
from bertology.analysis.compare import readout_rows
from bertology.analysis.stats import paired_difference

from .common import BadRequest, records, snapshot

#: Resamples of the explorer's paired intervals (its answers are interactive).
RESAMPLES = 500
#: Heads listed, by the size of their feature change.
TOP_HEADS = 10
#: Flipping samples listed at most.
MAX_FLIPS = 200


class ComparisonService:
    """Two runs compared (a mixin of :class:`~.explorer.Explorer`)."""

    @snapshot
    def comparison(self, a: str, b: str) -> dict:
        """Run ``a`` against run ``b`` (A − B) on the samples both hold."""
        run_a, run_b = self.run(a), self.run(b)
        if (run_a["task"], run_a["split"]) != (run_b["task"], run_b["split"]):
            raise BadRequest(f"runs {a} ({run_a['task']} {run_a['split']}) and {b} ({run_b['task']} "
                             f"{run_b['split']}) hold other samples: compare two runs of one task and split")
        q = ("SELECT a.sample_id, a.sample_index AS index_a, b.sample_index AS index_b, a.text_a, a.label_name, "
             "a.pred_name AS pred_a, b.pred_name AS pred_b, a.correct AS correct_a, b.correct AS correct_b, "
             "a.margin AS margin_a, b.margin AS margin_b, (a.text_a IS DISTINCT FROM b.text_a OR a.text_b IS "
             "DISTINCT FROM b.text_b OR a.label IS DISTINCT FROM b.label) AS differs "
             "FROM samples a JOIN samples b USING (sample_id) WHERE a.run_id = ? AND b.run_id = ? ORDER BY a.sample_id")
        both = self.index.query(q, [a, b])
        if both["differs"].any():
            k = int(both.loc[both["differs"], "sample_id"].iloc[0])
            raise BadRequest(f"runs {a} and {b} hold another text or label under sample id {k}: they read "
                             f"different data files")
        both = both.drop(columns="differs")
        if not len(both):
            raise BadRequest(f"runs {a} and {b} share no sample")
        ids = both["sample_id"].to_numpy(np.int64)
        boot = Bootstrap.draw(len(ids), RESAMPLES, 0, keys=ids)
        overall = paired_difference(both["correct_a"].to_numpy(float), both["correct_b"].to_numpy(float), boot=boot)
        flips = both[both["correct_a"] != both["correct_b"]]
        return {"a": a, "b": b, "task": run_a["task"], "n_samples": len(ids),
                "only_a": int(run_a["n_samples"]) - len(ids), "only_b": int(run_b["n_samples"]) - len(ids),
                "accuracy": {"a": float(both["correct_a"].mean()), "b": float(both["correct_b"].mean()),
                             "delta": _row(overall)},
                "layers": self._layer_curves(a, b, ids, boot, run_a, run_b),
                "heads": self._head_changes(a, b, run_a, run_b),
                "flips": {"total": len(flips), "samples": records(flips.head(MAX_FLIPS))}}

    def _layer_curves(self, a, b, ids, boot, run_a, run_b) -> list[dict] | str:
        if int(run_a["metadata"].get("n_layers", 0)) != int(run_b["metadata"].get("n_layers", 0)):
            return "the models have other depths: per-layer curves need equal depth"
        if "layer_predictions" not in self.index.tables():
            return "no layer readouts in the index"
        q = "SELECT sample_id, layer, site, probe_correct, centroid_correct FROM layer_predictions WHERE run_id = ?"
        pa, pb = (self.index.query(q, [r]) for r in (a, b))
        layers: dict[int, dict] = {}
        for r in readout_rows(pa, pb, ids, boot):
            delta = {"estimate": r["estimate"], "ci_low": r["ci_low"], "ci_high": r["ci_high"], "p": r["p"],
                     "discordant": r["flipped"], "n": r["n"]}
            layers.setdefault(r["layer"], {"layer": r["layer"]})[r["readout"]] = {
                "a": r["accuracy_a"], "b": r["accuracy_b"], "delta": delta}
        return list(layers.values()) or "the runs' layer readouts share no layer over the compared samples"

    def _head_changes(self, a, b, run_a, run_b) -> list[dict] | str:
        if "attention_patterns" not in self.index.tables():
            return "no attention-head tables in the index"
        q = ("SELECT layer, head, statistic, estimate FROM attention_patterns WHERE run_id = ? AND head IS NOT NULL "
             "AND statistic LIKE 'feature_%'")
        fa, fb = (self.index.query(q, [r]) for r in (a, b))
        if not len(fa) or not len(fb):
            return "a run has no attention-head tables (extracted without attention maps)"
        joined = fa.merge(fb, on=["layer", "head", "statistic"], suffixes=("_a", "_b"))
        joined["delta"] = joined["estimate_a"] - joined["estimate_b"]
        per_head = (joined.assign(size=joined["delta"].abs()).sort_values("size", ascending=False)
                    .drop_duplicates(["layer", "head"]).head(TOP_HEADS))
        per_head["feature"] = per_head["statistic"].str.removeprefix("feature_")
        return records(per_head[["layer", "head", "feature", "estimate_a", "estimate_b", "delta"]])


def _row(d: dict) -> dict:
    return {k: d[k] for k in ("estimate", "ci_low", "ci_high", "p", "discordant", "n")}
