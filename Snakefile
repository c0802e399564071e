# bertology workflow: [init_model] -> finetune -> extract (dev: full capture, in N jobs with extract.shards;
#                     train: cls only; pre-trained model on dev: attention only)
#                     -> [intervene] -> analyze -> index -> report.         Run: snakemake --cores 8
# Every config value a rule uses is one of its `params`, so changing a value reruns exactly the rules it
# affects (and what depends on their outputs); a second run with nothing changed runs nothing. The settings
# that cannot change a result (storage.options, dask.scheduler, gpu) are not params: they rerun nothing.
# On a SLURM cluster: snakemake --profile config/slurm (config/slurm/config.yaml documents it).
import json
import os
import shlex
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

configfile: "config/config.yaml"
validate(config, "config/schema.yaml")

# The rules call the `bertology` installed beside the Python that runs Snakemake, so `.venv/bin/snakemake`
# works from a shell where nothing is activated.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])

# The GLUE data, chosen and checked before any rule runs: config `glue_dir`, else GLUE_DIR, else
# ../shared/glue, else the Hugging Face hub. Without data the workflow stops here with one message.
from bertology import BertologyError
from bertology.analysis.registry import workflow_tables
from bertology.extract.tasks import get_task, glue_source

try:
    GLUE = glue_source(config.get("glue_dir"), config["tasks"], config["carve_train_from_dev"])
except BertologyError as e:
    print(f"bertology: error: {e}", file=sys.stderr)
    sys.exit(1)

R = config["results"]
FT = config["finetune"]
EX = config["extract"]
AN = config["analyze"]
IV = config["intervene"]
TASKS = config["tasks"]
RANDOM_INIT = config["model"].get("random_init") if isinstance(config["model"], dict) else None
BASE_MODEL = f"{R}/base_model" if RANDOM_INIT else config["model"]
ANALYSIS_TABLES = workflow_tables(attention_change=AN["attention_change"],
                                  attribution=AN["attribution_samples"] > 0, sweep=IV["enabled"],
                                  pairs=all(get_task(t).is_pair for t in TASKS))

# Remote stores (config `storage`). With `storage.root` set (an fsspec URL such as s3://bucket/prefix, or a
# folder), the activation stores and sweeps are written there, mirroring the local layout, and Snakemake
# tracks a small local receipt per store instead (written once the command succeeded): Snakemake never
# stages a store through local disk. Credentials come from the environment (AWS_ACCESS_KEY_ID, ...), never
# from config; `storage.options` (non-secret fsspec options) goes to every command that opens a store.
ROOT = config["storage"]["root"].rstrip("/") if config["storage"]["root"] else None
SO = f"--storage-options {shlex.quote(json.dumps(config['storage']['options'], sort_keys=True))}" \
    if config["storage"]["options"] else ""
SCHEDULER = config["dask"]["scheduler"]     # `bertology analyze --scheduler`: threads, processes, local:N, tcp://
# A `gpu` resource on the rules a GPU speeds up (config `gpu: true`): for cluster executors, and for local
# runs with `--resources gpu=N` (N GPU jobs at a time). `--device auto` picks CUDA wherever there is one.
GPU = {"gpu": 1} if config["gpu"] else {}


# Sharded extraction (config `extract.shards: N` > 1): each task's dev store is extracted by N jobs, one per
# `bertology extract --shard K/N` (K = 1..N), that fill one store together; N jobs cannot share a directory
# output, so each tracks a small local receipt (RESULTS/TASK/dev.zarr.shard-K-of-N.receipt, written once its
# shard succeeded), the store itself is no output, and whatever reads it waits for all N receipts.
SHARDS = EX.get("shards", 1)                         # config extract.shards (unset: 1)
SHARDED = {"dev.zarr"} if SHARDS > 1 else set()     # the stores extracted in shards (rule extract_dev)

wildcard_constraints:
    shard=r"[1-9][0-9]*",


def shard_tag(name, shard="{shard}"):
    """What a shard's receipt, log and benchmark add to their names: `.shard-K-of-N` (a sharded store), else ""."""
    return f".shard-{shard}-of-{SHARDS}" if name in SHARDED else ""


