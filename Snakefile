# bertology workflow: [init_model] -> finetune -> extract (dev: full capture, in N jobs with extract.shards;
#                     train: cls only; pre-trained model on dev: attention only)
#                     -> [intervene] -> analyze -> [compare, across] -> index -> report.
#                                                                          Run: snakemake --cores 8
# A *run* is one fine-tuning of one task: results/TASK/ (config `seeds` null: one run per task with `seed`), or
# results/TASK/seed-S/ for each S of config `seeds`. The runs of a task share its dev samples (the carve-out's
# seed is `seed`, whatever the fine-tuning seed), its pre-trained store and its baselines.
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
from bertology.extract.tasks import TASKS as GLUE_TASKS, get_task, glue_source, optional_sources

# Your own data (config `datasets`): named tasks beside GLUE's, each read by `--data` with its columns.
DATASETS = config.get("datasets") or {}
try:
    unknown = [t for t in config["tasks"] if t not in GLUE_TASKS and t not in DATASETS]
    if unknown:
        raise BertologyError(f"config tasks: {', '.join(unknown)} is neither a GLUE task ({', '.join(GLUE_TASKS)}) "
                             f"nor declared under `datasets:` (name: {{data: PATH_OR_URL, text_column: ..., ...}})")
    both = [t for t in DATASETS if t in GLUE_TASKS]
    if both:
        raise BertologyError(f"config datasets: {', '.join(both)} is a GLUE task's name; give your data another name")
    OPTIONAL = [t for t in config.get("optional_tasks") or [] if t in config["tasks"]]
    glue_tasks = [t for t in config["tasks"] if t in GLUE_TASKS and t not in OPTIONAL]
    GLUE = glue_source(config.get("glue_dir"), glue_tasks, config["carve_train_from_dev"]) if glue_tasks else ""
    # optional tasks (config/kovaleva.yaml: QQP, MNLI): the GLUE folder's files, else the hub's, else left out
    GLUE_OF, left_out = optional_sources(GLUE or glue_source(config.get("glue_dir"), [], {}), OPTIONAL)
    if left_out:
        print(f"bertology: {left_out}", file=sys.stderr)
        config["tasks"] = [t for t in config["tasks"] if t not in OPTIONAL or t in GLUE_OF]
except BertologyError as e:
    print(f"bertology: error: {e}", file=sys.stderr)
    sys.exit(1)


def data_args(task, with_task=True):
    """The command-line arguments that name a task's data: a GLUE task and GLUE_DIR, or `--data` and the
    columns of a `datasets` entry (a params value: changing any of it reruns what reads the data)."""
    if task not in DATASETS:
        return (f"--task {task} " if with_task else "") + f"--glue-dir {shlex.quote(GLUE_OF.get(task, GLUE))}"
    d = DATASETS[task]
    args = [f"--task {task}"] if with_task else []
    args.append(f"--data {shlex.quote(d['data'])}")
    if not with_task:   # intervene: the store records the columns and classes
        return " ".join(args)
    for key in ("text_column", "text_pair_column", "label_column", "split_column", "id_column", "task_type"):
        if d.get(key) is not None:
            args.append(f"--{key.replace('_', '-')} {shlex.quote(str(d[key]))}")
    if d.get("label_order"):
        args.append(f"--label-order {shlex.quote(','.join(map(str, d['label_order'])))}")
    return " ".join(args)


def is_pair(task):
    return get_task(task).is_pair if task in GLUE_TASKS else bool(DATASETS[task].get("text_pair_column"))

R = config["results"]
FT = config["finetune"]
EX = config["extract"]
AN = config["analyze"]
IV = config["intervene"]
TASKS = config["tasks"]
SEEDS = config.get("seeds") or None        # null: one run per task, in results/TASK/
BASELINES = config.get("baselines") or []  # Kovaleva's: pretrained, random_init


def runs_of(task):
    """A task's runs: TASK, or TASK/seed-S for each seed of config `seeds`."""
    return [f"{task}/seed-{s}" for s in SEEDS] if SEEDS else [task]


