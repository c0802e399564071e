"""A user's own labelled texts as a task: CSV, TSV, JSONL or Parquet files (local or any fsspec URL), or a
Hugging Face dataset (``hf:REPO[:CONFIG]``).

``--data`` names a folder with one file per split (``train.csv``, ``dev.jsonl``, ...; ``validation`` serves
as ``dev``), or one file whose ``--split-column`` says each row's split. The columns are named by
``--text-column``, optional ``--text-pair-column`` and ``--label-column``; the class order is
``--label-order`` or else the sorted label values of train (numerically when every label is an integer);
the task type is ``--task-type`` or inferred when the labels leave no doubt. A resolved task is recorded
(:meth:`UserTask.record`) in the fine-tuned checkpoint and in every store, so a later ``extract`` or
``intervene`` needs only ``--data`` and ``--split``.

Every bad file stops before any work with a :class:`DataFormatError` that names the file, the line (or row)
and the fix.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath

import numpy as np

from bertology import BertologyError
from bertology.store.location import locate

from .tasks import Example, Split, carved

FORMATS = ("csv", "tsv", "jsonl", "parquet")
TASK_TYPES = ("classification", "regression")
#: Integer labels with more distinct values than this are not taken for classes without --task-type.
MAX_INFERRED_CLASSES = 20
SPLIT_FILES = {"dev": ("dev", "validation")}   # a split's file stems, in order of preference


class DataFormatError(BertologyError):
    """A user data file that cannot be read as the task it is said to be."""


@dataclass(frozen=True)
class Row:
    """One record of a data file, with where it is (``file:line`` or ``file row N``) and its row index."""

    where: str
    index: int
    values: dict


@dataclass(frozen=True)
class UserTask:
    """A task defined by the user's data and column mapping; it answers the same questions as a GLUE
    :class:`~bertology.extract.tasks.TaskSpec` (name, classes, metric, pairs)."""

    name: str
    data: str                              # folder, file, URL or hf:REPO[:CONFIG]
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    split_column: str | None = None
    id_column: str | None = None
    label_order: tuple[str, ...] | None = None  # None: sorted label values of train
    task_type: str | None = None               # None: inferred from train's labels
    notes: tuple[str, ...] = field(default=(), compare=False)   # what was inferred, said once

    @property
    def is_pair(self) -> bool:
        return self.text_pair_column is not None

    @property
    def is_regression(self) -> bool:
        return self.task_type == "regression"

    @property
    def label_names(self) -> tuple[str, ...]:
        return ("score",) if self.is_regression else tuple(self.label_order or ())

    @property
    def metric(self) -> str:
        return "pearson" if self.is_regression else "accuracy"

    @property
    def resolved(self) -> bool:
        return self.task_type is not None and (self.is_regression or self.label_order is not None)

    def resolve_split(self, split: str) -> str:
        return split

    def record(self, files: dict | None = None) -> dict:
        """What a checkpoint and a store keep of this task: its source, columns, classes and task type."""
        return {"name": self.name, "data": self.data, "task_type": self.task_type,
                "columns": {"text": self.text_column, "text_pair": self.text_pair_column,
                            "label": self.label_column, "split": self.split_column, "id": self.id_column},
                "label_order": list(self.label_order) if self.label_order is not None else None,
                **({"files": files} if files else {})}

    @classmethod
    def from_record(cls, record: dict, data: str | None = None) -> "UserTask":
        """The task a checkpoint or store recorded, read from ``data`` when given (the files may have moved)."""
        cols = record["columns"]
        order = record.get("label_order")
        return cls(record["name"], data or record["data"], cols["text"], cols.get("text_pair"), cols["label"],
                   cols.get("split"), cols.get("id"), tuple(order) if order is not None else None,
                   record.get("task_type"))

    def with_options(self, **options) -> "UserTask":
        """This task with the options the user gave explicitly (``None`` keeps the recorded value); a
        recorded label order or task type cannot be changed, since the model's head was trained on it."""
        given = {k: v for k, v in options.items() if v is not None}
        for key in ("label_order", "task_type"):
            old, new = getattr(self, key), given.get(key)
            if new is not None and old is not None and new != old:
                raise DataFormatError(
                    f"--{key.replace('_', '-')} {new!r} differs from the checkpoint's recorded {old!r}; the model "
                    f"was fine-tuned with the recorded one (omit the option)")
        return replace(self, **given)


