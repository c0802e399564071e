"""The ``bertology`` command: one entry point, one subcommand per stage."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys

from bertology import BertologyError, __version__


def _csv(kind):
    def parse(text: str):
        items = [t for t in text.replace(",", " ").split() if t]
        return tuple(kind(t) for t in items)
    return parse


def _number(kind, low, what):
    """An argparse type: ``kind`` (int/float) of at least ``low``, refused with a message before any work."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value
    return parse


POSITIVE = _number(int, 1, "a positive integer")
NON_NEGATIVE = _number(int, 0, "zero or a positive integer")
POSITIVE_FLOAT = _number(float, 1e-300, "a positive number")


def _add_user_data_args(p: argparse.ArgumentParser) -> None:
    """Your own data (extract/user_data.py): where it is and which columns hold what."""
    g = p.add_argument_group("your own data (instead of a GLUE task)")
    g.add_argument("--data", metavar="PATH_OR_URL",
                   help="a folder with one file per split (train.csv, dev.jsonl, ...: CSV, TSV, JSONL or Parquet), "
                        "one such file with --split-column, or hf:REPO[:CONFIG]; local or any fsspec URL")
    g.add_argument("--text-column", help="the column of the text (default: text)")
    g.add_argument("--text-pair-column", help="the column of a sentence pair's second text")
    g.add_argument("--label-column", help="the column of the label (default: label)")
    g.add_argument("--split-column", help="with one file: the column that says each row's split")
    g.add_argument("--id-column", help="a column of unique integer sample ids (default: the row index)")
    g.add_argument("--label-order", type=_csv(str), metavar="A,B,C",
                   help="the classes in class-index order (default: the sorted label values of train)")
    g.add_argument("--task-type", choices=("classification", "regression"),
                   help="default: inferred from the labels when unambiguous (and said)")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", help="GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, rte, qnli, wnli; with --data, the "
                                  "dataset's name (default: the folder's or file's name)")
    p.add_argument("--glue-dir", help="folder with <TASK>/{train,dev}.tsv (default: $GLUE_DIR; "
                                      "unset: the Hugging Face `datasets` loader, online)")
    _add_user_data_args(p)
    p.add_argument("--carve-train-from-dev", type=float, metavar="FRACTION",
                   help="for a task with no train split on disk: carve a seeded, stratified FRACTION of dev "
                        "out as train (dev keeps the rest); recorded in the metadata")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--carve-seed", type=int, default=None,
                   help="the seed of --carve-train-from-dev (default: --seed); fine-tuning seeds that share "
                        "one dev set share this")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_storage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage-options", metavar="JSON", type=_storage_options, default=None,
                   help="fsspec storage options for URL paths (s3://, gs://, ...), e.g. "
                        "'{\"client_kwargs\": {\"region_name\": \"eu-west-1\"}}'; credentials are better left to the "
                        "environment (AWS_ACCESS_KEY_ID, ...), and are never written anywhere")


def _storage_options(text: str) -> dict:
    try:
        options = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e})") from None
    if not isinstance(options, dict):
        raise argparse.ArgumentTypeError("a JSON object, e.g. '{\"anon\": false}'")
    return options