def task_of(run):
    return run.split("/")[0]


def seed_of(run):
    """A run's fine-tuning seed: S of TASK/seed-S, else config `seed`."""
    return int(run.rsplit("/seed-", 1)[1]) if "/seed-" in run else config["seed"]


RUNS = [r for t in TASKS for r in runs_of(t)]
RANDOM_INIT = config["model"].get("random_init") if isinstance(config["model"], dict) else None
BASE_MODEL = f"{R}/base_model" if RANDOM_INIT else config["model"]
ANALYSIS_TABLES = workflow_tables(attention_change=AN["attention_change"],
                                  attribution=AN["attribution_samples"] > 0, sweep=IV["enabled"],
                                  pairs=all(is_pair(t) for t in TASKS))

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
    run=r"[a-z0-9][a-z0-9_]*(/seed-[0-9]+)?",
    task=r"[a-z0-9][a-z0-9_]*",
    a=r"[0-9]+",
    b=r"[0-9]+",


def shard_tag(name, shard="{shard}"):
    """What a shard's receipt, log and benchmark add to their names: `.shard-K-of-N` (a sharded store), else ""."""
    return f".shard-{shard}-of-{SHARDS}" if name in SHARDED else ""


def location(run, name):
    """Where the store or sweep `name` (dev.zarr, train.zarr, pretrained_dev.zarr, dev.sweep) of a run lives:
    (the path or URL the bertology commands get, the file Snakemake tracks). Without storage.root both are
    the directory RESULTS/RUN/NAME; with it, ROOT/RUN/NAME and the local receipt RESULTS/RUN/NAME.receipt.
    A sharded store's tracked files are the list of its N shard receipts, local either way.
    `run` may be a wildcard pattern such as "{run}" (a rule's input or output pattern)."""
    local = f"{R}/{run}/{name}"
    where = local if ROOT is None else f"{ROOT}/{run}/{name}"
    if name in SHARDED:
        return where, [f"{local}{shard_tag(name, k)}.receipt" for k in range(1, SHARDS + 1)]
    return where, local if ROOT is None else f"{local}.receipt"


def tracked(name, run="{run}"):
    """A rule's output pattern for a run's store or sweep: the directory, or its receipt; a sharded store's:
    one shard's receipt (wildcard `shard`)."""
    if name in SHARDED:
        return f"{R}/{run}/{name}{shard_tag(name)}.receipt"
    path = location(run, name)[1]
    return directory(path) if ROOT is None else path


def url(name, run="{run}"):
    """A rule's params function: the path or URL of a run's store or sweep for the bertology command."""
    return lambda w: location(run.format(**w), name.format(**w))[0]


# The last step of a rule that writes a remote store or sweep: its receipt (a store's metadata, a sweep's URL).
STORE_RECEIPT = " && bertology store info {params.out:q} --json {SO} > {output} 2>> {log}" if ROOT else ""
SWEEP_RECEIPT = " && echo {params.out:q} > {output}" if ROOT else ""


def carve(task):
    f = config["carve_train_from_dev"].get(task)
    return f"--carve-train-from-dev {f}" if f else ""


def ft(task, key):
    """A fine-tuning setting for one task: its `finetune.per_task` override, else the shared value."""
    return FT.get("per_task", {}).get(task, {}).get(key, FT.get(key))


def checkpoint(run):
    """The fine-tuned checkpoint of a run: the user's own (config `checkpoints`, without `seeds`) or the finetune
    rule's."""
    return f"{R}/{run}/model" if SEEDS else config["checkpoints"].get(run, f"{R}/{run}/model")


def compares_of(task):
    """The comparisons the workflow makes for a task: each later seed against the first, and the first run
    against the pre-trained model (with attention_change, whose store it reads)."""
    first = runs_of(task)[0]
    out = [f"{R}/{task}/compare/seed-{s}_vs_seed-{SEEDS[0]}" for s in SEEDS[1:]] if SEEDS else []
    if AN["attention_change"]:
        out.append(f"{R}/{first}/compare_pretrained")
    return out


