"""The cost of chunk checksums: extraction and a full read, with and without them, measured in one run.

    python bench/chunk_checksums.py --task sst2 --n 872 [--model minilm-l6] [--repeats 3]

"with": this version's stores (zstd + crc32c on every chunk, every chunk written, reads verified by
``VerifyingStore``). "without": the layout before (zstd only, all-zero chunks skipped, reads unverified).
The two are interleaved, ``--repeats`` times each, and the medians compared. Results go to
bench/results/chunk_checksums.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

from extract_throughput import dir_bytes  # this folder's extraction benchmark (run as bench/chunk_checksums.py)
from zarr.codecs import ZstdCodec

import bertology.store.writer as writer
from bertology.extract.extraction import ExtractConfig, extract
from bertology.extract.models import load_classifier
from bertology.extract.tasks import load_split
from bertology.store import open_store
from bertology.store.integrity import ARRAY_CONFIG, CODECS

VARIANTS = {"with": (CODECS, ARRAY_CONFIG), "without": ((ZstdCodec(level=3),), {"write_empty_chunks": False})}


def read_all(path: Path) -> float:
    ds = open_store(path)
    t = time.perf_counter()
    for name in ds.data_vars:
        ds[name].values
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--n", type=int, default=872)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench/out/checksums")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    split = load_split(args.task, "dev", limit=args.n)
    lm = load_classifier(args.model, label_names=split.task.label_names)
    times: dict[str, dict[str, list[float]]] = {v: {"extract": [], "read": []} for v in VARIANTS}
    sizes = {}
    for r in range(args.repeats):
        for name, (codecs, config) in VARIANTS.items():
            writer.CODECS, writer.ARRAY_CONFIG = codecs, config
            path = out / f"{name}.zarr"
            shutil.rmtree(path, ignore_errors=True)
            t = time.perf_counter()
            extract(lm, split, path, ExtractConfig(allow_untrained_head=True), progress=False)
            times[name]["extract"].append(time.perf_counter() - t)
            times[name]["read"].append(read_all(path))
            sizes[name] = dir_bytes(path)
            print(name, r, {k: round(v[-1], 2) for k, v in times[name].items()}, flush=True)
    med = {v: {k: statistics.median(x) for k, x in d.items()} for v, d in times.items()}
    result = {
        "task": args.task, "n": len(split), "model": args.model, "repeats": args.repeats,
        "seconds_median": med, "seconds_all": times, "bytes": sizes,
        "ratio_extract": med["with"]["extract"] / med["without"]["extract"],
        "ratio_read": med["with"]["read"] / med["without"]["read"],
        "ratio_bytes": sizes["with"] / sizes["without"],
    }
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/chunk_checksums.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "seconds_all"}, indent=2))


if __name__ == "__main__":
    main()
