"""Stores, sweeps, tables, index and report on object storage, analyses on a dask cluster.

A real S3 API runs on 127.0.0.1 for the session (moto's threaded server, what zarr and s3fs test against);
every S3 client of this process and its children reaches it through ``AWS_ENDPOINT_URL_S3``. Nothing leaves
127.0.0.1: the endpoint is checked, and the cluster binds 127.0.0.1.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bertology.analysis.run import AnalyzeConfig, analyze
from bertology.extract.extraction import ExtractConfig, extract
from bertology.store import open_store
from bertology.store.location import Location

from .conftest import REPO, make_split

BUCKET = "bertology-test"
N_SAMPLES = 200          # 4 windows of 64
CFG = AnalyzeConfig(resamples=60, permutations=10, attribution_samples=6)


@pytest.fixture(scope="session")
def s3():
    """An S3-compatible server on 127.0.0.1 with one bucket; the process environment points S3 clients at it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "bertology-test-key-id", "AWS_SECRET_ACCESS_KEY": "bertology-test-secret",
           "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    assert host == "127.0.0.1"
    Location(f"s3://{BUCKET}").fs.mkdir(BUCKET)
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


def _objects(where: Location) -> dict[str, bytes]:
    """Every file below a store, by its key relative to the store, with its bytes."""
    fs, root = where.fs, where.path.rstrip("/")
    return {p[len(root) + 1:]: fs.cat_file(p) for p in fs.find(root)}


def _kill_after_first_windows(model: Path, out: str, env: dict) -> None:
    """Extract in a child process that kills itself (SIGKILL) right after window 2 is committed."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        from tests.conftest import make_split
        from bertology.extract.extraction import ExtractConfig, extract
        def crash(w):
            if w == 1:
                os.kill(os.getpid(), signal.SIGKILL)
        extract({str(model)!r}, make_split({N_SAMPLES}, seed=5), {out!r}, ExtractConfig(window=64),
                progress=False, on_window=crash)
    """)
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ, **env}, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


@pytest.fixture(scope="session")
def stores(s3, tiny_models, tmp_path_factory):
    """The same tiny full-capture extraction on local disk and on S3 (the S3 one killed once and resumed)."""
    model = tiny_models["bert"]
    local = extract(str(model), make_split(N_SAMPLES, seed=5), tmp_path_factory.mktemp("s3") / "dev.zarr",
                    ExtractConfig(window=64), progress=False)
    url = f"s3://{BUCKET}/results/sst2/dev.zarr"
    _kill_after_first_windows(model, url, s3)
    progress = json.loads(Location(url + "/zarr.json").read_text())["attributes"]["bertology_progress"]
    assert progress == {"complete": False, "windows_done": 2}
    extract(str(model), make_split(N_SAMPLES, seed=5), url, ExtractConfig(window=64), progress=False)
    return local, Location(url)


def test_a_killed_s3_extraction_resumes_to_the_local_stores_bytes(stores):
    local, remote = stores
    a, b = _objects(Location(str(local))), _objects(remote)
    assert sorted(a) == sorted(b)                      # chunk for chunk: the same objects
    differ = [k for k in a if a[k] != b[k]]
    assert not differ, f"objects that differ: {differ[:5]}"
    assert sum(1 for k in a if "/c/" in k) > 20        # many chunks, not just metadata


def test_an_unfinished_s3_store_is_refused_and_resume_refuses_other_settings(s3, tiny_models):
    from bertology import BertologyError
    from bertology.store.reader import StoreError

    url = f"s3://{BUCKET}/unfinished/dev.zarr"
    _kill_after_first_windows(tiny_models["bert"], url, s3)
    with pytest.raises(StoreError, match="incomplete"):
        open_store(url)
    with pytest.raises(BertologyError, match="different extraction"):
        extract(str(tiny_models["bert"]), make_split(N_SAMPLES, seed=5), url, ExtractConfig(window=64, dtype="float32"),
                progress=False)


def _tables(where: Location) -> dict[str, pd.DataFrame]:
    return {n.removesuffix(".parquet"): pd.read_parquet(io.BytesIO((where / n).read_bytes()))
            for n in where.listdir() if n.endswith(".parquet")}


