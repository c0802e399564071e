"""Benchmark: a full head-disabling sweep with partial forwards from the store vs full forwards.

Run by hand (not a test):
    python bench/intervention_sweep.py --model results/sst2/model --store results/sst2/dev.zarr --n 200
Both variants run in this one process on the same batches: every ``head:l.h`` of the model, once starting at
layer l from the stored token states (what ``bertology intervene`` does) and once from layer 1 (the
embeddings, i.e. recomputing every layer below the intervention, as a full forward would). Writes
``bench/results/intervention_sweep.json`` with both wall times, their ratio, and the largest logit difference
between the two (they compute the same thing).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from bertology.extract.batching import length_batches
from bertology.extract.interventions import Intervention
from bertology.extract.models import load_classifier
from bertology.extract.partial import LayerInputs, forward_from
from bertology.store import open_store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--n", type=int, default=200, help="dev samples (the first N of the store)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", default="bench/results/intervention_sweep.json")
    args = ap.parse_args()
    full_ds = open_store(args.store)
    lm = load_classifier(args.model, label_names=tuple(full_ds.attrs["label_names"]))
    cfg = lm.model.config
    inputs = LayerInputs(full_ds)
    idx = np.arange(min(args.n, full_ds.sizes["sample"]))
    batches = length_batches(inputs.lengths, idx, args.batch_size)
    specs = [(Intervention(l, "head", h),) for l in range(1, cfg.num_hidden_layers + 1)
             for h in range(1, cfg.num_attention_heads + 1)]
    results, logits = {}, {}
    for mode in ("partial", "full"):
        out = []
        t = time.perf_counter()
        for ivs in specs:
            start = ivs[0].layer if mode == "partial" else 1
            for b in batches:
                h, m = inputs.batch(start, b)
                out.append(forward_from(lm.model, h, m, start, ivs)[0].numpy())
        results[mode] = time.perf_counter() - t
        logits[mode] = np.concatenate(out)
    record = {
        "model": args.model, "store": args.store, "task": full_ds.attrs["task"], "n_samples": int(len(idx)),
        "interventions": len(specs), "layers": cfg.num_hidden_layers, "heads": cfg.num_attention_heads,
        "seconds_partial": round(results["partial"], 2), "seconds_full": round(results["full"], 2),
        "full_over_partial": round(results["full"] / results["partial"], 3),
        "expected_ratio_if_layers_cost_the_same": round(cfg.num_hidden_layers / np.mean(
            [cfg.num_hidden_layers - s[0].layer + 1 for s in specs]), 3),
        "max_abs_logit_difference": float(np.abs(logits["partial"] - logits["full"]).max()),
        "torch_threads": torch.get_num_threads(), "machine": platform.machine(), "processor": platform.processor(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
