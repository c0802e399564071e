"""Your own data (``--data``): a CSV of three string labels, with a quoted comma and non-ASCII text, fine-tuned,
extracted and analysed; its JSONL and Parquet copies give the same store bytes; the options; and every bad
file ends in one line naming the file, the line (or row) and the fix, with nothing written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bertology.cli import main
from bertology.store import open_store
from bertology.store.sweep import open_sweep
from bertology.extract.user_data import DataFormatError, UserTask, load_user_split, resolve, user_task

CLASSES = ("negative", "neutral", "positive")
WORDS = {"negative": ["awful", "dull", "bad", "boring", "hated"], "neutral": ["fine", "average", "okay", "plain"],
         "positive": ["great", "loved", "superb", "good", "brilliant"]}
SPECIAL = ['The café was great, truly great', 'Naïve plot, but "fine"', 'Ужасно, просто ужасно', '映画は素晴らしい']


def make_rows(n: int, seed: int) -> list[dict]:
    """Rows of three classes, with commas, quotes and non-ASCII text among them."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = CLASSES[i % 3]
        text = " ".join(rng.choice(WORDS[label], size=int(rng.integers(2, 6))))
        if i % 7 == 0:
            text = f"{SPECIAL[(i // 7) % 4]}, {text}"
        rows.append({"id": 1000 + i, "text": text, "label": label})
    return rows


