"""The report's sections: one module per group of sections, each function registered under the key that its
analysis lists in :mod:`bertology.analysis.registry` (``sections``).

The page shows the analyses' sections in registry order, then the report's own (:data:`REPORT_ONLY`). The
modules of this package are found and imported here, as xarray finds its backends: a new analysis's section
is one new module, with nothing else to edit.
"""

from __future__ import annotations

import importlib
import pkgutil

from bertology.analysis.registry import sections as analysis_sections

from .common import SECTIONS, Section, Tables

#: Sections about the results as a whole, after the analyses' sections.
REPORT_ONLY = ("provenance", "runtime")

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "common":
        importlib.import_module(f"{__name__}.{_module.name}")


def order() -> list[str]:
    """Every section's key in page order; a key without its function (or a function no analysis lists) is a
    programming error, refused here."""
    keys = [*analysis_sections(), *REPORT_ONLY]
    missing, unlisted = set(keys) - set(SECTIONS), set(SECTIONS) - set(keys)
    if missing or unlisted:
        raise RuntimeError(f"report sections out of step with the analysis registry: no function for "
                           f"{sorted(missing)}; listed by no analysis: {sorted(unlisted)}")
    return keys


def make_sections(data, tabs: Tables, config: dict | None) -> list[Section]:
    """The sections the results hold, in page order."""
    return [s for key in order() if (s := SECTIONS[key](data, tabs, config)) is not None]


__all__ = ["REPORT_ONLY", "SECTIONS", "Section", "Tables", "make_sections", "order"]