def user_task(data: str, *, name: str | None = None, text_column: str | None = None,
              text_pair_column: str | None = None, label_column: str | None = None, split_column: str | None = None,
              id_column: str | None = None, label_order=None, task_type: str | None = None,
              recorded: dict | None = None) -> UserTask:
    """The task of ``--data`` and its options: on top of a ``recorded`` one (a checkpoint's or store's), else
    new; unresolved parts (class order, task type) are settled by :func:`resolve` from the train split."""
    if task_type is not None and task_type not in TASK_TYPES:
        raise DataFormatError(f"--task-type {task_type!r}: expected one of {', '.join(TASK_TYPES)}")
    if label_order is not None:
        label_order = tuple(str(v).strip() for v in label_order)
        if len(set(label_order)) != len(label_order) or len(label_order) < 2 or not all(label_order):
            raise DataFormatError(f"--label-order {','.join(label_order)}: give every class once, at least two, "
                                  f"e.g. --label-order negative,neutral,positive")
    options = dict(text_column=text_column, text_pair_column=text_pair_column, label_column=label_column,
                   split_column=split_column, id_column=id_column, label_order=label_order, task_type=task_type)
    if recorded is not None:
        return UserTask.from_record(recorded, data).with_options(name=name, **options)
    base = UserTask(name or default_name(data), data)
    return replace(base, **{k: v for k, v in options.items() if v is not None})


def recorded_task(checkpoint: str | None) -> dict | None:
    """What a fine-tuned checkpoint recorded of the user's task it was trained on (``metrics.json``'s ``data``),
    or None (a GLUE checkpoint, a base model, a hub id)."""
    if checkpoint is None:
        return None
    where = locate(checkpoint) / "metrics.json"
    try:
        if not where.isfile():
            return None
        return json.loads(where.read_text()).get("data")
    except (OSError, ValueError):
        return None


def default_name(data: str) -> str:
    """The task's default name: the folder's name, the file's without its format suffix, a hub repository's
    last part; lower case, with ``_`` for anything but letters and digits."""
    if data.startswith("hf:"):
        stem = PurePosixPath(data[3:].partition(":")[0]).name
    else:   # a path or URL (s3://bucket/reviews): its last part
        stem = PurePosixPath(data.rstrip("/")).stem
    name = "".join(c if c.isalnum() else "_" for c in stem.lower()).strip("_")
    return name or "data"


# --- reading ----------------------------------------------------------------------------------------------


def _format_of(path: str) -> str:
    suffix = PurePosixPath(path.split("?")[0]).suffix.lower().lstrip(".")
    suffix = {"json": "jsonl", "ndjson": "jsonl", "pq": "parquet", "txt": "tsv"}.get(suffix, suffix)
    if suffix not in FORMATS:
        raise DataFormatError(f"{path}: unknown format '.{suffix}'; use a .csv, .tsv, .jsonl or .parquet file")
    return suffix