ACROSS = bool(SEEDS) or bool(BASELINES)     # the across-runs tables of each task (bertology across)


rule all:
    input:
        f"{R}/report/index.html",
        expand(f"{R}/{{run}}/{{split}}.info.txt", run=RUNS, split=("dev", "train")),


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


rule init_like:
    """Kovaleva's random-init baseline starts here: the base model's architecture and size, fresh weights."""
    input: [BASE_MODEL] if RANDOM_INIT else []
    output: directory(f"{R}/random_init_model")
    log: f"{R}/logs/init_like.log"
    benchmark: f"{R}/benchmarks/init_like.tsv"
    threads: 1
    resources: mem_mb=2000, runtime=10
    params: like=BASE_MODEL, seed=config["seed"]
    shell: "OMP_NUM_THREADS={threads} bertology init-model --like {params.like} --out {output} --seed {params.seed} > {log} 2>&1"


def finetune_params(task_of_w, seed_of_w, model):
    """The params of a fine-tuning rule: the task's budget; the run's seed; the dev set's carve-out seed."""
    return dict(model=model, data=lambda w: data_args(task_of_w(w)), carve=lambda w: carve(task_of_w(w)),
                max_train=lambda w: f"--max-train {ft(task_of_w(w), 'max_train')}" if ft(task_of_w(w), "max_train") else "",
                epochs=lambda w: ft(task_of_w(w), "epochs"), lr=lambda w: ft(task_of_w(w), "lr"),
                batch_size=lambda w: ft(task_of_w(w), "batch_size"), max_length=lambda w: ft(task_of_w(w), "max_length"),
                seed=seed_of_w, carve_seed=config["seed"])


RUN_TASK = lambda w: task_of(w.run)   # noqa: E731  (a rule's wildcards -> its task, its seed)
RUN_SEED = lambda w: seed_of(w.run)   # noqa: E731
TASK = lambda w: w.task               # noqa: E731
FINETUNE = ("OMP_NUM_THREADS={threads} bertology finetune --model {params.model} {params.data} "
            "--out {output} {params.max_train} --epochs {params.epochs} --lr {params.lr} "
            "--batch-size {params.batch_size} --max-length {params.max_length} --seed {params.seed} "
            "--carve-seed {params.carve_seed} {params.carve} --quiet > {log} 2>&1")


rule finetune:
    input: [BASE_MODEL] if RANDOM_INIT else []
    output: directory(f"{R}/{{run}}/model")
    log: f"{R}/logs/finetune_{{run}}.log"
    benchmark: f"{R}/benchmarks/finetune_{{run}}.tsv"
    threads: 2
    resources: mem_mb=4000, runtime=240, **GPU
    params: **finetune_params(RUN_TASK, RUN_SEED, BASE_MODEL)
    shell: FINETUNE


rule finetune_random_init:
    """The random-init baseline, fine-tuned on the task with the task's budget and `seed`."""
    input: f"{R}/random_init_model"
    output: directory(f"{R}/{{task}}/random_init/model")
    log: f"{R}/logs/finetune_random_init_{{task}}.log"
    benchmark: f"{R}/benchmarks/finetune_random_init_{{task}}.tsv"
    threads: 2
    resources: mem_mb=4000, runtime=240, **GPU
    params: **finetune_params(TASK, config["seed"], f"{R}/random_init_model")
    shell: FINETUNE


def extract_command(store):
    """The extraction command for `store`; the extraction rules differ in model, split and capture mode
    only. A sharded store's command extracts shard K/N, and the shard's receipt records what it finished."""
    shard, receipt = ((f"--shard {{wildcards.shard}}/{SHARDS} ",
                       f" && echo {{params.out:q}} shard {{wildcards.shard}}/{SHARDS} > {{output}}")
                      if store in SHARDED else ("", STORE_RECEIPT))
    return ("OMP_NUM_THREADS={threads} bertology extract --model {params.model} {params.data} "
            "--split {params.split} --out {params.out:q} {params.limit} {params.mode} "
            "--dtype {params.dtype} --max-length {params.max_length} --seed {params.seed} {params.carve} --overwrite "
            + shard + "{SO} --quiet > {log} 2>&1" + receipt)


