"""Benchmark: latency of typical index queries on a synthetic index of 1,000,000 samples × 12 layers.

Run by hand:  python bench/index_queries.py --samples 1000000 --layers 12 --out bench/out
Builds a database with the index's schema (``runs``, ``samples``, ``layer_predictions``, ``index_info`` and the
``errors`` / ``confident_errors`` views, as ``bertology index`` creates them; ``bench/serve_load.py`` serves it) filled with synthetic rows over 5 tasks,
then times the README's queries (median of 5 runs, warm, in-process; `bertology sql` adds interpreter start-up).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import duckdb

from bertology.analysis.registry import ANALYSIS_FORMAT
from bertology.analysis.index import INDEX_SCHEMA_VERSION, VIEWS

QUERIES = {
    "confident errors by task": "SELECT task, count(*) AS errors, count(*) FILTER (margin > 0.3) AS confident, "
                                "avg(margin) FROM errors GROUP BY task ORDER BY task",
    "right at some layer, wrong at output": "SELECT s.task, count(DISTINCT s.sample_index) FROM errors s JOIN "
                                            "layer_predictions l USING (run_id, sample_index) WHERE l.probe_correct "
                                            "GROUP BY s.task",
    "layer from which a wrong prediction settles": "WITH c AS (SELECT e.task, e.sample_index, max(l.layer) FILTER "
                                                   "(l.probe_pred <> e.pred) AS last FROM errors e JOIN layer_predictions l "
                                                   "USING (run_id, sample_index) GROUP BY ALL) SELECT task, "
                                                   "coalesce(last + 1, 0) AS settled, count(*) FROM c GROUP BY ALL",
    "errors by length bucket": "SELECT task, length // 16 AS bucket, avg(CASE WHEN correct THEN 0 ELSE 1 END) "
                               "FROM samples GROUP BY ALL ORDER BY ALL",
    "one sample's layers": "SELECT * FROM layer_predictions WHERE run_id = '0000000000000003' AND sample_index = 123456 ORDER BY layer",
    "confident errors, long inputs, top margin": "SELECT task, sample_id, margin FROM confident_errors "
                                                 "WHERE length > 40 ORDER BY margin DESC LIMIT 20",
}


def build(db: Path, n: int, layers: int) -> float:
    t = time.perf_counter()
    db.unlink(missing_ok=True)
    with duckdb.connect(str(db)) as con:
        con.execute("SELECT setseed(0.42)")
        con.execute(f"""
            CREATE TABLE samples AS
            SELECT lpad((i % 5)::VARCHAR, 16, '0') AS run_id, ['cola','sst2','mrpc','rte','qnli'][1 + i % 5] AS task, 'dev' AS split,
                   i AS sample_id, i // 5 AS sample_index, 'text ' || i AS text_a, '' AS text_b,
                   (random() < 0.5)::INT AS label, 8 + (random() * 100)::INT AS length, random() AS u
            FROM range({n}) t(i)""")
        con.execute("""
            CREATE OR REPLACE TABLE samples AS
            SELECT * EXCLUDE (u), CASE WHEN u < 0.15 THEN 1 - label ELSE label END AS pred,
                   u >= 0.15 AS correct, CASE WHEN u < 0.15 THEN u * 6 ELSE 0 END AS margin,
                   0.5 + random() / 2 AS confidence FROM samples""")
        con.execute(f"""
            CREATE TABLE layer_predictions AS
            SELECT s.run_id, s.sample_index, s.sample_id, l.layer, s.label,
                   CASE WHEN random() < 0.5 + l.layer / {2 * layers + 2} THEN s.label ELSE 1 - s.label END AS probe_pred,
                   CASE WHEN random() < 0.5 + l.layer / {2 * layers + 2} THEN s.label ELSE 1 - s.label END AS centroid_pred,
                   random() * 20 AS cls_norm, random() - 0.5 AS class_direction_projection
            FROM samples s CROSS JOIN range(0, {layers + 1}) l(layer)""")
        con.execute("ALTER TABLE layer_predictions ADD COLUMN probe_correct BOOLEAN")
        con.execute("ALTER TABLE layer_predictions ADD COLUMN centroid_correct BOOLEAN")
        con.execute("ALTER TABLE layer_predictions ADD COLUMN site VARCHAR")
        con.execute("UPDATE layer_predictions SET probe_correct = probe_pred = label, "
                    "centroid_correct = centroid_pred = label, site = CASE WHEN layer = 0 THEN 'embed' ELSE 'ln2' END")
        # the rest of the index's schema, so that `bertology serve` can serve this database
        con.execute("""
            CREATE OR REPLACE TABLE samples AS
            SELECT *, CASE WHEN label = 1 THEN 'positive' ELSE 'negative' END AS label_name,
                   CASE WHEN pred = 1 THEN 'positive' ELSE 'negative' END AS pred_name,
                   CASE WHEN pred = 1 THEN [1 - confidence, confidence] ELSE [confidence, 1 - confidence] END AS probs
            FROM samples""")
        con.execute(f"""
            CREATE TABLE runs AS
            SELECT lpad(k::VARCHAR, 16, '0') AS run_id, ['cola','sst2','mrpc','rte','qnli'][1 + k] AS task, 'dev' AS split,
                   'synthetic' AS model, 'synthetic' AS checkpoint, '' AS model_sha256,
                   (SELECT count(*) FROM samples s WHERE s.run_id = lpad(k::VARCHAR, 16, '0')) AS n_samples, false AS carve_out,
                   'null' AS carve_out_json, NULL::VARCHAR AS analysis_path, 'train store' AS layer_fit,
                   '{{"n_layers": {layers}, "n_heads": 12, "label_names": ["negative", "positive"]}}' AS metadata,
                   'run-' || k || '.zarr' AS store_path, '' AS fingerprint
            FROM range(5) t(k)""")
        con.execute("CREATE TABLE index_info AS SELECT ? AS schema_version, ? AS analysis_format",
                    [INDEX_SCHEMA_VERSION, ANALYSIS_FORMAT])
        for name, q in VIEWS.items():
            con.execute(f"CREATE OR REPLACE VIEW {name} AS {q}")
        con.execute("CHECKPOINT")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--out", default="bench/out")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    db = out / "synthetic_index.duckdb"
    build_s = build(db, args.samples, args.layers)
    timings = {}
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.sql("SELECT count(*) FROM layer_predictions").fetchall()[0][0]
        for name, q in QUERIES.items():
            con.sql(q).fetchall()  # warm
            runs = []
            for _ in range(5):
                t = time.perf_counter()
                con.sql(q).fetchall()
                runs.append(time.perf_counter() - t)
            timings[name] = round(statistics.median(runs), 4)
    report = {"samples": args.samples, "layers": args.layers + 1, "layer_prediction_rows": rows,
              "build_seconds": round(build_s, 1), "db_bytes": db.stat().st_size, "median_query_seconds": timings}
    (out / "index_queries.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
