"""``bertology sql``: read-only SQL over the index, printed for people or written for machines.

Read-only is a property of the connection, not a guess about the statement. The database is opened
``read_only`` with DuckDB's own sandbox settings (:data:`SANDBOX`): no file-system access of any kind (no
``read_csv('/etc/passwd')``, ``COPY … TO``, ``ATTACH``, ``EXPORT``/``IMPORT DATABASE``), no extension
install or load, no Python-variable scans, and the configuration locked so that no statement can undo any
of it. A statement allow-list is the second line: one statement per query, of a reading kind
(:data:`ALLOWED`; ``PRAGMA`` only by name from :data:`READ_PRAGMAS`), so refusals come with a clear reason.
Every query runs under a row limit and a time limit (:class:`Limits`) that the user can raise.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import duckdb

from bertology import BertologyError

#: DuckDB settings of every connection that answers a user's query.
SANDBOX = {
    "enable_external_access": False,       # no file, URL or database outside the index itself
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "python_enable_replacements": False,   # a table name never resolves to a Python variable
    "lock_configuration": True,            # and no SET/RESET/PRAGMA can change any of the above
}
#: Statement kinds a query may be (as DuckDB's parser classifies them). EXPLAIN is checked on what it explains.
ALLOWED = {"SELECT", "EXPLAIN", "PRAGMA"}
#: PRAGMAs that only read (DuckDB classifies e.g. IMPORT DATABASE as a PRAGMA too: it is not among these).
READ_PRAGMAS = {"table_info", "show_tables", "show_tables_expanded", "show", "database_size", "database_list",
                "storage_info", "version", "platform", "functions", "collations", "metadata_info", "user_agent"}
FORMATS = ("table", "csv", "json", "parquet")
DEFAULT_MAX_ROWS = 100_000
DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Limits:
    """How much one query may return (rows) and how long it may run (seconds)."""

    max_rows: int = DEFAULT_MAX_ROWS
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_options(cls, max_rows: int | None, timeout: float | None) -> "Limits":
        return cls(max_rows or DEFAULT_MAX_ROWS, timeout or DEFAULT_TIMEOUT)


class RefusedQuery(BertologyError):
    """A query the read-only interface does not run: the message says why."""


def _refuse(why: str) -> RefusedQuery:
    return RefusedQuery(f"bertology sql is read-only: {why}; the index is rebuilt only by `bertology index`")


def check_read_only(con, query: str) -> None:
    """Refuse, with the reason, anything but one reading statement."""
    if not query.strip().strip(";").strip():
        raise RefusedQuery("empty query: give one SQL statement, e.g. \"SELECT count(*) FROM samples\"")
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as e:
        raise BertologyError(f"SQL error: {e}") from None
    if len(statements) != 1:
        raise _refuse(f"one statement per query, and this has {len(statements)}")
    kind = statements[0].type.name
    text = statements[0].query.strip()
    if kind not in ALLOWED:
        raise _refuse(f"a {kind} statement is refused (allowed: SELECT, EXPLAIN of a SELECT, and the reading "
                      f"PRAGMAs {', '.join(sorted(READ_PRAGMAS))})")
    if kind == "PRAGMA":
        name = re.match(r"(?is)\s*pragma\s+([a-z_]+)", text)
        if name is None or name.group(1).lower() not in READ_PRAGMAS:
            raise _refuse(f"this PRAGMA is refused (reading PRAGMAs: {', '.join(sorted(READ_PRAGMAS))})")
    if kind == "EXPLAIN":
        inner = re.sub(r"(?is)^\s*explain(\s+analyze)?\s*", "", text)
        check_read_only(con, inner)


def connect(db: str | Path):
    """A sandboxed, read-only connection to the index (see the module docstring)."""
    db = Path(db)
    if not db.is_file():
        hint = " (its folder does not exist)" if not db.parent.is_dir() else ""
        raise BertologyError(f"{db}: no such database{hint}; build it with `bertology index RESULTS_DIR --db {db}`")
    try:
        return duckdb.connect(str(db), read_only=True, config=dict(SANDBOX))
    except duckdb.Error as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BertologyError(f"{db}: cannot be opened as a bertology index ({first}); rebuild it with "
                             f"`bertology index RESULTS_DIR --db {db}`") from None


def run_query(con, sql: str, limits: Limits = Limits()):
    """Run one checked query on an open sandboxed connection; return a DataFrame (``attrs['truncated']``)."""
    import pyarrow as pa

    check_read_only(con, sql)
    timer = threading.Timer(limits.timeout, con.interrupt)
    timer.start()
    try:
        relation = con.sql(sql)
        if relation is None:  # a statement with no result (only reading kinds reach here)
            import pandas as pd

            return pd.DataFrame()
        reader = relation.to_arrow_reader(min(limits.max_rows + 1, 100_000))
        batches, rows = [], 0
        for batch in reader:
            batches.append(batch)
            rows += batch.num_rows
            if rows > limits.max_rows:
                break
        table = pa.Table.from_batches(batches, schema=reader.schema)
        truncated = table.num_rows > limits.max_rows
        try:
            df = table.slice(0, limits.max_rows).to_pandas()
        except (pa.ArrowException, ValueError, TypeError) as e:
            raise BertologyError(f"the result has a column type that cannot be shown ({e}); cast it, e.g. "
                                 f"CAST(column AS VARCHAR)") from None
    except duckdb.InterruptException:
        raise BertologyError(f"query interrupted after {limits.timeout:g} s (--timeout raises the limit)") from None
    except duckdb.PermissionException as e:
        raise _refuse(f"it reaches outside the index ({str(e).splitlines()[0]})") from None
    except duckdb.Error as e:
        raise BertologyError(f"SQL error: {e}") from None
    finally:
        timer.cancel()
    df.attrs["truncated"] = truncated
    return df


def query(db: str | Path, sql: str, limits: Limits = Limits()):
    """Run one read-only query against the index file ``db``; return a pandas DataFrame."""
    with connect(db) as con:
        return run_query(con, sql, limits)


def render(df, fmt: str = "table", output: str | None = None) -> str:
    """An aligned table, CSV or JSON lines as text; parquet is written (atomically) to ``output``."""
    if fmt == "table":
        import pandas as pd

        with pd.option_context("display.max_rows", 200, "display.max_columns", 50, "display.width", 200,
                               "display.max_colwidth", 60):
            return df.to_string(index=False) + f"\n({len(df)} rows)"
    if fmt == "csv":
        return df.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        return df.to_json(orient="records", lines=True, date_format="iso").rstrip("\n")
    if fmt == "parquet":
        if not output:
            raise BertologyError("--format parquet needs --output FILE")
        out = Path(output)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            df.to_parquet(tmp, index=False)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        return f"wrote {output} ({len(df)} rows)"
    raise BertologyError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


def repl(db: str | Path, limits: Limits = Limits()) -> None:  # pragma: no cover - interactive
    """An interactive prompt: statements end with ';', history in ~/.bertology_sql_history."""
    try:
        import readline
    except ImportError:
        readline = None
    history = Path(os.path.expanduser("~/.bertology_sql_history"))
    if readline is not None and history.exists():
        readline.read_history_file(history)
    print(f"bertology sql on {db} (read-only). End statements with ';'. Ctrl-D quits.")
    buffer = ""
    try:
        with connect(db) as con:
            while True:
                line = input("sql> " if not buffer else "...> ")
                buffer += line + "\n"
                if not buffer.strip().endswith(";"):
                    continue
                try:
                    print(render(run_query(con, buffer, limits)))
                except BertologyError as e:
                    print(f"error: {e}", file=sys.stderr)
                buffer = ""
    except (EOFError, KeyboardInterrupt):
        print()
    finally:
        if readline is not None:
            readline.write_history_file(history)