def write_folder(root: Path, fmt: str, splits: dict[str, list[dict]]) -> Path:
    """The same rows as one file per split in ``fmt`` (csv, tsv, jsonl, parquet)."""
    root.mkdir(parents=True)
    for split, rows in splits.items():
        path = root / f"{split}.{fmt}"
        if fmt in ("csv", "tsv"):
            with open(path, "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="," if fmt == "csv" else "\t")
                w.writeheader()
                w.writerows(rows)
        elif fmt == "jsonl":
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        else:
            pd.DataFrame(rows).to_parquet(path, index=False)
    return root


@pytest.fixture(scope="module")
def splits():
    return {"train": make_rows(60, 1), "dev": make_rows(30, 2)}


@pytest.fixture(scope="module")
def user_run(tmp_path_factory, splits):
    """A tiny random BERT fine-tuned on the CSV folder, its dev store and its analysis (via the CLI)."""
    from bertology.extract.models import init_random_bert

    root = tmp_path_factory.mktemp("user_data")
    data = {fmt: write_folder(root / fmt, fmt, splits) for fmt in ("csv", "jsonl", "parquet")}
    base = init_random_bert(root / "base", layers=2, hidden=32, heads=4, intermediate=64, seed=0)
    ckpt = root / "ckpt"
    assert main(["finetune", "--model", str(base), "--data", str(data["csv"]), "--task", "reviews",
                 "--id-column", "id", "--out", str(ckpt), "--epochs", "3", "--lr", "2e-3", "--quiet"]) == 0
    stores = {}
    for fmt, folder in data.items():   # a checkpoint fine-tuned with --data needs only --data and --split
        stores[fmt] = root / f"dev_{fmt}.zarr"
        assert main(["extract", "--model", str(ckpt), "--data", str(folder), "--out", str(stores[fmt]),
                     "--quiet"]) == 0
    analysis = root / "analysis"
    assert main(["analyze", str(stores["csv"]), "--out", str(analysis), "--resamples", "100",
                 "--permutations", "0", "--attribution-samples", "4"]) == 0
    return {"data": data, "ckpt": ckpt, "stores": stores, "analysis": analysis, "root": root}


def test_csv_fine_tunes_extracts_and_analyses_three_string_classes(user_run, splits):
    ds = open_store(user_run["stores"]["csv"])
    meta = ds.attrs
    assert meta["task"] == "reviews" and meta["label_names"] == list(CLASSES)
    assert meta["data"]["columns"] == {"text": "text", "text_pair": None, "label": "label", "split": None,
                                       "id": "id"}
    assert meta["data"]["label_order"] == list(CLASSES) and meta["task_type"] == "classification"
    assert meta["data_file"].endswith("csv/dev.csv") and len(meta["data_sha256"]) == 64
    # the stored texts, labels and ids are the CSV's, as the csv module reads it
    with open(user_run["data"]["csv"] / "dev.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(ds["text_a"].values) == [r["text"] for r in rows]
    assert ds["label"].values.tolist() == [CLASSES.index(r["label"]) for r in rows]
    assert ds["sample"].values.tolist() == [int(r["id"]) for r in rows]
    assert any("," in t and "é" in t for t in ds["text_a"].values)
    assert ds.sizes["class"] == 3
    # the checkpoint records the mapping and classes; its config names the classes
    rec = json.loads((user_run["ckpt"] / "metrics.json").read_text())
    assert rec["data"]["label_order"] == list(CLASSES) and rec["task"] == "reviews"
    assert set(rec["dev"]) == {"accuracy", "macro_f1", "mcc"}
    config = json.loads((user_run["ckpt"] / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(3)] == list(CLASSES)
    # analysed as three classes: k-class metrics, separability, FFN roles, errors, readouts
    an = user_run["analysis"]
    tm = pd.read_parquet(an / "task_metrics.parquet").set_index("statistic")
    acc = (ds["pred"].values == ds["label"].values).mean()
    assert tm.at["accuracy", "estimate"] == pytest.approx(acc)
    from sklearn.metrics import f1_score
    assert tm.at["macro_f1", "estimate"] == pytest.approx(f1_score(ds["label"].values, ds["pred"].values,
                                                                   average="macro", labels=[0, 1, 2],
                                                                   zero_division=0))
    sep = pd.read_parquet(an / "separability.parquet")
    assert {"fisher_trace", "probe_accuracy"} <= set(sep["statistic"]) and sep["estimate"].notna().any()
    assert "centroid_ratio" not in set(sep["statistic"])      # two-class only, left out for three
    assert len(pd.read_parquet(an / "ffn_roles.parquet")) > 0
    errors = pd.read_parquet(an / "error_summary.parquet").set_index("statistic")
    assert errors.at["error_rate", "estimate"] == pytest.approx(1 - acc)
    lp = pd.read_parquet(an / "layer_predictions.parquet")
    assert set(lp["probe_pred"]) <= {0, 1, 2}


def _chunks(store: Path) -> dict[str, bytes]:
    """Every chunk file of a store (the arrays' bytes), leaving out the metadata documents."""
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file() and p.name not in ("zarr.json", ".zattrs", ".zgroup", ".zarray")}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_jsonl_and_parquet_copies_give_the_same_store_bytes(user_run, fmt):
    a, b = _chunks(user_run["stores"]["csv"]), _chunks(user_run["stores"][fmt])
    assert len(a) > 20 and a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    meta = open_store(user_run["stores"][fmt]).attrs
    assert meta["data_file"].endswith(f"dev.{fmt}") and meta["data"]["label_order"] == list(CLASSES)


def test_intervene_needs_only_the_store(user_run):
    """The sweep reads the train split through the store's recorded data and columns."""
    out = user_run["root"] / "dev.sweep"
    assert main(["intervene", "--model", str(user_run["ckpt"]), "--store", str(user_run["stores"]["csv"]),
                 "--out", str(out), "--families", "skip,ffn", "--train-limit", "30", "--quiet"]) == 0
    sweep = open_sweep(out)
    assert sweep.sizes["class"] == 3 and sweep.attrs["train_file"].endswith("csv/train.csv")
    assert sweep.attrs["train_n"] == 30 and set(sweep["train_label"].values.tolist()) == {0, 1, 2}


def test_store_info_shows_the_column_mapping_and_classes(user_run, capsys):
    assert main(["store", "info", str(user_run["stores"]["csv"])]) == 0
    out = capsys.readouterr().out
    assert "columns      text = 'text', label = 'label', id = 'id'; classification; classes in order negative, " \
           "neutral, positive" in out


# --- options -------------------------------------------------------------------------------------------------


def test_label_order_and_numeric_labels(tmp_path):
    rows = [{"text": f"t{i}", "label": str([2, 10, 1][i % 3])} for i in range(9)]
    folder = write_folder(tmp_path / "n", "csv", {"train": rows, "dev": rows})
    task = resolve(user_task(str(folder)))
    assert task.label_order == ("1", "2", "10") and task.task_type == "classification"   # numerically
    assert any("sorted order 1, 2, 10" in n for n in task.notes)
    fixed = resolve(user_task(str(folder), label_order=("10", "2", "1")))
    assert load_user_split(fixed, "dev").labels.tolist()[:3] == [1, 0, 2]
    regression = resolve(user_task(str(folder), task_type="regression"))
    assert regression.label_names == ("score",) and load_user_split(regression, "dev").labels.tolist()[:3] == \
        [2.0, 10.0, 1.0]


def test_task_type_is_inferred_and_said(tmp_path):
    rows = [{"text": f"t{i}", "score": i * 0.37} for i in range(12)]
    folder = write_folder(tmp_path / "r", "jsonl", {"train": rows, "dev": rows})
    task = resolve(user_task(str(folder), label_column="score"))
    assert task.is_regression and task.metric == "pearson"
    assert task.notes == ("r: task type regression (its labels are numbers that are not all integers; "
                          "--task-type to change)",)


def test_one_file_with_a_split_column_and_pairs(tmp_path):
    rows = [{"premise": f"p {i}", "hypothesis": f"h {i}", "gold": ["yes", "no"][i % 2],
             "part": ["train", "validation", "test"][i % 3]} for i in range(30)]
    write_folder(tmp_path / "one", "parquet", {"all": rows})
    task = resolve(user_task(str(tmp_path / "one" / "all.parquet"), text_column="premise",
                             text_pair_column="hypothesis", label_column="gold", split_column="part"))
    dev = load_user_split(task, "dev")                         # `validation` serves as dev
    assert task.name == "all" and task.is_pair and task.label_order == ("no", "yes")
    assert [e.sample_id for e in dev.examples] == list(range(1, 30, 3))   # the row index in the file
    assert [(e.text_a, e.text_b) for e in dev.examples][:2] == [("p 1", "h 1"), ("p 4", "h 4")]
    assert len(load_user_split(task, "test")) == 10


def test_one_file_carved(tmp_path):
    rows = [{"text": f"t{i}", "label": ["a", "b"][i % 2]} for i in range(40)]
    write_folder(tmp_path / "c", "csv", {"all": rows})
    task = user_task(str(tmp_path / "c" / "all.csv"))
    train = load_user_split(task, "train", carve_train_from_dev=0.25, carve_seed=3)
    dev = load_user_split(task, "dev", carve_train_from_dev=0.25, carve_seed=3)
    assert len(train) == 10 and len(dev) == 30
    assert {e.sample_id for e in train.examples}.isdisjoint({e.sample_id for e in dev.examples})


def test_a_hub_dataset_with_class_names(tmp_path):
    """``hf:REPO[:CONFIG]``: a local repository read by ``datasets`` as the hub's would be; a ClassLabel
    column gives the class names in its own order."""
    import datasets

    repo = tmp_path / "hub" / "reviews"
    (repo / "data").mkdir(parents=True)
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["pos", "neg", "mixed"])})
    for split in ("train", "validation"):
        datasets.Dataset.from_dict({"sentence": ["good", "bad", "so-so", "great"], "label": [0, 1, 2, 0]},
                                   features=features).to_parquet(str(repo / "data" / f"{split}-0.parquet"))
    (repo / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
                                    "    path: data/train-*\n  - split: validation\n    path: data/validation-*\n---\n")
    datasets.config.HF_DATASETS_CACHE = tmp_path / "cache"
    task = resolve(user_task(f"hf:{repo}", text_column="sentence"))
    dev = load_user_split(task, "dev")
    assert task.name == "reviews" and task.label_order == ("pos", "neg", "mixed")
    assert [(e.text_a, e.label) for e in dev.examples] == [("good", 0), ("bad", 1), ("so-so", 2), ("great", 0)]
    assert dev.source == f"hf:{repo}/validation"


