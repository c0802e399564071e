"""Sharded extraction: N processes at once fill one store that equals a serial extraction."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from bertology import BertologyError
from bertology.extract.extraction import ExtractConfig, extract
from bertology.store import open_store
from bertology.store.location import Location
from bertology.store.reader import StoreError
from bertology.store.shards import shard_name, shard_windows

from .conftest import REPO, make_split

N_SAMPLES, WINDOW = 300, 64          # 5 windows: shards of 2, 1 and 2 windows


def shard_process(model, out: str, k: int, n: int, kill_after: int | None = None, **cfg) -> subprocess.Popen:
    """``extract(..., shard=(k, n))`` in a child process; with ``kill_after=w`` it SIGKILLs itself once its
    window ``w`` is committed."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        from tests.conftest import make_split
        from bertology.extract.extraction import ExtractConfig, extract
        def crash(w):
            if w == {kill_after!r}:
                os.kill(os.getpid(), signal.SIGKILL)
        extract({str(model)!r}, make_split({N_SAMPLES}, seed=2), {out!r}, ExtractConfig(window={WINDOW}, **{cfg!r}),
                progress=False, on_window=crash, shard=({k}, {n}))
    """)
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ))


def run_together(model, out: str, n: int = 3) -> None:
    procs = [shard_process(model, out, k, n) for k in range(1, n + 1)]   # all started before any finishes
    for p in procs:
        _, err = p.communicate()
        assert p.returncode == 0, err[-2000:]


@pytest.fixture(scope="module")
def serial(tiny_models, tmp_path_factory):
    return extract(str(tiny_models["bert"]), make_split(N_SAMPLES, seed=2),
                   tmp_path_factory.mktemp("shards") / "serial.zarr", ExtractConfig(window=WINDOW), progress=False)


@pytest.fixture(scope="module")
def sharded(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "sharded.zarr"
    run_together(tiny_models["bert"], str(out))
    return out


def assert_same_store(a, b):
    for dask in (True, False):
        x, y = open_store(a, dask=dask), open_store(b, dask=dask)
        assert set(x.variables) == set(y.variables)
        for name in x.variables:
            assert x[name].dtype == y[name].dtype, name
            assert np.array_equal(x[name].values, y[name].values), f"{name} differs (dask={dask})"
        assert {k: v for k, v in x.attrs.items() if k != "shards"} == \
            {k: v for k, v in y.attrs.items() if k != "shards"}


def test_three_shards_started_together_equal_a_serial_extraction(serial, sharded):
    assert_same_store(serial, sharded)
    ds = open_store(sharded, dask=False)                     # lazily indexed across shard boundaries
    boundary = int(ds["token_start"].values[2 * WINDOW])      # the first token of shard 2
    piece = ds["token_ln2"].isel(token=slice(boundary - 5, boundary + 5), token_layer=[1]).values
    ref = open_store(serial)["token_ln2"].isel(token=slice(boundary - 5, boundary + 5), token_layer=[1]).values
    assert np.array_equal(piece, ref)


def test_no_two_shards_write_the_same_object_by_construction(sharded):
    """Each shard writes only below its own sub-store, which starts on a window boundary; the one object they
    share is the top metadata, which every shard writes with the same bytes (so no write can be lost)."""
    top = Location(str(sharded))
    owners = {}
    for k in range(1, 4):
        windows = shard_windows(5, 3, k)
        meta = json.loads((top / shard_name(k, 3) / "zarr.json").read_text())["attributes"]["bertology"]
        assert meta["shard"]["samples"] == [windows.start * WINDOW, min(windows.stop * WINDOW, N_SAMPLES)]
        for path in top.fs.find((top / shard_name(k, 3)).path):
            owners.setdefault(path, set()).add(k)
    assert all(len(ks) == 1 for ks in owners.values())
    others = set(top.fs.find(top.path)) - set(owners)
    assert others == {(top / "zarr.json").path}
    assert [len(shard_windows(5, 3, k)) for k in (1, 2, 3)] == [2, 1, 2]   # whole windows, none shared


def test_a_killed_shard_resumes_on_its_own(serial, tiny_models, tmp_path):
    out = str(tmp_path / "store.zarr")
    killed = shard_process(tiny_models["bert"], out, 1, 3, kill_after=0)
    others = [shard_process(tiny_models["bert"], out, k, 3) for k in (2, 3)]
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL
    for p in others:
        assert p.wait() == 0
    with pytest.raises(StoreError, match=r"shard\(s\) 1 \(1 windows written\) of 3"):
        open_store(out)
    p = shard_process(tiny_models["bert"], out, 1, 3)
    assert p.wait() == 0
    assert_same_store(serial, out)


def test_shards_refuse_what_does_not_fit(serial, sharded, tiny_models, tmp_path):
    model, split = str(tiny_models["bert"]), make_split(N_SAMPLES, seed=2)
    with pytest.raises(BertologyError, match="another extraction"):      # different settings than the others
        extract(model, split, sharded, ExtractConfig(window=WINDOW, dtype="float32"), progress=False, shard=(2, 3))
    with pytest.raises(BertologyError, match="a store of 3 shards"):      # another N over the same store
        extract(model, split, sharded, ExtractConfig(window=WINDOW), progress=False, shard=(1, 2))
    with pytest.raises(BertologyError, match="extracted without --shard"):
        extract(model, split, serial, ExtractConfig(window=WINDOW), progress=False, shard=(1, 2))
    with pytest.raises(BertologyError, match="only 5 extraction window"):
        extract(model, split, tmp_path / "x.zarr", ExtractConfig(window=WINDOW), progress=False, shard=(1, 6))


def test_a_sharded_store_is_analysed_and_indexed_as_the_serial_one(serial, sharded, tmp_path):
    from bertology.analysis.index import build_index
    from bertology.analysis.run import AnalyzeConfig, analyze
    from bertology.analysis.sql import query

    cfg = AnalyzeConfig(resamples=40, permutations=0, attribution_samples=3)
    a, b = analyze(serial, tmp_path / "a", cfg), analyze(sharded, tmp_path / "b", cfg)
    assert sorted(a) == sorted(b)
    for name in a:
        pd.testing.assert_frame_equal(pd.read_parquet(a[name]), pd.read_parquet(b[name]), check_exact=True, obj=name)
    db = tmp_path / "i.duckdb"
    build_index([str(sharded), str(tmp_path / "b")], db)
    assert query(db, "SELECT n_samples FROM runs")["n_samples"].tolist() == [N_SAMPLES]


def test_overwrite_replaces_a_sharded_store_shard_by_shard(tiny_models, tmp_path):
    model, split, out = str(tiny_models["bert"]), make_split(N_SAMPLES, seed=2), tmp_path / "s.zarr"
    for k in (1, 2, 3):
        extract(model, split, out, ExtractConfig(window=WINDOW), progress=False, shard=(k, 3))
    for k in (1, 2, 3):   # other settings (what a workflow rerun after a config change does)
        extract(model, split, out, ExtractConfig(window=WINDOW, dtype="float32"), progress=False, shard=(k, 3),
                overwrite=True)
    ds = open_store(out)
    assert ds.attrs["dtype"] == "float32" and ds["cls"].dtype == np.float32 and ds.sizes["sample"] == N_SAMPLES


def test_writes_overlapped_with_the_forward_passes_give_the_same_bytes(serial, tiny_models, tmp_path):
    threaded = extract(str(tiny_models["bert"]), make_split(N_SAMPLES, seed=2), tmp_path / "t.zarr",
                       ExtractConfig(window=WINDOW, overlap_writes=True), progress=False)
    assert_same_store(serial, threaded)
