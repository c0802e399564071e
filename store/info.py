"""A human-readable summary of a store (``bertology store info PATH``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import schema as S
from . import shards
from .location import Location, locate
from .reader import open_store, read_attrs


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def _columns(record: dict) -> str:
    """A user dataset's column mapping, class order and task type, as ``store info`` shows them."""
    cols = record["columns"]
    mapping = ", ".join(f"{k} = {cols[k]!r}" for k in ("text", "text_pair", "label", "split", "id")
                        if cols.get(k) is not None)
    order = f"; classes in order {', '.join(record['label_order'])}" if record.get("label_order") else ""
    return f"{mapping}; {record['task_type']}{order} (source {record['data']})"


def _head(state: str | None) -> str:
    if state == "untrained":
        return ("UNTRAINED head (newly initialised at load, --allow-untrained-head): predictions, accuracy and "
                "errors are those of random weights")
    return "trained head" if state == "trained" else "head state not recorded (store older than bertology 0.2)"


def describe(path: str | Path | Location) -> str:
    """Summarise what a store (a path or URL) holds: provenance, capture settings, variables, accuracy and
    size."""
    path = locate(path)
    attrs = read_attrs(path)
    n_shards = attrs[S.META_KEY].get(shards.SHARDS)
    if n_shards:
        missing = shards.unfinished(path, n_shards)
        if missing:
            m = attrs[S.META_KEY]
            return (f"bertology store {path}  (schema {m['schema_version']}, {n_shards} shards, INCOMPLETE: shard(s) "
                    f"{', '.join(missing)})\n  task/split   {m['task']} / {m['split']}  ({m['n_samples']} samples)\n"
                    f"  model        {m['model']}\n  run `bertology extract ... --shard K/{n_shards}` for each "
                    f"unfinished shard (a rerun resumes it)")
        progress = {"complete": True}
    else:
        progress = attrs.get(S.PROGRESS_KEY) or {}
    ds = open_store(path, allow_incomplete=True)
    m = ds.attrs
    state = ("complete" if progress.get("complete") else
             "INCOMPLETE: " + str(progress.get("windows_done")) + " windows written")
    lines = [f"bertology store {path}  (schema {m['schema_version']}, "
             + (f"{n_shards} shards, " if n_shards else "") + f"{state})"]
    carve = m.get("carve_out")
    lines += [
        f"  task/split   {m['task']} / {m['split']}  ({ds.sizes[S.SAMPLE]} samples, labels: {', '.join(m['label_names'])})",
        f"  data         {m['data_file']}  sha256 {m['data_sha256'][:16]}…"
        + (f"\n  columns      {_columns(m['data'])}" if m.get("data") else "")
        + (f"\n  CARVE-OUT    train part carved out of dev: fraction {carve['fraction']}, seed {carve['seed']}, "
           f"{carve['n_train']} train / {carve['n_dev']} dev" if carve else ""),
        f"  model        {m['model']}  ({m['model_type']}, {m['n_layers']} layers, {m['n_heads']} heads, "
        f"hidden {m['hidden']}, ff {m['ff_hidden']})",
        f"  checkpoint   {m['model_path']}  sha256 {m['model_sha256'][:16]}…",
        f"  classifier   {_head(m.get('classifier_head'))}",
        f"  tokenizer    {m['tokenizer']}  max_length {m['max_length']}, segments: {m['segment_policy']}",
        f"  capture      dtype {m['dtype']}; cls at sites {' '.join(S.SITES)} + ff_act + embed; "
        f"token sites: {' '.join(m['token_sites']) or 'none'}"
        + (f" at layers {m['token_layers']}" if m["token_sites"] else "")
        + f"; attention: {'yes' if m['attention'] else 'no'}",
        f"  tokens       {ds.sizes.get(S.TOKEN, 0)} (mean length {float(ds['length'].mean()):.1f}, max {int(ds['length'].max())})",
        f"  provenance   bertology {m['bertology_version']}, seed {m['seed']}",
    ]
    if progress.get("complete") and S.is_regression(m):
        r = float(np.corrcoef(ds["pred"].values, ds["label"].values)[0, 1]) if len(ds["label"]) > 1 else float("nan")
        lines.append(f"  pearson      {r:.4f} (stored predicted scores vs gold scores; regression)")
    elif progress.get("complete"):
        acc = float((ds["pred"] == ds["label"]).mean())
        lines.append(f"  accuracy     {acc:.4f} (stored predictions vs gold labels)")
    lines.append(f"  size on disk {_human(path.size())}")
    lines.append("  variables")
    for name, var in sorted(ds.data_vars.items()):
        lines.append(f"    {name:<16} {str(var.dtype):<8} ({', '.join(f'{d}: {ds.sizes[d]}' for d in var.dims)})")
    return "\n".join(lines)