def location(task, name):
    """Where the store or sweep `name` (dev.zarr, train.zarr, pretrained_dev.zarr, dev.sweep) of a task lives:
    (the path or URL the bertology commands get, the file Snakemake tracks). Without storage.root both are
    the directory RESULTS/TASK/NAME; with it, ROOT/TASK/NAME and the local receipt RESULTS/TASK/NAME.receipt.
    A sharded store's tracked files are the list of its N shard receipts, local either way.
    `task` may be the wildcard "{task}" (a rule's input or output pattern)."""
    local = f"{R}/{task}/{name}"
    where = local if ROOT is None else f"{ROOT}/{task}/{name}"
    if name in SHARDED:
        return where, [f"{local}{shard_tag(name, k)}.receipt" for k in range(1, SHARDS + 1)]
    return where, local if ROOT is None else f"{local}.receipt"


def tracked(name):
    """A rule's output pattern for a task's store or sweep: the directory, or its receipt; a sharded store's:
    one shard's receipt (wildcard `shard`)."""
    if name in SHARDED:
        return f"{R}/{{task}}/{name}{shard_tag(name)}.receipt"
    path = location("{task}", name)[1]
    return directory(path) if ROOT is None else path


def url(name):
    """A rule's params function: the path or URL of a task's store or sweep for the bertology command."""
    return lambda w: location(w.task, name.format(**w))[0]


# The last step of a rule that writes a remote store or sweep: its receipt (a store's metadata, a sweep's URL).
STORE_RECEIPT = " && bertology store info {params.out:q} --json {SO} > {output} 2>> {log}" if ROOT else ""
SWEEP_RECEIPT = " && echo {params.out:q} > {output}" if ROOT else ""


def carve(task):
    f = config["carve_train_from_dev"].get(task)
    return f"--carve-train-from-dev {f}" if f else ""


def ft(task, key):
    """A fine-tuning setting for one task: its `finetune.per_task` override, else the shared value."""
    return FT.get("per_task", {}).get(task, {}).get(key, FT.get(key))


def checkpoint(task):
    """The fine-tuned checkpoint of a task: the user's own (config `checkpoints`) or the finetune rule's."""
    return config["checkpoints"].get(task, f"{R}/{task}/model")


rule all:
    input:
        f"{R}/report/index.html",
        expand(f"{R}/{{task}}/{{split}}.info.txt", task=TASKS, split=("dev", "train")),


rule init_model:
    output: directory(f"{R}/base_model")
    log: f"{R}/logs/init_model.log"
    benchmark: f"{R}/benchmarks/init_model.tsv"
    threads: 1
    resources: mem_mb=2000, runtime=10
    params:
        size=lambda w: " ".join(f"--{k} {v}" for k, v in sorted(RANDOM_INIT.items())),
        seed=config["seed"],
    shell:
        "OMP_NUM_THREADS={threads} bertology init-model --out {output} {params.size} --seed {params.seed} > {log} 2>&1"


rule finetune:
    input: [BASE_MODEL] if RANDOM_INIT else []
    output: directory(f"{R}/{{task}}/model")
    log: f"{R}/logs/finetune_{{task}}.log"
    benchmark: f"{R}/benchmarks/finetune_{{task}}.tsv"
    threads: 2
    resources: mem_mb=4000, runtime=240, **GPU
    params:
        model=BASE_MODEL,
        glue_dir=GLUE,
        carve=lambda w: carve(w.task),
        max_train=lambda w: f"--max-train {ft(w.task, 'max_train')}" if ft(w.task, "max_train") else "",
        epochs=lambda w: ft(w.task, "epochs"),
        lr=lambda w: ft(w.task, "lr"),
        batch_size=lambda w: ft(w.task, "batch_size"),
        max_length=lambda w: ft(w.task, "max_length"),
        seed=config["seed"],
    shell:
        "OMP_NUM_THREADS={threads} bertology finetune --model {params.model} --task {wildcards.task} "
        "--glue-dir {params.glue_dir} --out {output} {params.max_train} --epochs {params.epochs} --lr {params.lr} "
        "--batch-size {params.batch_size} --max-length {params.max_length} --seed {params.seed} {params.carve} "
        "--quiet > {log} 2>&1"


