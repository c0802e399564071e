"""Every ordinary mistake ends in one line naming what is wrong, the right exit code, and nothing half-written.

Each case builds its bad input in a private workspace, runs the command through ``bertology.cli.main``, and
checks: the exit code, that stderr names the problem (and holds no traceback), and that the workspace holds
exactly the files it held before (no partial store, table, report, database or temporary file).
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from bertology import BertologyError
from bertology.cli import main


@dataclass
class Workspace:
    root: Path
    model: Path            # a tiny, trained-head BERT checkpoint
    results: Path          # tiny analysed results (read-only)
    store: Path            # a complete tiny store (a copy)
    index: Path            # a DuckDB index of the results (a copy)
    glue: Path             # a small, valid GLUE folder (SST-2, MRPC)

    def path(self, name: str) -> Path:
        return self.root / name


def write_glue(root: Path) -> Path:
    (root / "SST-2").mkdir(parents=True)
    rows = ["sentence\tlabel"] + [f"a {'good' if i % 2 else 'bad'} film number {i}\t{i % 2}" for i in range(12)]
    (root / "SST-2" / "dev.tsv").write_text("\n".join(rows) + "\n")
    (root / "SST-2" / "train.tsv").write_text("\n".join(rows) + "\n")
    (root / "MRPC").mkdir()
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
    pairs = [header] + [f"{i % 2}\t{i}\t{i + 100}\tthe first text {i}\tthe second text {i}" for i in range(8)]
    (root / "MRPC" / "dev.tsv").write_text("\n".join(pairs) + "\n")
    return root


@pytest.fixture(scope="module")
def fixtures(tiny_models, tiny_results, tiny_index, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs_shared")
    return tiny_models["bert"], tiny_results, tiny_index, write_glue(root / "glue")


@pytest.fixture()
def ws(fixtures, tmp_path) -> Workspace:
    model, results, index, glue = fixtures
    store = tmp_path / "store.zarr"
    shutil.copytree(results / "sst2" / "dev.zarr", store)
    db = tmp_path / "index.duckdb"
    shutil.copyfile(index, db)
    return Workspace(tmp_path, model, results, store, db, glue)


def copy_model(ws: Workspace, name: str = "model") -> Path:
    dst = ws.path(name)
    shutil.copytree(ws.model, dst)
    return dst


def extract(ws: Workspace, *extra: str, task: str = "sst2", model: Path | str | None = None) -> list[str]:
    return ["extract", "--model", str(model or ws.model), "--task", task, "--glue-dir", str(ws.glue),
            "--out", str(ws.path("out.zarr")), "--quiet", *extra]


def finetune(ws: Workspace, *extra: str, out: Path | None = None) -> list[str]:
    return ["finetune", "--model", str(ws.model), "--task", "sst2", "--glue-dir", str(ws.glue),
            "--out", str(out or ws.path("ckpt")), "--quiet", "--epochs", "1", *extra]


def analyze(ws: Workspace, store: Path, *extra: str, out: Path | None = None) -> list[str]:
    return ["analyze", str(store), "--out", str(out or ws.path("analysis")), "--resamples", "20", "--no-probe",
            "--permutations", "0", "--attribution-samples", "0", *extra]


def _no_weights(ws):
    m = copy_model(ws)
    for f in m.glob("*.safetensors"):
        f.unlink()
    return extract(ws, model=m)


def _truncated_weights(ws):
    m = copy_model(ws)
    f = next(m.glob("*.safetensors"))
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
    return extract(ws, model=m)


def _bad_config(ws):
    m = copy_model(ws)
    (m / "config.json").write_text('{"model_type": "bert", "hidden_size": ')
    return extract(ws, model=m)


def _missing_encoder_weights(ws):
    import torch
    from safetensors.torch import load_file, save_file

    m = copy_model(ws)
    f = next(m.glob("*.safetensors"))
    weights = {k: v for k, v in load_file(f).items() if "layer.1." not in k}
    save_file({k: v.contiguous() for k, v in weights.items()}, f, metadata={"format": "pt"})
    del torch
    return extract(ws, model=m)


def _overwrite_a_folder(ws):
    folder = ws.path("out.zarr")
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    return extract(ws, "--overwrite")


def _overwrite_a_sweep_as_store(ws):
    import xarray as xr

    from bertology.store.sweep import write_sweep

    ds = xr.Dataset({"x": (("intervention",), [1.0])}, coords={"intervention": ["none"], "kind": ("intervention",
                                                                                                   ["none"])})
    write_sweep(ds, ws.path("out.zarr"))
    return extract(ws, "--overwrite")


def _out_is_a_file(ws):
    ws.path("out.zarr").write_text("not a store")
    return extract(ws)


def _empty_sentence(ws):
    glue = ws.path("glue")
    shutil.copytree(ws.glue, glue)
    lines = (glue / "SST-2" / "dev.tsv").read_text().splitlines()
    lines[3] = "   \t1"
    (glue / "SST-2" / "dev.tsv").write_text("\n".join(lines) + "\n")
    return ["extract", "--model", str(ws.model), "--task", "sst2", "--glue-dir", str(glue),
            "--out", str(ws.path("out.zarr")), "--quiet"]


def _full_disk_parquet(ws):
    return ["sql", "--db", str(ws.index), "--format", "parquet", "--output", str(ws.path("rows.parquet")),
            "SELECT * FROM samples"]


def _incomplete_store(ws):
    import zarr

    g = zarr.open_group(str(ws.store), mode="r+")
    g.attrs["bertology_progress"] = {"complete": False, "windows_done": 1}
    return analyze(ws, ws.store)


def _damaged_store(ws):
    target = sorted(p for p in (ws.store / "probs" / "c").rglob("*") if p.is_file())[0]
    target.write_bytes(target.read_bytes()[:5])
    return analyze(ws, ws.store)


def _db_not_duckdb(ws, command):
    bad = ws.path("notes.duckdb")
    bad.write_text("this is not a database\n" * 100)
    if command == "index":
        return ["index", str(ws.results), "--db", str(bad)]
    return ["sql", "--db", str(bad), "SELECT 1"]


def _finetune_over_a_folder(ws):
    folder = ws.path("ckpt")
    folder.mkdir()
    (folder / "data.csv").write_text("precious")
    return finetune(ws)


def _report_over_a_folder(ws):
    folder = ws.path("report")
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    return ["report", str(ws.results), "--out", str(folder), "--db", str(ws.index)]


# (id, argv builder, exit code, text the message must contain)
CASES: list[tuple[str, Callable[[Workspace], list[str]], int, str]] = [
    # extract
    ("extract: weights missing", _no_weights, 2, "no file named model.safetensors"),
    ("extract: weights truncated", _truncated_weights, 2, "the checkpoint cannot be loaded"),
    ("extract: config.json malformed", _bad_config, 2, "config.json: not a valid model configuration"),
    ("extract: encoder weights missing", _missing_encoder_weights, 2, "lacks"),
    ("extract: model path missing", lambda ws: extract(ws, model=ws.path("nope")), 2, "not a model directory"),
    ("extract: untrained head", lambda ws: extract(ws, model="minilm-l6"), 2, "has no trained classifier head"),
    ("extract: --max-length 1", lambda ws: extract(ws, "--max-length", "1"), 2, "--max-length 1: must lie in [3, "),
    ("extract: --max-length 0", lambda ws: extract(ws, "--max-length", "0"), 2, "--max-length 0: must lie in [3, "),
    ("extract: --max-length 2 on pairs", lambda ws: extract(ws, "--max-length", "2", task="mrpc"), 2,
     "must lie in [5, "),
    ("extract: --max-length beyond positions", lambda ws: extract(ws, "--max-length", "100000"), 2,
     "the model has 160 positions"),
    ("extract: --batch-size 0", lambda ws: extract(ws, "--batch-size", "0"), 2, "argument --batch-size: 0 is not a positive integer"),
    ("extract: --limit -3", lambda ws: extract(ws, "--limit", "-3"), 2, "argument --limit: -3 is not a positive integer"),
    ("extract: --overwrite on a foreign folder", _overwrite_a_folder, 2, "replaces only a bertology store"),
    ("extract: --overwrite on a sweep", _overwrite_a_sweep_as_store, 2, "this is a bertology sweep"),
    ("extract: --out is a file", _out_is_a_file, 2, "exists and is not a bertology store"),
    ("extract: empty sentence", _empty_sentence, 2, "dev.tsv:4: column 1 (sentence) is empty"),
    ("extract: output folder not writable", lambda ws: ["extract", "--model", str(ws.model), "--task", "sst2",
                                                        "--glue-dir", str(ws.glue), "--out",
                                                        "/sys/bertology-test/out.zarr", "--quiet"],
     2, "/sys/bertology-test"),
    ("extract: GLUE folder missing", lambda ws: ["extract", "--model", str(ws.model), "--task", "sst2",
                                                 "--glue-dir", str(ws.path("no_glue")), "--out",
                                                 str(ws.path("out.zarr"))], 2, "SST-2/dev.tsv: no such file"),
    # finetune
    ("finetune: --epochs 0", lambda ws: finetune(ws, "--epochs", "0"), 2, "argument --epochs: 0 is not a positive number"),
    ("finetune: --out is a foreign folder", _finetune_over_a_folder, 2, "is a folder that is not a model checkpoint"),
    ("finetune: --max-length 2", lambda ws: finetune(ws, "--max-length", "2"), 2, "--max-length 2: must lie in"),
    # analyze
    ("analyze: store missing", lambda ws: analyze(ws, ws.path("none.zarr")), 2, "none.zarr: no such store"),
    ("analyze: store incomplete", _incomplete_store, 2, "extraction is incomplete"),
    ("analyze: damaged chunk", _damaged_store, 2, "'probs', chunk (0, 0) is damaged"),
    ("analyze: --out is a file", lambda ws: (ws.path("t.txt").write_text("x"),
                                             analyze(ws, ws.store, out=ws.path("t.txt")))[1], 2, "t.txt: is a file"),
    ("analyze: --resamples 0", lambda ws: analyze(ws, ws.store, "--resamples", "0"), 2, "argument --resamples: 0 is not an integer of at least 10"),
    ("analyze: --scheduler unknown", lambda ws: analyze(ws, ws.store, "--scheduler", "gpu"), 2,
     "--scheduler gpu: use threads, processes, local:N, or a scheduler address"),
    ("analyze: --scheduler local:0", lambda ws: analyze(ws, ws.store, "--scheduler", "local:0"), 2,
     "local:N needs a positive number of workers"),
    ("analyze: --storage-options not JSON", lambda ws: analyze(ws, ws.store, "--storage-options", "{key: 1"), 2,
     "argument --storage-options: not JSON"),
    # index
    ("index: results missing", lambda ws: ["index", str(ws.path("none")), "--db", str(ws.path("i.duckdb"))], 2,
     "no such results folder"),
    ("index: --db folder missing", lambda ws: ["index", str(ws.results), "--db", str(ws.path("no/dir/i.duckdb"))],
     2, "does not exist"),
    ("index: --db not DuckDB", lambda ws: _db_not_duckdb(ws, "index"), 2, "not a readable bertology index"),
    # sql
    ("sql: --db not DuckDB", lambda ws: _db_not_duckdb(ws, "sql"), 2, "cannot be opened as a bertology index"),
    ("sql: empty query", lambda ws: ["sql", "--db", str(ws.index), "  ;  "], 2, "empty query"),
    ("sql: --db folder missing", lambda ws: ["sql", "--db", str(ws.path("no/i.duckdb")), "SELECT 1"], 2,
     "its folder does not exist"),
    ("sql: syntax error", lambda ws: ["sql", "--db", str(ws.index), "SELEC 1"], 2, "SQL error"),
    ("sql: disk full writing parquet", _full_disk_parquet, 2, "the disk is full"),
    # report
    ("report: results missing", lambda ws: ["report", str(ws.path("none")), "--out", str(ws.path("r"))], 2,
     "no such results folder"),
    ("report: --workflow-config not JSON", lambda ws: ["report", str(ws.results), "--out", str(ws.path("r")),
                                                       "--workflow-config", "{oops"], 2, "--workflow-config is not JSON"),
    ("report: --out is a foreign folder", _report_over_a_folder, 2, "is a folder that is not a bertology report"),
    # store
    ("store info: not a store", lambda ws: (ws.path("f").mkdir(), ["store", "info", str(ws.path("f"))])[1], 2,
     "not a zarr store"),
    ("store verify: missing", lambda ws: ["store", "verify", str(ws.path("none.zarr"))], 2, "no such store"),
    ("store info: a protocol not installed", lambda ws: ["store", "info", "gs://bucket/dev.zarr"], 2,
     "install gcsfs to access Google Storage (pip install 'bertology[gcs]')"),
    ("store info: s3 without credentials", lambda ws: [
        "store", "info", "s3://bucket/dev.zarr", "--storage-options",
        '{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}, "config_kwargs": {"retries": {"max_attempts": 1}}}'],
     2, "NoCredentialsError: Unable to locate credentials. Credentials and endpoints come from the environment"),
]


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name,build,code,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input(ws, name, build, code, needle, capsys, monkeypatch):
    argv = build(ws)
    if name == "sql: disk full writing parquet":
        import pandas as pd

        def full(self, path, *a, **k):
            Path(path).write_bytes(b"PAR1 partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

        monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
    if name == "store info: s3 without credentials":
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("AWS_CONFIG_FILE", str(ws.path("no-aws-config")))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(ws.path("no-aws-credentials")))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")     # no instance-metadata lookup off 127.0.0.1
    before = snapshot(ws.root)
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse refuses a bad option value before any work
        rc = e.code
    err = capsys.readouterr().err
    assert rc == code, err
    message = [line for line in err.splitlines() if "error:" in line]
    assert len(message) == 1 and needle in message[0], err   # one line says what is wrong (argparse adds usage)
    assert "Traceback" not in err, err
    assert snapshot(ws.root) == before, "files were created, changed or removed"


def test_the_table_is_wide_enough():
    commands = {c[0].split(":")[0].split()[0] for c in CASES}
    assert len(CASES) >= 25 and commands >= {"extract", "finetune", "analyze", "index", "sql", "report", "store"}


def test_debug_shows_the_traceback(ws, monkeypatch):
    monkeypatch.setenv("BERTOLOGY_DEBUG", "1")
    with pytest.raises(BertologyError, match="no such store"):
        main(["store", "info", str(ws.path("none.zarr"))])


def test_untrained_head_is_allowed_when_asked_and_recorded(ws, capsys):
    out = ws.path("pre.zarr")
    assert main(["extract", "--model", "minilm-l6", "--task", "sst2", "--glue-dir", str(ws.glue), "--out", str(out),
                 "--quiet", "--attention-only", "--allow-untrained-head", "--limit", "4"]) == 0
    from bertology.store import open_store

    assert open_store(out).attrs["classifier_head"] == "untrained"
    capsys.readouterr()
    assert main(["store", "info", str(out)]) == 0
    assert "UNTRAINED head" in capsys.readouterr().out
    assert open_store(ws.store).attrs["classifier_head"] == "trained"


def test_max_length_at_the_pair_minimum_is_applied(ws):
    """The smallest accepted --max-length really truncates: [CLS] a [SEP] b [SEP], one token of each text."""
    from bertology.store import open_store

    out = ws.path("short.zarr")
    assert main(["extract", "--model", str(ws.model), "--task", "mrpc", "--glue-dir", str(ws.glue), "--out", str(out),
                 "--quiet", "--max-length", "5", "--token-sites", "ln2", "--no-attention"]) == 0
    ds = open_store(out)
    assert ds.attrs["max_length"] == 5 and set(ds["length"].values.tolist()) == {5}
    assert ds["token_segment"].values.reshape(-1, 5).tolist()[0] == [0, 0, 0, 1, 1]


def test_report_replaces_a_report_even_with_its_pages_removed(ws):
    """A workflow rerun deletes the report's declared files and leaves tables/: that folder is still a report."""
    out = ws.path("report")
    assert main(["report", str(ws.results), "--out", str(out), "--db", str(ws.index)]) == 0
    (out / "index.html").unlink()
    (out / "summary.md").unlink()
    assert main(["report", str(ws.results), "--out", str(out), "--db", str(ws.index)]) == 0
    assert (out / "index.html").is_file() and (out / "tables").is_dir()
