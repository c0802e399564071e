"""The index: one DuckDB database over every run of a results folder, the layer the report and the explorer
read the analyses through.

- :mod:`.schema`: its tables, keys, views and schema version;
- :mod:`.build`: ``bertology index`` (incremental, atomic, one build at a time), and whether an index is
  up to date (:func:`check_index`);
- :mod:`.reader`: the one reader, uncapped, that the report and the explorer use.

A user's own SQL goes through the sandbox of :mod:`bertology.analysis.sql` (``bertology sql``, the
explorer's console) with its row and time limits.
"""

from .build import IndexReport, build_index, check_index, indexed_paths, run_id, sample_frame
from .reader import IndexReader, IndexUnavailable
from .schema import ANALYSIS_TABLES, INDEX_SCHEMA_VERSION, PRIMARY_KEYS, RUN_TABLES, VIEWS

__all__ = ["ANALYSIS_TABLES", "INDEX_SCHEMA_VERSION", "PRIMARY_KEYS", "RUN_TABLES", "VIEWS", "IndexReader",
           "IndexReport", "IndexUnavailable", "build_index", "check_index", "indexed_paths", "run_id",
           "sample_frame"]
