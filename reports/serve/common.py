"""What the explorer's services share: the errors they answer with (and the HTTP status each means), a
small cache, one cursor per call, and values made ready for JSON."""

from __future__ import annotations

import functools
import json
import math
import threading
from collections import OrderedDict

import numpy as np
import pandas as pd

from bertology import BertologyError


class NotFound(BertologyError):
    """A run, sample, layer or head that does not exist (HTTP 404)."""


class BadRequest(BertologyError):
    """A parameter out of range or inconsistent (HTTP 400)."""


class Unavailable(BertologyError):
    """What the run's store or index does not hold (HTTP 404, with what would provide it)."""


class Cache:
    """At most ``size`` values by key, the least recently used dropped first; thread-safe."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, make):
        """The value for ``key``, made by ``make()`` (outside the lock) when it is not cached; what ``make``
        raises propagates and nothing is cached (a store that cannot be read now is tried again next time)."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


def snapshot(method):
    """Run an explorer call's queries on one cursor: one database file answers all of them."""
    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        with self.index.cursor():
            return method(self, *args, **kwargs)
    return wrapped


def finite_map(m: np.ndarray) -> list[list[float]]:
    """A map as JSON numbers: values a float16 store could not hold (inf, NaN) become 0."""
    return np.nan_to_num(np.asarray(m, np.float64), nan=0.0, posinf=0.0, neginf=0.0).round(6).tolist()


def cell(v):
    """One SQL result value as JSON: numbers and text as they are, NULL/NaN as null, anything else (dates,
    intervals, blobs, nested values) as its text."""
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, str):
        return v
    if isinstance(v, (bytes, bytearray)):
        return "\\x" + bytes(v).hex()
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, (list, tuple)):
        return [cell(x) for x in v]
    if isinstance(v, dict):
        return {str(k): cell(x) for k, x in v.items()}
    return str(v)


def run_key(run: dict) -> str:
    """A run as cache key: its id and fingerprint (a re-extracted or re-analysed run is another key)."""
    return f"{run['run_id']}:{run.get('fingerprint')}"


def no_sample(run: dict, i: int) -> NotFound:
    return NotFound(f"run {run['run_id']} has no sample {i} (its samples are 0…{run['n_samples'] - 1})")


def records(df) -> list[dict]:
    """JSON-ready rows: NaN and NA become None, numpy scalars Python numbers."""
    return json.loads(df.to_json(orient="records", date_format="iso")) if len(df) else []
