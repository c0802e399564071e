"""GLUE loaders: the real files' quirks, the carve-out, and a clear error for every kind of bad input."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from pathlib import Path

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
    ("stsb", "train"): (5749, None),
    ("stsb", "dev"): (1500, None),
}
#: Small files in the exact classic layouts of MNLI and QQP (whose real files could not be obtained here).
FIXTURES = Path(__file__).parent / "fixtures" / "glue"


@pytest.mark.parametrize("task,split", sorted(COUNTS))
def test_real_files_match_published_counts(glue_dir, task, split):
    data = load_split(task, split, glue_dir)
    n, labels = COUNTS[(task, split)]
    assert len(data) == n
    if labels is not None:
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
    with pytest.raises(BertologyError, match="unknown task 'mnlii'; known tasks: cola, sst2, mrpc, stsb, qqp, "
                                             "mnli, rte, qnli, wnli"):
        get_task("mnlii")
    with pytest.raises(BertologyError, match="unknown split 'test' for sst2; expected one of train, dev"):
        load_split("sst2", "test", ".")
    with pytest.raises(BertologyError, match="unknown split 'dev_matched' for qqp"):
        load_split("qqp", "dev_matched", FIXTURES)


def test_crlf_and_missing_final_newline_are_accepted(tmp_path):
    root = _write(tmp_path, "sst2", b"sentence\tlabel\r\ngood film \t1\r\nbad film \t0")
    examples, _ = read_tsv(get_task("sst2"), root / "SST-2" / "dev.tsv")
    assert [(e.text_a, e.label) for e in examples] == [("good film", 1), ("bad film", 0)]


def test_wnli_reads_its_pairs_and_names_label_1_entailment(glue_dir):
    """WNLI: `index sentence1 sentence2 label`, label 1 when the second sentence follows from the first (the
    hub's class names, in its order); the first dev row, read apart with the csv module, is the first example."""
    wnli = load_split("wnli", "dev", glue_dir)
    with open(glue_dir / "WNLI" / "dev.tsv", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert rows[0] == ["index", "sentence1", "sentence2", "label"]
    first = wnli.examples[1]
    assert (first.text_a, first.text_b, first.label) == (rows[2][1], rows[2][2], int(rows[2][3]))
    assert wnli.task.is_pair and wnli.task.label_names == ("not_entailment", "entailment")
    assert wnli.task.label_names[first.label] == "entailment"     # "Jane knocked ... Susan did not answer."


def _tsv_rows(path) -> list[list[str]]:
    """A file's rows read apart with the csv module (tabs, no quoting): the independent reading."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_stsb_is_a_regression_on_scores_with_unbalanced_quotes_kept(glue_dir):
    """STS-B: `index genre filename year old_index source1 source2 sentence1 sentence2 score`; the targets are
    the float scores (0-5) of the last column, read with no quoting (some sentences open a quote they never
    close)."""
    import numpy as np

    dev = load_split("stsb", "dev", glue_dir)
    rows = _tsv_rows(glue_dir / "STS-B" / "dev.tsv")
    assert rows[0][-3:] == ["sentence1", "sentence2", "score"] and len(rows) - 1 == len(dev)
    assert dev.task.is_regression and dev.task.metric == "pearson" and dev.labels.dtype == np.float64
    np.testing.assert_array_equal(dev.labels, [float(r[9]) for r in rows[1:]])
    assert [(e.text_a, e.text_b) for e in dev.examples] == [(r[7].strip(), r[8].strip()) for r in rows[1:]]
    assert 0.0 == dev.labels.min() and dev.labels.max() == 5.0
    assert any(e.text_a.count('"') % 2 for e in dev.examples)   # an unbalanced quote, kept as in the file


def test_stsb_target_that_is_not_a_number_names_line_and_fix(tmp_path):
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    root = _write(tmp_path, "stsb", (head + "0\tg\tf\t2012\t1\tnone\tnone\tA man.\tA dog.\thigh\n").encode())
    with pytest.raises(GlueFormatError, match=r"STS-B/dev.tsv:2: stsb's target 'high' in column 10 is not a finite "
                                              r"number; a regression target must be a number"):
        load_split("stsb", "dev", root)


@pytest.mark.parametrize("split,stem", [("train", "train"), ("dev", "dev_matched"), ("dev_matched", "dev_matched"),
                                        ("dev_mismatched", "dev_mismatched")])
def test_mnli_reads_its_three_labels_and_two_dev_sets(split, stem):
    """MNLI's train file has 12 columns, its dev files 16 (five annotator labels, then gold_label); `dev` is
    matched. Texts and the gold label are found by column name, checked against the csv module's reading."""
    data = load_split("mnli", split, FIXTURES)
    rows = _tsv_rows(FIXTURES / "MNLI" / f"{stem}.tsv")
    assert len(rows[0]) == (12 if stem == "train" else 16) and rows[0][-1] == "gold_label"
    assert data.split == stem and data.source.endswith(f"MNLI/{stem}.tsv")
    assert data.task.label_names == ("entailment", "neutral", "contradiction")
    assert [(e.text_a, e.text_b, data.task.label_names[e.label]) for e in data.examples] == \
        [(r[8], r[9], r[-1]) for r in rows[1:]]
    assert set(data.labels.tolist()) == {0, 1, 2}


def test_mnli_dev_sets_differ_and_a_wrong_gold_label_is_named(tmp_path):
    matched, mismatched = (load_split("mnli", s, FIXTURES) for s in ("dev_matched", "dev_mismatched"))
    assert {e.text_a for e in matched.examples}.isdisjoint({e.text_a for e in mismatched.examples})
    bad = (FIXTURES / "MNLI" / "dev_matched.tsv").read_text().replace("\tneutral\n", "\tneutrall\n", 1)
    (tmp_path / "MNLI").mkdir()
    (tmp_path / "MNLI" / "dev_matched.tsv").write_text(bad)
    with pytest.raises(GlueFormatError, match=r"MNLI/dev_matched.tsv:2: unknown label 'neutrall' in column 16; "
                                              r"expected one of entailment, neutral, contradiction"):
        load_split("mnli", "dev", tmp_path)


def test_qqp_reads_question_pairs_scored_by_f1():
    data = load_split("qqp", "dev", FIXTURES)
    rows = _tsv_rows(FIXTURES / "QQP" / "dev.tsv")
    assert rows[0] == ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
    assert [(e.text_a, e.text_b, e.label) for e in data.examples] == [(r[3], r[4], int(r[5])) for r in rows[1:]]
    assert data.task.metric == "f1" and data.task.label_names == ("not_duplicate", "duplicate")
    assert any('"' in e.text_a for e in data.examples) and any("é" in e.text_a for e in data.examples)


def test_a_glue_folder_without_mnlis_dev_names_dev_matched(tmp_path):
    from bertology.extract.tasks import glue_source

    (tmp_path / "MNLI").mkdir()
    (tmp_path / "MNLI" / "train.tsv").write_bytes((FIXTURES / "MNLI" / "train.tsv").read_bytes())
    with pytest.raises(BertologyError, match=r"GLUE data not found: \S*MNLI/dev_matched.tsv \(missing files\)"):
        glue_source(str(tmp_path), ["mnli"])