DEV_LIMIT = f"--limit {EX['dev_limit']}" if EX.get("dev_limit") else ""
PRETRAINED_MODE = "--attention-only --allow-untrained-head"
PRETRAINED_TRAIN_MODE = "--cls-only --allow-untrained-head"


def train_limit(w):
    """The train store holds as many examples as fine-tuning used (`max_train`; all when unset)."""
    n = ft(task_of(w.run) if "run" in w.keys() else w.task, "max_train")
    return f"--limit {n}" if n else ""


def extract_params(store, split, mode, limit, model=None, run="{run}"):
    """The params of an extraction rule: everything the command uses, so a change reruns exactly it. Every run
    of a task extracts the same samples (the extraction's seed is always `seed`)."""
    task = lambda w: task_of(run.format(**w))   # noqa: E731
    return dict(model=model or (lambda w, input: input[0]), out=url(store, run), split=split, mode=mode,
                limit=limit, data=lambda w: data_args(task(w)), carve=lambda w: carve(task(w)), dtype=EX["dtype"],
                max_length=EX["max_length"], seed=config["seed"])


rule extract_dev:
    """The fine-tuned model on the dev samples: every site of every layer, per token, and the attention."""
    input: lambda w: checkpoint(w.run)
    output: tracked("dev.zarr")
    log: f"{R}/logs/extract_dev_{{run}}{shard_tag('dev.zarr')}.log"
    benchmark: f"{R}/benchmarks/extract_dev_{{run}}{shard_tag('dev.zarr')}.tsv"
    threads: 2
    resources: mem_mb=6000, runtime=120, **GPU
    params: **extract_params("dev.zarr", "dev", "", DEV_LIMIT)
    shell: extract_command("dev.zarr")


rule extract_pretrained:
    """The pre-trained model (the one fine-tuning started from) on the same dev samples, attention maps only:
    the reference for the attention change through fine-tuning; one per task, shared by its seeds."""
    input: [BASE_MODEL] if RANDOM_INIT else []
    output: tracked("pretrained_dev.zarr", "{task}")
    log: f"{R}/logs/extract_pretrained_{{task}}.log"
    benchmark: f"{R}/benchmarks/extract_pretrained_{{task}}.tsv"
    threads: 2
    resources: mem_mb=4000, runtime=60, **GPU
    params: **extract_params("pretrained_dev.zarr", "dev", PRETRAINED_MODE, DEV_LIMIT, model=BASE_MODEL, run="{task}")
    shell: extract_command("pretrained_dev.zarr")


rule extract_pretrained_train:
    """The pre-trained model on the train samples, [CLS] only: what the no-fine-tuning baseline's probe is
    fitted on (config baselines: pretrained)."""
    input: [BASE_MODEL] if RANDOM_INIT else []
    output: tracked("pretrained_train.zarr", "{task}")
    log: f"{R}/logs/extract_pretrained_train_{{task}}.log"
    benchmark: f"{R}/benchmarks/extract_pretrained_train_{{task}}.tsv"
    threads: 2
    resources: mem_mb=4000, runtime=120, **GPU
    params: **extract_params("pretrained_train.zarr", "train", PRETRAINED_TRAIN_MODE, train_limit, BASE_MODEL, "{task}")
    shell: extract_command("pretrained_train.zarr")


rule extract_random_init:
    """The random-init baseline on the dev samples, [CLS] and predictions only (beside the pre-trained model's
    store, never extracted in shards)."""
    input: f"{R}/{{task}}/random_init/model"
    output: tracked("random_init_dev.zarr", "{task}")
    log: f"{R}/logs/extract_random_init_{{task}}.log"
    benchmark: f"{R}/benchmarks/extract_random_init_{{task}}.tsv"
    threads: 2
    resources: mem_mb=4000, runtime=60, **GPU
    params: **extract_params("random_init_dev.zarr", "dev", "--cls-only", DEV_LIMIT, run="{task}")
    shell: extract_command("random_init_dev.zarr")


