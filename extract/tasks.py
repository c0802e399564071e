"""The GLUE task table and the readers for its data.

One entry of ``TASKS`` describes a task completely: where its files live in the classic
``glue_data/<TASK>/{train,dev}.tsv`` layout, which columns hold the text(s) and the label, the raw label
values in class-index order, the human label names, and the task's metric. Adding a task is one entry.

Data comes from ``--glue-dir`` or the ``GLUE_DIR`` environment variable: a classic GLUE folder, or
``hf:REPO`` for a Hugging Face dataset repository in the layout of ``nyu-mll/glue`` (read by ``datasets``,
online or from its cache; a local folder in that layout works too). With neither, the hub's ``nyu-mll/glue``.
:func:`glue_source` is the workflow's choice and check, before any rule runs. Bad files stop with a
:class:`GlueFormatError` that names the file, the line and what was expected.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bertology import BertologyError


class GlueFormatError(BertologyError):
    """A GLUE file that does not have the expected layout."""


@dataclass(frozen=True)
class TaskSpec:
    """How one GLUE task is laid out on disk and how it is scored."""

    name: str                      # bertology's name: cola, sst2, ...
    folder: str                    # folder under GLUE_DIR: CoLA, SST-2, ...
    header: tuple[str, ...] | None  # expected header line of train.tsv (None: the file has no header)
    n_columns: int
    text_columns: tuple[int, ...]  # one column (single sentence) or two (sentence pair)
    label_column: int
    label_values: tuple[str, ...]  # raw label strings, in class-index order (() for regression)
    label_names: tuple[str, ...]   # human names, in class-index order (("score",) for regression)
    metric: str                    # the task's headline metric: accuracy, f1, mcc or pearson
    hf_text_fields: tuple[str, ...] = field(default=())  # column names in the HF `glue` dataset
    task_type: str = "classification"  # or "regression" (STS-B: a similarity score, 0-5)
    #: split name -> (file stem, header) where a split's file differs from train.tsv's layout (MNLI's dev files
    #: have 16 columns); text and label columns are then found by their train header names
    split_files: tuple[tuple[str, str, tuple[str, ...] | None], ...] = field(default=())
    hf_splits: tuple[tuple[str, str], ...] = field(default=())  # split name -> the hub's split name
    aliases: tuple[tuple[str, str], ...] = field(default=())    # e.g. dev -> dev_matched (MNLI)
    hf_label_field: str = "label"

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2

    @property
    def is_regression(self) -> bool:
        return self.task_type == "regression"

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", "dev") + tuple(s for s, _, _ in self.split_files if s not in ("train", "dev"))

    def resolve_split(self, split: str) -> str:
        """The split's own name (``dev`` is MNLI's ``dev_matched``); unknown names stop with the known ones."""
        split = dict(self.aliases).get(split, split)
        if split not in self.splits:
            raise BertologyError(f"unknown split {split!r} for {self.name}; expected one of "
                                 f"{', '.join(self.splits)}")
        return split

    def layout(self, split: str) -> tuple[str, tuple[str, ...] | None, int, tuple[int, ...], int]:
        """(file stem, header, number of columns, text column indices, label column index) of a split's file."""
        for name, stem, header in self.split_files:
            if name == split:
                names = [self.header[c] for c in self.text_columns]
                return (stem, header, len(header), tuple(header.index(n) for n in names),
                        header.index(self.header[self.label_column]))
        return split, self.header, self.n_columns, self.text_columns, self.label_column


_MNLI_TRAIN = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
               "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label")
_MNLI_DEV = _MNLI_TRAIN[:-1] + ("label2", "label3", "label4", "label5", "gold_label")
_NLI3 = ("entailment", "neutral", "contradiction")

TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec("cola", "CoLA", None, 4, (3,), 1, ("0", "1"), ("unacceptable", "acceptable"), "mcc",
                 ("sentence",)),
        TaskSpec("sst2", "SST-2", ("sentence", "label"), 2, (0,), 1, ("0", "1"), ("negative", "positive"),
                 "accuracy", ("sentence",)),
        TaskSpec("mrpc", "MRPC", ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"), 5, (3, 4), 0,
                 ("0", "1"), ("not_equivalent", "equivalent"), "f1", ("sentence1", "sentence2")),
        # STS-B: a similarity score from 0 to 5 (regression), scored by Pearson (and Spearman) correlation
        TaskSpec("stsb", "STS-B", ("index", "genre", "filename", "year", "old_index", "source1", "source2",
                                   "sentence1", "sentence2", "score"), 10, (7, 8), 9, (), ("score",), "pearson",
                 ("sentence1", "sentence2"), task_type="regression"),
        TaskSpec("qqp", "QQP", ("id", "qid1", "qid2", "question1", "question2", "is_duplicate"), 6, (3, 4), 5,
                 ("0", "1"), ("not_duplicate", "duplicate"), "f1", ("question1", "question2")),
        # MNLI: three classes; two dev sets (matched genres, mismatched genres); `dev` is matched
        TaskSpec("mnli", "MNLI", _MNLI_TRAIN, 12, (8, 9), 11, _NLI3, _NLI3, "accuracy", ("premise", "hypothesis"),
                 split_files=(("dev_matched", "dev_matched", _MNLI_DEV),
                              ("dev_mismatched", "dev_mismatched", _MNLI_DEV)),
                 hf_splits=(("dev_matched", "validation_matched"), ("dev_mismatched", "validation_mismatched")),
                 aliases=(("dev", "dev_matched"),)),
        TaskSpec("rte", "RTE", ("index", "sentence1", "sentence2", "label"), 4, (1, 2), 3,
                 ("entailment", "not_entailment"), ("entailment", "not_entailment"), "accuracy",
                 ("sentence1", "sentence2")),
        TaskSpec("qnli", "QNLI", ("index", "question", "sentence", "label"), 4, (1, 2), 3,
                 ("entailment", "not_entailment"), ("entailment", "not_entailment"), "accuracy",
                 ("question", "sentence")),
        # WNLI (Winograd NLI): label 1 = the second sentence follows (HF's class names, in its order)
        TaskSpec("wnli", "WNLI", ("index", "sentence1", "sentence2", "label"), 4, (1, 2), 3,
                 ("0", "1"), ("not_entailment", "entailment"), "accuracy", ("sentence1", "sentence2")),
    )
}

SPLITS = ("train", "dev")
#: The Hugging Face hub's GLUE (its `validation` split is GLUE's dev).
HF_GLUE = "hf:nyu-mll/glue"
#: Where the workflow looks for a classic GLUE folder when GLUE_DIR is not set (beside the checkout).
SHARED_GLUE = Path("../shared/glue")
LAYOUT = ("the classic glue_data layout: <GLUE_DIR>/<TASK>/{train,dev}.tsv with TASK one of CoLA, SST-2, MRPC, "
          "STS-B, QQP, MNLI (dev_matched.tsv, dev_mismatched.tsv), RTE, QNLI, WNLI")


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name.lower()]
    except KeyError:
        raise BertologyError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


@dataclass
class Example:
    """One labelled example. ``sample_id`` is its 0-based data-row index in the split's file; ``label`` is a
    class index, or a number for a regression task."""

    sample_id: int
    text_a: str
    text_b: str | None
    label: int | float


@dataclass
class Split:
    """The examples of one split, with where they came from (recorded in every store's metadata)."""

    task: TaskSpec
    split: str
    examples: list[Example]
    source: str                    # file path, or "hf:glue/<task>"
    sha256: str                    # of the file's bytes ("" for the HF loader)
    carve_out: dict | None = None  # how a train part was carved out of dev, when it was

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def labels(self) -> np.ndarray:
        """Class indices (int64), or the regression targets (float64)."""
        return np.array([e.label for e in self.examples],
                        dtype=np.float64 if self.task.is_regression else np.int64)


def glue_dir_from(glue_dir: str | os.PathLike | None) -> Path | str:
    """The GLUE source: the explicit argument, else ``GLUE_DIR``, else the hub's GLUE; a folder as a Path,
    a hub repository as ``'hf:REPO'``."""
    value = glue_dir if glue_dir is not None else os.environ.get("GLUE_DIR")
    if not value:
        return HF_GLUE
    return str(value) if str(value).startswith("hf:") else Path(value)