def extract_command(store):
    """The extraction command for `store`; the three extraction rules differ in model, split and capture mode
    only. A sharded store's command extracts shard K/N, and the shard's receipt records what it finished."""
    shard, receipt = ((f"--shard {{wildcards.shard}}/{SHARDS} ",
                       f" && echo {{params.out:q}} shard {{wildcards.shard}}/{SHARDS} > {{output}}")
                      if store in SHARDED else ("", STORE_RECEIPT))
    return ("OMP_NUM_THREADS={threads} bertology extract --model {params.model} --task {wildcards.task} "
            "--split {params.split} --glue-dir {params.glue_dir} --out {params.out:q} {params.limit} {params.mode} "
            "--dtype {params.dtype} --max-length {params.max_length} --seed {params.seed} {params.carve} --overwrite "
            + shard + "{SO} --quiet > {log} 2>&1" + receipt)


DEV_LIMIT = f"--limit {EX['dev_limit']}" if EX.get("dev_limit") else ""
PRETRAINED_MODE = "--attention-only --allow-untrained-head"


def train_limit(w):
    """The train store holds the examples fine-tuning used: the first `max_train` (all when unset)."""
    n = ft(w.task, "max_train")
    return f"--limit {n}" if n else ""


def extract_params(store, split, mode, limit, model=None):
    """The params of an extraction rule: everything the command uses, so a change reruns exactly it."""
    return dict(model=model or (lambda w, input: input[0]), out=url(store), split=split, mode=mode, limit=limit,
                glue_dir=GLUE, carve=lambda w: carve(w.task), dtype=EX["dtype"], max_length=EX["max_length"],
                seed=config["seed"])


rule extract_dev:
    """The fine-tuned model on the dev samples: every site of every layer, per token, and the attention."""
    input: lambda w: checkpoint(w.task)
    output: tracked("dev.zarr")
    log: f"{R}/logs/extract_dev_{{task}}{shard_tag('dev.zarr')}.log"
    benchmark: f"{R}/benchmarks/extract_dev_{{task}}{shard_tag('dev.zarr')}.tsv"
    threads: 2
    resources: mem_mb=6000, runtime=120, **GPU
    params: **extract_params("dev.zarr", "dev", "", DEV_LIMIT)
    shell: extract_command("dev.zarr")


rule extract_pretrained:
    """The pre-trained model (the one fine-tuning started from) on the same dev samples, attention maps only:
    the reference for the attention change through fine-tuning."""
    input: [BASE_MODEL] if RANDOM_INIT else []
    output: tracked("pretrained_dev.zarr")
    log: f"{R}/logs/extract_pretrained_{{task}}.log"
    benchmark: f"{R}/benchmarks/extract_pretrained_{{task}}.tsv"
    threads: 2
    resources: mem_mb=4000, runtime=60, **GPU
    params: **extract_params("pretrained_dev.zarr", "dev", PRETRAINED_MODE, DEV_LIMIT, model=BASE_MODEL)
    shell: extract_command("pretrained_dev.zarr")


rule extract_train:
    """The fine-tuned model on the train samples the probes are fitted on: [CLS] states only."""
    input: lambda w: checkpoint(w.task)
    output: tracked("train.zarr")
    log: f"{R}/logs/extract_train_{{task}}.log"
    benchmark: f"{R}/benchmarks/extract_train_{{task}}.tsv"
    threads: 2
    resources: mem_mb=4000, runtime=120, **GPU
    params: **extract_params("train.zarr", "train", "--cls-only", train_limit)
    shell: extract_command("train.zarr")


rule store_info:
    input: lambda w: location(w.task, f"{w.split}.zarr")[1]
    output: f"{R}/{{task}}/{{split}}.info.txt"
    log: f"{R}/logs/store_info_{{task}}_{{split}}.log"
    benchmark: f"{R}/benchmarks/store_info_{{task}}_{{split}}.tsv"
    threads: 1
    resources: mem_mb=1000, runtime=15
    params: store=url("{split}.zarr")
    shell: "OMP_NUM_THREADS={threads} bertology store info {params.store:q} {SO} > {output} 2> {log}"