def read_rows(path: str) -> tuple[list[Row], list[str], str]:
    """The records of one data file, its column names and the sha256 of its bytes."""
    where = locate(path)
    if not where.isfile():
        raise DataFormatError(f"{path}: no such file; --data names a folder with one file per split "
                              f"(train.csv, dev.csv, ...) or one file with a --split-column")
    raw = where.read_bytes()
    fmt = _format_of(path)
    sha = hashlib.sha256(raw).hexdigest()
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(io.BytesIO(raw))
        except Exception as e:  # noqa: BLE001 - whatever pyarrow says of a broken file
            raise DataFormatError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
        rows = [Row(f"{path} row {i + 1}", i, r) for i, r in enumerate(table.to_pylist())]
        return rows, list(table.column_names), sha
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataFormatError(f"{path}:{line}: bytes are not valid UTF-8 (byte 0x{raw[e.start]:02x}); save the "
                              f"file as UTF-8") from None
    if not text.strip():
        raise DataFormatError(f"{path}: file is empty; expected a header and data rows")
    if fmt == "jsonl":
        rows, columns = [], []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as e:
                raise DataFormatError(f"{path}:{lineno}: not valid JSON ({e.msg}); a .jsonl file holds one JSON "
                                      f"object per line") from None
            if not isinstance(record, dict):
                raise DataFormatError(f"{path}:{lineno}: a JSON {type(record).__name__}, not an object; a .jsonl "
                                      f"file holds one object per line, e.g. {{\"text\": \"...\", \"label\": \"...\"}}")
            columns += [c for c in record if c not in columns]
            rows.append(Row(f"{path}:{lineno}", len(rows), record))
        return rows, columns, sha
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="," if fmt == "csv" else "\t")
    try:
        header = next(reader)
        rows = []
        for record in reader:
            line = reader.line_num
            if not record or (len(record) == 1 and not record[0].strip()):
                continue
            if len(record) != len(header):
                raise DataFormatError(f"{path}:{line}: {len(record)} fields; the header has {len(header)} "
                                      f"({', '.join(header)}); quote a field that holds the "
                                      f"{'comma' if fmt == 'csv' else 'tab'} (\"a, b\")")
            rows.append(Row(f"{path}:{line}", len(rows), dict(zip(header, record))))
    except csv.Error as e:
        raise DataFormatError(f"{path}:{reader.line_num}: {e}; check the quoting of this line") from None
    header = [h.strip() for h in header]
    rows = [Row(r.where, r.index, {k.strip(): v for k, v in r.values.items()}) for r in rows]
    return rows, header, sha


def _split_file(data: str, split: str) -> str:
    """The file of ``split`` in the folder ``data``: SPLIT.{csv,tsv,jsonl,parquet} (dev: also validation)."""
    folder = locate(data)
    names = folder.listdir()
    for stem in SPLIT_FILES.get(split, (split,)):
        found = [n for n in names if PurePosixPath(n).stem == stem and PurePosixPath(n).suffix.lstrip(".") in
                 (*FORMATS, "json", "ndjson", "pq")]
        if len(found) > 1:
            raise DataFormatError(f"{data}: {' and '.join(sorted(found))} both hold split {split!r}; keep one")
        if found:
            return str(folder / found[0])
    raise DataFormatError(f"{data}: no {split} file ({', '.join(f'{split}.{f}' for f in FORMATS)}); found "
                          f"{', '.join(sorted(names)) or 'nothing'}. Pass --split with one of the files' names, or "
                          f"--data FILE --split-column COLUMN for one file")


def _hub_rows(task: UserTask, split: str) -> tuple[list[Row], list[str], str, str, dict]:
    """The rows of a Hugging Face dataset's split (``dev`` is its ``validation`` when it has no ``dev``), its
    columns, where, fingerprint, and the class names of a ClassLabel label column."""
    try:
        import datasets
    except ImportError:
        raise DataFormatError(f"{task.data}: reading a Hugging Face dataset needs the `datasets` package "
                              f"(`pip install 'bertology[online]'`)") from None
    repo, _, config = task.data[3:].partition(":")
    try:
        dd = datasets.load_dataset(repo, config or None)
    except Exception as e:  # noqa: BLE001 - offline, no such repository, ...
        first = str(e).splitlines()[0] if str(e) else ""
        raise DataFormatError(f"{task.data}: could not be loaded ({type(e).__name__}: {first}); check the "
                              f"repository name and config, and that the hub (or its cache) is reachable") from None
    names = [s for s in SPLIT_FILES.get(split, (split,)) if s in dd]
    if not names:
        raise DataFormatError(f"{task.data}: no split {split!r} (splits: {', '.join(dd)}); pass --split with one "
                              f"of them")
    ds = dd[names[0]]
    feature = ds.features.get(task.label_column)
    classes = {"names": list(feature.names)} if getattr(feature, "names", None) else {}
    where = f"{task.data}/{names[0]}"
    rows = [Row(f"{where} row {i + 1}", i, r) for i, r in enumerate(ds)]
    return rows, list(ds.column_names), where, ds._fingerprint, classes


