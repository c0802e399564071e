"""``bertology sql``: read-only SQL over the index, printed for people or written for machines."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import duckdb

from bertology import BertologyError

READ_ONLY_STATEMENTS = {"SELECT", "EXPLAIN", "PRAGMA"}
FORMATS = ("table", "csv", "json", "parquet")


def _check_read_only(con, query: str) -> None:
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as e:
        raise BertologyError(f"SQL error: {e}") from None
    for st in statements:
        kind = st.type.name
        if kind not in READ_ONLY_STATEMENTS:
            raise BertologyError(
                f"bertology sql is read-only: a {kind} statement is refused (allowed: "
                f"{', '.join(sorted(READ_ONLY_STATEMENTS))}); the index is rebuilt by `bertology index`")


def connect(db: str | Path):
    db = Path(db)
    if not db.is_file():
        raise BertologyError(f"{db}: no such database; build it with `bertology index RESULTS_DIR --db {db}`")
    return duckdb.connect(str(db), read_only=True)


def query(db: str | Path, sql: str):
    """Run one read-only query; return a pandas DataFrame."""
    with connect(db) as con:
        _check_read_only(con, sql)
        try:
            return con.sql(sql).df()
        except duckdb.Error as e:
            raise BertologyError(f"SQL error: {e}") from None


def render(df, fmt: str = "table", output: str | None = None) -> str:
    """An aligned table, CSV or JSON lines as text; parquet is written to ``output``."""
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
        df.to_parquet(output, index=False)
        return f"wrote {output} ({len(df)} rows)"
    raise BertologyError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


def repl(db: str | Path) -> None:  # pragma: no cover - interactive
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
        while True:
            line = input("sql> " if not buffer else "...> ")
            buffer += line + "\n"
            if not buffer.strip().endswith(";"):
                continue
            try:
                print(render(query(db, buffer)))
            except BertologyError as e:
                print(f"error: {e}", file=sys.stderr)
            buffer = ""
    except (EOFError, KeyboardInterrupt):
        print()
    finally:
        if readline is not None:
            readline.write_history_file(history)