def glue_source(explicit: str | None, tasks, carve: dict | None = None, hub_timeout: float = 10.0) -> str:
    """The workflow's GLUE source, checked before any rule runs: ``explicit`` (config ``glue_dir``) if given,
    else ``GLUE_DIR``, else ``../shared/glue`` if it exists, else the hub (``datasets`` and network needed).

    Returns a folder path or ``'hf:REPO'``; raises :class:`BertologyError` naming GLUE_DIR and the layout
    when the data cannot be had.
    """
    value = explicit or os.environ.get("GLUE_DIR") or (str(SHARED_GLUE) if SHARED_GLUE.is_dir() else HF_GLUE)
    if value.startswith("hf:"):
        fallback = not (explicit or os.environ.get("GLUE_DIR"))
        _check_hub(value[3:], hub_timeout, f"no GLUE folder (GLUE_DIR unset, no {SHARED_GLUE}), and " if fallback else "")
        return value
    root = Path(value)
    missing = [path for name in tasks
               for path in missing_files(get_task(name), root, ("dev",) if (carve or {}).get(name) else SPLITS)]
    if missing:
        raise BertologyError(
            f"GLUE data not found: {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''} "
            f"({'no such folder ' + str(root) if not root.is_dir() else 'missing files'}). Set GLUE_DIR to a folder "
            f"in {LAYOUT}, or GLUE_DIR={HF_GLUE} for the Hugging Face hub (online)")
    return str(root)  # as given: a workflow param, stable when the checkout moves


def optional_sources(root: str, tasks, hub_timeout: float = 10.0) -> tuple[dict[str, str], str | None]:
    """Where each of the optional ``tasks`` comes from: the GLUE folder ``root`` where it holds the task's
    files, else the hub (``datasets`` installed and the hub reachable); and, for those with neither, the one
    line that says they are left out (None when none is)."""
    sources, missing = {}, []
    for name in tasks:
        if root.startswith("hf:") or not missing_files(get_task(name), Path(root), SPLITS):
            sources[name] = root
        else:
            missing.append(name)
    if not missing:
        return sources, None
    try:
        _check_hub(HF_GLUE[3:], hub_timeout)
    except BertologyError as e:
        names = ", ".join(missing)
        return sources, (f"{names} left out: {root} has no {'/'.join(get_task(t).folder for t in missing)} "
                         f"files and the hub cannot supply them ({str(e).split('; ')[0]})")
    return {**sources, **{t: HF_GLUE for t in missing}}, None


def _check_hub(repo: str, timeout: float, why: str = "") -> None:
    """Stop early (within ``timeout`` seconds) when the hub's GLUE cannot be read: no ``datasets``, or offline."""
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise BertologyError(f"{why}the `datasets` package that reads {repo} from the Hugging Face hub is not "
                             f"installed: set GLUE_DIR to a folder in {LAYOUT}, or `pip install "
                             f"'bertology[online]'`") from None
    if Path(repo).is_dir():
        return
    try:
        from huggingface_hub import HfApi

        HfApi().dataset_info(repo, timeout=timeout)
    except Exception as e:  # noqa: BLE001 - offline, DNS, proxy, HF_HUB_OFFLINE, ...
        raise BertologyError(
            f"{why}the Hugging Face hub's {repo} cannot be reached ({type(e).__name__}); set GLUE_DIR to a folder in "
            f"{LAYOUT}") from None


def task_file(task: TaskSpec, split: str, glue_dir: Path) -> Path:
    return Path(glue_dir) / task.folder / f"{task.layout(split)[0]}.tsv"


def missing_files(task: TaskSpec, glue_dir: Path, splits) -> list[str]:
    """The files of ``splits`` (``dev`` is MNLI's ``dev_matched.tsv``) that the GLUE folder lacks."""
    files = (task_file(task, task.resolve_split(s), glue_dir) for s in splits)
    return [str(f) for f in files if not f.is_file()]


