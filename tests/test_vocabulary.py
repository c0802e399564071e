"""One vocabulary, defined once: no module but the store's schema retypes the site list or a token variable name."""

from __future__ import annotations

import ast
import re

import pytest

from bertology.store import schema as S

from .conftest import REPO

SOURCES = sorted(p for layer in ("extract", "store", "analysis", "reports", "bertology") for p in (REPO / layer).rglob("*.py"))
SITE_NAMES = set(S.TOKEN_SITES)


def retyped_site_lists(path) -> list[int]:
    """Lines of sequence literals naming four or more sites (a retyped site list)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            names = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
            if len(names & SITE_NAMES) >= 4:
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("path", [p for p in SOURCES if p != REPO / "store" / "schema.py"],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_retypes_the_vocabulary(path):
    text = path.read_text()
    assert not re.search(r'f"token_\{', text), f"{path.name}: use store.schema.token_var(site)"
    assert not retyped_site_lists(path), f"{path.name}: import store.schema.SITES / TOKEN_SITES instead"


def test_the_checks_catch_a_retyped_list(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text('SITES = ("attn", "res1", "ln1", "ff", "res2", "ln2")\nv = f"token_{s}"\n')
    assert retyped_site_lists(bad) == [1]
    assert re.search(r'f"token_\{', bad.read_text())
