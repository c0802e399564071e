"""What a statistic needs from the data, and the one line said when the data cannot give it.

Every statistic states the smallest sample it needs (two samples of a class for its within-class scatter,
three to leave one out in the jackknife, two per class for a probe's folds, one error for the error shares).
Below that it is skipped: :func:`skipped` says so in one line on stderr, the other tables are still written,
and ``bertology analyze`` records the lines in ``analysis.json`` (``skipped``). Numerical warnings of the
statistics themselves (means of empty slices, divisions by zero) never reach the console: where a value is
undefined it is NaN in its table.
"""

from __future__ import annotations

import sys
import warnings
from contextlib import contextmanager
from contextvars import ContextVar

_LINES: ContextVar[list | None] = ContextVar("skipped_lines", default=None)


def skipped(what: str) -> None:
    """Say in one line that ``what`` was skipped and why (``what`` names the statistic and its need)."""
    line = f"bertology analyze: skipped {what}"
    lines = _LINES.get()
    if lines is not None:
        if line in lines:
            return
        lines.append(line)
    print(line, file=sys.stderr, flush=True)


@contextmanager
def collect_skipped():
    """Within the block, every :func:`skipped` line is also gathered into the list this yields; numerical
    RuntimeWarnings are silenced."""
    lines: list[str] = []
    token = _LINES.set(lines)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=RuntimeWarning)
            yield lines
    finally:
        _LINES.reset(token)
