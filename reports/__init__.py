"""The reproducible report: tables in the layouts of the mission's findings, figures, provenance."""

from .build import build_report

__all__ = ["build_report"]
