"""Cross-sentence word matching: positive on a head built to attend to matching words, exactly 0 on a uniform
head (words of one piece or several), and equal to a plain loop over words on a real store's attention."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bertology.analysis.options import AnalyzeConfig
from bertology.analysis.run import analyze
from bertology.analysis.word_matching import sample_matching
from bertology.store import open_store

from .conftest import make_split

PAIR = ["[CLS]", "the", "cat", "sat", "down", "[SEP]", "a", "cat", "ran", "[SEP]"]


def brute_force(maps: np.ndarray, tokens: list[str]) -> np.ndarray | None:
    """The statistic by its definition, one word pair at a time (WordPiece tokens)."""
    words, seg, sep_seen = [], [], 0                  # words: [form, [positions]]
    for k, t in enumerate(tokens):
        if t in ("[CLS]", "[SEP]"):
            sep_seen += t == "[SEP]"
            words.append([None, [k]])
        elif t.startswith("##"):
            words[-1][0] += t[2:]
            words[-1][1].append(k)
        else:
            words.append([t.lower() if t.isalnum() else None, [k]])
        seg.append(min(sep_seen, 1) if t != "[SEP]" else None)
    segment = [seg[w[1][0]] for w in words]

    def att(q, k):                                     # (L, H): mean over q's pieces and k's pieces
        return np.mean([maps[..., i, j] for i in words[q][1] for j in words[k][1]], axis=0)

    match, control = [], []
    for q, (form, pos) in enumerate(words):
        if form is None:
            continue
        other = [k for k, w in enumerate(words) if w[0] is not None and segment[k] != segment[q]]
        matches = [k for k in other if words[k][0] == form]
        controls = [k for k in other if words[k][0] != form]
        for m in matches if controls else []:
            d = abs(words[m][1][0] - pos[0])
            c = sorted(controls, key=lambda k: (abs(abs(words[k][1][0] - pos[0]) - d), words[k][1][0]))[0]
            match.append(att(q, m))
            control.append(att(q, c))
    if not match:
        return None
    return np.stack([np.mean(match, axis=0), np.mean(control, axis=0)], axis=-1)


def test_a_head_attending_to_the_matching_word_scores_positive_and_a_uniform_head_zero():
    n = len(PAIR)
    uniform = np.full((1, 1, n, n), 1 / n)
    got = sample_matching(uniform, PAIR, bpe=False)
    assert got.shape == (1, 1, 2) and got[0, 0, 0] - got[0, 0, 1] == 0.0
    matching = np.full((n, n), 0.1 / (n - 1))
    np.fill_diagonal(matching, 0.0)
    matching[2, 7] = matching[7, 2] = 0.9              # "cat" ↔ "cat"
    for i in range(n):
        matching[i, i] = 1 - matching[i].sum()
    got = sample_matching(matching[None, None], PAIR, bpe=False)
    assert got[0, 0, 0] == pytest.approx(0.9) and got[0, 0, 1] == pytest.approx(0.1 / (n - 1))
    assert sample_matching(uniform, ["[CLS]", "a", "b", "[SEP]", "c", "[SEP]"], bpe=False) is None   # no match
    pieces = ["[CLS]", "the", "play", "##ing", "cat", "[SEP]", "a", "play", "##ing", "dog", "[SEP]"]
    got = sample_matching(np.full((1, 1, 11, 11), 1 / 11), pieces, bpe=False)
    assert got[0, 0, 0] == pytest.approx(got[0, 0, 1], abs=1e-15)        # "playing" (2 pieces) against "dog"


def test_punctuation_is_a_word_of_its_own_in_bpe_tokens():
    from bertology.analysis.word_matching import words_of

    tokens = ["<s>", "Ġthe", "Ġcat", "Ġsat", ".", "</s>", "</s>", "Ġa", "Ġcat", ".", "</s>"]
    _, forms, _, ok = words_of(tokens, bpe=True)
    assert [f for f, keep in zip(forms, ok) if keep] == ["the", "cat", "sat", "a", "cat"]


def test_sample_matching_equals_the_definition_on_random_maps_with_wordpieces():
    rng = np.random.default_rng(0)
    tokens = ["[CLS]", "play", "##ing", "is", "fun", ",", "the", "[SEP]", "playing", "the", "fun", "game", "[SEP]"]
    maps = rng.dirichlet(np.ones(len(tokens)), size=(2, 3, len(tokens)))
    np.testing.assert_allclose(sample_matching(maps, tokens, bpe=False), brute_force(maps, tokens), rtol=1e-12)


@pytest.fixture(scope="module")
def pair_store(tiny_models, tmp_path_factory):
    from bertology.extract.extraction import ExtractConfig, extract

    root = tmp_path_factory.mktemp("word_matching")
    return extract(str(tiny_models["bert"]), make_split(30, task="mrpc", seed=11, max_words=12), root / "dev.zarr",
                   ExtractConfig(window=64, token_sites=(), attention=True), progress=False)


def test_the_table_of_a_pair_store_equals_a_plain_loop_over_its_attention(pair_store, tmp_path):
    analyze(pair_store, tmp_path, AnalyzeConfig(resamples=50, permutations=0, probe=False))
    table = pd.read_parquet(tmp_path / "word_matching.parquet").sort_values(["layer", "head"])
    ds = open_store(pair_store)
    per_sample = [brute_force(ds.bertology.attention(i).values.astype(np.float64), [str(t) for t in ds.bertology.tokens(
        i, "token_text").values]) for i in range(ds.sizes["sample"])]
    have = [v for v in per_sample if v is not None]
    assert len(have) >= 10 and (table["n"] == len(have)).all()
    diff = np.mean([v[..., 0] - v[..., 1] for v in have], axis=0).reshape(-1)
    np.testing.assert_allclose(table["estimate"], diff, rtol=1e-9)
    assert (table["ci_low"] <= table["estimate"]).all() and (table["estimate"] <= table["ci_high"]).all()
    assert (table["p_adj"] >= table["p"]).all()
    assert table.sort_values("rank")["estimate"].is_monotonic_decreasing
    assert len(table) == ds.sizes["layer"] * ds.sizes["head"]


def test_a_single_sentence_store_gets_no_word_matching_and_no_line_about_it(tiny_results, tmp_path):
    analyze(tiny_results / "sst2" / "dev.zarr", tmp_path, AnalyzeConfig(resamples=50, permutations=0, probe=False,
                                                                          attribution_samples=0))
    assert not (tmp_path / "word_matching.parquet").exists()
    assert not any("word_matching" in l for l in json.loads((tmp_path / "analysis.json").read_text())["skipped"])


def test_the_report_lists_each_pair_tasks_top_heads():
    from bertology.reports.sections.word_matching import section_word_matching
    from tests.test_report_sections import report_data

    rows = [dict(task=t, layer=l, head=h, estimate=e, ci_low=e - 0.1, ci_high=e + 0.1, p_adj=0.01, match=0.3,
                 control=0.3 - e, n=20, rank=r)
            for t, ranked in (("rte", [(4, 1, 0.5), (2, 12, 0.4)]), ("mrpc", [(4, 1, 0.3), (1, 1, 0.1)]))
            for r, (l, h, e) in enumerate(ranked, 1)]
    s = section_word_matching(report_data("rte", "mrpc", tables={"word_matching": pd.DataFrame(rows)}), {})
    assert "4.1" in s.html and "Top heads shared across tasks: 4.1 (MRPC, RTE)." in s.html
    assert list(s.csv["word_matching_top"]["task"]) == ["rte", "rte", "mrpc", "mrpc"]
    assert section_word_matching(report_data("sst2"), {}) is None
