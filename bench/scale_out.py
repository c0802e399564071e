"""Benchmark: the analysis on dask's threaded scheduler vs a LocalCluster, and reading a store from S3 vs disk.

Run by hand (one run each; nothing leaves 127.0.0.1):

    python bench/scale_out.py --store bench/out/sst2_dev.zarr --out bench/results/scale_out.json

``--store`` is extracted first if missing (MiniLM-L6, all 872 SST-2 dev sentences, full capture; the
classifier head is untrained, which costs the same). Measured:

1. ``bertology analyze`` defaults with ``--scheduler threads`` (a fresh process: wall time, peak RSS) and on a
   2-worker ``LocalCluster`` (wall time, peak RSS of each worker and of the client process);
2. one full read of every array of the store from local disk and from a moto S3 server on 127.0.0.1 (the
   store copied there object by object), as seconds and MB/s;
3. per-task costs of the analysis (the dask task stream of the cluster run), which the README's projection
   of a BERT-base study scales.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ANALYZE = """
import sys
from bertology.analysis.run import analyze
analyze(sys.argv[1], sys.argv[2], scheduler=sys.argv[3])
"""

READ = """
import sys, time
from bertology.store import open_store
t = time.perf_counter()
ds = open_store(sys.argv[1])
n = 0
for name, var in ds.variables.items():
    n += var.values.nbytes
print(time.perf_counter() - t, n)
"""


def child(code: str, *args: str, env: dict | None = None) -> tuple[float, str]:
    """Run ``code`` in a fresh interpreter: (wall seconds, stdout); its peak RSS via RUSAGE_CHILDREN."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return time.perf_counter() - t, proc.stdout


def ensure_store(path: Path) -> None:
    if path.exists():
        return
    subprocess.run([Path(sys.executable).with_name("bertology"), "extract", "--model", "minilm-l6", "--task",
                    "sst2", "--split", "dev", "--out", str(path), "--allow-untrained-head", "--quiet",
                    "--glue-dir", os.environ.get("GLUE_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "glue"))],
                   check=True)


def cluster_run(store: Path, out: Path) -> dict:
    """The analysis on a 2-worker LocalCluster started here, so that its workers can be asked their peak RSS."""
    from distributed import Client, LocalCluster

    from bertology.analysis.run import analyze

    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0") as cl, \
            Client(cl) as client:
        t = time.perf_counter()
        analyze(store, out, scheduler=cl.scheduler_address)
        wall = time.perf_counter() - t
        peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        prefixes = client.run_on_scheduler(lambda dask_scheduler: {
            name: {"tasks": int(sum(p.state_counts.values())), "seconds": round(float(p.all_durations.get("compute", 0)), 2)}
            for name, p in dask_scheduler.task_prefixes.items()})
    return {"seconds": round(wall, 1), "worker_peak_rss_mib": sorted(round(v) for v in peaks.values()),
            "task_prefixes": prefixes}


def s3_read(store: Path) -> dict:
    """Copy the store to a moto S3 server on 127.0.0.1 and read it back in a fresh process."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}"}
    os.environ.update(env)
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.mkdir("bench")
    t = time.perf_counter()
    fs.put(str(store), "bench/dev.zarr", recursive=True)
    upload = time.perf_counter() - t
    wall, out = child(READ, "s3://bench/dev.zarr", env=env)
    seconds, nbytes = (float(x) for x in out.split())
    server.stop()
    return {"upload_seconds": round(upload, 1), "read_seconds": round(seconds, 2), "bytes_decoded": int(nbytes)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default="bench/out/sst2_dev.zarr")
    ap.add_argument("--out", default="bench/results/scale_out.json")
    args = ap.parse_args()
    store = Path(args.store)
    ensure_store(store)
    work = store.parent / "scale_out"
    result = {"store": str(store), "store_bytes": sum(f.stat().st_size for f in store.rglob("*") if f.is_file()),
              "cores": os.cpu_count()}
    wall, _ = child(ANALYZE, str(store), str(work / "threads"), "threads")
    result["threads"] = {"seconds": round(wall, 1),
                         "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}
    result["local_2"] = cluster_run(store, work / "local2")
    local_wall, out = child(READ, str(store))
    seconds, nbytes = (float(x) for x in out.split())
    result["read_local"] = {"read_seconds": round(seconds, 2), "bytes_decoded": int(nbytes)}
    result["read_s3"] = s3_read(store)
    result["read_s3_over_local"] = round(result["read_s3"]["read_seconds"] / result["read_local"]["read_seconds"], 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "local_2"}, indent=2))
    print(json.dumps({k: v for k, v in result["local_2"].items() if k != "task_prefixes"}, indent=2))


if __name__ == "__main__":
    main()
