"""Benchmark: `bertology analyze` wall time against one read of the same arrays, and peak memory vs N.

Run by hand:  python bench/analysis_scaling.py STORE_N.zarr STORE_8N.zarr --out bench/out
Each measurement runs in a fresh subprocess and reports its wall time and peak resident memory (ru_maxrss).
"Read once" loads every array the analysis uses (cls, cls_embed, labels, and token ln1/ff/ln2 at every stored
layer) from the store into memory, with no computation.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

READ = """
import sys
from bertology.store import open_store
ds = open_store(sys.argv[1])
for v in ("cls", "cls_embed", "label", "length", "token_text", "token_sample", "token_position"):
    ds[v].values
ds.bertology.starts                                   # the ragged layout's offsets
for s in ("ln1", "ff", "ln2"):
    for l in ds["token_layer"].values:
        ds[f"token_{s}"].sel(token_layer=l).values
"""

ANALYZE = """
import sys
from bertology.analysis.run import AnalyzeConfig, analyze
analyze(sys.argv[1], sys.argv[2], AnalyzeConfig(resamples=int(sys.argv[3])))
"""


def measure(code: str, *args: str) -> dict:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return {"seconds": round(wall, 2), "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("stores", nargs="+")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for store in args.stores:
        from bertology.store import open_store

        ds = open_store(store)
        # ru_maxrss of children is a running maximum: measure each in its own interpreter via a wrapper
        read = json.loads(subprocess.run(
            [sys.executable, __file__, "--one", "read", store], capture_output=True, text=True, check=True).stdout)
        ana = json.loads(subprocess.run(
            [sys.executable, __file__, "--one", "analyze", store, str(out / Path(store).stem), str(args.resamples)],
            capture_output=True, text=True, check=True).stdout)
        rows.append({"store": store, "samples": ds.sizes["sample"], "tokens": ds.sizes["token"],
                     "read_once": read, "analyze": ana,
                     "analyze_over_read": round(ana["seconds"] / read["seconds"], 2)})
    report = {"resamples": args.resamples, "runs": rows}
    (out / "analysis_scaling.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        kind, rest = sys.argv[2], sys.argv[3:]
        print(json.dumps(measure(READ if kind == "read" else ANALYZE, *rest)))
    else:
        main()
