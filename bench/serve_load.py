"""Benchmark: `bertology serve` under load, against an index of 1,000,000 synthetic samples × 13 layers.

Run by hand:  python bench/serve_load.py --samples 1000000 --clients 8 --requests 4000 --out bench/out
Builds the synthetic index of ``bench/index_queries.py`` (reused when it is there), serves it with
``bertology serve`` (a subprocess, 127.0.0.1), and lets ``--clients`` threads send ``--requests`` requests in
all, a seeded mix of the endpoints a user clicks through: the run list, filtered and sorted sample pages (API
and HTML, deep offsets and text search included), single samples (API and HTML page), and SQL aggregates.
Writes per-endpoint and overall p50/p95/p99 latency, throughput and the error count to
``bench/results/serve_load.json``. The synthetic runs have no stores: sample pages show no attention.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from index_queries import build  # noqa: E402

RUNS = [f"{k:016d}" for k in range(5)]


def requests_mix(n: int, samples: int, seed: int) -> list[tuple[str, str, str, bytes | None]]:
    """(endpoint name, method, path, body) for ``n`` requests."""
    rng = random.Random(seed)
    per_run = samples // 5
    words = ["text 12", "text 9999", "text 4242", "text 77"]
    kinds = [
        ("GET /api/runs", 1), ("GET /api/samples (errors of a run, by margin)", 3),
        ("GET /api/samples (text search)", 1), ("GET /api/samples (deep page)", 1),
        ("GET /api/samples/{run}/{i}", 3), ("GET /errors (page)", 2), ("GET /runs/{run}/samples/{i} (page)", 2),
        ("POST /api/sql (aggregate)", 1), ("GET / (page)", 1),
    ]
    names = [k for k, w in kinds for _ in range(w)]
    out = []
    for _ in range(n):
        kind = rng.choice(names)
        run = rng.choice(RUNS)
        i = rng.randrange(per_run)
        if kind == "GET /api/runs":
            out.append((kind, "GET", "/api/runs", None))
        elif kind.startswith("GET /api/samples (errors"):
            q = dict(run_id=run, errors="true", sort="margin", order="desc", limit=50,
                     min_margin=round(rng.uniform(0, 0.5), 2))
            out.append((kind, "GET", "/api/samples?" + urllib.parse.urlencode(q), None))
        elif kind.startswith("GET /api/samples (text"):
            q = dict(q=rng.choice(words), limit=20)
            out.append((kind, "GET", "/api/samples?" + urllib.parse.urlencode(q), None))
        elif kind.startswith("GET /api/samples (deep"):
            q = dict(run_id=run, limit=50, offset=rng.randrange(per_run - 50))
            out.append((kind, "GET", "/api/samples?" + urllib.parse.urlencode(q), None))
        elif kind == "GET /api/samples/{run}/{i}":
            out.append((kind, "GET", f"/api/samples/{run}/{i}", None))
        elif kind == "GET /errors (page)":
            q = dict(run_id=run, show=rng.choice(["errors", "confident", "all"]), page=rng.randrange(1, 200))
            out.append((kind, "GET", "/errors?" + urllib.parse.urlencode(q), None))
        elif kind.startswith("GET /runs/"):
            out.append((kind, "GET", f"/runs/{run}/samples/{i}", None))
        elif kind.startswith("POST"):
            body = json.dumps({"query": f"SELECT task, count(*) AS errors, avg(margin) FROM errors WHERE length > "
                                        f"{rng.randrange(8, 100)} GROUP BY task ORDER BY task"}).encode()
            out.append((kind, "POST", "/api/sql", body))
        else:
            out.append((kind, "GET", "/", None))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentiles(xs: list[float]) -> dict:
    xs = sorted(xs)
    q = statistics.quantiles(xs, n=100, method="inclusive") if len(xs) > 1 else [xs[0]] * 99
    return {"n": len(xs), "p50_ms": round(q[49] * 1000, 1), "p95_ms": round(q[94] * 1000, 1),
            "p99_ms": round(q[98] * 1000, 1), "max_ms": round(xs[-1] * 1000, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--results", default="bench/results/serve_load.json")
    args = ap.parse_args()
    out = Path(args.out)
    results = out / "serve_results"
    results.mkdir(parents=True, exist_ok=True)
    db = results / "bertology.duckdb"
    build_s = None
    if not db.exists():
        build_s = round(build(db, args.samples, args.layers), 1)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "bertology.cli", "serve", str(results), "--port", str(port),
                               "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/api/runs", timeout=5).read()
                break
            except (urllib.error.URLError, ConnectionError):
                if server.poll() is not None:
                    raise SystemExit(server.stdout.read())
                time.sleep(0.2)
        plan = requests_mix(args.requests, args.samples, args.seed)
        for kind, method, path, body in plan[:20]:   # warm: one of each kind, roughly
            urllib.request.urlopen(urllib.request.Request(base + path, data=body, method=method,
                                                          headers={"Content-Type": "application/json"}), timeout=60).read()
        latencies: dict[str, list[float]] = {}
        errors: list[str] = []
        lock = threading.Lock()
        cursor = iter(range(len(plan)))

        def client():
            while True:
                with lock:
                    k = next(cursor, None)
                if k is None:
                    return
                kind, method, path, body = plan[k]
                req = urllib.request.Request(base + path, data=body, method=method,
                                             headers={"Content-Type": "application/json"})
                t = time.perf_counter()
                try:
                    with urllib.request.urlopen(req, timeout=60) as r:
                        r.read()
                        ok = r.status == 200
                except urllib.error.HTTPError as e:
                    ok = False
                    e.read()
                dt = time.perf_counter() - t
                with lock:
                    latencies.setdefault(kind, []).append(dt)
                    if not ok:
                        errors.append(f"{method} {path}")

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(timeout=30)
    every = [x for xs in latencies.values() for x in xs]
    report = {
        "samples": args.samples, "layers": args.layers + 1, "clients": args.clients, "requests": len(every),
        "errors": len(errors), "error_examples": errors[:5], "wall_seconds": round(wall, 1),
        "requests_per_second": round(len(every) / wall, 1), "overall": _percentiles(every),
        "by_endpoint": {k: _percentiles(v) for k, v in sorted(latencies.items())},
        "index_build_seconds": build_s, "db_bytes": db.stat().st_size,
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs", "python": platform.python_version(),
    }
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
