"""Too little data is a message, not a crash: stores of 2, 3 and 5 samples (one class missing, or one sample
of a class) analyse with exit 0, every statistic they cannot support named in one line, and no warning."""

from __future__ import annotations

import json

import pytest

from bertology.cli import main
from bertology.extract.extraction import ExtractConfig, extract
from bertology.extract.tasks import Example, Split

from .conftest import make_split

CASES = {                      # labels of the stored samples → the statistics that must be skipped
    "two, one per class": ([0, 1], {"separability ratios", "probe accuracy", "FFN energy decomposition",
                                    "skip candidates"}),
    "three, one class once": ([0, 0, 1], {"separability ratios", "probe accuracy", "FFN energy decomposition"}),
    "five, one class missing": ([0, 0, 0, 0, 0], {"separability ratios", "FFN energy decomposition"}),
    "five, one class once": ([0, 1, 1, 1, 1], {"separability ratios", "probe accuracy"}),
}


@pytest.fixture(scope="module")
def small_stores(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("small")
    out = {}
    for name, (labels, _) in CASES.items():
        base = make_split(len(labels), seed=len(labels))
        examples = [Example(e.sample_id, e.text_a, e.text_b, lab) for e, lab in zip(base.examples, labels)]
        split = Split(base.task, "dev", examples, source="synthetic", sha256="0" * 64)
        out[name] = extract(str(tiny_models["bert"]), split, root / f"{len(out)}.zarr", ExtractConfig(window=64),
                            progress=False)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_a_few_samples_analyse_with_the_skipped_statistics_named(case, small_stores, tmp_path, capsys):
    out = tmp_path / "analysis"
    rc = main(["analyze", str(small_stores[case]), "--out", str(out), "--resamples", "50"])
    err = capsys.readouterr().err
    assert rc in (0, None), err
    assert "Traceback" not in err and "Warning" not in err and "warn" not in err, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert all(l.startswith("bertology analyze: skipped ") for l in lines), lines
    for what in CASES[case][1]:
        assert any(l.startswith(f"bertology analyze: skipped {what}:") for l in lines), (what, lines)
    recorded = json.loads((out / "analysis.json").read_text())["skipped"]
    assert recorded == lines
    assert (out / "task_metrics.parquet").exists()      # what can be computed still is


def test_a_store_with_enough_samples_skips_nothing(small_stores, tmp_path, capsys, tiny_results):
    rc = main(["analyze", str(tiny_results / "sst2" / "dev.zarr"), "--out", str(tmp_path / "a"), "--resamples", "20",
               "--permutations", "0", "--attribution-samples", "2"])
    err = capsys.readouterr().err
    assert rc in (0, None) and "skipped" not in err, err
    assert json.loads((tmp_path / "a" / "analysis.json").read_text())["skipped"] == []