def test_recorded_task_round_trips():
    task = UserTask("x", "/d", "t", "u", "l", None, "i", ("a", "b"), "classification")
    assert UserTask.from_record(task.record()) == task
    assert UserTask.from_record(task.record(), "/moved").data == "/moved"
    with pytest.raises(DataFormatError, match="differs from the checkpoint's recorded"):
        user_task("/d", recorded=task.record(), label_order=("b", "a"))


# --- bad files: one line naming file, line (or row) and fix; nothing written --------------------------------


def _csv_text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


GOOD = ["text,label", "a fine film,pos", "a bad film,neg", "\"one, two\",pos"]
BAD_FILES: list[tuple[str, dict[str, str], list[str], str]] = [
    # (id, files of the data folder, extra options, what the message must say)
    ("missing text column", {"train.csv": _csv_text(["sentence,label", "a,pos", "b,neg"]), "dev.csv": _csv_text(GOOD)},
     [], "train.csv: no column 'text' (columns: sentence, label); pass --text-column"),
    ("missing label column", {"train.csv": _csv_text(GOOD), "dev.csv": _csv_text(GOOD)}, ["--label-column", "y"],
     "train.csv: no column 'y' (columns: text, label); pass --label-column"),
    ("empty text", {"train.csv": _csv_text(GOOD + ["  ,neg"]), "dev.csv": _csv_text(GOOD)}, [],
     "train.csv:5: column 'text' is empty or whitespace only"),
    ("empty label", {"train.csv": _csv_text(GOOD + ["a film,"]), "dev.csv": _csv_text(GOOD)}, [],
     "train.csv:5: column 'label' is empty"),
    ("unseen label in dev", {"train.csv": _csv_text(GOOD), "dev.csv": _csv_text(GOOD + ["odd film,mixed"])}, [],
     "dev.csv:5: label 'mixed' is not one of the task's classes (neg, pos); fix the row, or pass --label-order"),
    ("label not in --label-order", {"train.csv": _csv_text(GOOD), "dev.csv": _csv_text(GOOD)},
     ["--label-order", "pos,bad"], "train.csv:3: label 'neg' is not one of the task's classes (pos, bad)"),
    ("non-numeric regression target", {"train.csv": _csv_text(["text,label", "a,1.5", "b,high"]),
                                       "dev.csv": _csv_text(["text,label", "a,1.5"])}, ["--task-type", "regression"],
     "train.csv:3: target 'high' in column 'label' is not a number"),
    ("mixed label types", {"train.jsonl": '{"text": "a", "label": "pos"}\n{"text": "b", "label": 1}\n',
                           "dev.jsonl": '{"text": "a", "label": "pos"}\n'}, [],
     "train.jsonl:2: column 'label' mixes strings"),
    ("bad JSON line", {"train.jsonl": '{"text": "a", "label": "pos"}\n{"text": "b", "label": \n',
                       "dev.jsonl": '{"text": "a", "label": "pos"}\n'}, [], "train.jsonl:2: not valid JSON"),
    ("wrong field count", {"train.csv": _csv_text(GOOD + ["one, two,neg"]), "dev.csv": _csv_text(GOOD)}, [],
     "train.csv:5: 3 fields; the header has 2 (text, label); quote a field that holds the comma"),
    ("not UTF-8", {"train.csv": "text,label\na caf\xe9,pos\n", "dev.csv": _csv_text(GOOD)}, [],
     "train.csv:2: bytes are not valid UTF-8 (byte 0xe9); save the file as UTF-8"),
    ("no dev file", {"train.csv": _csv_text(GOOD)}, [], "no dev file (dev.csv, dev.tsv, dev.jsonl, dev.parquet)"),
    ("unknown format", {"train.xlsx": "x", "dev.csv": _csv_text(GOOD)}, [],
     "no train file (train.csv, train.tsv, train.jsonl, train.parquet); found dev.csv, train.xlsx"),
    ("one class only", {"train.csv": _csv_text(["text,label", "a,pos", "b,pos"]), "dev.csv": _csv_text(GOOD)}, [],
     "train.csv: column 'label' holds one class only ('pos'); a classifier needs at least two"),
    ("duplicate id", {"train.csv": _csv_text(["i,text,label", "1,a,pos", "2,b,neg", "1,c,pos"]),
                      "dev.csv": _csv_text(["i,text,label", "1,a,pos"])}, ["--id-column", "i"],
     "train.csv:4: id 1 in column 'i' repeats"),
    ("non-integer id", {"train.csv": _csv_text(["i,text,label", "x1,a,pos", "2,b,neg"]),
                        "dev.csv": _csv_text(["i,text,label", "1,a,pos"])}, ["--id-column", "i"],
     "train.csv:2: id 'x1' in column 'i' is not an integer"),
    ("one file without a split column", {"all.csv": _csv_text(GOOD)}, ["@all.csv"],
     "one file and no --split-column, so its train and dev rows cannot be told apart"),
    ("ambiguous integers", {"train.csv": _csv_text(["text,label"] + [f"t{i},{i}" for i in range(30)]),
                            "dev.csv": _csv_text(["text,label", "a,1"])}, [],
     "holds 30 distinct integers: classes or a score? Pass --task-type classification or regression"),
    ("columns without --data", {}, ["@nodata", "--text-column", "t"],
     "--text-column describe your own data: pass --data PATH_OR_URL with them"),
]