rule intervene:
    input:
        model=lambda w: checkpoint(w.task),
        dev=location("{task}", "dev.zarr")[1],
    output: tracked("dev.sweep")
    log: f"{R}/logs/intervene_{{task}}.log"
    benchmark: f"{R}/benchmarks/intervene_{{task}}.tsv"
    threads: 2
    resources: mem_mb=4000, runtime=240, **GPU
    params:
        dev=url("dev.zarr"),
        out=url("dev.sweep"),
        glue_dir=GLUE,
        carve=lambda w: carve(w.task),
        families=",".join(IV["families"]),
        train_limit=IV["train_limit"],
        skip_layers=",".join(map(str, IV["skip_layers"])) if isinstance(IV["skip_layers"], list) else IV["skip_layers"],
        seed=config["seed"],
    shell:
        "OMP_NUM_THREADS={threads} bertology intervene --model {input.model} --store {params.dev:q} "
        "--out {params.out:q} --families {params.families} --train-limit {params.train_limit} "
        "--skip-layers {params.skip_layers} --glue-dir {params.glue_dir} "
        "{params.carve} --seed {params.seed} {SO} --quiet > {log} 2>&1" + SWEEP_RECEIPT


rule analyze:
    input:
        unpack(lambda w: {"sweep": location(w.task, "dev.sweep")[1]} if IV["enabled"] else {}),
        unpack(lambda w: {"pretrained": location(w.task, "pretrained_dev.zarr")[1]} if AN["attention_change"] else {}),
        dev=location("{task}", "dev.zarr")[1],
        train=location("{task}", "train.zarr")[1],
    output:
        f"{R}/{{task}}/analysis/analysis.json",
        f"{R}/{{task}}/analysis/timings.json",
        # every table these settings make (the dev store is a full capture): the analysis registry's plan
        expand(f"{R}/{{{{task}}}}/analysis/{{table}}.parquet", table=ANALYSIS_TABLES),
    log: f"{R}/logs/analyze_{{task}}.log"
    benchmark: f"{R}/benchmarks/analyze_{{task}}.tsv"
    threads: 2
    resources: mem_mb=3000, runtime=120
    params:
        dev=url("dev.zarr"), train=url("train.zarr"),
        out=lambda w: f"{R}/{w.task}/analysis",
        resamples=AN["resamples"], permutations=AN["permutations"], seed=config["seed"],
        sweep=lambda w: f"--sweep {shlex.quote(location(w.task, 'dev.sweep')[0])}" if IV["enabled"] else "",
        pretrained=lambda w: (f"--pretrained-store {shlex.quote(location(w.task, 'pretrained_dev.zarr')[0])}"
                              if AN["attention_change"] else ""),
        attribution=AN["attribution_samples"],
    shell:
        "OMP_NUM_THREADS={threads} bertology analyze {params.dev:q} --train-store {params.train:q} "
        "--out {params.out} --resamples {params.resamples} --permutations {params.permutations} "
        "--seed {params.seed} {params.sweep} {params.pretrained} --attribution-samples {params.attribution} "
        "--scheduler {SCHEDULER:q} {SO} > {log} 2>&1"


rule index:
    """The DuckDB index of exactly the runs this workflow made: each task's dev and train stores and the dev
    store's analysis tables (every one of them an input, so a missing table reruns its analysis)."""
    input:
        stores=[location(t, f"{s}.zarr")[1] for t in TASKS for s in ("dev", "train")],  # (lists flatten)
        analyses=expand(f"{R}/{{task}}/analysis/analysis.json", task=TASKS),
        tables=expand(f"{R}/{{task}}/analysis/{{table}}.parquet", task=TASKS, table=ANALYSIS_TABLES),
    output: f"{R}/bertology.duckdb"
    log: f"{R}/logs/index.log"
    benchmark: f"{R}/benchmarks/index.tsv"
    threads: 1
    resources: mem_mb=4000, runtime=60
    params:
        stores=[location(t, f"{s}.zarr")[0] for t in TASKS for s in ("dev", "train")],
        analyses=lambda w, input: [os.path.dirname(a) for a in input.analyses],
    shell:
        "OMP_NUM_THREADS={threads} bertology index {params.stores:q} {params.analyses} --db {output} {SO} "
        "> {log} 2>&1"


rule report:
    input: db=f"{R}/bertology.duckdb"
    output:
        html=f"{R}/report/index.html",
        md=f"{R}/report/summary.md",
    log: f"{R}/logs/report.log"
    benchmark: f"{R}/benchmarks/report.tsv"
    threads: 1
    resources: mem_mb=2000, runtime=30
    params:
        out=f"{R}/report",
        tasks=",".join(TASKS),
        config=json.dumps(config, sort_keys=True),
    shell:
        "OMP_NUM_THREADS={threads} bertology report {R} --db {input.db} --out {params.out} --tasks {params.tasks} "
        "--workflow-config {params.config:q} {SO} > {log} 2>&1"
