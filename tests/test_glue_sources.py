"""Where GLUE comes from: a classic folder, or a Hugging Face repository in the nyu-mll/glue layout.

The hub path is tested on a real ``datasets`` repository built here (parquet files per task config and split,
with the hub's column names and ClassLabel features), read by ``datasets.load_dataset`` exactly as the hub's
``nyu-mll/glue`` is; its rows come from the raw TSV columns, mapped by the hub's own label names, and must
give the examples the TSV reader gives.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from bertology import BertologyError
from bertology.extract.tasks import TASKS, GlueFormatError, examples_from_hf, glue_source, load_split

from .conftest import REPO
from .test_tasks import FIXTURES

#: The hub's ClassLabel names per task (nyu-mll/glue dataset card), in label-id order.
HUB_LABELS = {"cola": ["unacceptable", "acceptable"], "sst2": ["negative", "positive"],
              "mrpc": ["not_equivalent", "equivalent"], "rte": ["entailment", "not_entailment"],
              "qnli": ["entailment", "not_entailment"], "wnli": ["not_entailment", "entailment"],
              "qqp": ["not_duplicate", "duplicate"], "mnli": ["entailment", "neutral", "contradiction"],
              "stsb": None}
#: The raw TSV label string of each hub label name.
RAW = {"cola": {"0": "unacceptable", "1": "acceptable"}, "sst2": {"0": "negative", "1": "positive"},
       "mrpc": {"0": "not_equivalent", "1": "equivalent"},
       "rte": {"entailment": "entailment", "not_entailment": "not_entailment"},
       "qnli": {"entailment": "entailment", "not_entailment": "not_entailment"},
       "wnli": {"0": "not_entailment", "1": "entailment"}, "qqp": {"0": "not_duplicate", "1": "duplicate"},
       "mnli": {n: n for n in ("entailment", "neutral", "contradiction")}}
#: The hub's split names of each task's dev set(s).
HUB_SPLITS = {"mnli": {"dev_matched": "validation_matched", "dev_mismatched": "validation_mismatched"}}
N = 25


def raw_rows(glue_dir, task: str, split: str = "dev") -> list[list[str]]:
    spec = TASKS[task]
    root = glue_dir if (glue_dir / spec.folder).is_dir() else FIXTURES   # MNLI and QQP: small fixtures
    lines = (root / spec.folder / f"{split}.tsv").read_text(encoding="utf-8").split("\n")
    lines = [line for line in lines if line][(1 if spec.header else 0):]
    return [line.split("\t") for line in lines[:N]]


@pytest.fixture(scope="module")
def hub_repo(glue_dir, tmp_path_factory):
    """A local dataset repository laid out as the hub's nyu-mll/glue (a README with configs, parquet files)."""
    import datasets

    root = tmp_path_factory.mktemp("hub") / "glue"
    configs = []
    for task, spec in TASKS.items():
        names = HUB_LABELS[task]
        (root / task).mkdir(parents=True)
        files = ""
        for split, hub_split in {"train": "train", **HUB_SPLITS.get(task, {"dev": "validation"})}.items():
            stem, _, _, text_columns, label_column = spec.layout(spec.resolve_split("dev" if split == "train" else split))
            rows = raw_rows(glue_dir, task, stem)
            data = {f: [r[c] for r in rows] for f, c in zip(spec.hf_text_fields, text_columns)}
            if names is None:   # STS-B: the hub's float32 scores
                data["label"] = [float(r[label_column]) for r in rows]
                label = datasets.Value("float32")
            else:
                data["label"] = [names.index(RAW[task][r[label_column].strip()]) for r in rows]
                label = datasets.ClassLabel(names=names)
            data["idx"] = list(range(len(rows)))
            features = datasets.Features({**{f: datasets.Value("string") for f in spec.hf_text_fields},
                                          "label": label, "idx": datasets.Value("int32")})
            datasets.Dataset.from_dict(data, features=features).to_parquet(
                str(root / task / f"{hub_split}-00000-of-00001.parquet"))
            files += f"  - split: {hub_split}\n    path: {task}/{hub_split}-*\n"
        configs.append(f"- config_name: {task}\n  data_files:\n{files}")
    (root / "README.md").write_text("---\nconfigs:\n" + "".join(configs) + "---\n# GLUE (test copy)\n")
    return root


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