def read_tsv(task: TaskSpec, path: Path, split: str = "train") -> tuple[list[Example], str]:
    """Read one classic GLUE ``.tsv`` file of ``split`` strictly; return its examples and the sha256 of its bytes.

    Quirks of the real files handled here: CoLA has no header; MRPC's header starts with a UTF-8 BOM; QNLI
    text contains U+FEFF (kept, as in the original); SST-2 sentences end with a space (surrounding
    whitespace is stripped from every text); STS-B text has unbalanced quotes; MNLI's dev files have more
    columns than its train file. Fields are split on tabs only: GLUE text contains quotes that are not CSV
    quoting.
    """
    path = Path(path)
    _, header, n_columns, text_columns, label_column = task.layout(split)
    if not path.is_file():
        raise GlueFormatError(
            f"{path}: no such file; point --glue-dir or GLUE_DIR at the folder that holds "
            f"{task.folder}/{path.name} (the classic glue_data/<TASK>/{{train,dev}}.tsv layout)"
        )
    raw = path.read_bytes()
    if not raw.strip():
        expected = "\t".join(header) if header else f"{n_columns} tab-separated columns"
        raise GlueFormatError(f"{path}: file is empty; expected {expected!r} and data rows")
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    examples: list[Example] = []
    for lineno, line in enumerate(lines, start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise GlueFormatError(
                f"{path}:{lineno}: bytes are not valid UTF-8 (byte 0x{line[e.start]:02x} at column {e.start + 1}); "
                f"GLUE files are UTF-8 text"
            ) from None
        if text.endswith("\r"):
            text = text[:-1]
        if lineno == 1 and header is not None:
            found = tuple(c.lstrip("\ufeff") for c in text.split("\t"))
            if found != header:
                raise GlueFormatError(
                    f"{path}:1: header is {found!r}; expected {header!r} for {task.name}"
                )
            continue
        if not text.strip():
            raise GlueFormatError(f"{path}:{lineno}: empty line; expected {n_columns} tab-separated columns")
        cols = text.split("\t")
        if len(cols) != n_columns:
            raise GlueFormatError(
                f"{path}:{lineno}: found {len(cols)} tab-separated columns; expected {n_columns} for {task.name}"
                + (f" ({', '.join(header)})" if header else "")
            )
        raw_label = cols[label_column].strip()
        label = _parse_label(task, raw_label, f"{path}:{lineno}", label_column)
        texts = [cols[c].strip() for c in text_columns]
        for c, t in zip(text_columns, texts):
            if not t:
                name = f" ({header[c]})" if header else ""
                raise GlueFormatError(f"{path}:{lineno}: column {c + 1}{name} is empty or whitespace only; every "
                                      f"example needs its text (remove or fill the line)")
        examples.append(
            Example(
                sample_id=len(examples),
                text_a=texts[0],
                text_b=texts[1] if task.is_pair else None,
                label=label,
            )
        )
    if not examples:
        raise GlueFormatError(f"{path}: has a header but no data rows")
    return examples, hashlib.sha256(raw).hexdigest()


def _parse_label(task: TaskSpec, raw: str, where: str, column: int) -> int | float:
    """A raw label as its class index, or as a number for a regression task; anything else stops."""
    if task.is_regression:
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not np.isfinite(value):
            raise GlueFormatError(f"{where}: {task.name}'s target {raw!r} in column {column + 1} is not a finite "
                                  f"number; a regression target must be a number (e.g. 3.8)")
        return value
    if raw not in task.label_values:
        raise GlueFormatError(f"{where}: unknown label {raw!r} in column {column + 1}; "
                              f"expected one of {', '.join(task.label_values)}")
    return task.label_values.index(raw)


def examples_from_hf(task: TaskSpec, rows, where: str) -> list[Example]:
    """GLUE examples from the rows of a Hugging Face GLUE split (its text fields and integer ``label``).

    Rows keep their order (``sample_id`` is the row index); a label outside the task's classes (the hub's
    test splits have -1) or an empty text stops with the row named.
    """
    examples = []
    for i, row in enumerate(rows):
        texts = [str(row[f]).strip() for f in task.hf_text_fields]
        if not all(texts):
            raise GlueFormatError(f"{where} row {i}: empty text; every example needs its text")
        if task.is_regression:
            label = round(float(row[task.hf_label_field]), 6)   # the hub stores float32: 3.8 -> 3.79999995
            if not np.isfinite(label) or label < 0:   # the hub's test split has -1
                raise GlueFormatError(f"{where} row {i}: target {label}; expected a score from 0 to 5")
        else:
            label = int(row[task.hf_label_field])
            if not 0 <= label < len(task.label_names):
                raise GlueFormatError(f"{where} row {i}: label {label}; expected 0..{len(task.label_names) - 1} "
                                      f"({', '.join(task.label_names)})")
        examples.append(Example(i, texts[0], texts[1] if task.is_pair else None, label))
    return examples


def _load_hf(task: TaskSpec, split: str, repo: str) -> Split:
    """A split of a Hugging Face GLUE repository (``nyu-mll/glue`` layout: one config per task, the
    `validation` split is GLUE's dev), read by ``datasets`` (online, or its cache)."""
    try:
        import datasets
    except ImportError as e:
        raise BertologyError(
            f"no GLUE folder given (--glue-dir or GLUE_DIR), and the `datasets` package that reads {repo} is not "
            f"installed; set GLUE_DIR to a folder in {LAYOUT}, or `pip install 'bertology[online]'`"
        ) from e
    hf_split = {"train": "train", "dev": "validation", **dict(task.hf_splits)}[split]
    try:
        ds = datasets.load_dataset(repo, task.name, split=hf_split)
    except Exception as e:  # noqa: BLE001 - offline, hub errors, ...
        raise BertologyError(
            f"no GLUE folder given (--glue-dir or GLUE_DIR), and {repo} ({task.name}, {hf_split}) could not be "
            f"loaded ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); set GLUE_DIR to a folder in "
            f"{LAYOUT}"
        ) from None
    where = f"hf:{repo}/{task.name}/{hf_split}"
    return Split(task, split, examples_from_hf(task, ds, where), source=where, sha256=ds._fingerprint)


def carve(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Split examples into a seeded, stratified (train part, remaining part); each keeps file order."""
    if not 0.0 < fraction < 1.0:
        raise BertologyError(f"--carve-train-from-dev must be a fraction in (0, 1); got {fraction}")
    rng = np.random.default_rng(seed)
    labels = np.array([e.label for e in examples])
    if labels.dtype.kind == "f":   # a regression target: strata of whole score points
        labels = np.floor(labels)
    take = np.zeros(len(examples), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = int(round(fraction * len(idx)))
        take[rng.permutation(idx)[:k]] = True
    return [e for e, t in zip(examples, take) if t], [e for e, t in zip(examples, take) if not t]


def carved(examples: list[Example], fraction: float, seed: int, split: str) -> tuple[list[Example], dict]:
    """The ``split`` part (``train``: the carved part; otherwise the rest) of :func:`carve`, and the
    carve-out's record."""
    train_part, dev_part = carve(examples, fraction, seed)
    record = {"from": "dev", "fraction": fraction, "seed": seed, "n_train": len(train_part), "n_dev": len(dev_part)}
    return (train_part if split == "train" else dev_part), record


def load_split(
    task: str | TaskSpec,
    split: str,
    glue_dir: str | os.PathLike | None = None,
    *,
    carve_train_from_dev: float | None = None,
    carve_seed: int = 0,
    limit: int | None = None,
) -> Split:
    """Load one split of a task.

    When a task has no ``train.tsv`` on disk (QNLI in the shared data), ``carve_train_from_dev=f`` carves a
    seeded, stratified fraction ``f`` of dev out as the train part; asking for ``dev`` with the same option
    returns the rest, so the two never overlap. The carve-out is recorded in ``Split.carve_out``.
    ``limit`` keeps the first N examples (after any carve-out).
    """
    if not isinstance(task, (str, TaskSpec)):   # a user's own data (extract/user_data.py)
        from .user_data import load_user_split

        result = load_user_split(task, split, carve_train_from_dev=carve_train_from_dev, carve_seed=carve_seed)
    else:
        result = _load_glue_split(task if isinstance(task, TaskSpec) else get_task(task), split, glue_dir,
                                  carve_train_from_dev, carve_seed)
    if limit is not None:
        if limit <= 0:
            raise BertologyError(f"--limit must be positive; got {limit}")
        result.examples = result.examples[:limit]
    return result


def _load_glue_split(spec: TaskSpec, split: str, glue_dir, carve_train_from_dev: float | None,
                     carve_seed: int) -> Split:
    """One split of a GLUE task, from the classic folder or the hub (see :func:`load_split`)."""
    split = spec.resolve_split(split)
    root = glue_dir_from(glue_dir)
    if isinstance(root, str) and not carve_train_from_dev:  # a hub repository
        result = _load_hf(spec, split, root[3:])
    elif carve_train_from_dev:
        dev_split = spec.resolve_split("dev")
        if isinstance(root, str):
            dev = _load_hf(spec, dev_split, root[3:])
            dev_path, examples, sha = dev.source, dev.examples, dev.sha256
        else:
            dev_path = task_file(spec, dev_split, root)
            examples, sha = read_tsv(spec, dev_path, dev_split)
        chosen, carve_out = carved(examples, carve_train_from_dev, carve_seed, split)
        result = Split(spec, split, chosen, str(dev_path), sha, carve_out)
    else:
        path = task_file(spec, split, root)
        if split == "train" and not path.is_file() and task_file(spec, "dev", root).is_file():
            raise GlueFormatError(
                f"{path}: no such file; {spec.name} has no train split in {root}. Pass "
                f"--carve-train-from-dev FRACTION (e.g. 0.5) to carve a seeded, stratified train part out of "
                f"dev; it is recorded in the metadata and shown with every result"
            )
        examples, sha = read_tsv(spec, path, split)
        result = Split(spec, split, examples, str(path), sha)
    return result
