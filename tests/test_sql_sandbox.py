"""``bertology sql`` cannot write, cannot read files, cannot reconfigure itself; limits hold and can be raised."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

import pytest

from bertology import BertologyError
from bertology.analysis import sql
from bertology.cli import main


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture()
def sandbox(tiny_index, tmp_path):
    """A private copy of the tiny index and an empty folder that every escape attempt targets."""
    db = tmp_path / "index.duckdb"
    shutil.copyfile(tiny_index, db)
    target = tmp_path / "target"
    target.mkdir()
    (target / "secret.csv").write_text("a,b\n1,2\n")
    return db, target


# Each entry: (what it tries, the query; {T} is a folder beside the database, {DB} the database itself).
ESCAPES = [
    ("INSERT", "INSERT INTO runs (run_id) VALUES ('x')"),
    ("UPDATE", "UPDATE samples SET correct = true"),
    ("DELETE", "DELETE FROM samples"),
    ("CREATE TABLE", "CREATE TABLE evil AS SELECT 1"),
    ("CREATE TEMP TABLE", "CREATE TEMP TABLE evil AS SELECT 1"),
    ("CREATE VIEW", "CREATE VIEW evil AS SELECT 1"),
    ("CREATE MACRO", "CREATE MACRO evil(a) AS a + 1"),
    ("DROP", "DROP TABLE samples"),
    ("ALTER", "ALTER TABLE runs ADD COLUMN evil INTEGER"),
    ("COPY TO", "COPY samples TO '{T}/out.csv'"),
    ("COPY FROM", "COPY runs FROM '{T}/secret.csv'"),
    ("EXPORT DATABASE", "EXPORT DATABASE '{T}/export'"),
    ("IMPORT DATABASE", "IMPORT DATABASE '{T}'"),
    ("ATTACH", "ATTACH '{T}/other.duckdb' AS other"),
    ("ATTACH the index for writing", "ATTACH '{DB}' AS w"),
    ("DETACH", "DETACH memory"),
    ("INSTALL", "INSTALL httpfs"),
    ("LOAD", "LOAD httpfs"),
    ("LOAD a file", "LOAD '{T}/evil.duckdb_extension'"),
    ("SET", "SET enable_external_access = true"),
    ("SET memory", "SET memory_limit = '1GB'"),
    ("RESET", "RESET threads"),
    ("PRAGMA that changes state", "PRAGMA enable_profiling"),
    ("PRAGMA profiling output", "PRAGMA profiling_output = '{T}/profile.json'"),
    ("PRAGMA threads", "PRAGMA threads = 1"),
    ("CHECKPOINT", "CHECKPOINT"),
    ("VACUUM", "VACUUM"),
    ("CALL", "CALL pragma_table_info('runs')"),
    ("transaction", "BEGIN TRANSACTION"),
    ("PREPARE", "PREPARE p AS SELECT 1"),
    ("CREATE SECRET", "CREATE SECRET (TYPE s3, KEY_ID 'a', SECRET 'b')"),
    ("EXPLAIN ANALYZE of COPY", "EXPLAIN ANALYZE COPY samples TO '{T}/explained.csv'"),
    ("EXPLAIN ANALYZE of INSERT", "EXPLAIN ANALYZE INSERT INTO runs (run_id) VALUES ('x')"),
    ("EXPLAIN ANALYZE of CREATE", "EXPLAIN ANALYZE CREATE TABLE evil AS SELECT 1"),
    ("EXPLAIN of DROP", "EXPLAIN DROP TABLE samples"),
    ("two statements", "SELECT 1; DROP TABLE samples"),
    ("two statements, second a COPY", "SELECT 1; COPY samples TO '{T}/two.csv'"),
    ("write inside a CTE", "WITH x AS (DELETE FROM samples RETURNING *) SELECT * FROM x"),
    ("read_csv", "SELECT * FROM read_csv('{T}/secret.csv')"),
    ("read_csv_auto on /etc/passwd", "SELECT * FROM read_csv_auto('/etc/passwd')"),
    ("read_text", "SELECT * FROM read_text('{T}/secret.csv')"),
    ("read_blob", "SELECT * FROM read_blob('{T}/secret.csv')"),
    ("read_parquet", "SELECT * FROM read_parquet('{T}/*.parquet')"),
    ("glob", "SELECT * FROM glob('{T}/*')"),
    ("a file path as a table", "SELECT * FROM '{T}/secret.csv'"),
    ("read_json", "SELECT * FROM read_json('{T}/secret.csv')"),
    ("a Python variable as a table", "SELECT * FROM ESCAPES"),
]


@pytest.mark.parametrize("what,template", ESCAPES, ids=[e[0] for e in ESCAPES])
def test_escape_attempt_is_refused(sandbox, what, template):
    db, target = sandbox
    before_db, before_tree = digest(db), tree(db.parent)
    query = template.format(T=target, DB=db)
    with pytest.raises(BertologyError) as err:
        sql.query(db, query)
    message = str(err.value)
    assert message and ("read-only" in message or "SQL error" in message), message
    assert digest(db) == before_db, "the index file changed"
    assert tree(db.parent) == before_tree, "a file was created or removed"


def test_there_are_enough_escape_attempts():
    kinds = {what for what, _ in ESCAPES}
    assert len(ESCAPES) >= 20 and {"COPY TO", "EXPORT DATABASE", "ATTACH", "INSTALL", "LOAD", "SET", "RESET",
                                   "EXPLAIN ANALYZE of COPY", "two statements", "write inside a CTE",
                                   "read_csv"} <= kinds


def test_the_connection_itself_refuses_what_the_allow_list_would_let_through(sandbox):
    """The allow-list is the second line: with it bypassed, DuckDB's settings still refuse."""
    db, target = sandbox
    before = digest(db)
    with sql.connect(db) as con:
        for q in (f"COPY samples TO '{target}/x.csv'", f"SELECT * FROM read_csv('{target}/secret.csv')",
                  "SET enable_external_access = true", f"ATTACH '{target}/o.duckdb' AS o", "LOAD httpfs",
                  "DELETE FROM samples"):
            with pytest.raises(Exception):
                con.sql(q)
    assert digest(db) == before and tree(target) == ["secret.csv"]


