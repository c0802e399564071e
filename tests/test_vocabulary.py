"""One vocabulary, defined once: no module but the store's schema retypes the site list or a token variable name,
and none but analysis/vocabulary.py retypes the analyses' own lists (pattern types, attribution scopes, token
classes, word categories)."""

from __future__ import annotations

import ast
import re

import pytest

from bertology.analysis import vocabulary as V
from bertology.store import schema as S

from .conftest import REPO

SOURCES = sorted(p for layer in ("extract", "store", "analysis", "reports", "bertology") for p in (REPO / layer).rglob("*.py"))
SITE_NAMES = set(S.TOKEN_SITES)


#: vocabulary -> (its names, how many of them in one literal make a retyped list)
VOCABULARIES = {"sites": (SITE_NAMES, 4), "patterns": (set(V.PATTERNS), 4), "scopes": (set(V.SCOPES), 3),
                "token classes": (set(V.TOKEN_CLASSES), 3), "word categories": (set(V.WORD_CATEGORIES), 3)}


def retyped_lists(path, vocabulary: str = "sites") -> list[int]:
    """Lines of sequence literals (or, but for sites, dict literals' keys) naming several words of one
    vocabulary. (A dict keyed by site, such as capture's hook points, is where each site's module is named.)"""
    words, enough = VOCABULARIES[vocabulary]
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        keys = isinstance(node, ast.Dict) and vocabulary != "sites"
        elts = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else \
            [k for k in node.keys if k is not None] if keys else []
        names = {e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
        if len(names & words) >= enough:
            lines.append(node.lineno)
    return lines


def retyped_site_lists(path) -> list[int]:
    return retyped_lists(path, "sites")


@pytest.mark.parametrize("path", [p for p in SOURCES if p != REPO / "store" / "schema.py"],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_retypes_the_vocabulary(path):
    text = path.read_text()
    assert not re.search(r'f"token_\{', text), f"{path.name}: use store.schema.token_var(site)"
    assert not retyped_site_lists(path), f"{path.name}: import store.schema.SITES / TOKEN_SITES instead"


@pytest.mark.parametrize("path", [p for p in SOURCES if p != REPO / "analysis" / "vocabulary.py"],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_retypes_the_analyses_vocabulary(path):
    for vocabulary in ("patterns", "scopes", "token classes", "word categories"):
        assert not retyped_lists(path, vocabulary), \
            f"{path.name}: lines {retyped_lists(path, vocabulary)} retype the {vocabulary}; import analysis.vocabulary"


def test_the_checks_catch_a_retyped_list(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text('SITES = ("attn", "res1", "ln1", "ff", "res2", "ln2")\nv = f"token_{s}"\n')
    assert retyped_site_lists(bad) == [1]
    assert re.search(r'f"token_\{', bad.read_text())
    colors = tmp_path / "c.py"
    colors.write_text('C = {"cls": 1, "sep": 2, "punct": 3}\nS = ["ATTN-W", "ATTN-N", "ATTNRES-N"]\n')
    assert retyped_lists(colors, "token classes") == [1] and retyped_lists(colors, "scopes") == [2]
