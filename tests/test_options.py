"""The options of ``bertology analyze`` are declared once: the dataclass refuses a value outside its
constraint with the valid set, and the command line's flags, choices and bounds come from the same
declarations."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from bertology.analysis.options import AnalyzeConfig, add_arguments, constraints, from_arguments


@pytest.mark.parametrize("bad, says", [
    (dict(correction="BCa"), "correction='BCa': one of holm, fdr_bh"),
    (dict(skip_rule="lowest"), "one of nonpositive, k_lowest"),
    (dict(strength_site="ln3"), "one of attn, res1, ln1, ff, res2, ln2"),
    (dict(resamples=5), "resamples=5: an integer of at least 10"),
    (dict(resamples=100.5), "an integer"),
    (dict(confident_margin=1.5), "a number from 0 to 1"),
    (dict(pooling=("cls", "max")), "one or more of cls, mean"),
    (dict(probe="yes"), "true or false"),
    (dict(skip_k=None), "a value is required"),
])
def test_a_value_outside_its_constraint_is_refused_with_the_valid_set(bad, says):
    with pytest.raises(ValueError, match=says.replace("(", r"\(")):
        AnalyzeConfig(**bad)


def test_the_options_are_frozen_and_lists_become_tuples():
    cfg = AnalyzeConfig(pooling=["cls", "mean"], resamples=1000.0)
    assert cfg.pooling == ("cls", "mean") and type(cfg.resamples) is int
    with pytest.raises(ValueError, match="needs the probe"):
        AnalyzeConfig(probe=False, skip_statistic="probe_accuracy")
    with pytest.raises(Exception):
        cfg.seed = 3


def test_every_option_has_one_flag_whose_choices_and_default_are_the_declarations():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    by_dest = {a.dest: a for a in parser._actions if a.dest != "help"}
    assert set(by_dest) == {f.name for f in fields(AnalyzeConfig)}
    for name, c in constraints().items():
        action = by_dest[name]
        if c.choices and c.kind is not tuple:
            assert tuple(action.choices) == c.choices
        assert action.default == getattr(AnalyzeConfig(), name)
    assert from_arguments(parser.parse_args([])) == AnalyzeConfig()
    args = parser.parse_args(["--no-probe", "--mean-pooled", "--correction", "fdr_bh", "--strength-layer", "2"])
    assert from_arguments(args) == AnalyzeConfig(probe=False, pooling=("cls", "mean"), correction="fdr_bh",
                                                 strength_layer=2)
    with pytest.raises(SystemExit):
        parser.parse_args(["--confident-margin", "2"])


@pytest.mark.parametrize("bad, says", [
    (dict(dtype="bfloat16"), "dtype must be one of float16, float32"),
    (dict(token_sites=("ln2", "ln3")), r"unknown token site\(s\) \['ln3'\]"),
    (dict(window=100), "window must be a positive multiple of 64"),
])
def test_extraction_settings_are_refused_at_construction(bad, says):
    from bertology import BertologyError
    from bertology.extract.extraction import ExtractConfig

    with pytest.raises(BertologyError, match=says):
        ExtractConfig(**bad)
    ExtractConfig(token_layers=(99,))          # the model's depth is known only once it is loaded
