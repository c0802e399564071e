"""Compare two results folders of the same workflow, file by file: what a refactoring changed.

    .venv/bin/python bench/compare_results.py BEFORE AFTER [--out bench/results/FILE.md]

Every analysis table (parquet) is compared as a table, ignoring the columns that hold measured wall time
(``wall_*``, ``*_seconds``); ``analysis.json``, the report's Markdown and CSV tables are compared as text
with the two folders' absolute paths, the source commit and the run-time rows (Snakemake's measured
benchmarks) set aside. Stores, sweeps, checkpoints, logs and benchmarks are not compared: the workflow's own
test checks that reruns give identical stores.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

SKIP_DIRS = (".zarr", ".sweep", "model", "base_model", "logs", "benchmarks")
TIMED = re.compile(r"^wall_|_seconds$")


def _files(root: Path) -> dict[str, Path]:
    out = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if p.is_file() and not any(part.endswith(SKIP_DIRS) or part in SKIP_DIRS for part in rel.parts[:-1]):
            out[str(rel)] = p
    return out


def _names(root: Path) -> list[str]:
    """How a results folder is named in its files: its absolute path, and its path from the workflow's working
    directory (its last two parts, ``results/tiny``)."""
    full = root.resolve()
    return [str(full), str(Path(*full.parts[-2:])), str(root)]


def _unrooted(text: str, root: Path) -> str:
    for name in _names(root):
        text = text.replace(name, "RESULTS")
    return text


def _text(path: Path, root: Path) -> list[str]:
    text = _unrooted(path.read_text(errors="replace"), root)
    lines = [re.sub(r"[0-9a-f]{40}(\+dirty)?", "COMMIT", l) for l in text.splitlines()]
    if path.name == "summary.md":   # the run-time table is measured
        keep, skipping = [], False
        for l in lines:
            skipping = l.startswith("## Run times") or (skipping and not l.startswith("## "))
            if not skipping:
                keep.append(l)
        lines = keep
    return lines


def compare(before: Path, after: Path) -> tuple[list[str], list[str], list[str]]:
    """(same, changed with how, only in one of them)."""
    a, b = _files(before), _files(after)
    same, changed = [], []
    only = [f"only before: {k}" for k in sorted(set(a) - set(b))] + [f"only after: {k}" for k in sorted(set(b) - set(a))]
    for name in sorted(set(a) & set(b)):
        pa, pb = a[name], b[name]
        if name.endswith(("timings.json", ".duckdb", ".lock", "index.html")) or "runtime" in name:
            continue                     # measured times; the database (its tables are the parquet files)
        if name.endswith(".parquet"):
            x, y = pd.read_parquet(pa), pd.read_parquet(pb)
            drop = [c for c in x.columns if TIMED.search(c)]
            x, y = x.drop(columns=drop, errors="ignore"), y.drop(columns=drop, errors="ignore")
            for c in ("model",):
                for df, root in ((x, before), (y, after)):
                    if c in df:
                        df[c] = [_unrooted(str(v), root) for v in df[c]]
            try:
                pd.testing.assert_frame_equal(x, y, check_exact=True)
                same.append(name)
            except AssertionError as e:
                changed.append(f"{name}: {str(e).splitlines()[0]}")
        elif pa.suffix in (".json", ".md", ".csv", ".txt"):
            ta, tb = _text(pa, before), _text(pb, after)
            if ta == tb:
                same.append(name)
            else:
                diff = [l for l in tb if l not in ta][:3]
                changed.append(f"{name}: {len(set(tb) ^ set(ta))} lines differ, e.g. {diff}")
    return same, changed, only


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    same, changed, only = compare(args.before, args.after)
    lines = [f"# {args.before} → {args.after}", "", f"- identical: {len(same)} files",
             f"- changed: {len(changed)}", *(f"  - {c}" for c in changed),
             f"- in one folder only: {len(only)}", *(f"  - {o}" for o in only), ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