rule extract_train:
    """The fine-tuned model on the train samples the probes are fitted on: [CLS] states only."""
    input: lambda w: checkpoint(w.run)
    output: tracked("train.zarr")
    log: f"{R}/logs/extract_train_{{run}}.log"
    benchmark: f"{R}/benchmarks/extract_train_{{run}}.tsv"
    threads: 2
    resources: mem_mb=4000, runtime=120, **GPU
    params: **extract_params("train.zarr", "train", "--cls-only", train_limit)
    shell: extract_command("train.zarr")


rule store_info:
    input: lambda w: location(w.run, f"{w.split}.zarr")[1]
    output: f"{R}/{{run}}/{{split}}.info.txt"
    log: f"{R}/logs/store_info_{{run}}_{{split}}.log"
    benchmark: f"{R}/benchmarks/store_info_{{run}}_{{split}}.tsv"
    threads: 1
    resources: mem_mb=1000, runtime=15
    params: store=url("{split}.zarr")
    shell: "OMP_NUM_THREADS={threads} bertology store info {params.store:q} {SO} > {output} 2> {log}"


rule intervene:
    """Every intervention on the run's dev samples; the compensation classifier is trained with the run's seed
    (on the task's train part, carved with `seed`)."""
    input:
        model=lambda w: checkpoint(w.run),
        dev=location("{run}", "dev.zarr")[1],
    output: tracked("dev.sweep")
    log: f"{R}/logs/intervene_{{run}}.log"
    benchmark: f"{R}/benchmarks/intervene_{{run}}.tsv"
    threads: 2
    resources: mem_mb=4000, runtime=240, **GPU
    params:
        dev=url("dev.zarr"),
        out=url("dev.sweep"),
        data=lambda w: data_args(task_of(w.run), with_task=False),
        carve=lambda w: carve(task_of(w.run)),
        families=",".join(IV["families"]),
        train_limit=IV["train_limit"],
        skip_layers=",".join(map(str, IV["skip_layers"])) if isinstance(IV["skip_layers"], list) else IV["skip_layers"],
        seed=lambda w: seed_of(w.run), carve_seed=config["seed"],
    shell:
        "OMP_NUM_THREADS={threads} bertology intervene --model {input.model} --store {params.dev:q} "
        "--out {params.out:q} --families {params.families} --train-limit {params.train_limit} "
        "--skip-layers {params.skip_layers} {params.data} "
        "{params.carve} --seed {params.seed} --carve-seed {params.carve_seed} {SO} --quiet > {log} 2>&1" + SWEEP_RECEIPT


rule analyze:
    """Every analysis of the run's dev store; the probes and the bootstrap use the run's seed."""
    input:
        unpack(lambda w: {"sweep": location(w.run, "dev.sweep")[1]} if IV["enabled"] else {}),
        unpack(lambda w: {"pretrained": location(task_of(w.run), "pretrained_dev.zarr")[1]}
               if AN["attention_change"] else {}),
        dev=location("{run}", "dev.zarr")[1],
        train=location("{run}", "train.zarr")[1],
    output:
        f"{R}/{{run}}/analysis/analysis.json",
        f"{R}/{{run}}/analysis/timings.json",
        # every table these settings make (the dev store is a full capture): the analysis registry's plan
        expand(f"{R}/{{{{run}}}}/analysis/{{table}}.parquet", table=ANALYSIS_TABLES),
    log: f"{R}/logs/analyze_{{run}}.log"
    benchmark: f"{R}/benchmarks/analyze_{{run}}.tsv"
    threads: 2
    resources: mem_mb=3000, runtime=120
    params:
        dev=url("dev.zarr"), train=url("train.zarr"),
        out=lambda w: f"{R}/{w.run}/analysis",
        resamples=AN["resamples"], permutations=AN["permutations"], seed=lambda w: seed_of(w.run),
        sweep=lambda w: f"--sweep {shlex.quote(location(w.run, 'dev.sweep')[0])}" if IV["enabled"] else "",
        pretrained=lambda w: (f"--pretrained-store {shlex.quote(location(task_of(w.run), 'pretrained_dev.zarr')[0])}"
                              if AN["attention_change"] else ""),
        attribution=AN["attribution_samples"], targets=lambda w: targets_args(task_of(w.run)),
    shell:
        "OMP_NUM_THREADS={threads} bertology analyze {params.dev:q} --train-store {params.train:q} "
        "--out {params.out} --resamples {params.resamples} --permutations {params.permutations} "
        "--seed {params.seed} {params.sweep} {params.pretrained} --attribution-samples {params.attribution} "
        "{params.targets} --scheduler {SCHEDULER:q} {SO} > {log} 2>&1"


