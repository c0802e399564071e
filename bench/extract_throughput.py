"""Benchmark: extraction throughput (full capture vs a bare forward pass) and store size.

Run by hand (not a test):  python bench/extract_throughput.py --model DIR --task sst2 --n 400 --out bench/out
Writes ``extract_throughput.json`` with:
- sequences/s of a bare forward pass over the same length-sorted batches (no hooks, no writes);
- sequences/s of ``bertology extract`` with full capture (every site at every layer per token, attention)
  and with ``--cls-only``;
- store bytes per 1,000 sequences, against the same tensors padded to each batch's longest sequence and to
  ``max_length`` in float32 (what a naive ``torch.save`` of the hook outputs would hold);
- full capture with the writer thread and with the writes inline (``overlap_writes``), what overlap buys;
- full capture with other codecs for every array (``--codecs``: zstd levels, blosc-lz4, none), seconds and
  bytes as ratios to the default.

On a GPU (``--device cuda``) the bare forward is timed with ``torch.cuda.synchronize()``. ``bench/gpu.sh``
runs it for MiniLM and a BERT-base-shaped model in one command.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from bertology.extract.batching import collate, encode, length_batches
from bertology.extract.extraction import ExtractConfig, extract
from bertology.extract.models import load_classifier
from bertology.extract.tasks import load_split


def _codecs():
    from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

    return {"zstd1": (ZstdCodec(level=1), Crc32cCodec()), "zstd3": (ZstdCodec(level=3), Crc32cCodec()),
            "lz4": (BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"), Crc32cCodec()),
            "none": (Crc32cCodec(),)}


CODECS = _codecs()


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--codecs", default="zstd3,lz4,none", help="codecs to compare with the default (zstd1)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    split = load_split(args.task, args.split, limit=args.n)
    from bertology.extract.extraction import pick_device

    device = pick_device(args.device)
    lm = load_classifier(args.model, label_names=split.task.label_names, device=device)
    lm.model.to(device)
    enc = encode(lm.tokenizer, split, args.max_length)
    cfg = lm.model.config
    L, H, F, h = cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads
    use_types = cfg.type_vocab_size >= 2
    # the same batches extraction uses: windows of 128 samples, length-sorted within each window
    batches = [b for s in range(0, len(enc), 128)
               for b in length_batches(enc.lengths, np.arange(s, min(s + 128, len(enc))), args.batch_size)]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def bare() -> float:
        sync()
        t = time.perf_counter()
        with torch.inference_mode():
            for b in batches:
                lm.model(**collate(enc, b, lm.tokenizer.pad_token_id or 0, use_types, device))
        sync()
        return time.perf_counter() - t

    bare()  # warm-up
    t_bare = min(bare() for _ in range(2))
    results = {}
    common = dict(batch_size=args.batch_size, max_length=args.max_length, allow_untrained_head=True)
    import bertology.store.writer as writer_module

    def run(name, ecfg):
        path = out / f"{name}.zarr"
        shutil.rmtree(path, ignore_errors=True)
        t = time.perf_counter()
        extract(lm, split, path, ecfg, progress=False, device=str(device))
        dt = time.perf_counter() - t
        results[name] = {"seconds": round(dt, 2), "seq_per_s": round(len(enc) / dt, 1),
                         "bytes": dir_bytes(path), "bytes_per_1000_seq": round(dir_bytes(path) / len(enc) * 1000)}
        shutil.rmtree(path, ignore_errors=True)

    run("full", ExtractConfig(**common))
    run("cls_only", ExtractConfig(**common, token_sites=(), attention=False))
    run("full_writer_thread", ExtractConfig(**common, overlap_writes=True))
    run("full_inline_writes", ExtractConfig(**common, overlap_writes=False))
    default = writer_module.CODECS
    for codec in [c for c in args.codecs.split(",") if c]:
        writer_module.CODECS = CODECS[codec]
        run(f"full_{codec}", ExtractConfig(**common))
    writer_module.CODECS = default
    codecs = {c: {"seconds_vs_default": round(results[f"full_{c}"]["seconds"] / results["full"]["seconds"], 2),
                  "bytes_vs_default": round(results[f"full_{c}"]["bytes"] / results["full"]["bytes"], 3)}
              for c in args.codecs.split(",") if c}
    # the same tensors, padded, float32: 7 token sites x L layers (+ embed) per position, attention (L,h,n,n)
    per_pos = (6 * H + F) * L + H
    padded_batch = sum(len(b) * enc.lengths[b].max() * per_pos + len(b) * L * h * enc.lengths[b].max() ** 2
                       for b in batches) * 4
    padded_max = len(enc) * (args.max_length * per_pos + L * h * args.max_length ** 2) * 4
    report = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, {platform.processor() or 'cpu'}",
        "torch": torch.__version__, "model": args.model, "task": args.task, "split": args.split, "n": len(enc),
        "mean_tokens": round(float(enc.lengths.mean()), 1), "batch_size": args.batch_size,
        "bare_forward": {"seconds": round(t_bare, 2), "seq_per_s": round(len(enc) / t_bare, 1)},
        **results,
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "full_capture_slowdown_vs_bare": round(results["full"]["seconds"] / t_bare, 2),
        "cls_only_slowdown_vs_bare": round(results["cls_only"]["seconds"] / t_bare, 2),
        "inline_writes_slowdown_vs_bare": round(results["full_inline_writes"]["seconds"] / t_bare, 2),
        "writer_thread_slowdown_vs_bare": round(results["full_writer_thread"]["seconds"] / t_bare, 2),
        "codecs": codecs,
        "padded_float32_bytes_per_1000_seq": {"pad_to_batch_max": round(padded_batch / len(enc) * 1000),
                                               "pad_to_max_length": round(padded_max / len(enc) * 1000)},
        "store_vs_padded_float32": {
            "pad_to_batch_max": round(results["full"]["bytes"] / padded_batch, 4),
            "pad_to_max_length": round(results["full"]["bytes"] / padded_max, 4)},
    }
    (out / "extract_throughput.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
