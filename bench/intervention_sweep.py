"""Benchmark: a full head-disabling sweep with partial forwards from the store vs full forwards.

Run by hand (not a test):
    python bench/intervention_sweep.py --model results/sst2/model --store results/sst2/dev.zarr --n 200
Both variants run in this one process on the same batches: every ``head:l.h`` of the model, once starting at
layer l from the stored token states (what ``bertology intervene`` does) and once from layer 1 (the
embeddings, i.e. recomputing every layer below the intervention, as a full forward would). Writes
``bench/results/intervention_sweep.json`` with both wall times, their ratio, and the largest logit difference
between the two (they compute the same thing).

``--train-n N`` also times the compensation classifier's features on N train samples of the store's task:
``skip_features`` (one plain forward per batch, then layers l+1…L rerun from layer l−1's output for each
skipped layer l) against one full forward per layer-skipped model (the earlier implementation).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from bertology.extract.batching import collate, encode, length_batches
from bertology.extract.interventions import Intervene, Intervention
from bertology.extract.models import load_classifier
from bertology.extract.partial import LayerInputs, forward_from
from bertology.extract.sweep import skip_features
from bertology.extract.tasks import load_split
from bertology.store import open_store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--n", type=int, default=200, help="dev samples (the first N of the store)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--train-n", type=int, default=0, help="also time the skip features on N train samples")
    ap.add_argument("--glue-dir", help="GLUE folder for --train-n (default: $GLUE_DIR)")
    ap.add_argument("--skip-heads", action="store_true", help="only the skip-feature timing")
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
    for mode in (() if args.skip_heads else ("partial", "full")):
        out = []
        t = time.perf_counter()
        for ivs in specs:
            start = ivs[0].layer if mode == "partial" else 1
            for b in batches:
                h, m = inputs.batch(start, b)
                out.append(forward_from(lm.model, h, m, start, ivs)[0].numpy())
        results[mode] = time.perf_counter() - t
        logits[mode] = np.concatenate(out)
    record = {"model": args.model, "store": args.store, "task": full_ds.attrs["task"],
              "layers": cfg.num_hidden_layers, "heads": cfg.num_attention_heads,
              "torch_threads": torch.get_num_threads(), "machine": platform.machine()}
    if results:
        record.update({
            "n_samples": int(len(idx)), "interventions": len(specs),
            "seconds_partial": round(results["partial"], 2), "seconds_full": round(results["full"], 2),
            "full_over_partial": round(results["full"] / results["partial"], 3),
            "expected_ratio_if_layers_cost_the_same": round(cfg.num_hidden_layers / np.mean(
                [cfg.num_hidden_layers - s[0].layer + 1 for s in specs]), 3),
            "max_abs_logit_difference": float(np.abs(logits["partial"] - logits["full"]).max()),
        })
    if args.train_n:
        record["skip_features"] = _time_skip_features(lm, full_ds, args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


@torch.no_grad()
def _time_skip_features(lm, ds, args) -> dict:
    train = load_split(ds.attrs["task"], "train", args.glue_dir, limit=args.train_n,
                       carve_train_from_dev=0.5 if ds.attrs["task"] == "qnli" else None)
    enc = encode(lm.tokenizer, train, int(ds.attrs["max_length"]))
    n_layers = lm.model.config.num_hidden_layers
    skips = list(range(1, n_layers + 1))
    t = time.perf_counter()
    fast = skip_features(lm, enc, skips, args.batch_size, torch.device("cpu"))
    seconds_reuse = time.perf_counter() - t
    use_types = lm.model.config.type_vocab_size >= 2
    slow = np.zeros_like(fast)
    t = time.perf_counter()
    for k, skip in enumerate([0] + skips):
        ivs = (Intervention(skip, "skip"),) if skip else ()
        for b in length_batches(enc.lengths, np.arange(len(enc)), args.batch_size):
            batch = collate(enc, b, lm.tokenizer.pad_token_id, use_types)
            with Intervene(lm.model, ivs):
                slow[k, b] = lm.model(**batch, output_hidden_states=True).hidden_states[-1][:, 0].numpy()
    seconds_full = time.perf_counter() - t
    return {"train_samples": len(enc), "mean_tokens": float(np.mean(enc.lengths)),
            "seconds_reuse_plain_forward": round(seconds_reuse, 2),
            "seconds_full_forward_per_skip": round(seconds_full, 2),
            "full_over_reuse": round(seconds_full / seconds_reuse, 3),
            "layer_passes_reuse_vs_full": [n_layers + sum(n_layers - s for s in skips), (n_layers + 1) * n_layers - n_layers],
            "max_abs_difference": float(np.abs(fast - slow).max())}


if __name__ == "__main__":
    main()