def targets_args(task):
    """A regression task's score bins (config analyze.bins) and its error threshold (analyze.error_threshold)."""
    bins = (AN.get("bins") or {}).get(task)
    return (f"--bins {','.join(f'{b:g}' for b in bins)} " if bins else "") + \
        f"--error-threshold {AN.get('error_threshold', 1.0):g}"


def analyze_reference():
    """The command analysing a reference store (the pre-trained model's, a baseline's): what it holds, with
    the workflow's statistics settings; its probes fitted on the train store where params.train names one."""
    return ("OMP_NUM_THREADS={threads} bertology analyze {params.dev:q} {params.train} --out {params.out} "
            "--resamples {params.resamples} --permutations {params.permutations} --seed {params.seed} "
            "--attribution-samples 0 {params.targets} --scheduler {SCHEDULER:q} {SO} > {log} 2>&1")


REFERENCE_PARAMS = dict(resamples=AN["resamples"], permutations=AN["permutations"], seed=config["seed"],
                        targets=lambda w: targets_args(w.task))


rule analyze_pretrained:
    """The pre-trained model on the task's dev samples: its attention (for the comparison with the fine-tuned
    model) and, with `baselines: [pretrained]`, its final-layer probe fitted on train (Kovaleva's no-fine-tuning
    baseline)."""
    input:
        unpack(lambda w: {"train": location(w.task, "pretrained_train.zarr")[1]} if "pretrained" in BASELINES else {}),
        dev=location("{task}", "pretrained_dev.zarr")[1],
    output: f"{R}/{{task}}/pretrained_analysis/analysis.json"
    log: f"{R}/logs/analyze_pretrained_{{task}}.log"
    benchmark: f"{R}/benchmarks/analyze_pretrained_{{task}}.tsv"
    threads: 2
    resources: mem_mb=3000, runtime=60
    params:
        dev=url("pretrained_dev.zarr", "{task}"),
        train=lambda w: (f"--train-store {shlex.quote(location(w.task, 'pretrained_train.zarr')[0])}"
                         if "pretrained" in BASELINES else ""),
        out=lambda w: f"{R}/{w.task}/pretrained_analysis", **REFERENCE_PARAMS,
    shell: analyze_reference()


rule analyze_random_init:
    """The random-init baseline's dev store: its task metrics (Kovaleva's random init + fine-tuning)."""
    input: dev=location("{task}", "random_init_dev.zarr")[1]
    output: f"{R}/{{task}}/random_init/analysis/analysis.json"
    log: f"{R}/logs/analyze_random_init_{{task}}.log"
    benchmark: f"{R}/benchmarks/analyze_random_init_{{task}}.tsv"
    threads: 2
    resources: mem_mb=3000, runtime=60
    params:
        dev=url("random_init_dev.zarr", "{task}"), train="",
        out=lambda w: f"{R}/{w.task}/random_init/analysis", **REFERENCE_PARAMS,
    shell: analyze_reference()


COMPARE_PARAMS = dict(resamples=AN["resamples"], seed=config["seed"], out=lambda w, output: os.path.dirname(output[0]))
COMPARE = ("OMP_NUM_THREADS={threads} bertology compare $(dirname {input.a}) $(dirname {input.b}) --out {params.out} "
           "--resamples {params.resamples} --seed {params.seed} {SO} > {log} 2>&1")