def test_reading_statements_still_work(tiny_index):
    assert sql.query(tiny_index, "SELECT count(*) AS n FROM samples")["n"].iloc[0] == 90
    assert len(sql.query(tiny_index, "PRAGMA table_info('runs')")) > 5
    assert "samples" in set(sql.query(tiny_index, "SHOW TABLES")["name"])
    assert len(sql.query(tiny_index, "DESCRIBE samples")) > 5
    assert len(sql.query(tiny_index, "EXPLAIN SELECT * FROM samples")) == 1
    assert len(sql.query(tiny_index, "EXPLAIN ANALYZE SELECT count(*) FROM samples")) == 1
    assert len(sql.query(tiny_index, "WITH w AS (SELECT * FROM samples) SELECT * FROM w LIMIT 3")) == 3


def test_row_limit_truncates_and_says_so(tiny_index, capsys):
    df = sql.query(tiny_index, "SELECT * FROM samples", sql.Limits(max_rows=7))
    assert len(df) == 7 and df.attrs["truncated"]
    df = sql.query(tiny_index, "SELECT * FROM samples", sql.Limits(max_rows=1000))
    assert len(df) == 90 and not df.attrs["truncated"]
    assert main(["sql", "--db", str(tiny_index), "--max-rows", "5", "--format", "csv", "SELECT * FROM samples"]) == 0
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 6 and "stopped at 5 rows" in err


def test_time_limit_interrupts_a_runaway_query(tiny_index):
    slow = "SELECT count(*) FROM range(100000000000) a, range(1000) b"
    with pytest.raises(BertologyError, match=r"interrupted after 0.5 s \(--timeout raises the limit\)"):
        sql.query(tiny_index, slow, sql.Limits(timeout=0.5))


def test_broken_pipe_is_quiet(tiny_index):
    """`bertology sql ... | head -1`: no traceback when the reader goes away."""
    cmd = (f"{sys.executable} -m bertology.cli sql --db {tiny_index} --format csv "
           f"'SELECT * FROM samples, range(50)' | head -1")
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout.startswith("run_id,") and len(proc.stdout.splitlines()) == 1
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
