"""The workflow's settings for remote stores, GPUs, sharded extraction and SLURM, checked by dry runs of the tiny
profile (no rule runs): which files Snakemake tracks, where the stores go, what every command gets, which rules
ask for a GPU, which jobs wait for which."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bertology.analysis.registry import workflow_tables

from .conftest import REPO

TASKS = ("cola", "sst2", "mrpc", "stsb", "rte", "qnli")
STORES = ("dev.zarr", "train.zarr", "pretrained_dev.zarr", "dev.sweep")
#: the rules of the default run a GPU speeds up; and those of Kovaleva's baselines (config `baselines`)
DEFAULT_GPU_RULES = {"finetune", "extract_dev", "extract_pretrained", "extract_train", "intervene"}
GPU_RULES = DEFAULT_GPU_RULES | {"finetune_random_init", "extract_random_init", "extract_pretrained_train"}
ROOT = "s3://bucket/prefix"
OPTIONS = """--storage-options '{"client_kwargs": {"region_name": "eu-west-1"}}'"""
REMOTE = ("storage: {root: s3://bucket/prefix/, options: {client_kwargs: {region_name: eu-west-1}}}\n"
          "dask: {scheduler: 'local:4'}\ngpu: true\n")


def snakemake(*args: str, glue_dir: Path, config: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """The venv's snakemake from a shell where nothing is activated (as tests/test_workflow.py runs it)."""
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    cmd = [os.path.join(venv_bin, "snakemake"), *args, "--config", f"glue_dir={glue_dir}", *config]
    return subprocess.run(cmd,
                          cwd=REPO, env=dict(os.environ, PATH=path), capture_output=True, text=True, timeout=300)


def dry_run(tmp: Path, glue_dir: Path, extra_config: str = "", *args: str) -> tuple[Path, list[dict]]:
    """(results folder, the jobs of a dry run of the tiny profile): rule, output, resources, shell per job."""
    (tmp / "extra.yaml").write_text(extra_config or "{}\n")
    results = tmp / "results"
    proc = snakemake("-n", "-p", "--configfile", "config/tiny.yaml", str(tmp / "extra.yaml"), *args,
                     glue_dir=glue_dir, config=(f"results={results}",))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = []
    for block in re.split(r"\n\s*\n", proc.stdout + proc.stderr):
        rule = re.search(r"^rule (\w+):", block, re.M)
        if rule and rule.group(1) != "all":
            field = lambda name: (re.search(rf"^\s*{name}: (.*)$", block, re.M) or [None, ""])[1]  # noqa: E731
            jobs.append(dict(rule=rule.group(1), output=field("output").split(", "), input=field("input").split(", "),
                             resources=field("resources"), shell=field("Shell command")))
    return results, jobs


@pytest.fixture(scope="session")
def local(tmp_path_factory, glue_dir):
    return dry_run(tmp_path_factory.mktemp("local"), glue_dir, "", "--cores", "2")


@pytest.fixture(scope="session")
def remote(tmp_path_factory, glue_dir):
    return dry_run(tmp_path_factory.mktemp("remote"), glue_dir, REMOTE, "--cores", "2")


SHARDS = 3
SHARDED = f"extract: {{shards: {SHARDS}}}\n"


@pytest.fixture(scope="session", params=["local", "remote"])
def sharded(request, tmp_path_factory, glue_dir):
    """(where the stores live, results, jobs) of a dry run with extract.shards: 3, local (gpu: true) or remote."""
    extra = SHARDED + ("gpu: true\n" if request.param == "local" else REMOTE)
    results, jobs = dry_run(tmp_path_factory.mktemp(f"sharded_{request.param}"), glue_dir, extra, "--cores", "2")
    return (results if request.param == "local" else ROOT), results, jobs