rule compare_seeds:
    """Seed A against seed B of one task, sample by sample (bertology compare: A − B, paired)."""
    input:
        a=f"{R}/{{task}}/seed-{{a}}/analysis/analysis.json",
        b=f"{R}/{{task}}/seed-{{b}}/analysis/analysis.json",
    output: f"{R}/{{task}}/compare/seed-{{a}}_vs_seed-{{b}}/compare.json"
    log: f"{R}/logs/compare_seeds_{{task}}_seed-{{a}}_vs_seed-{{b}}.log"
    benchmark: f"{R}/benchmarks/compare_seeds_{{task}}_seed-{{a}}_vs_seed-{{b}}.tsv"
    threads: 1
    resources: mem_mb=3000, runtime=30
    params: **COMPARE_PARAMS
    shell: COMPARE


rule compare_pretrained:
    """A fine-tuned run against the pre-trained model on the same samples: per layer and per head, A − B."""
    input:
        a=f"{R}/{{run}}/analysis/analysis.json",
        b=lambda w: f"{R}/{task_of(w.run)}/pretrained_analysis/analysis.json",
    output: f"{R}/{{run}}/compare_pretrained/compare.json"
    log: f"{R}/logs/compare_pretrained_{{run}}.log"
    benchmark: f"{R}/benchmarks/compare_pretrained_{{run}}.tsv"
    threads: 1
    resources: mem_mb=3000, runtime=30
    params: **COMPARE_PARAMS
    shell: COMPARE


rule across:
    """A task's runs together: each headline statistic over seeds, the share of seeds each finding holds in,
    and Kovaleva's baselines (config `seeds`, `baselines`)."""
    input:
        runs=lambda w: [f"{R}/{r}/analysis/analysis.json" for r in runs_of(w.task)],
        baselines=lambda w: ([f"{R}/{w.task}/pretrained_analysis/analysis.json"] if "pretrained" in BASELINES else [])
                            + ([f"{R}/{w.task}/random_init/analysis/analysis.json"] if "random_init" in BASELINES else []),
    output: f"{R}/{{task}}/across/across.json"
    log: f"{R}/logs/across_{{task}}.log"
    benchmark: f"{R}/benchmarks/across_{{task}}.tsv"
    threads: 1
    resources: mem_mb=2000, runtime=15
    params:
        runs=lambda w, input: [os.path.dirname(a) for a in input.runs],
        pretrained=lambda w: f"--pretrained {R}/{w.task}/pretrained_analysis" if "pretrained" in BASELINES else "",
        random_init=lambda w: f"--random-init {R}/{w.task}/random_init/analysis" if "random_init" in BASELINES else "",
        out=lambda w: f"{R}/{w.task}/across",
    shell:
        "OMP_NUM_THREADS={threads} bertology across {params.runs} {params.pretrained} {params.random_init} "
        "--out {params.out} {SO} > {log} 2>&1"


rule index:
    """The DuckDB index of exactly the runs this workflow made: each run's dev and train stores and the dev
    store's analysis tables (every one of them an input, so a missing table reruns its analysis), and the
    comparisons and across-runs tables."""
    input:
        stores=[location(r, f"{s}.zarr")[1] for r in RUNS for s in ("dev", "train")],  # (lists flatten)
        analyses=expand(f"{R}/{{run}}/analysis/analysis.json", run=RUNS),
        tables=expand(f"{R}/{{run}}/analysis/{{table}}.parquet", run=RUNS, table=ANALYSIS_TABLES),
        compares=[f"{c}/compare.json" for t in TASKS for c in compares_of(t)],
        across=expand(f"{R}/{{task}}/across/across.json", task=TASKS) if ACROSS else [],
    output: f"{R}/bertology.duckdb"
    log: f"{R}/logs/index.log"
    benchmark: f"{R}/benchmarks/index.tsv"
    threads: 1
    resources: mem_mb=4000, runtime=60
    params:
        stores=[location(r, f"{s}.zarr")[0] for r in RUNS for s in ("dev", "train")],
        analyses=lambda w, input: [os.path.dirname(a) for a in input.analyses + input.compares + input.across],
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