def _rows_of_split(task: UserTask, split: str, whole: bool = False) -> tuple[list[Row], str, str, dict]:
    """The rows of ``split`` (``whole``: every row of a single file without a split column, which a carve-out
    then divides), the file they came from, its sha256 and any class names the source declares."""
    if task.data.startswith("hf:"):
        rows, columns, source, sha, classes = _hub_rows(task, split)
    else:
        where = locate(task.data)
        if where.isdir():
            if task.split_column:
                raise DataFormatError(f"{task.data}: a folder holds one file per split; --split-column is for one "
                                      f"file (pass --data FILE)")
            source = _split_file(task.data, split)
        elif where.isfile():
            source = task.data
        else:
            raise DataFormatError(f"{task.data}: no such file or folder; --data names a folder with one file per "
                                  f"split (train.csv, dev.csv, ...) or one file with a --split-column")
        rows, columns, sha = read_rows(source)
        classes = {}
    _require_columns(task, columns, source)
    if task.split_column:
        values = sorted({str(r.values[task.split_column]).strip() for r in rows})
        aliases = SPLIT_FILES.get(split, (split,))
        rows = [r for r in rows if str(r.values[task.split_column]).strip() in aliases]
        if not rows:
            raise DataFormatError(f"{source}: no rows with {task.split_column} = {split!r} (values: "
                                  f"{', '.join(values)}); pass --split with one of them")
    elif not task.data.startswith("hf:") and locate(task.data).isfile() and not whole:
        raise DataFormatError(f"{source}: one file and no --split-column, so its train and dev rows cannot be told "
                              f"apart; pass --split-column COLUMN, or --carve-train-from-dev FRACTION to carve a "
                              f"seeded train part out of it")
    if not rows:
        raise DataFormatError(f"{source}: has a header but no data rows")
    return rows, source, sha, classes


def _require_columns(task: UserTask, columns: list[str], source: str) -> None:
    needed = [("--text-column", task.text_column), ("--text-pair-column", task.text_pair_column),
              ("--label-column", task.label_column), ("--split-column", task.split_column),
              ("--id-column", task.id_column)]
    for option, column in needed:
        if column is not None and column not in columns:
            raise DataFormatError(f"{source}: no column {column!r} (columns: {', '.join(map(str, columns))}); "
                                  f"pass {option} with the column that holds it")


# --- labels ---------------------------------------------------------------------------------------------------


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _label_key(value) -> str:
    """A class label as text, the same for a CSV's "1", a JSON 1 and a Parquet 1.0."""
    if _is_number(value) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def _as_number(text) -> float | None:
    try:
        x = float(text)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _check_label_types(rows: list[Row], column: str) -> None:
    """Every label is there, and one label column holds numbers or strings, not both (a CSV's are all strings;
    JSONL, Parquet and the hub's are typed)."""
    first = {}
    for r in rows:
        v = r.values.get(column)
        if v is None or (isinstance(v, str) and not v.strip()):
            raise DataFormatError(f"{r.where}: column {column!r} is empty; every example needs its label (fill or "
                                  f"remove the row)")
        kind = "number" if _is_number(v) else "string" if isinstance(v, str) else type(v).__name__
        if kind not in ("number", "string"):
            raise DataFormatError(f"{r.where}: label {v!r} in column {column!r} is a {kind}; labels are strings "
                                  f"or numbers")
        first.setdefault(kind, r)
        if len(first) > 1:
            a, b = first["string"], first["number"]
            raise DataFormatError(f"{r.where}: column {column!r} mixes strings ({a.where}: "
                                  f"{a.values[column]!r}) and numbers ({b.where}: {b.values[column]!r}); use one "
                                  f"type for every label")


def _sorted_classes(keys) -> tuple[str, ...]:
    keys = sorted(set(keys))
    if all(_as_number(k) is not None and float(k).is_integer() for k in keys):
        return tuple(sorted(keys, key=lambda k: int(float(k))))
    return tuple(keys)


