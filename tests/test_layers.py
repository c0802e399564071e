"""The four folders are four layers, and imports flow one way: extract -> store <- analysis <- reports.

The command line (``bertology/cli.py``) may import every layer, and no layer imports it. Within reports, the
live explorer (``reports/serve``) builds on the report's modules, never the other way round.
"""

from __future__ import annotations

import ast
from pathlib import Path

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


def module_name(path: Path) -> str:
    """The dotted name a file of the repository is imported as (``analysis/index/build.py`` is
    ``bertology.analysis.index.build``; the repository's folders are the ``bertology`` package's)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[0] == "bertology":
        parts = parts[1:]
    return ".".join(["bertology", *parts])


def imported_modules(path: Path, module: str | None = None) -> set[tuple[str, int]]:
    """(absolute module name, line) of every bertology module that ``path`` imports, absolute or relative
    (relative names resolved against ``module``, the file's own dotted name)."""
    module = module or module_name(path)
    package = module.split(".")[:-1] if not path.name == "__init__.py" else module.split(".")
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1])
                names = [f"{base}.{node.module}" if node.module else base]
                if not node.module:
                    names = [f"{base}.{a.name}" for a in node.names]
            elif node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found |= {(n, node.lineno) for n in names if n.split(".")[0] == "bertology"}
    return found


def imported_layers(path: Path, module: str | None = None) -> set[tuple[str, int]]:
    """(layer, line) of every bertology layer a module imports."""
    return {(name.split(".")[1], line) for name, line in imported_modules(path, module)
            if len(name.split(".")) > 1 and name.split(".")[1] in LAYERS}


@pytest.mark.parametrize("layer", LAYERS)
def test_imports_flow_one_way(layer):
    violations = []
    for path in sorted((REPO / layer).rglob("*.py")):
        for other, line in imported_layers(path):
            if other != layer and other not in ALLOWED[layer]:
                violations.append(f"{path.relative_to(REPO)}:{line} imports bertology.{other}")
    assert not violations, "layering broken: " + "; ".join(violations)


def test_no_layer_imports_the_cli_and_the_report_does_not_import_the_explorer():
    violations = []
    for layer in LAYERS:
        for path in sorted((REPO / layer).rglob("*.py")):
            in_serve = path.is_relative_to(REPO / "reports" / "serve")
            for name, line in imported_modules(path):
                if name.startswith("bertology.cli"):
                    violations.append(f"{path.relative_to(REPO)}:{line} imports the CLI ({name})")
                if name.startswith("bertology.reports.serve") and not in_serve:
                    violations.append(f"{path.relative_to(REPO)}:{line} imports the explorer ({name})")
    assert not violations, "layering broken: " + "; ".join(violations)
    # the CLI reaches every layer (it is where they meet)
    assert {layer for layer, _ in imported_layers(REPO / "bertology" / "cli.py")} == set(LAYERS)


def test_the_checker_sees_violations(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("from bertology.extract.models import x\nfrom ...reports import y\nimport bertology.analysis.sql\n"
                   "from ..registry import z\nfrom .. import cli\n")
    found = imported_modules(bad, module="bertology.analysis.index.m")
    assert {n for n, _ in found} >= {"bertology.extract.models", "bertology.reports", "bertology.analysis.sql",
                                     "bertology.analysis.registry", "bertology.analysis.cli"}
    assert {layer for layer, _ in imported_layers(bad, "bertology.analysis.index.m")} == {"extract", "reports",
                                                                                          "analysis"}
    assert ("bertology.cli", 5) in imported_modules(bad, module="bertology.analysis.m")
