"""The one reader of the index: what the report and the explorer read it through.

:class:`IndexReader` opens the database read-only with no access outside it (the connection settings of
:mod:`..sql`), checks that it is a bertology index of this schema, and reopens it whenever ``bertology
index`` has renamed a new file over it. Its :meth:`~IndexReader.query` returns every row: bertology's own
reads are never capped. A user's SQL (``bertology sql``, the explorer's console) goes through
:meth:`~IndexReader.user_query`, the sandbox of :mod:`..sql` with its statement checks and row and time
limits.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path

from bertology import BertologyError

from .. import sql
from .schema import INDEX_SCHEMA_VERSION


class _Gate:
    """Many readers or one writer: queries read the current connection; replacing it waits for them."""

    def __init__(self):
        self._c = threading.Condition()
        self._readers = 0
        self._writing = False

    @contextmanager
    def read(self):
        with self._c:
            while self._writing:
                self._c.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._c:
                self._readers -= 1
                if not self._readers:
                    self._c.notify_all()

    @contextmanager
    def write(self):
        with self._c:
            while self._writing:
                self._c.wait()
            self._writing = True
            while self._readers:
                self._c.wait()
        try:
            yield
        finally:
            with self._c:
                self._writing = False
                self._c.notify_all()


class IndexUnavailable(BertologyError):
    """The index file cannot be opened now (HTTP 503): it is being replaced, or what replaced it is no index."""


class IndexReader:
    """The one reader of the index database, for the report and the explorer; reopened whenever ``bertology index`` has renamed a new file over it.

    DuckDB keeps one database instance per path in a process, so the new file can only be opened once the
    old connection is closed: a swap waits for the queries running on the old file (the longest is bounded by
    the SQL console's time limit), closes it, opens the new one and checks it is an index of this schema;
    requests arriving meanwhile wait for the swap, none fails. All the queries of one explorer call run on one
    cursor, so one answer never mixes two files (:meth:`cursor` is reentrant within a thread)."""

    def __init__(self, db: str | Path):
        self.db = Path(db)
        self._gate = _Gate()
        self._con = None
        self._key = None
        self._local = threading.local()
        self.generation = 0
        self._tables: set[str] = set()
        with self.cursor():  # refuses a missing, foreign or other-version database at start-up
            pass

    def _open_checked(self):
        """A sandboxed connection to the file now at ``db``, and its tables, once it proved to be an index."""
        con = sql.connect(self.db)
        try:
            tables = {r[0] for r in con.sql("SELECT table_name FROM information_schema.tables").fetchall()}
            if "runs" not in tables or "samples" not in tables:
                raise BertologyError(f"{self.db}: not a bertology index (no runs/samples tables); build it with "
                                     f"`bertology index RESULTS_DIR --db {self.db}`")
            version = con.sql("SELECT schema_version FROM index_info").fetchall()[0][0] if "index_info" in tables else 1
            if version != INDEX_SCHEMA_VERSION:
                raise BertologyError(f"{self.db}: an index of schema version {version}, this bertology serves "
                                     f"version {INDEX_SCHEMA_VERSION}; rebuild it with `bertology index RESULTS_DIR "
                                     f"--db {self.db}`")
        except BaseException:
            con.close()
            raise
        return con, tables

    def _file_key(self):
        try:
            st = os.stat(self.db)
        except FileNotFoundError:
            return self._key  # `bertology index` renames the new file over the old: keep the open one
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _swap(self, key) -> None:
        with self._gate.write():
            if key == self._key and self._con is not None:   # already swapped by another request
                return
            if self._con is not None:
                self._con.close()
                self._con = None
            try:
                self._con, self._tables = self._open_checked()
            except BertologyError as e:
                if self.generation == 0:
                    raise                                   # at start-up: the user's mistake, said as such
                raise IndexUnavailable(f"the index was replaced by a file that cannot be served ({e})") from None
            self._key = key
            self.generation += 1

    @contextmanager
    def cursor(self):
        """A cursor on the newest complete database file; within one thread, the one already open."""
        held = getattr(self._local, "cursor", None)
        if held is not None:
            yield held
            return
        key = self._file_key()
        if key != self._key or self._con is None:
            self._swap(key)
        with self._gate.read():
            if self._con is None:
                raise IndexUnavailable(f"{self.db}: the index cannot be opened now; retry in a moment")
            cur = self._con.cursor()
            self._local.cursor = cur
            try:
                yield cur
            finally:
                self._local.cursor = None
                cur.close()

    def query(self, text: str, params: list | None = None):
        """Every row of one of bertology's own (parameterised) queries, as a DataFrame: never capped (the
        user's SQL goes through :meth:`user_query`, with its limits)."""
        with self.cursor() as cur:
            return cur.execute(text, params or []).df()

    def frame(self, table: str, run_ids: list[str]):
        """Every row of ``table`` for these runs, as a DataFrame; None when the index has no such table."""
        with self.cursor():
            if table not in self.tables():
                return None
            marks = ", ".join("?" * len(run_ids))
            return self.query(f'SELECT * FROM "{table}" WHERE run_id IN ({marks})', list(run_ids))

    def close(self) -> None:
        with self._gate.write():
            if self._con is not None:
                self._con.close()
                self._con = None
                self._key = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def tables(self) -> set[str]:
        """The index's tables and views (read when the file was opened)."""
        with self.cursor():
            return self._tables

    def user_query(self, text: str, limits: sql.Limits = sql.Limits()):
        """A user's SQL, checked and limited exactly as ``bertology sql`` does (:func:`sql.run_query`)."""
        with self.cursor() as cur:
            return sql.run_query(cur, text, limits)
