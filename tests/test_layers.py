"""The four folders are four layers, and imports flow one way: extract -> store <- analysis <- reports."""

from __future__ import annotations

import ast

import pytest

from .conftest import REPO

LAYERS = ("extract", "store", "analysis", "reports")
#: What each layer may import from the others (the package root `bertology` itself is shared by all).
ALLOWED = {
    "store": set(),
    "extract": {"store"},
    "analysis": {"store"},
    "reports": {"analysis", "store"},
}


def imported_layers(path) -> set[tuple[str, int]]:
    """(layer, line) of every bertology layer a module imports, absolute or relative (from ..layer)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level >= 2 and node.module:  # from ..store import x
                names = [f"bertology.{node.module}"]
            elif node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "bertology" and len(parts) > 1 and parts[1] in LAYERS:
                found.add((parts[1], node.lineno))
    return found


@pytest.mark.parametrize("layer", LAYERS)
def test_imports_flow_one_way(layer):
    violations = []
    for path in sorted((REPO / layer).rglob("*.py")):
        for other, line in imported_layers(path):
            if other != layer and other not in ALLOWED[layer]:
                violations.append(f"{path.relative_to(REPO)}:{line} imports bertology.{other}")
    assert not violations, "layering broken: " + "; ".join(violations)


def test_the_checker_sees_violations(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("from bertology.extract.models import x\nfrom ..reports import y\nimport bertology.analysis.sql\n")
    assert {layer for layer, _ in imported_layers(bad)} == {"extract", "reports", "analysis"}
