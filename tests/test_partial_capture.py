"""A store that holds only part of a model's states analyses with exit 0: every table the store can support
is written, and every other table is named in one line with the reason and the fix (the registry's plan)."""

from __future__ import annotations

import json

import pytest

from bertology.analysis.options import AnalyzeConfig
from bertology.analysis.registry import REGISTRY, TABLES, Inputs, NotAsked, plan, tables_for
from bertology.cli import main
from bertology.store import open_store
from bertology.store.capabilities import capabilities

from .conftest import make_split

CAPTURES = {
    "token-layers-2": dict(token_layers=(2,)),                       # the case: attribution cannot run
    "ln2-only": dict(token_sites=("ln2",)),                         # no FFN decomposition over tokens
    "ff-ln1-no-attention": dict(token_sites=("ff", "ln1"), attention=False),
    "cls-only": dict(token_sites=(), attention=False),
    "attention-only": dict(token_sites=(), attention=True),
}
FLAGS = ["--resamples", "40", "--permutations", "0", "--no-probe", "--attribution-samples", "4", "--mean-pooled"]


@pytest.fixture(scope="module")
def partial_stores(tiny_models, tmp_path_factory):
    from bertology.extract.extraction import ExtractConfig, extract

    root = tmp_path_factory.mktemp("partial")
    split = make_split(40, seed=5)
    return {name: extract(str(tiny_models["bert"]), split, root / f"{name}.zarr",
                          ExtractConfig(window=64, **capture), progress=False)
            for name, capture in CAPTURES.items()}


@pytest.mark.parametrize("capture", list(CAPTURES))
def test_a_partial_capture_analyses_with_exit_0_and_names_every_skipped_table(capture, partial_stores, tmp_path,
                                                                              capsys):
    store = partial_stores[capture]
    out = tmp_path / "analysis"
    assert main(["analyze", str(store), "--out", str(out), *FLAGS]) == 0
    err = capsys.readouterr().err
    written = {p.stem for p in out.glob("*.parquet")}
    cfg = AnalyzeConfig(resamples=40, permutations=0, probe=False, attribution_samples=4, pooling=("cls", "mean"))
    caps = capabilities(open_store(store))
    assert written == set(tables_for(caps, Inputs(), cfg))
    skipped = json.loads((out / "analysis.json").read_text())["skipped"]
    not_asked = {t for s in plan(caps, Inputs(), cfg) if isinstance(s.reason, NotAsked) for t in s.analysis.tables}
    assert {t.name for t in not_asked} >= {"interventions", "layer_skip", "apriori_validation",
                                           "intervention_predictions", "attention_finetune_change"}
    for table in {t.name for t in TABLES} - written - {t.name for t in not_asked}:
        lines = [l for l in skipped if table in l.removeprefix("bertology analyze: skipped ").split(": ", 1)[0]]
        assert lines, f"{table} was not written and no line says why: {skipped}"
        assert all(l in err for l in lines)
    if capture == "token-layers-2":
        line = next(l for l in skipped if "attribution (" in l)
        assert "every layer" in line and "re-extract without --token-layers" in line
        assert {"ffn_roles", "ff_norm_ratio", "token_strength", "attention_patterns"} <= written
    if capture in ("cls-only", "attention-only"):
        assert any("mean-pooled separability" in l and "--cls-only" in l for l in skipped)


def test_the_plan_names_a_reason_for_each_step_it_skips():
    """Without an input (sweep, pre-trained store) or a capability, a step is skipped with a fix to apply."""
    from bertology.store.capabilities import Capabilities

    caps = Capabilities(samples=40, class_counts=(20, 20), layers=(1, 2, 3), token_layers=(), token_sites=frozenset(),
                        attention=False)
    steps = {s.analysis.name: s for s in plan(caps, Inputs(), AnalyzeConfig())}
    assert list(steps) == [a.name for a in REGISTRY]
    assert steps["interventions"].reason.endswith("then --sweep") and isinstance(steps["interventions"].reason,
                                                                                    NotAsked)
    assert "--pretrained-store" in steps["attention_change"].reason
    assert "--cls-only" in steps["attention_heads"].reason
    assert steps["task_metrics"].reason is None and steps["confident_errors"].reason is None
    one = Capabilities(samples=1, class_counts=(1, 0), layers=(1,), token_layers=(1,), token_sites=frozenset({"ln2"}),
                       attention=True)
    steps = {s.analysis.name: s for s in plan(one, Inputs(), AnalyzeConfig())}
    assert "at least 2 samples" in steps["layer_predictions"].reason
    assert steps["confident_errors"].reason == "needs layer_predictions, which was skipped"


def test_a_strength_layer_past_the_models_depth_is_a_skipped_line_not_a_crash(partial_stores, tmp_path, capsys):
    store = partial_stores["ln2-only"]
    assert main(["analyze", str(store), "--out", str(tmp_path), *FLAGS, "--strength-layer", "9"]) == 0
    assert "--strength-layer 9 is past the model's depth (layers 1…3)" in capsys.readouterr().err
    assert not (tmp_path / "token_strength.parquet").exists() and (tmp_path / "separability.parquet").exists()