def resolve(task: UserTask, carved: bool = False) -> UserTask:
    """``task`` with its task type and class order settled from its train split (``carved``: from the rows a
    carve-out divides into train and dev)."""
    if task.resolved:
        return task
    rows, source, _, classes = _rows_of_split(task, "dev" if carved else "train", whole=carved)
    _check_label_types(rows, task.label_column)
    values = [r.values[task.label_column] for r in rows]
    notes = list(task.notes)
    task_type = task.task_type
    numbers = [_as_number(v) for v in values]
    if task_type is None:
        if classes or any(n is None for n in numbers):
            task_type = "classification"
            why = "its labels are not all numbers"
        elif not all(float(n).is_integer() for n in numbers):
            task_type = "regression"
            why = "its labels are numbers that are not all integers"
        elif len(set(numbers)) <= MAX_INFERRED_CLASSES:
            task_type = "classification"
            why = f"its labels are {len(set(numbers))} distinct integers"
        else:
            raise DataFormatError(f"{source}: column {task.label_column!r} holds {len(set(numbers))} distinct "
                                  f"integers: classes or a score? Pass --task-type classification or regression")
        notes.append(f"{task.name}: task type {task_type} ({why}; --task-type to change)")
    if task_type == "regression":
        return replace(task, task_type=task_type, label_order=None, notes=tuple(notes))
    if classes:   # a hub ClassLabel: its names in its own order
        order = tuple(classes["names"])
    else:
        order = _sorted_classes(_label_key(v) for v in values)
        if task.label_order is None:
            notes.append(f"{task.name}: classes in sorted order {', '.join(order)} (--label-order to change)")
    order = task.label_order or order
    if len(order) < 2:
        raise DataFormatError(f"{source}: column {task.label_column!r} holds one class only ({order[0]!r}); a "
                              f"classifier needs at least two")
    return replace(task, task_type=task_type, label_order=order, notes=tuple(notes))


# --- examples ---------------------------------------------------------------------------------------------------


def _text(r: Row, column: str) -> str:
    value = r.values.get(column)
    text = "" if value is None else str(value).strip()
    if not text:
        raise DataFormatError(f"{r.where}: column {column!r} is empty or whitespace only; every example needs its "
                              f"text (fill or remove the row)")
    return text


def _sample_id(r: Row, column: str | None, seen: dict) -> int:
    if column is None:
        return r.index
    value = r.values.get(column)
    number = _as_number(value)
    if number is None or not float(number).is_integer() or isinstance(value, bool):
        raise DataFormatError(f"{r.where}: id {value!r} in column {column!r} is not an integer; sample ids are "
                              f"integers (omit --id-column to number the rows)")
    sid = int(number)
    if sid in seen:
        raise DataFormatError(f"{r.where}: id {sid} in column {column!r} repeats {seen[sid]}; ids must be unique")
    seen[sid] = r.where
    return sid


def _label(task: UserTask, r: Row, classes: dict) -> int | float:
    value = r.values.get(task.label_column)
    if task.is_regression:
        number = _as_number(value) if not isinstance(value, bool) else None
        if number is None:
            raise DataFormatError(f"{r.where}: target {value!r} in column {task.label_column!r} is not a number; a "
                                  f"regression task needs a number in every row (or --task-type classification)")
        return float(number)
    if classes and _is_number(value):   # a hub ClassLabel's index
        key = classes["names"][int(value)] if 0 <= int(value) < len(classes["names"]) else str(value)
    else:
        key = _label_key(value)
    if key not in task.label_order:
        raise DataFormatError(f"{r.where}: label {key!r} is not one of the task's classes "
                              f"({', '.join(task.label_order)}); fix the row, or pass --label-order with every class")
    return task.label_order.index(key)


def load_user_split(task: UserTask, split: str, *, carve_train_from_dev: float | None = None,
                    carve_seed: int = 0) -> Split:
    """One split of a user's task, every row checked (see the module's list of errors); ``load_split`` (which
    also applies ``--limit``) calls it for a :class:`UserTask`."""
    task = resolve(task, carved=bool(carve_train_from_dev))
    rows, source, sha, classes = _rows_of_split(task, "dev" if carve_train_from_dev else split,
                                                whole=bool(carve_train_from_dev))
    _check_label_types(rows, task.label_column)
    seen: dict = {}
    examples = [Example(_sample_id(r, task.id_column, seen), _text(r, task.text_column),
                        _text(r, task.text_pair_column) if task.is_pair else None, _label(task, r, classes))
                for r in rows]
    carve_out = None
    if carve_train_from_dev:
        examples, carve_out = carved(examples, carve_train_from_dev, carve_seed, split)
    return Split(task, split, examples, source, sha, carve_out)