@pytest.fixture(scope="session")
def analysed(stores, s3):
    """The S3 store analysed from S3 on a 2-worker LocalCluster with tables written to S3, and the local copy
    analysed in one process (dask's synchronous scheduler)."""
    local, remote = stores
    out = Location(f"s3://{BUCKET}/results/sst2/analysis")
    analyze(remote, out, CFG, scheduler="local:2")
    local_out = local.parent / "analysis"
    analyze(local, local_out, CFG, scheduler="sync")
    return _tables(out), _tables(Location(str(local_out))), out


def test_a_cluster_analysis_from_s3_equals_a_single_process_one(analysed):
    remote, local, _ = analysed
    assert sorted(remote) == sorted(local) and len(local) >= 15
    for name in local:
        pd.testing.assert_frame_equal(remote[name], local[name], check_exact=True, obj=name)


def test_index_and_report_read_results_on_s3(analysed, stores, tmp_path):
    from bertology.analysis.index import build_index
    from bertology.analysis.sql import query
    from bertology.reports import build_report

    _, local, out = analysed
    db = tmp_path / "index.duckdb"
    rep = build_index(f"s3://{BUCKET}/results", db)
    assert rep.added == [str(stores[1])]
    runs = query(db, "SELECT store_path, analysis_path, n_samples FROM runs")
    assert runs.to_dict("records") == [{"store_path": str(stores[1]), "analysis_path": str(out),
                                        "n_samples": N_SAMPLES}]
    n = query(db, "SELECT count(*) AS n FROM separability")["n"][0]
    assert n == len(local["separability"])
    page = build_report(f"s3://{BUCKET}/results", f"s3://{BUCKET}/report", db=db)
    html = page.read_text()
    assert "sst2" in html.lower() and "separability" in html.lower()
    assert {"index.html", "summary.md", "tables"} <= set(Location(f"s3://{BUCKET}/report").listdir())


def test_results_do_not_depend_on_workers_or_block_size(stores, tmp_path):
    local, _ = stores
    runs = {}
    for name, scheduler, block in (("one", "local:1", None), ("two", "local:2", None), ("blocks", "threads", 24)):
        cfg = AnalyzeConfig(**{**CFG.__dict__, "block_size": block})
        analyze(local, tmp_path / name, cfg, scheduler=scheduler)
        runs[name] = _tables(Location(str(tmp_path / name)))
    for table in runs["one"]:
        pd.testing.assert_frame_equal(runs["one"][table], runs["two"][table], check_exact=True, obj=table)
        # other blocks: the same sums in another order, equal to floating-point rounding
        pd.testing.assert_frame_equal(runs["one"][table], runs["blocks"][table], check_exact=False, rtol=1e-9,
                                      atol=1e-12, obj=table)


