# bertology workflow: finetune -> extract (dev: full capture; train: cls only) -> analyze, + store summaries.
# Later stages (analyze, index, report) add their rules the same way. Run: snakemake --cores 8
from snakemake.utils import validate

configfile: "config/config.yaml"
validate(config, "config/schema.yaml")

R = config["results"]
FT = config["finetune"]
EX = config["extract"]


def carve(task):
    f = config.get("carve_train_from_dev", {}).get(task)
    return f"--carve-train-from-dev {f}" if f else ""


def checkpoint(task):
    return config.get("checkpoints", {}).get(task, f"{R}/{task}/model")


rule all:
    input:
        expand(f"{R}/{{task}}/analysis/separability.parquet", task=config["tasks"]),
        expand(f"{R}/{{task}}/dev.info.txt", task=config["tasks"]),
        expand(f"{R}/{{task}}/train.info.txt", task=config["tasks"]),


rule finetune:
    output: directory(f"{R}/{{task}}/model")
    log: f"{R}/logs/finetune_{{task}}.log"
    benchmark: f"{R}/benchmarks/finetune_{{task}}.tsv"
    threads: 2
    resources: mem_mb=4000
    params:
        carve=lambda w: carve(w.task),
        max_train=f"--max-train {FT['max_train']}" if FT.get("max_train") else "",
    shell:
        "OMP_NUM_THREADS={threads} bertology finetune --model {config[model]} --task {wildcards.task} --glue-dir {config[glue_dir]} "
        "--out {output} {params.max_train} --epochs {FT[epochs]} --lr {FT[lr]} --batch-size {FT[batch_size]} "
        "--max-length {FT[max_length]} --seed {config[seed]} {params.carve} --quiet > {log} 2>&1"


rule extract_dev:
    input: lambda w: checkpoint(w.task)
    output: directory(f"{R}/{{task}}/dev.zarr")
    log: f"{R}/logs/extract_dev_{{task}}.log"
    benchmark: f"{R}/benchmarks/extract_dev_{{task}}.tsv"
    threads: 2
    resources: mem_mb=6000
    params:
        carve=lambda w: carve(w.task),
        limit=f"--limit {EX['dev_limit']}" if EX.get("dev_limit") else "",
    shell:
        "OMP_NUM_THREADS={threads} bertology extract --model {input} --task {wildcards.task} --split dev --glue-dir {config[glue_dir]} "
        "--out {output} {params.limit} --dtype {EX[dtype]} --max-length {EX[max_length]} --seed {config[seed]} "
        "{params.carve} --overwrite --quiet > {log} 2>&1"


rule extract_train:
    input: lambda w: checkpoint(w.task)
    output: directory(f"{R}/{{task}}/train.zarr")
    log: f"{R}/logs/extract_train_{{task}}.log"
    benchmark: f"{R}/benchmarks/extract_train_{{task}}.tsv"
    threads: 2
    resources: mem_mb=4000
    params:
        carve=lambda w: carve(w.task),
        limit=f"--limit {FT['max_train']}" if FT.get("max_train") else "",
    shell:
        "OMP_NUM_THREADS={threads} bertology extract --model {input} --task {wildcards.task} --split train --glue-dir {config[glue_dir]} "
        "--out {output} {params.limit} --cls-only --dtype {EX[dtype]} --max-length {EX[max_length]} "
        "--seed {config[seed]} {params.carve} --overwrite --quiet > {log} 2>&1"


rule store_info:
    input: f"{R}/{{task}}/{{split}}.zarr"
    output: f"{R}/{{task}}/{{split}}.info.txt"
    log: f"{R}/logs/store_info_{{task}}_{{split}}.log"
    benchmark: f"{R}/benchmarks/store_info_{{task}}_{{split}}.tsv"
    threads: 1
    shell: "OMP_NUM_THREADS={threads} bertology store info {input} > {output} 2> {log}"


rule analyze:
    input:
        dev=f"{R}/{{task}}/dev.zarr",
        train=f"{R}/{{task}}/train.zarr",
    output:
        f"{R}/{{task}}/analysis/separability.parquet",
        f"{R}/{{task}}/analysis/skip_candidates.parquet",
        f"{R}/{{task}}/analysis/ffn_roles.parquet",
        f"{R}/{{task}}/analysis/token_strength.parquet",
        f"{R}/{{task}}/analysis/errors.parquet",
        f"{R}/{{task}}/analysis/layer_predictions.parquet",
    log: f"{R}/logs/analyze_{{task}}.log"
    benchmark: f"{R}/benchmarks/analyze_{{task}}.tsv"
    threads: 2
    resources: mem_mb=3000
    params:
        out=lambda w: f"{R}/{w.task}/analysis",
        resamples=config.get("analyze", {}).get("resamples", 1000),
    shell:
        "OMP_NUM_THREADS={threads} bertology analyze {input.dev} --train-store {input.train} --out {params.out} "
        "--resamples {params.resamples} --seed {config[seed]} "
        "> {log} 2>&1"
