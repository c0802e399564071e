"""The SQL console: a user's SQL through the sandbox of ``bertology sql``, with the explorer's limits."""

from __future__ import annotations

from bertology.analysis import sql

from .common import cell, snapshot


#: Limits of the SQL console (the same sandbox as ``bertology sql``, tighter limits: it serves many users).
SQL_LIMITS = sql.Limits(max_rows=10_000, timeout=10.0)
SQL_CSV_LIMITS = sql.Limits(max_rows=1_000_000, timeout=30.0)


class SqlService:
    """The SQL console (a mixin of :class:`~.explorer.Explorer`)."""

    @snapshot
    def sql(self, text: str, limits: sql.Limits = SQL_LIMITS) -> dict:
        df = self.index.user_query(text, limits)
        return {"columns": [str(c) for c in df.columns], "rows": [[cell(v) for v in row] for row in
                                                                  df.itertuples(index=False, name=None)],
                "truncated": bool(df.attrs.get("truncated")), "max_rows": limits.max_rows}

    @snapshot
    def sql_frame(self, text: str, limits: sql.Limits = SQL_CSV_LIMITS):
        return self.index.user_query(text, limits)