def _port(text: str) -> int:
    port = _number(int, 1, "a port number (1-65535)")(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port number (1-65535)")
    return port


def _shard(text: str) -> tuple[int, int]:
    from bertology.store.shards import parse_shard

    try:
        return parse_shard(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _scheduler(text: str) -> str:
    from bertology.analysis.engine import parse_scheduler

    try:
        parse_scheduler(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    from bertology.analysis.options import SKIP_RULES, SKIP_STATISTICS, add_arguments

    parser = argparse.ArgumentParser(prog="bertology", description=__doc__)
    parser.add_argument("--version", action="version", version=f"bertology {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("finetune", help="fine-tune an encoder on a GLUE task; writes a save_pretrained checkpoint")
    p.add_argument("--model", default="minilm-l6", help="HF id, local directory, or the embedded 'minilm-l6'")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--max-train", type=POSITIVE, help="use a seeded random subset of N training examples")
    p.add_argument("--epochs", type=POSITIVE_FLOAT, default=3.0)
    p.add_argument("--batch-size", type=POSITIVE, default=32)
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=5e-5)
    p.add_argument("--max-length", type=int, default=128)
    _add_data_args(p)

    p = sub.add_parser("init-model", help="write a randomly initialised BERT classifier: a tiny one (the tiny "
                                          "profile's), or one of another model's shape (--like)")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--like", help="a model (HF id, directory, or 'minilm-l6') whose architecture, size and "
                                  "tokenizer to copy, with fresh random weights (Kovaleva's random-init baseline); "
                                  "the size options are then ignored")
    p.add_argument("--layers", type=POSITIVE, default=2)
    p.add_argument("--hidden", type=POSITIVE, default=32)
    p.add_argument("--heads", type=POSITIVE, default=4)
    p.add_argument("--intermediate", type=POSITIVE, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer", default="minilm-l6", help="whose tokenizer (and vocabulary) to use")

    p = sub.add_parser("extract", help="capture every layer's sub-block states into a Zarr store")
    p.add_argument("--model", default="minilm-l6", help="checkpoint directory, HF id, or 'minilm-l6'")
    p.add_argument("--split", default="dev",
                   help="train or dev (default); MNLI also dev_matched (= dev) and dev_mismatched; with --data, the "
                        "name of any split file or --split-column value")
    p.add_argument("--out", required=True, help="store path (STORE.zarr)")
    p.add_argument("--limit", type=POSITIVE, help="only the first N examples")
    p.add_argument("--token-sites", type=_csv(str), default=None,
                   help="sites stored per token (default: all of embed attn res1 ln1 ff_act ff res2 ln2)")
    p.add_argument("--token-layers", type=_csv(int), default=None, help="layers stored per token (default: all)")
    p.add_argument("--no-attention", action="store_true", help="do not store attention maps")
    p.add_argument("--cls-only", action="store_true",
                   help="store only the [CLS] states, logits and sample data (cheap; for probes on train)")
    p.add_argument("--attention-only", action="store_true",
                   help="store only the attention maps besides the [CLS] states (a reference store, e.g. the "
                        "pre-trained model on the dev samples, for the attention change through fine-tuning)")
    p.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    p.add_argument("--max-length", type=int, default=128,
                   help="tokens per sequence, special tokens included (within [3 or the pair minimum, the model's "
                        "positions]; checked before any work)")
    p.add_argument("--batch-size", type=POSITIVE, default=32)
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing bertology store instead of resuming it (anything else is refused); "
                        "with --shard, only this shard's part")
    p.add_argument("--shard", type=_shard, default=None, metavar="K/N",
                   help="extract the K-th of N parts of the samples (whole windows); N such commands, at once on "
                        "one or many machines, fill one store, complete when all N have finished")
    p.add_argument("--allow-untrained-head", action="store_true",
                   help="accept a checkpoint whose classifier head is newly initialised at load (its predictions "
                        "are random; recorded in the store), e.g. for attention maps of a pre-trained model")
    _add_data_args(p)
    _add_storage_args(p)

    p = sub.add_parser("intervene", help="a dev store's samples under every intervention (partial forwards)")
    p.add_argument("--model", required=True, help="the checkpoint the store was extracted with")
    p.add_argument("--store", required=True, help="a dev store with token states (STORE.zarr)")
    p.add_argument("--out", required=True, help="sweep folder to write (e.g. dev.sweep)")
    p.add_argument("--families", type=_csv(str), default=None,
                   help="intervention families (default: all of skip ffn attn heads head)")
    p.add_argument("--train-limit", type=POSITIVE, default=2000,
                   help="train examples for the layer-skip compensation classifier (default 2000)")
    p.add_argument("--skip-layers", default="all",
                   help="layers the skip family skips: all (default), candidates (the a-priori skip candidates "
                        "from the store's separability, as `analyze` picks them), or a list such as 2,5")
    p.add_argument("--skip-rule", default="nonpositive", choices=SKIP_RULES,
                   help="with --skip-layers candidates: as in `analyze`")
    p.add_argument("--skip-k", type=POSITIVE, default=1)
    p.add_argument("--skip-statistic", default="fisher_trace", choices=SKIP_STATISTICS)
    p.add_argument("--batch-size", type=POSITIVE, default=64)
    p.add_argument("--allow-untrained-head", action="store_true",
                   help="accept a checkpoint whose classifier head is newly initialised at load")
    p.add_argument("--glue-dir", help="GLUE folder for the train split (default: $GLUE_DIR)")
    p.add_argument("--data", metavar="PATH_OR_URL",
                   help="for a store of your own data: where its train split is now (default: where the store "
                        "records it; the columns and classes are the store's)")
    p.add_argument("--carve-train-from-dev", type=float, metavar="FRACTION")
    p.add_argument("--seed", type=int, default=0, help="the compensation classifier's seed")
    p.add_argument("--carve-seed", type=int, default=None,
                   help="the seed of --carve-train-from-dev (default: the dev store's recorded carve-out seed)")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    _add_storage_args(p)

    p = sub.add_parser("analyze", help="every table of a store (parquet): metrics, separability, skip candidates, "
                                       "FFN roles, errors, layer predictions, token strength, attention heads, "
                                       "attribution, and with a sweep the interventions")
    p.add_argument("store", help="a complete store (STORE.zarr)")
    p.add_argument("--out", required=True, help="folder for the parquet tables")
    add_arguments(p)   # every option of AnalyzeConfig, with its choices and bounds
    p.add_argument("--train-store", help="--cls-only store of the train split (same checkpoint) to fit the "
                                         "per-layer probes on; without it they are cross-fitted on the store")
    p.add_argument("--sweep", help="intervention sweep of this store (`bertology intervene`): adds the "
                                   "intervention, layer-skip and a-priori validation tables")
    p.add_argument("--pretrained-store", help="the pre-trained model's store of the same samples (extract "
                                              "--attention-only): adds the attention change through fine-tuning")
    p.add_argument("--checkpoint", help="the checkpoint directory the store was extracted with, if it moved "
                                        "(attribution reads its weights; their sha256 must match the store's)")
    p.add_argument("--scheduler", type=_scheduler, default=None,
                   help="dask engine: threads (default), processes, local:N (a LocalCluster of N worker "
                        "processes), or a scheduler address tcp://host:port (default: $DASK_SCHEDULER_ADDRESS, "
                        "else threads)")
    _add_storage_args(p)

    p = sub.add_parser("compare", help="two analysed runs of the same samples, A − B: paired differences per "
                                       "sample, of accuracy and margin, and per layer")
    p.add_argument("a", help="analysis folder of run A (`bertology analyze --out`)")
    p.add_argument("b", help="analysis folder of run B")
    p.add_argument("--out", required=True, help="folder for the comparison's tables")
    p.add_argument("--intersect", action="store_true",
                   help="compare the samples both runs hold (else runs of different samples are refused)")
    add_arguments(p, only=("resamples", "seed", "correction"))   # as `analyze` declares them
    _add_storage_args(p)

    p = sub.add_parser("across", help="several fine-tuning seeds of one task: each headline statistic's mean, "
                                      "between-seed sd and interval, the share of seeds each finding holds in, "
                                      "and Kovaleva's baselines")
    p.add_argument("runs", nargs="+", help="analysis folders of the task's fine-tuned runs, one per seed "
                                           "(`bertology analyze --out`), all of the same dev samples")
    p.add_argument("--out", required=True, help="folder for the tables")
    p.add_argument("--pretrained", help="analysis folder of the pre-trained model on the same samples, with "
                                        "--train-store (its final-layer probe is the no-fine-tuning baseline)")
    p.add_argument("--random-init", help="analysis folder of a randomly initialised model of the same shape "
                                         "fine-tuned on the task (`init-model --like`, then `finetune`)")
    _add_storage_args(p)

    p = sub.add_parser("index", help="build or update the DuckDB index over every run under a results folder")
    p.add_argument("results", nargs="+", help="results folder (stores *.zarr and analysis folders beneath it); or "
                                              "the stores and analysis folders to index, with --db")
    p.add_argument("--db", default=None, help="database file (default: RESULTS/bertology.duckdb)")
    p.add_argument("--wait", type=_number(float, 0, "zero or a positive number of seconds"), default=600,
                   help="seconds to wait for another build of the same database to finish (default 600)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    _add_storage_args(p)

    p = sub.add_parser("report", help="the HTML report, Markdown summary and CSV tables of a results folder")
    p.add_argument("results", help="results folder (analysed stores beneath it)")
    p.add_argument("--out", help="report folder (default: RESULTS/report)")
    p.add_argument("--db", help="index database (default: RESULTS/bertology.duckdb; `bertology index` builds it)")
    p.add_argument("--reindex", action="store_true",
                   help="bring the index up to date first (else it is read as it is, and said when out of date)")
    p.add_argument("--tasks", type=_csv(str), help="only these tasks (default: every analysed dev store)")
    p.add_argument("--workflow-config", help="the workflow's configuration as JSON, shown under provenance")
    _add_storage_args(p)

    p = sub.add_parser("sql", help="read-only SQL over the index (no query: interactive prompt)")
    p.add_argument("query", nargs="?", help="one SQL query; omit for an interactive prompt")
    p.add_argument("--db", default="results/bertology.duckdb")
    p.add_argument("--format", default="table", choices=("table", "csv", "json", "parquet"))
    p.add_argument("--output", help="file for --format parquet")
    p.add_argument("--max-rows", type=POSITIVE, default=None,
                   help="stop after this many rows (default 100000; the output says when it stopped early)")
    p.add_argument("--timeout", type=POSITIVE_FLOAT, default=None,
                   help="seconds a query may run before it is interrupted (default 60)")

    p = sub.add_parser("serve", help="a local web explorer and JSON API over a results folder's index and stores")
    p.add_argument("results", help="results folder (the runs it serves; its index is RESULTS/bertology.duckdb)")
    p.add_argument("--db", help="index database (default: RESULTS/bertology.duckdb; build it with `bertology index`)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1, this machine only; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    p.add_argument("--quiet", action="store_true", help="no request log")

    p = sub.add_parser("store", help="inspect stores")
    ssub = p.add_subparsers(dest="store_command", required=True)
    pi = ssub.add_parser("info", help="summarise a store")
    pi.add_argument("path")
    pi.add_argument("--json", action="store_true", help="print the metadata as JSON")
    _add_storage_args(pi)
    pv = ssub.add_parser("verify", help="read every chunk of a store or sweep and report all damage (exit 1)")
    pv.add_argument("path")
    pv.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_storage_args(pv)
    return parser


def _skip_layers(args: argparse.Namespace):
    """``--skip-layers``: None (every layer), the a-priori candidates of the store, or the listed layers."""
    text = args.skip_layers.strip().lower()
    if text == "all":
        return None
    if text == "candidates":
        from bertology.analysis.separability import apriori_skip_layers
        from bertology.store import open_store

        layers = apriori_skip_layers(open_store(args.store), args.skip_statistic, args.skip_rule, args.skip_k,
                                     args.seed)
        print(f"a-priori skip candidates ({args.skip_statistic}, {args.skip_rule}): layers {layers}")
        return layers
    try:
        return list(_csv(int)(text))
    except ValueError:
        raise BertologyError(f"--skip-layers {args.skip_layers!r}: use all, candidates, or layer numbers "
                             "such as 2,5") from None


def run(args: argparse.Namespace) -> int:
    """Run the parsed command; ``--storage-options`` hold for this command only."""
    from bertology.store.location import OPTIONS_ENV

    if getattr(args, "storage_options", None) is None:
        return _run(args)
    saved = os.environ.get(OPTIONS_ENV)
    os.environ[OPTIONS_ENV] = json.dumps(args.storage_options)   # this command's locations (and its workers')
    try:
        return _run(args)
    finally:
        if saved is None:
            os.environ.pop(OPTIONS_ENV, None)
        else:
            os.environ[OPTIONS_ENV] = saved


def _task(args: argparse.Namespace, checkpoint: str | None = None):
    """The task of a command: a GLUE task's name, or the user's data (``--data``) as a task, on top of what
    a fine-tuned ``checkpoint`` recorded of it, its classes and task type settled now."""
    options = {k: getattr(args, k) for k in ("text_column", "text_pair_column", "label_column", "split_column",
                                            "id_column", "label_order", "task_type")}
    if args.data is None:
        given = [f"--{k.replace('_', '-')}" for k, v in options.items() if v is not None]
        if given:
            raise BertologyError(f"{', '.join(given)} describe your own data: pass --data PATH_OR_URL with them")
        if not args.task:
            raise BertologyError("pass --task (a GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, rte, qnli, wnli) or "
                                 "--data PATH_OR_URL (your own data)")
        return args.task
    from bertology.extract.user_data import load_user_split, recorded_task, resolve, user_task

    task = user_task(args.data, name=args.task, recorded=recorded_task(checkpoint), **options)
    task = resolve(task, carved=bool(args.carve_train_from_dev))
    for split in ("train", "dev") if args.command == "finetune" else (args.split,):   # a bad row stops here
        load_user_split(task, split, carve_train_from_dev=args.carve_train_from_dev)
    for note in task.notes:
        print(f"bertology: {note}", file=sys.stderr)
    return task


def _run(args: argparse.Namespace) -> int:
    if args.command == "finetune":
        from bertology.extract.finetune import finetune_task

        metrics = finetune_task(
            args.model, _task(args), args.out, glue_dir=args.glue_dir, max_train=args.max_train,
            carve_train_from_dev=args.carve_train_from_dev, seed=args.seed, carve_seed=args.carve_seed,
            epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, max_length=args.max_length, device=args.device,
            progress=not args.quiet)
        m = metrics["dev"]
        carve = " (train carved out of dev)" if metrics["carve_out"] else ""
        scores = ", ".join(f"{k} {v:.4f}" for k, v in m.items() if v == v)   # NaN: not defined for this task
        print(f"{metrics['task']}: dev {scores} after {metrics['train_seconds']:.0f} s{carve}; checkpoint {args.out}")
    elif args.command == "init-model":
        from bertology.extract.models import init_like, init_random_bert

        if args.like:
            path = init_like(args.out, args.like, seed=args.seed)
        else:
            path = init_random_bert(args.out, layers=args.layers, hidden=args.hidden, heads=args.heads,
                                    intermediate=args.intermediate, seed=args.seed, tokenizer=args.tokenizer)
        print(f"wrote {path}")
    elif args.command == "extract":
        from bertology.extract.extraction import ExtractConfig, extract_task
        from bertology.store import schema as S

        if args.attention_only and (args.cls_only or args.no_attention):
            raise BertologyError("--attention-only stores attention maps: drop --cls-only / --no-attention")
        sites = args.token_sites if args.token_sites is not None else S.TOKEN_SITES
        cfg = ExtractConfig(
            token_sites=() if (args.cls_only or args.attention_only) else sites,
            token_layers=args.token_layers,
            attention=not (args.no_attention or args.cls_only),
            dtype=args.dtype, max_length=args.max_length, batch_size=args.batch_size, seed=args.seed,
            allow_untrained_head=args.allow_untrained_head, extra_meta={"attention_only": True} if args.attention_only else {})
        path = extract_task(args.model, _task(args, checkpoint=args.model), args.split, args.out,
                            glue_dir=args.glue_dir, limit=args.limit,
                            carve_train_from_dev=args.carve_train_from_dev, carve_seed=args.carve_seed, cfg=cfg,
                            overwrite=args.overwrite,
                            device=args.device, progress=not args.quiet, shard=args.shard)
        print(f"wrote {path}" + (f" (shard {args.shard[0]} of {args.shard[1]})" if args.shard else ""))
    elif args.command == "intervene":
        from bertology.extract.sweep import FAMILIES, sweep

        skip_layers = _skip_layers(args)
        path = sweep(args.model, args.store, args.out, families=args.families or FAMILIES, glue_dir=args.glue_dir,
                     data=args.data,
                     carve_train_from_dev=args.carve_train_from_dev, train_limit=args.train_limit,
                     batch_size=args.batch_size, seed=args.seed, carve_seed=args.carve_seed, device=args.device,
                     progress=not args.quiet,
                     skip_layers=skip_layers, allow_untrained_head=args.allow_untrained_head)
        print(f"wrote {path}")
    elif args.command == "analyze":
        from bertology.analysis.options import from_arguments
        from bertology.analysis.run import analyze

        cfg = from_arguments(args)
        for name, path in analyze(args.store, args.out, cfg, train_store=args.train_store,
                                  sweep=args.sweep, pretrained_store=args.pretrained_store,
                                  checkpoint=args.checkpoint, scheduler=args.scheduler).items():
            print(f"wrote {path}")
    elif args.command == "compare":
        from bertology.analysis.compare import compare

        for name, path in compare(args.a, args.b, args.out, intersect=args.intersect, resamples=args.resamples,
                                  seed=args.seed, correction=args.correction).items():
            print(f"wrote {path}")
    elif args.command == "across":
        from bertology.analysis.across import across

        for name, path in across(args.runs, args.out, pretrained=args.pretrained,
                                 random_init=args.random_init).items():
            print(f"wrote {path}")
    elif args.command == "index":
        from bertology.analysis.index import build_index
        from bertology.store.location import locate

        one = locate(args.results[0])
        if args.db is None and (len(args.results) > 1 or one.name.endswith(".zarr") or not one.local
                                or (one / "analysis.json").exists()):
            raise BertologyError("index: name the database with --db FILE when indexing stores, analysis folders or "
                                 "URLs (the default, RESULTS/bertology.duckdb, is for one local results folder)")
        db = args.db or str(one / "bertology.duckdb")
        def progress(k, n, store):
            print(f"indexed {k}/{n} {store}", file=sys.stderr, flush=True)

        rep = build_index(args.results, db, wait=args.wait, on_run=None if args.quiet else progress)
        for what in ("added", "updated", "removed", "unchanged", "skipped"):
            for item in getattr(rep, what):
                print(f"{what:9} {item}")
        print(f"{db}: {'updated' if rep.changed else 'unchanged'}")
    elif args.command == "report":
        from bertology.reports import build_report

        try:
            wcfg = json.loads(args.workflow_config) if args.workflow_config else None
        except ValueError as e:
            raise BertologyError(f"--workflow-config is not JSON: {e}") from None
        from bertology.store.location import locate

        path = build_report(args.results, args.out or locate(args.results) / "report", db=args.db,
                            tasks=list(args.tasks) if args.tasks else None, workflow_config=wcfg,
                            reindex=args.reindex)
        print(f"wrote {path}")
    elif args.command == "sql":
        from bertology.analysis import sql

        limits = sql.Limits.from_options(args.max_rows, args.timeout)
        if args.query is None:
            sql.repl(args.db, limits)
        else:
            result = sql.query(args.db, args.query, limits)
            print(sql.render(result, args.format, args.output))
            if result.attrs.get("truncated"):
                print(f"bertology sql: stopped at {limits.max_rows} rows (--max-rows raises the limit)", file=sys.stderr)
    elif args.command == "serve":
        from bertology.reports.serve import serve

        serve(args.results, args.db, host=args.host, port=args.port, quiet=args.quiet)
    elif args.command == "store" and args.store_command == "verify":
        from bertology.store.integrity import verify

        rep = verify(args.path, progress=not args.quiet)
        for d in rep.damage:
            print(f"DAMAGED  {args.path}: {d}")
        if rep.unchecked_arrays:
            print(f"{args.path}: {rep.unchecked_arrays} of {rep.arrays} arrays were written without chunk checksums "
                  f"(before bertology 0.2): missing or changed chunks there cannot be detected; re-extract to add them")
        if rep.damage:
            print(f"{args.path}: {len(rep.damage)} damaged chunk(s) of {rep.chunks} in {rep.arrays} arrays; re-extract "
                  f"the store (the same `bertology extract` command with --overwrite) or rerun `bertology intervene`")
            return 1
        print(f"{args.path}: ok, {rep.chunks} chunks in {rep.arrays} arrays verified")
    elif args.command == "store":
        from bertology.store.info import describe
        from bertology.store.reader import read_attrs

        if args.json:
            print(json.dumps(read_attrs(args.path), indent=2))
        else:
            print(describe(args.path))
    return 0


_OS_FIXES = {
    errno.ENOSPC: "the disk is full: free space there, or write somewhere else",
    errno.EDQUOT: "your disk quota is used up: free space, or write somewhere else",
    errno.EACCES: "permission denied: choose a path you can write (or read), or fix its permissions",
    errno.EPERM: "the operation is not permitted there: choose another path",
    errno.EROFS: "the file system is read-only: choose a writable path",
    errno.ENOENT: "no such file or folder: check the path (a parent folder may be missing)",
    errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
    errno.EISDIR: "that is a folder, where a file was expected: check the path",
    errno.EEXIST: "something already exists there: choose another path",
}


def os_error_message(e: OSError) -> str:
    """One line for a file-system error: the path, what happened, and what to do."""
    where = e.filename if e.filename is not None else ""
    if getattr(e, "filename2", None):
        where = f"{where} -> {e.filename2}"
    what = e.strerror or str(e)
    fix = _OS_FIXES.get(e.errno, "check the path and try again")
    return f"{where + ': ' if where else ''}{what} ({fix}); then rerun the same command"


def main(argv=None) -> int:
    """Run one command. A user's mistake ends in one line on stderr and exit 2 (1: damage found by
    ``store verify``); ``BERTOLOGY_DEBUG=1`` shows the traceback instead."""
    args = build_parser().parse_args(argv)
    debug = os.environ.get("BERTOLOGY_DEBUG", "") not in ("", "0")
    try:
        return run(args)
    except BrokenPipeError:
        # the reader of our output went away (`bertology sql ... | head`): not an error of ours
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 0
    except BertologyError as e:
        if debug:
            raise
        print(f"bertology: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if debug:
            raise
        print(f"bertology: error: {os_error_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bertology: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - object-storage clients' own errors: one line with the fix
        message = storage_error_message(e)
        if debug or message is None:
            raise
        print(f"bertology: error: {message}", file=sys.stderr)
        return 2


#: The fsspec protocols whose library is an extra of bertology.
_PROTOCOL_EXTRAS = {"gcsfs": "gcs", "adlfs": "azure"}


def storage_error_message(e: Exception) -> str | None:
    """One line for an error of an object-storage client (no credentials, an unreachable endpoint, a
    protocol whose library is not installed); None for anything else."""
    if isinstance(e, ImportError) and "to access" in str(e):  # fsspec: "Please install gcsfs to access ..."
        lib = next((k for k in _PROTOCOL_EXTRAS if k in str(e)), None)
        extra = f" (pip install 'bertology[{_PROTOCOL_EXTRAS[lib]}]')" if lib else ""
        return f"{e}{extra}"
    module = type(e).__module__ or ""
    if module.startswith(("botocore", "aiobotocore", "s3fs", "google", "azure")):
        return (f"object storage: {type(e).__name__}: {e}. Credentials and endpoints come from the environment "
                f"(for S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3) or --storage-options")
    return None


if __name__ == "__main__":
    sys.exit(main())
