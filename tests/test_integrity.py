"""Damaged chunks are never read as data: every read names the store, variable and chunk; verify finds all."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from zarr.codecs import ZstdCodec

from bertology.cli import main
from bertology.store import open_store
from bertology.store.integrity import ChunkError, crc_ok, verify
from bertology.store.sweep import open_sweep, write_sweep

from .conftest import make_split


@pytest.fixture()
def store(tiny_results, tmp_path) -> Path:
    path = tmp_path / "dev.zarr"
    shutil.copytree(tiny_results / "sst2" / "dev.zarr", path)
    return path


def chunk(store: Path, var: str, index: int = 0) -> Path:
    files = sorted(p for p in (store / var / "c").rglob("*") if p.is_file())
    return files[index]


def flip_bit(path: Path, at: int = 7) -> None:
    data = bytearray(path.read_bytes())
    data[at % len(data)] ^= 0x10
    path.write_bytes(bytes(data))


def test_every_chunk_is_checksummed_and_present(store):
    import json

    for meta in store.glob("*/zarr.json"):
        doc = json.loads(meta.read_text())
        assert "crc32c" in [c["name"] for c in doc["codecs"]], meta.parent.name
    for f in (p for p in store.rglob("*") if p.is_file() and "/c/" in str(p.relative_to(store.parent))):
        assert crc_ok(f.read_bytes()), f
    rep = verify(store, progress=False)
    assert rep.ok and rep.unchecked_arrays == 0 and rep.chunks >= rep.arrays > 20


@pytest.mark.parametrize("damage", ["bit flip", "deleted", "truncated"])
def test_a_damaged_chunk_stops_the_read_naming_store_variable_and_chunk(store, damage):
    target = chunk(store, "token_ln2", 1)
    key = tuple(int(p) for p in target.relative_to(store / "token_ln2" / "c").parts)
    if damage == "bit flip":
        flip_bit(target)
    elif damage == "deleted":
        target.unlink()
    else:
        target.write_bytes(target.read_bytes()[: len(target.read_bytes()) // 2])
    ds = open_store(store)
    ds["cls"].values  # undamaged variables still read
    with pytest.raises(ChunkError) as err:
        ds["token_ln2"].values
    msg = str(err.value)
    assert str(store) in msg and "'token_ln2'" in msg and str(key) in msg
    assert ("missing" if damage == "deleted" else "checksum mismatch") in msg
    assert "bertology store verify" in msg and "re-extract" in msg


def test_zero_chunks_are_written_so_missing_means_damaged(store):
    """An all-zero chunk (here: predictions of class 0) exists on disk, so deleting it is detected."""
    pred = open_store(store)["pred"].values
    assert (pred == 0).any()
    target = chunk(store, "pred", 0)
    target.unlink()
    with pytest.raises(ChunkError, match="'pred', chunk \\(0,\\) is damaged: missing"):
        open_store(store)["pred"].values


def test_verify_reports_all_damage_in_one_pass(store, capsys):
    flip_bit(chunk(store, "cls", 0))
    chunk(store, "attention", 0).unlink()
    t = chunk(store, "token_ff", 0)
    t.write_bytes(t.read_bytes()[:10])
    assert main(["store", "verify", str(store), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert out.count("DAMAGED") == 3
    assert "cls chunk (0, 0, 0, 0): checksum mismatch" in out and "attention chunk (0, 0, 0): missing" in out
    assert "token_ff chunk (0, 0, 0): checksum mismatch" in out and "3 damaged chunk(s)" in out


def test_verify_passes_a_clean_store(store, capsys):
    assert main(["store", "verify", str(store), "--quiet"]) == 0
    assert "ok," in capsys.readouterr().out


def test_store_info_and_analyze_stop_on_damage_with_a_message(store, tmp_path, capsys):
    flip_bit(chunk(store, "pred", 0))
    assert main(["store", "info", str(store)]) == 2
    err = capsys.readouterr().err
    assert "'pred'" in err and "checksum mismatch" in err and "Traceback" not in err
    out = tmp_path / "analysis"
    assert main(["analyze", str(store), "--out", str(out), "--resamples", "20", "--no-probe", "--permutations", "0",
                 "--attribution-samples", "0"]) == 2
    err = capsys.readouterr().err
    assert "'pred'" in err and "is damaged" in err
    assert not out.exists() or not any(out.iterdir()), "no table is written from a damaged store"


def test_a_damaged_sweep_chunk_is_detected(tmp_path):
    n = 300
    ds = xr.Dataset(
        {"logits": (("intervention", "sample", "class"), np.random.default_rng(0).normal(size=(3, n, 2))
                    .astype(np.float32))},
        coords={"intervention": np.array(["none", "skip:1", "ffn:1"], dtype=object),
                "kind": ("intervention", np.array(["none", "skip", "ffn"], dtype=object)),
                "sample": np.arange(n)})
    path = write_sweep(ds.chunk({"sample": 100}), tmp_path / "dev.sweep")
    assert np.array_equal(open_sweep(path)["logits"].values, ds["logits"].values)
    flip_bit(chunk(path, "logits", 1))
    with pytest.raises(ChunkError, match=r"dev.sweep: variable 'logits', chunk \(0, 1, 0\)"):
        open_sweep(path)["logits"].values
    assert not verify(path, progress=False).ok


def test_stores_written_before_checksums_are_still_read(tiny_models, tmp_path, monkeypatch, capsys):
    """A store without the crc32c codec (as every store before this version) reads the same values; verify
    says its damage cannot be detected."""
    import bertology.store.writer as writer
    from bertology.extract.extraction import ExtractConfig, extract

    split = make_split(40, seed=5)
    new = extract(str(tiny_models["bert"]), split, tmp_path / "new.zarr", ExtractConfig(window=64), progress=False)
    monkeypatch.setattr(writer, "CODECS", (ZstdCodec(level=3),))
    monkeypatch.setattr(writer, "ARRAY_CONFIG", {"write_empty_chunks": False})
    old = extract(str(tiny_models["bert"]), split, tmp_path / "old.zarr", ExtractConfig(window=64), progress=False)
    a, b = open_store(new), open_store(old)
    for var in ("cls", "token_ln2", "attention", "probs", "pred"):
        assert np.array_equal(a[var].values, b[var].values), var
    assert main(["store", "verify", str(old), "--quiet"]) == 0
    assert "written without chunk checksums" in capsys.readouterr().out