def test_without_storage_root_the_outputs_are_todays_local_layout(local):
    results, jobs = local
    tables = workflow_tables(attention_change=True, attribution=True, sweep=True)
    per_task = ["model", *STORES, "dev.info.txt", "train.info.txt", "analysis/analysis.json",
                "analysis/timings.json", *(f"analysis/{t}.parquet" for t in tables),
                "pretrained_analysis/analysis.json", "compare_pretrained/compare.json"]
    want = {f"{results}/{p}" for p in ("base_model", "bertology.duckdb", "report/index.html", "report/summary.md")}
    want |= {f"{results}/{task}/{p}" for task in TASKS for p in per_task}
    assert {o for j in jobs for o in j["output"]} == want
    shells = "\n".join(j["shell"] for j in jobs)
    assert "receipt" not in shells and "--storage-options" not in shells and "s3://" not in shells
    assert f"--out {results}/sst2/dev.zarr " in shells and f"--store {results}/sst2/dev.zarr " in shells
    assert all("--scheduler threads " in j["shell"] for j in jobs if j["rule"] == "analyze")


def test_with_storage_root_stores_live_under_the_url_and_snakemake_tracks_receipts(remote):
    results, jobs = remote
    outputs = {o for j in jobs for o in j["output"]}
    assert not [o for o in outputs if o.endswith((".zarr", ".sweep"))]
    assert {o for o in outputs if o.endswith(".receipt")} == {f"{results}/{t}/{s}.receipt" for t in TASKS
                                                               for s in STORES}
    for j in jobs:
        words = j["shell"].split()
        assert not [w for w in words if w.startswith(str(results)) and w.endswith((".zarr", ".sweep"))], j["shell"]
        if j["rule"] not in ("init_model", "finetune"):         # every command that opens a store or an index
            assert j["shell"].count("bertology ") == j["shell"].count(OPTIONS) >= 1, j["shell"]
        if j["rule"].startswith("extract") or j["rule"] == "intervene":
            task, receipt = j["output"][0].split("/")[-2], j["output"][0]
            store = receipt.rsplit("/", 1)[1].removesuffix(".receipt")
            assert f"--out {ROOT}/{task}/{store} " in j["shell"]
            assert j["shell"].rstrip().endswith(f"> {receipt}") or f"> {receipt} 2>>" in j["shell"]
    analyze = next(j["shell"] for j in jobs if j["rule"] == "analyze" and "/cola/" in j["output"][0])
    for flag, store in (("", "dev.zarr"), ("--train-store ", "train.zarr"), ("--sweep ", "dev.sweep"),
                        ("--pretrained-store ", "pretrained_dev.zarr")):
        assert f"{flag}{ROOT}/cola/{store} " in analyze
    assert "--scheduler local:4 " in analyze
    index = next(j["shell"] for j in jobs if j["rule"] == "index")
    assert all(f" {ROOT}/{t}/{s}.zarr " in index for t in TASKS for s in ("dev", "train"))


def test_gpu_true_asks_a_gpu_for_exactly_the_gpu_rules(local, remote):
    def gpu_rules(jobs):
        return {j["rule"] for j in jobs if re.search(r"\bgpu=1\b", j["resources"])}

    assert gpu_rules(remote[1]) == DEFAULT_GPU_RULES
    assert gpu_rules(local[1]) == set()
    assert all(re.search(r"\bruntime=\d+", j["resources"]) for j in local[1])


def test_a_malformed_dask_scheduler_is_refused_before_any_rule(tmp_path, glue_dir):
    (tmp_path / "bad.yaml").write_text("dask: {scheduler: 'local:0'}\n")
    proc = snakemake("-n", "--cores", "1", "--configfile", "config/tiny.yaml", str(tmp_path / "bad.yaml"),
                     glue_dir=glue_dir)
    assert proc.returncode != 0 and "On instance['dask']['scheduler']" in proc.stdout + proc.stderr