@pytest.mark.parametrize("name,files,extra,needle", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_files_stop_before_any_work(tmp_path, name, files, extra, needle, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for fname, content in files.items():
        (data / fname).write_bytes(content.encode("latin-1") if name == "not UTF-8" else content.encode("utf-8"))
    where = str(data)
    if extra and extra[0].startswith("@"):
        where = None if extra[0] == "@nodata" else str(data / extra[0][1:])
        extra = extra[1:]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    argv = ["finetune", "--model", "minilm-l6", "--out", str(tmp_path / "ckpt"), "--quiet", *extra]
    argv += ["--data", where] if where else ["--task", "sst2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bertology: error: ") and needle in lines[0], err
    if where and "no column" not in needle and "describe" not in needle:
        assert str(data) in lines[0]                    # names the file
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before   # nothing written


def test_the_readme_example_runs(tmp_path):
    """The README's "Your own data" example, as written, in a fresh folder: it fine-tunes the embedded model on
    three classes and analyses them."""
    import re
    import subprocess
    import sys

    from .conftest import REPO

    block = re.search(r"<!-- own-data-example -->\n```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert block, "the README lost its own-data example"
    script = block.group(1).replace(".venv/bin/", str(Path(sys.executable).parent) + "/")
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    store = open_store(tmp_path / "my_reviews" / "dev.zarr")
    assert store.attrs["label_names"] == ["negative", "neutral", "positive"] and store.sizes["sample"] == 30
    tm = pd.read_parquet(tmp_path / "my_reviews" / "analysis" / "task_metrics.parquet")
    assert set(tm["statistic"]) == {"accuracy", "macro_f1", "mcc"}


def test_the_workflow_runs_a_declared_dataset_end_to_end(tmp_path, glue_dir, splits):
    """`datasets:` in the workflow config: the tiny profile on a three-class CSV dataset, every rule (the
    sweep, the pre-trained comparison, index and report), its classes and columns in the report's provenance."""
    from .conftest import REPO, snakemake

    data = write_folder(tmp_path / "reviews", "csv", splits)
    overlay = tmp_path / "mine.yaml"
    overlay.write_text(f"tasks: [my_reviews]\ndatasets:\n  my_reviews: {{data: {data}, id_column: id}}\n")
    results = tmp_path / "results"
    proc = snakemake(results, glue_dir, configfile=[REPO / "config" / "tiny.yaml", overlay])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    store = open_store(results / "my_reviews" / "dev.zarr")
    assert store.attrs["label_names"] == list(CLASSES) and store.attrs["data"]["columns"]["id"] == "id"
    tm = pd.read_parquet(results / "my_reviews" / "analysis" / "task_metrics.parquet")
    assert set(tm["statistic"]) == {"accuracy", "macro_f1", "mcc"}
    assert (results / "my_reviews" / "compare_pretrained" / "compare.json").is_file()
    provenance = pd.read_csv(results / "report" / "tables" / "provenance.csv")
    assert provenance.at[0, "classes"] == "negative, neutral, positive"
    assert provenance.at[0, "data_columns"].startswith(f"{data} (text=text, label=label, id=id)")
