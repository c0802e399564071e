"""`bertology index` killed at any point, or run twice at once, never leaves duplicates or a mixed database."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from bertology.analysis.index import PRIMARY_KEYS, build_index

N_RUNS = 6


def index_cmd(results: Path, db: Path) -> list[str]:
    return [sys.executable, "-m", "bertology.cli", "index", str(results), "--db", str(db)]


@pytest.fixture(scope="module")
def many_runs(tiny_results, tmp_path_factory) -> Path:
    """N_RUNS copies of the tiny analysed run: a results folder whose index build takes several seconds."""
    root = tmp_path_factory.mktemp("many_runs")
    for i in range(N_RUNS):
        shutil.copytree(tiny_results / "sst2", root / f"run{i}" / "sst2")
    return root


@pytest.fixture(scope="module")
def clean_db(many_runs, tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("clean") / "clean.duckdb"
    build_index(many_runs, db)
    return db


def tables(db: Path) -> dict[str, pd.DataFrame]:
    """Every table of a database, rows in a canonical order."""
    with duckdb.connect(str(db), read_only=True) as con:
        names = [r[0] for r in con.sql("SELECT table_name FROM information_schema.tables "
                                       "WHERE table_type = 'BASE TABLE' ORDER BY 1").fetchall()]
        out = {}
        for t in names:
            df = con.sql(f'SELECT * FROM "{t}"').df()
            df = df.drop(columns=[c for c in ("store_path", "analysis_path", "metadata") if c in df and t == "runs"])
            key = [c for c in df.columns if df[c].map(lambda v: not hasattr(v, "__len__") or isinstance(v, str)).all()]
            out[t] = df.sort_values(key).reset_index(drop=True) if key else df
        return out


def assert_same_rows(db: Path, reference: Path | None, want: dict[str, pd.DataFrame] | None = None) -> None:
    """``db`` holds exactly the rows of ``reference`` (or of the tables ``want``), and no duplicates."""
    got, want = tables(db), (want if want is not None else tables(reference))
    assert sorted(got) == sorted(want)
    for name in want:
        pd.testing.assert_frame_equal(got[name], want[name], check_like=True, obj=name)
    with duckdb.connect(str(db), read_only=True) as con:
        present = {r[0] for r in con.sql("SELECT table_name FROM information_schema.tables").fetchall()}
        for table, key in PRIMARY_KEYS.items():
            if table not in present:
                continue
            cols = ", ".join(key)
            dup = con.sql(f'SELECT count(*) FROM (SELECT {cols} FROM "{table}" GROUP BY {cols} HAVING count(*) > 1)')
            assert dup.fetchall()[0][0] == 0, f"duplicates in {table}"


def wait_for(path: Path, timeout: float = 60) -> None:
    t0 = time.monotonic()
    while not path.exists():
        assert time.monotonic() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.02)


def drop_runs(db: Path, run_ids: list[str]) -> None:
    """Remove runs from an index, as if they had not been analysed when it was built."""
    with duckdb.connect(str(db)) as con:
        for (t,) in con.sql("SELECT DISTINCT table_name FROM information_schema.columns "
                            "WHERE column_name = 'run_id'").fetchall():
            if con.sql(f"SELECT table_type FROM information_schema.tables WHERE table_name = '{t}'").fetchall()[0][0] \
                    == "BASE TABLE":
                con.execute(f'DELETE FROM "{t}" WHERE run_id IN (SELECT unnest(?))', [run_ids])


def half_index(clean_db: Path, db: Path) -> dict[str, pd.DataFrame]:
    """Make ``db`` an index of the first half of the runs, as if the rest had not been analysed yet."""
    shutil.copyfile(clean_db, db)
    with duckdb.connect(str(db), read_only=True) as con:
        ids = [r[0] for r in con.sql("SELECT run_id FROM runs ORDER BY store_path").fetchall()]
    drop_runs(db, ids[N_RUNS // 2:])
    return tables(db)


@pytest.mark.parametrize("incremental,after_runs", [(False, 0), (False, 1), (True, 0), (True, 1)],
                         ids=["fresh-at-start", "fresh-after-one-run", "incremental-at-start",
                              "incremental-after-one-run"])
def test_kill_9_then_rebuild_equals_a_clean_build(many_runs, clean_db, tmp_path, incremental, after_runs):
    """Killed as the temporary database appears, or once the build reports its first run committed (the
    kill points are program states, not times, so they hold on a slow or a fast machine)."""
    db = tmp_path / "index.duckdb"
    tmp = db.with_name(db.name + ".building")
    previous = half_index(clean_db, db) if incremental else None
    proc = subprocess.Popen(index_cmd(many_runs, db), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if after_runs:
        for line in proc.stderr:  # (anything else on stderr, e.g. a library's warning, is passed over)
            if line.startswith(f"indexed {after_runs}/"):
                break
        else:
            pytest.fail("the build never reported a committed run")
    else:
        wait_for(tmp)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the build finished before it was killed: make the results larger"
    proc.stderr.close()
    assert tmp.exists(), "killed mid-build, the temporary database is still there"
    if incremental:  # the old database is still whole
        assert_same_rows(db, None, want=previous)
    else:
        assert not db.exists()
    rebuilt = subprocess.run(index_cmd(many_runs, db), capture_output=True, text=True, timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert_same_rows(db, clean_db)
    assert not list(tmp_path.glob("*.building*")), "temporary files left behind"
    assert len(tables(db)["runs"]) == N_RUNS


def test_leftover_temporary_database_and_wal_are_never_replayed(many_runs, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(many_runs / "run0", results / "run0")
    db = tmp_path / "index.duckdb"
    build_index(results, db)
    reference = tables(db)
    # what a killed build leaves: a temporary database holding the runs, and its write-ahead log
    tmp = db.with_name(db.name + ".building")
    shutil.copyfile(db, tmp)
    with duckdb.connect(str(tmp)) as con:
        con.execute("SET checkpoint_threshold = '1TB'")  # keep the next writes in the WAL
        con.execute("INSERT INTO runs SELECT * REPLACE ('ghost' AS run_id) FROM runs")
        wal = Path(str(tmp) + ".wal")
        shutil.copyfile(wal, tmp_path / "saved.wal")
    shutil.copyfile(tmp_path / "saved.wal", wal)  # (closing checkpointed it; put the log back)
    shutil.copytree(many_runs / "run1", results / "run1")
    rep = build_index(results, db)
    assert len(rep.added) == 1 and len(rep.unchanged) == 1
    runs = tables(db)["runs"]
    assert len(runs) == 2 and "ghost" not in set(runs["run_id"])
    pd.testing.assert_frame_equal(runs[runs["run_id"].isin(reference["runs"]["run_id"])].reset_index(drop=True),
                                  reference["runs"])
    assert not tmp.exists() and not wal.exists()


def test_two_builds_at_once_wait_for_each_other(many_runs, clean_db, tmp_path):
    db = tmp_path / "index.duckdb"
    procs = [subprocess.Popen(index_cmd(many_runs, db), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    assert not any("Traceback" in err for _, err in outs)
    verdicts = sorted(out.strip().splitlines()[-1].rsplit(" ", 1)[-1] for out, _ in outs)
    assert verdicts == ["unchanged", "updated"], outs
    assert_same_rows(db, clean_db)


def test_a_build_that_cannot_get_the_lock_stops_with_a_message(tiny_results, tmp_path):
    from filelock import FileLock

    db = tmp_path / "index.duckdb"
    with FileLock(str(db) + ".lock"):
        proc = subprocess.run(index_cmd(tiny_results, db) + ["--wait", "0.5"], capture_output=True, text=True,
                              timeout=120, env={**os.environ})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "another `bertology index` is building this database" in proc.stderr and "--wait" in proc.stderr
    assert not db.exists()


def test_a_run_cannot_be_inserted_twice(tiny_index, tmp_path):
    db = tmp_path / "index.duckdb"
    shutil.copyfile(tiny_index, db)
    with duckdb.connect(str(db)) as con:
        for stmt in ("INSERT INTO runs SELECT * FROM runs",
                     "INSERT INTO samples SELECT * FROM samples LIMIT 1",
                     "INSERT INTO layer_predictions SELECT * FROM layer_predictions LIMIT 1",
                     "INSERT INTO token_strength SELECT * FROM token_strength LIMIT 1"):
            with pytest.raises(duckdb.ConstraintException):
                con.execute(stmt)