def test_slurm_profile_names_only_rules_of_the_workflow(glue_dir):
    profile = yaml.safe_load((REPO / "config" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["jobs"] > 0
    assert {"slurm_partition", "slurm_account", "mem_mb", "runtime"} <= set(profile["default-resources"])
    proc = snakemake("--list-rules", "--configfile", "config/tiny.yaml", glue_dir=glue_dir)
    rules = {line.split()[0] for line in proc.stdout.splitlines() if line and not line[0].isspace()}
    assert proc.returncode == 0 and GPU_RULES < rules
    assert set(profile["set-resources"]) <= rules
    assert {r for r, res in profile["set-resources"].items() if res.get("gpu")} == GPU_RULES


def test_slurm_profile_dry_run(tmp_path, glue_dir):
    assert importlib.util.find_spec("snakemake_executor_plugin_slurm"), \
        "pip install snakemake-executor-plugin-slurm (the workflow/dev extras) to check the SLURM profile"
    results, jobs = dry_run(tmp_path, glue_dir, "", "--profile", "config/slurm")
    assert len(jobs) == 63      # 10 per task (6) and init_model, index, report
    for j in jobs:
        gpu = "YOUR_GPU_PARTITION" if j["rule"] in GPU_RULES else "YOUR_PARTITION"
        assert f"slurm_partition={gpu}," in j["resources"] + ",", j
        assert "slurm_account=YOUR_ACCOUNT" in j["resources"]
        assert ("gpu=1" in j["resources"]) == (j["rule"] in GPU_RULES)


def shard_receipts(results, task):
    return {f"{results}/{task}/dev.zarr.shard-{k}-of-{SHARDS}.receipt" for k in range(1, SHARDS + 1)}


def test_sharded_dev_store_is_extracted_by_n_jobs_into_one_store(sharded):
    stores, results, jobs = sharded
    for task in TASKS:
        shards = [j for j in jobs if j["rule"] == "extract_dev" and f"--task {task} " in j["shell"]]
        assert len(shards) == SHARDS
        assert {re.search(r"--shard (\S+) ", j["shell"])[1] for j in shards} == {f"{k}/{SHARDS}" for k in (1, 2, 3)}
        for j in shards:
            k = re.search(rf"--shard (\d)/{SHARDS} ", j["shell"])[1]
            receipt = f"{results}/{task}/dev.zarr.shard-{k}-of-{SHARDS}.receipt"
            assert j["output"] == [receipt]                      # the store itself is no output
            assert j["shell"].count("--shard ") == 1 and f" --out {stores}/{task}/dev.zarr " in j["shell"]
            assert "--overwrite " in j["shell"] and f"extract_dev_{task}.shard-{k}-of-{SHARDS}.log" in j["shell"]
            assert j["shell"].rstrip().endswith(f"> {receipt}") and " 2>&1 && " in j["shell"]  # once it exited 0
            assert re.search(r"\bgpu=1\b", j["resources"])
    assert {j["rule"] for j in jobs if "--shard" in j["shell"]} == {"extract_dev"}     # train, pretrained: whole
    assert sum(j["rule"] == "extract_dev" for j in jobs) == SHARDS * len(TASKS)
    outputs = {o for j in jobs for o in j["output"]}
    assert not [o for o in outputs if "/dev.zarr" in o and ".shard-" not in o]


def test_every_reader_of_a_sharded_store_waits_for_all_its_shards(sharded):
    stores, results, jobs = sharded
    for task in TASKS:
        receipts = shard_receipts(results, task)
        dev = f"{stores}/{task}/dev.zarr"
        readers = {j["rule"]: j for j in jobs if f"{results}/{task}/" in j["output"][0]
                   and j["rule"] in ("intervene", "analyze", "store_info") and "train.info" not in j["output"][0]}
        assert set(readers) == {"intervene", "analyze", "store_info"}
        for rule, j in readers.items():
            assert receipts <= set(j["input"]), (rule, j["input"])
            assert not [i for i in j["input"] if i.endswith(("/dev.zarr", "/dev.zarr.receipt"))], j["input"]
        assert f"--store {dev} " in readers["intervene"]["shell"]
        assert f" analyze {dev} --train-store " in readers["analyze"]["shell"]
        assert f" store info {dev} " in readers["store_info"]["shell"]
        train_info = next(j for j in jobs if j["output"] == [f"{results}/{task}/train.info.txt"])
        assert not [i for i in train_info["input"] if ".shard-" in i]
    index = next(j for j in jobs if j["rule"] == "index")
    assert set().union(*(shard_receipts(results, t) for t in TASKS)) <= set(index["input"])
    assert all(f" {stores}/{t}/dev.zarr " in index["shell"] for t in TASKS)


def test_one_shard_is_todays_workflow(local, tmp_path, glue_dir):
    """extract.shards: 1 (the default) changes no job, input, output or command: only the workflow config the
    report records says shards: 1."""
    def jobs(run):
        return sorted((j["rule"], tuple(sorted(j["output"])), tuple(sorted(j["input"])), j["resources"],
                       j["shell"].replace(', "shards": 1', "")) for j in run[1])

    results, one = dry_run(tmp_path, glue_dir, "extract: {shards: 1}\n", "--cores", "2")
    here = lambda text: text.replace(str(results), str(local[0]))  # noqa: E731 (each run has its own folder)
    mapped = [dict(j, output=[*map(here, j["output"])], input=[*map(here, j["input"])], shell=here(j["shell"]))
              for j in one]
    assert jobs((None, mapped)) == jobs(local)
    assert not [j for j in one if "--shard" in j["shell"] or any(".shard-" in o for o in j["output"])]
    assert sum(j["rule"] == "extract_dev" for j in one) == len(TASKS)


@pytest.mark.parametrize("shards", ["0", "'2'"])
def test_a_malformed_shard_count_is_refused_before_any_rule(tmp_path, glue_dir, shards):
    (tmp_path / "bad.yaml").write_text(f"extract: {{shards: {shards}}}\n")
    proc = snakemake("-n", "--cores", "1", "--configfile", "config/tiny.yaml", str(tmp_path / "bad.yaml"),
                     glue_dir=glue_dir)
    assert proc.returncode != 0 and "On instance['extract']['shards']" in proc.stdout + proc.stderr


def test_seeds_and_baselines_plan_each_run_apart_sharded_and_on_object_storage(tmp_path, glue_dir):
    """Two seeds, both baselines, three shards, stores under a URL: each run's dev store is extracted in its
    own three shards; each analysis waits for its own run's; the baselines' stores are never sharded."""
    extra = SHARDED + REMOTE + "seeds: [0, 1]\nbaselines: [pretrained, random_init]\n"
    results, jobs = dry_run(tmp_path, glue_dir, extra, "--cores", "2")
    count = lambda rule: sum(j["rule"] == rule for j in jobs)   # noqa: E731
    assert count("extract_dev") == SHARDS * len(TASKS) * 2 and count("finetune") == len(TASKS) * 2
    assert count("compare_seeds") == count("compare_pretrained") == count("across") == len(TASKS)
    assert count("finetune_random_init") == count("extract_random_init") == count("extract_pretrained_train") == len(TASKS)
    for j in jobs:
        if j["rule"] == "analyze" and "/rte/seed-1/" in j["output"][0]:
            shards = [i for i in j["input"] if "dev.zarr.shard-" in i]
            assert sorted(shards) == [f"{results}/rte/seed-1/dev.zarr.shard-{k}-of-{SHARDS}.receipt"
                                      for k in range(1, SHARDS + 1)]
        if j["rule"] == "extract_random_init":
            assert "--shard" not in j["shell"] and f"{ROOT}/" in j["shell"]
        if j["rule"] in ("extract_dev", "extract_train", "extract_pretrained"):
            assert "--seed 0 " in j["shell"]                     # the same samples for every seed
        if j["rule"] == "finetune" and "/seed-1/" in j["output"][0]:
            assert "--seed 1 " in j["shell"] and "--carve-seed 0 " in j["shell"]


def _kovaleva(tmp_path: Path, glue_dir: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    """A dry run of config/kovaleva.yaml offline (the hub unreachable): its output and its finetune commands."""
    proc = snakemake("-n", "-p", "--configfile", "config/kovaleva.yaml", glue_dir=glue_dir,
                     config=(f"results={tmp_path / 'results'}",))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, [line for line in proc.stdout.splitlines() if "bertology finetune" in line]


def test_kovaleva_profile_leaves_out_qqp_and_mnli_in_one_line_when_it_cannot_have_them(tmp_path, glue_dir,
                                                                                       monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    proc, finetunes = _kovaleva(tmp_path, glue_dir)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "left out" in line]
    assert len(lines) == 1 and lines[0].startswith("bertology: qqp, mnli left out: ")
    tasks = sorted(re.search(r"--task (\w+)", c).group(1) for c in finetunes)
    assert tasks == ["mrpc", "qnli", "rte", "sst2", "stsb"]


def test_kovaleva_profile_takes_qqp_and_mnli_from_a_glue_folder_that_holds_them(tmp_path, glue_dir, monkeypatch):
    """MNLI and QQP in the GLUE folder (here the fixtures in their exact layout) are read from it, MNLI's dev
    being dev_matched."""
    from .test_tasks import FIXTURES

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    glue = tmp_path / "glue"
    glue.mkdir()
    for task in ("MRPC", "STS-B", "SST-2", "RTE", "QNLI"):
        (glue / task).symlink_to(glue_dir / task)
    for task in ("MNLI", "QQP"):
        (glue / task).symlink_to(FIXTURES / task)
    proc, finetunes = _kovaleva(tmp_path, glue)
    assert "left out" not in proc.stdout + proc.stderr
    mnli = [c for c in finetunes if "--task mnli" in c]
    assert len(finetunes) == 7 and mnli and f"--glue-dir {glue}" in mnli[0]


def test_datasets_declare_the_users_own_tasks(tmp_path, glue_dir):
    """A `datasets` entry is a task of the workflow: every command that reads it gets --data and its columns;
    the intervention sweep takes them from the store."""
    extra = ("tasks: [sst2, my_reviews]\ndatasets:\n  my_reviews: {data: /data/reviews, text_column: review, "
             "label_column: stars, label_order: [bad, ok, good]}\n")
    _, jobs = dry_run(tmp_path, glue_dir, extra, "--cores", "2")
    mine = [j for j in jobs if "/my_reviews/" in " ".join(j["output"])]
    finetune = next(j for j in mine if j["rule"] == "finetune")["shell"]
    assert ("--task my_reviews --data /data/reviews --text-column review --label-column stars "
            "--label-order bad,ok,good") in finetune
    for rule in ("extract_dev", "extract_train", "extract_pretrained"):
        assert "--data /data/reviews --text-column review" in next(j for j in mine if j["rule"] == rule)["shell"]
    intervene = next(j for j in mine if j["rule"] == "intervene")["shell"]
    assert "--data /data/reviews" in intervene and "--glue-dir" not in intervene
    sst2 = next(j for j in jobs if j["rule"] == "finetune" and "/sst2/" in j["output"][0])["shell"]
    assert f"--task sst2 --glue-dir {glue_dir}" in sst2


def test_a_task_neither_glue_nor_declared_stops_before_any_rule(tmp_path, glue_dir):
    (tmp_path / "extra.yaml").write_text("tasks: [sst2, mine]\n")
    proc = snakemake("-n", "--configfile", "config/tiny.yaml", str(tmp_path / "extra.yaml"), glue_dir=glue_dir)
    assert proc.returncode != 0
    assert "bertology: error: config tasks: mine is neither a GLUE task" in proc.stdout + proc.stderr