def test_credentials_never_reach_metadata_tables_index_or_task_graphs(stores, analysed, s3, tmp_path):
    from bertology.analysis.index import build_index

    secret = "not-a-real-secret-6f2c"
    _, remote = stores
    options = {"key": s3["AWS_ACCESS_KEY_ID"], "secret": secret}
    with_secret = Location(str(remote), options)
    ds = open_store(with_secret, dask=True)
    assert secret.encode() not in pickle.dumps(ds)                       # what a dask worker would receive
    assert secret.encode() not in pickle.dumps(with_secret)
    assert Location(str(remote), options).isdir()                        # the options themselves work
    out = tmp_path / "analysis"
    # the credentials only in --storage-options: a LocalCluster's workers get them from their own environment
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    proc = subprocess.run([str(Path(sys.executable).with_name("bertology")), "analyze", str(remote), "--out",
                           str(out), "--resamples", "20", "--permutations", "0", "--attribution-samples", "0",
                           "--no-probe", "--scheduler", "local:2", "--storage-options", json.dumps(options)],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    db = tmp_path / "i.duckdb"
    build_index([str(remote), str(out)], db)
    for f in [*out.iterdir(), db]:
        assert secret.encode() not in f.read_bytes(), f
    assert secret not in proc.stdout + proc.stderr
    assert all(secret.encode() not in b for b in _objects(remote).values())


def test_sweeps_on_s3_round_trip_and_an_unfinished_one_is_refused(s3, tmp_path):
    import zarr

    from bertology.store.reader import StoreError
    from bertology.store.sweep import open_sweep, write_sweep

    from .test_intervention_analysis import synthetic_sweep

    ds = synthetic_sweep()
    url = f"s3://{BUCKET}/sweeps/dev.sweep"
    write_sweep(ds, url)
    write_sweep(ds, url)                                     # replaced in place: a sweep over a sweep
    local = open_sweep(write_sweep(ds, tmp_path / "dev.sweep"))
    remote = open_sweep(url)
    for name in ("logits", "cls_final", "train_cls_final"):
        assert np.array_equal(remote[name].values, local[name].values)
    assert list(remote["intervention"].values) == list(local["intervention"].values)
    zarr.open_group(Location(url).zarr_store(), mode="r+").attrs["complete"] = False   # a writer that stopped
    with pytest.raises(StoreError, match="unfinished"):
        open_sweep(url)


def test_the_scheduler_is_chosen_by_flag_or_environment(monkeypatch, capsys):
    import dask
    from distributed import LocalCluster

    from bertology.analysis.engine import SCHEDULER_ENV, engine, parse_scheduler

    assert parse_scheduler("local:3") == ("local", 3) and parse_scheduler(None) == ("threads", None)
    for bad in ("local:0", "local:x", "gpu"):
        with pytest.raises(ValueError, match="--scheduler"):
            parse_scheduler(bad)
    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0") as cl:
        monkeypatch.setenv(SCHEDULER_ENV, cl.scheduler_address)
        lines = []
        with engine(None, say=lines.append) as kind:                 # $DASK_SCHEDULER_ADDRESS
            pid = dask.delayed(os.getpid)().compute()
        assert kind == "address" and pid != os.getpid()              # ran on the cluster's worker process
        assert cl.scheduler_address in lines[0] and "dashboard http://127.0.0.1:" in lines[0]
        with engine("threads") as kind:                              # the flag wins over the environment
            assert dask.delayed(os.getpid)().compute() == os.getpid()


def test_shards_started_together_fill_one_store_on_s3(s3, tiny_models, tmp_path):
    from .test_shards import N_SAMPLES as N, WINDOW, assert_same_store, run_together

    url = f"s3://{BUCKET}/sharded/dev.zarr"
    run_together(tiny_models["bert"], url)
    serial = extract(str(tiny_models["bert"]), make_split(N, seed=2), tmp_path / "serial.zarr",
                     ExtractConfig(window=WINDOW), progress=False)
    assert_same_store(serial, url)
    keys = _objects(Location(url))
    assert {k.split("/")[0] for k in keys if "/" in k} == {"shard-1-of-3", "shard-2-of-3", "shard-3-of-3"}


def test_users_own_data_is_read_from_object_storage(s3, tmp_path):
    """`--data s3://…`: a folder of split files on object storage reads as the same examples, with the same
    sha256, as the local copy."""
    from bertology.extract.user_data import load_user_split, user_task

    local = tmp_path / "reviews"
    local.mkdir()
    rows = "text,label\n\"good, really\",pos\nCafé bad,neg\nfine film,pos\n"
    (local / "train.csv").write_text(rows, encoding="utf-8")
    (local / "dev.jsonl").write_text('{"text": "Naïve, dull", "label": "neg"}\n{"text": "great", "label": "pos"}\n',
                                     encoding="utf-8")
    remote = Location(f"s3://{BUCKET}/data/reviews")
    for f in local.iterdir():
        (remote / f.name).write_bytes(f.read_bytes())
    for split in ("train", "dev"):
        a, b = (load_user_split(user_task(str(where)), split) for where in (local, remote.url))
        assert [(e.sample_id, e.text_a, e.label) for e in a.examples] == \
            [(e.sample_id, e.text_a, e.label) for e in b.examples]
        assert a.sha256 == b.sha256 and b.source == f"s3://{BUCKET}/data/reviews/{a.source.rsplit('/', 1)[1]}"
        assert a.task.name == b.task.name == "reviews"          # the name of the URL's last part