@pytest.mark.parametrize("task,split", [(t, "dev") for t in TASKS] + [("mnli", "dev_mismatched")])
def test_hub_layout_gives_the_examples_of_the_tsv_files(hub_repo, glue_dir, task, split):
    hub = load_split(task, split, f"hf:{hub_repo}")
    root = glue_dir if (glue_dir / TASKS[task].folder).is_dir() else FIXTURES
    tsv = load_split(task, split, root, limit=N)
    assert len(hub) == min(N, len(tsv))
    assert [(e.sample_id, e.text_a, e.text_b, e.label) for e in hub.examples] == \
        [(e.sample_id, e.text_a, e.text_b, e.label) for e in tsv.examples]
    hub_split = HUB_SPLITS.get(task, {}).get(hub.split, "validation")
    assert hub.source == f"hf:{hub_repo}/{task}/{hub_split}" and hub.sha256


def test_carving_works_on_the_hub_too(hub_repo, glue_dir):
    hub = [load_split("qnli", s, f"hf:{hub_repo}", carve_train_from_dev=0.5) for s in ("train", "dev")]
    tsv = [load_split("qnli", s, glue_dir, carve_train_from_dev=0.5) for s in ("train", "dev")]
    assert len(hub[0]) + len(hub[1]) == N and hub[0].carve_out["n_train"] == len(hub[0])
    assert {e.sample_id for e in hub[0].examples}.isdisjoint({e.sample_id for e in hub[1].examples})
    assert len(tsv[0]) > len(hub[0])


def test_rows_the_hub_marks_as_test_or_empty_are_refused():
    spec = TASKS["sst2"]
    with pytest.raises(GlueFormatError, match=r"where row 1: label -1; expected 0..1"):
        examples_from_hf(spec, [{"sentence": "fine", "label": 0}, {"sentence": "test", "label": -1}], "where")
    with pytest.raises(GlueFormatError, match=r"where row 0: empty text"):
        examples_from_hf(spec, [{"sentence": "  ", "label": 0}], "where")


def test_glue_source_order_and_checks(glue_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("GLUE_DIR", raising=False)
    assert glue_source(str(glue_dir), ["sst2"]) == str(glue_dir)
    monkeypatch.setenv("GLUE_DIR", str(glue_dir))
    assert glue_source(None, ["sst2", "qnli"], {"qnli": 0.5}) == str(glue_dir)
    with pytest.raises(BertologyError, match=r"QNLI/train.tsv"):  # no train.tsv and no carve-out
        glue_source(None, ["qnli"], {})
    with pytest.raises(BertologyError, match=r"no such folder .*Set GLUE_DIR to a folder in the classic glue_data"):
        glue_source(str(tmp_path / "none"), ["cola"])


def test_hub_fallback_offline_stops_quickly_with_the_message(tmp_path, monkeypatch):
    monkeypatch.delenv("GLUE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)            # no ../shared/glue from here
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.monotonic()
    with pytest.raises(BertologyError, match=r"GLUE_DIR unset.*cannot be reached.*set GLUE_DIR to a folder"):
        glue_source(None, ["sst2"], hub_timeout=10)
    assert time.monotonic() - t0 < 30
    monkeypatch.setitem(sys.modules, "datasets", None)  # `datasets` not installed
    with pytest.raises(BertologyError, match=r"`datasets` package .* is not installed"):
        glue_source(None, ["sst2"])


def test_workflow_without_data_stops_before_any_rule_with_one_message(tmp_path):
    """`snakemake` (here: the venv's, from a shell with nothing activated) and no GLUE data: exit 1 at once."""
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", str(tmp_path)), "GLUE_DIR": "/nonexistent"}
    t0 = time.monotonic()
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "snakemake"), "--cores", "1", "--configfile", "config/tiny.yaml", "--config", f"results={tmp_path / 'r'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and time.monotonic() - t0 < 30
    assert "bertology: error: GLUE data not found: /nonexistent/CoLA/train.tsv" in proc.stderr
    assert "Set GLUE_DIR" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()
