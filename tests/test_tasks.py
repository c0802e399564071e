"""GLUE loaders: the real files' quirks, the carve-out, and a clear error for every kind of bad input."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from bertology import BertologyError
from bertology.extract.tasks import GlueFormatError, get_task, load_split, read_tsv

# Row and label counts from shared/glue/PROVENANCE.md (the usual GLUE statistics).
COUNTS = {
    ("cola", "train"): (8551, {1: 6023, 0: 2528}),
    ("cola", "dev"): (1043, {1: 721, 0: 322}),
    ("sst2", "train"): (67349, {1: 37569, 0: 29780}),
    ("sst2", "dev"): (872, {1: 444, 0: 428}),
    ("mrpc", "train"): (3668, {1: 2474, 0: 1194}),
    ("mrpc", "dev"): (408, {1: 279, 0: 129}),
    ("rte", "train"): (2490, {0: 1249, 1: 1241}),
    ("rte", "dev"): (277, {0: 146, 1: 131}),
    ("qnli", "dev"): (5463, {0: 2702, 1: 2761}),
    ("wnli", "train"): (635, {0: 323, 1: 312}),
    ("wnli", "dev"): (71, {0: 40, 1: 31}),
}


@pytest.mark.parametrize("task,split", sorted(COUNTS))
def test_real_files_match_published_counts(glue_dir, task, split):
    data = load_split(task, split, glue_dir)
    n, labels = COUNTS[(task, split)]
    assert len(data) == n
    assert dict(Counter(data.labels.tolist())) == labels
    assert data.sha256 == hashlib.sha256((glue_dir / data.task.folder / f"{split}.tsv").read_bytes()).hexdigest()
    assert [e.sample_id for e in data.examples] == list(range(n))
    assert all(e.text_a for e in data.examples)
    assert all((e.text_b is not None) == data.task.is_pair for e in data.examples)


def test_quirks_of_the_real_files(glue_dir):
    sst2 = load_split("sst2", "dev", glue_dir)
    raw_first = (glue_dir / "SST-2" / "dev.tsv").read_text().split("\n")[1].split("\t")[0]
    assert raw_first.endswith(" ") and sst2.examples[0].text_a == raw_first.strip()
    cola = load_split("cola", "dev", glue_dir)  # no header: the first line is data
    first = (glue_dir / "CoLA" / "dev.tsv").read_text().split("\n")[0].split("\t")
    assert cola.examples[0].text_a == first[3] and cola.examples[0].label == int(first[1])
    mrpc = load_split("mrpc", "dev", glue_dir)  # header starts with a BOM
    assert (glue_dir / "MRPC" / "dev.tsv").read_bytes().startswith(b"\xef\xbb\xbf")
    assert mrpc.examples[0].text_b
    qnli = load_split("qnli", "dev", glue_dir)  # U+FEFF inside one sentence is kept as in the original
    assert sum("\ufeff" in (e.text_b or "") for e in qnli.examples) == 1


def test_qnli_train_missing_points_to_carve_out(glue_dir):
    with pytest.raises(GlueFormatError, match=r"QNLI/train.tsv: no such file.*--carve-train-from-dev"):
        load_split("qnli", "train", glue_dir)


def test_carve_out_is_stratified_disjoint_seeded_and_recorded(glue_dir):
    train = load_split("qnli", "train", glue_dir, carve_train_from_dev=0.5, carve_seed=3)
    dev = load_split("qnli", "dev", glue_dir, carve_train_from_dev=0.5, carve_seed=3)
    ids_t, ids_d = {e.sample_id for e in train.examples}, {e.sample_id for e in dev.examples}
    assert not ids_t & ids_d and len(ids_t | ids_d) == 5463
    assert train.carve_out == {"from": "dev", "fraction": 0.5, "seed": 3, "n_train": len(train), "n_dev": len(dev)}
    assert dev.carve_out == train.carve_out
    # stratified: each class split in half (rounded)
    assert Counter(train.labels.tolist()) == {0: 1351, 1: 1380}
    again = load_split("qnli", "train", glue_dir, carve_train_from_dev=0.5, carve_seed=3)
    assert [e.sample_id for e in again.examples] == [e.sample_id for e in train.examples]
    other = load_split("qnli", "train", glue_dir, carve_train_from_dev=0.5, carve_seed=4)
    assert [e.sample_id for e in other.examples] != [e.sample_id for e in train.examples]


def _write(tmp_path, task, content: bytes, split="dev"):
    folder = tmp_path / get_task(task).folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.tsv").write_bytes(content)
    return tmp_path


@pytest.mark.parametrize(
    "task,content,message",
    [
        ("sst2", b"", r"SST-2/dev.tsv: file is empty; expected 'sentence\\tlabel'"),
        ("sst2", b"sentence\tlabel\n", r"SST-2/dev.tsv: has a header but no data rows"),
        ("sst2", b"sentence\tlabel\ngood film \t1\nbad film\n",
         r"SST-2/dev.tsv:3: found 1 tab-separated columns; expected 2 for sst2 \(sentence, label\)"),
        ("sst2", b"sentence\tlabel\ngood film \t1\nbad film \t7\n",
         r"SST-2/dev.tsv:3: unknown label '7' in column 2; expected one of 0, 1"),
        ("sst2", b"sentence\tlabel\ngood \xff film \t1\n",
         r"SST-2/dev.tsv:2: bytes are not valid UTF-8 \(byte 0xff at column 6\)"),
        ("sst2", b"text\tlabel\ngood film \t1\n", r"SST-2/dev.tsv:1: header is \('text', 'label'\); expected"),
        ("rte", b"index\tsentence1\tsentence2\tlabel\n0\ta\tb\tcontradiction\n",
         r"RTE/dev.tsv:2: unknown label 'contradiction' in column 4; expected one of entailment, not_entailment"),
        ("cola", b"src\t1\t\tfine sentence\nsrc\t0\n", r"CoLA/dev.tsv:2: found 2 tab-separated columns; expected 4"),
        ("sst2", b"sentence\tlabel\ngood film \t1\n\nbad film \t0\n", r"SST-2/dev.tsv:3: empty line"),
    ],
)
def test_bad_input_names_file_line_and_expectation(tmp_path, task, content, message):
    root = _write(tmp_path, task, content)
    with pytest.raises(GlueFormatError, match=message):
        load_split(task, "dev", root)


def test_missing_file_names_the_setting(tmp_path):
    with pytest.raises(GlueFormatError, match=r"SST-2/dev.tsv: no such file; point --glue-dir or GLUE_DIR"):
        load_split("sst2", "dev", tmp_path)


def test_unknown_task_and_split():
    with pytest.raises(BertologyError, match="unknown task 'mnli'; known tasks: cola, sst2, mrpc, rte, qnli, wnli"):
        get_task("mnli")
    with pytest.raises(BertologyError, match="unknown split 'test'"):
        load_split("sst2", "test", ".")


def test_crlf_and_missing_final_newline_are_accepted(tmp_path):
    root = _write(tmp_path, "sst2", b"sentence\tlabel\r\ngood film \t1\r\nbad film \t0")
    examples, _ = read_tsv(get_task("sst2"), root / "SST-2" / "dev.tsv")
    assert [(e.text_a, e.label) for e in examples] == [("good film", 1), ("bad film", 0)]


def test_wnli_reads_its_pairs_and_names_label_1_entailment(glue_dir):
    """WNLI: `index sentence1 sentence2 label`, label 1 when the second sentence follows from the first (the
    hub's class names, in its order); the first dev row, read apart with the csv module, is the first example."""
    import csv

    wnli = load_split("wnli", "dev", glue_dir)
    with open(glue_dir / "WNLI" / "dev.tsv", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert rows[0] == ["index", "sentence1", "sentence2", "label"]
    first = wnli.examples[1]
    assert (first.text_a, first.text_b, first.label) == (rows[2][1], rows[2][2], int(rows[2][3]))
    assert wnli.task.is_pair and wnli.task.label_names == ("not_entailment", "entailment")
    assert wnli.task.label_names[first.label] == "entailment"     # "Jane knocked ... Susan did not answer."
