"""What ``bertology serve`` answers, without the web: runs, samples and one sample's insides, read from the
index (every aggregate and per-row table) and from the run's store (attention maps, token states, and the
attribution maps computed from them on demand).

Everything here is keyed by ``run_id`` and ``sample_index`` (a sample's position in its store), as in the
index; nothing a caller passes becomes a path. A run's store is opened only when its recorded path lies
under the served results folder.

The index is read through its one reader (:class:`bertology.analysis.index.IndexReader`), which notices
when ``bertology index`` has renamed a new database file over the old one and answers from it, once the
requests already running on the old one have finished.

The explorer is four services over one index and one results folder: runs (:mod:`.runs`), samples
(:mod:`.samples`), one sample's maps (:mod:`.maps`), the SQL console (:mod:`.console`), and two runs
compared (:mod:`.comparison`).
"""

from __future__ import annotations

from pathlib import Path

from bertology import BertologyError
from bertology.analysis.index import IndexReader
from bertology.store.location import locate

from .common import BadRequest, Cache, NotFound, Unavailable
from .comparison import ComparisonService
from .console import SqlService
from .maps import MapService
from .runs import RunService
from .samples import MAX_LIMIT, SORTABLE, SampleFilter, SampleService

__all__ = ["MAX_LIMIT", "SORTABLE", "BadRequest", "Explorer", "NotFound", "SampleFilter", "Unavailable"]


class Explorer(RunService, SampleService, MapService, SqlService, ComparisonService):
    """The explorer's data: a results folder and its index (see the module docstring)."""

    def __init__(self, results: str | Path, db: str | Path | None = None, *, cache: int = 8):
        self.results = locate(results)
        if not self.results.isdir():
            raise BertologyError(f"{results}: no such results folder")
        db = Path(db) if db else (self.results.local_path / "bertology.duckdb" if self.results.local else None)
        if db is None:
            raise BertologyError(f"{results}: a results folder on object storage is served from a local index; "
                                 f"pass --db FILE (built with `bertology index {results} --db FILE`)")
        if not db.is_file():
            raise BertologyError(f"{db}: no index; build it with `bertology index {results}"
                                 + (f" --db {db}`" if db.parent != self.results.local_path else "`"))
        self.index = IndexReader(db)
        self._root = self.results.resolved().rstrip("/") + "/"
        self._stores = Cache(cache)          # run -> its opened store
        self._shows = Cache(cache)           # run -> which maps its store holds
        self._info = Cache(4 * cache)        # run -> its analysis.json
        self._params = Cache(2)              # run -> its checkpoint's parameters (MBs each)
