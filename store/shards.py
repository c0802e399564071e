"""A store filled by N extraction processes at once: one sub-store per shard, read as one dataset.

``bertology extract ... --shard K/N`` extracts the K-th of N consecutive ranges of the store's windows into
its own sub-store ``STORE/shard-K-of-N`` (an ordinary store of those samples, with its own progress, resumed
and refused on its own). No two shards ever write the same chunk or object: they write different
sub-stores. The top group holds only the metadata of the whole store (with ``shards: N``), the same bytes
whichever shard writes it first. A shard covers whole extraction windows, so its samples are batched
exactly as a serial extraction batches them, and its values are the serial extraction's bytes.

:func:`open_sharded` presents the N sub-stores as the one dataset a serial extraction would have written:
the sample, token and pair axes concatenated lazily, the offsets (``token_start``, ``pair_start``,
``token_sample``) counted across shards. It is complete when every shard is.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing

from bertology import BertologyError

from . import schema as S
from .errors import StoreError
from .location import Location

SHARDS = "shards"        # key in the top group's metadata: how many shards fill the store


def shard_name(k: int, n: int) -> str:
    """The sub-store of shard ``k`` (1-based) of ``n``."""
    return f"shard-{k}-of-{n}"


def parse_shard(text: str) -> tuple[int, int]:
    """``'K/N'`` → (K, N), 1 ≤ K ≤ N."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text}: write K/N, e.g. 2/4 (the 2nd of 4 shards)") from None
    if not 1 <= k <= n:
        raise ValueError(f"--shard {text}: K must lie in 1..N")
    return k, n


def shard_windows(n_windows: int, n: int, k: int) -> range:
    """The windows of shard ``k`` of ``n``: consecutive, as even as whole windows allow."""
    if n > n_windows:
        raise BertologyError(f"--shard {k}/{n}: the store has only {n_windows} extraction window(s); use at most "
                             f"{n_windows} shards (or a smaller window)")
    bounds = [round(i * n_windows / n) for i in range(n + 1)]
    return range(bounds[k - 1], bounds[k])


def write_top(where: Location, meta: dict, n: int, overwrite: bool = False) -> None:
    """The top group of a sharded store: its whole-store metadata. Every shard writes the same bytes, so
    shards starting together cannot disagree; a different extraction already there is refused, or, with
    ``overwrite``, a different sharded extraction is replaced (each shard then replaces its own sub-store;
    the sub-stores of another N stay, unread)."""
    meta = json.loads(json.dumps({**meta, SHARDS: n}))
    doc = {"zarr_format": 3, "node_type": "group", "attributes": {S.META_KEY: meta}}
    top = where / "zarr.json"
    if top.isfile():
        try:
            old = json.loads(top.read_text()).get("attributes", {})
        except ValueError:
            old = {}
        found = (old.get(S.META_KEY) or {}).get(SHARDS)
        if old.get(S.META_KEY) != meta and not (overwrite and found):
            if S.META_KEY in old and not found:
                raise BertologyError(f"{where}: is a store extracted without --shard; choose another --out, or "
                                     f"remove it before sharding (shards never remove what other shards may be "
                                     f"writing)")
            what = f"a store of {found} shards of another extraction" if found else "not a bertology store"
            raise BertologyError(f"{where}: {what}; shard with the same settings and N, choose another --out, or "
                                 f"remove it")
        if old.get(S.META_KEY) == meta:
            return
    top.write_text(json.dumps(doc, indent=2, sort_keys=True))


def unfinished(where: Location, n: int) -> list[str]:
    """The shards that are not complete, as 'K (what)'."""
    missing = []
    for k in range(1, n + 1):
        meta = where / shard_name(k, n) / "zarr.json"
        if not meta.isfile():
            missing.append(f"{k} (not started)")
            continue
        progress = json.loads(meta.read_text()).get("attributes", {}).get(S.PROGRESS_KEY) or {}
        if not progress.get("complete"):
            missing.append(f"{k} ({progress.get('windows_done', 0)} windows written)")
    return missing


def open_sharded(where: Location, attrs: dict, *, allow_incomplete: bool, dask: bool, open_store) -> xr.Dataset:
    """The N shards of ``where`` as one dataset (see the module docstring)."""
    n = int(attrs[S.META_KEY][SHARDS])
    missing = unfinished(where, n)
    if missing:  # allow_incomplete or not: an unfinished shard has no data to present
        raise StoreError(f"{where}: sharded extraction is incomplete: shard(s) {', '.join(missing)} of {n}; run "
                         f"(or rerun, to resume) `bertology extract ... --shard K/{n}` for each")
    parts = [open_store(where / shard_name(k, n), dask=dask) for k in range(1, n + 1)]
    first = parts[0]
    counts = {dim: [p.sizes.get(dim, 0) for p in parts] for dim in (S.SAMPLE, S.TOKEN, S.PAIR)}
    starts = {dim: np.concatenate([[0], np.cumsum(c)[:-1]]) for dim, c in counts.items()}
    shift = {"token_start": S.TOKEN, "pair_start": S.PAIR, "token_sample": S.SAMPLE}
    variables = {}
    for name, var in first.variables.items():
        dim = var.dims[0] if var.dims else None
        if dim not in counts:
            variables[name] = var
        elif name in shift or name == S.SAMPLE:
            by = starts[shift[name]] if name in shift else np.zeros(n, dtype=np.int64)
            values = np.concatenate([p[name].values + by[i] for i, p in enumerate(parts)])
            variables[name] = xr.Variable(var.dims, values.astype(var.dtype), var.attrs)
        else:
            pieces = [p[name].variable for p in parts]
            if dask:
                import dask.array as da

                data = da.concatenate([v.data for v in pieces], axis=0)
            else:
                data = indexing.LazilyIndexedArray(Concatenated(pieces))
            variables[name] = xr.Variable(var.dims, data, var.attrs)
    coords = [c for c in first.coords if c in variables]
    ds = xr.Dataset({k: v for k, v in variables.items() if k not in coords},
                    coords={k: variables[k] for k in coords})
    ds.attrs = dict(attrs[S.META_KEY])
    ds.attrs["complete"] = True
    return ds


class Concatenated(BackendArray):
    """Lazily indexed arrays joined along their first axis: indexing reads only the parts it touches."""

    def __init__(self, parts: list[xr.Variable]):
        self.parts = parts
        lengths = [p.shape[0] for p in parts]
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.shape = (int(self.offsets[-1]),) + tuple(parts[0].shape[1:])
        self.dtype = parts[0].dtype

    def __getitem__(self, key):
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, self._read)

    def _read(self, key: tuple):
        first, rest = key[0], tuple(key[1:])
        if isinstance(first, slice):
            positions = np.arange(*first.indices(self.shape[0]))
        else:
            positions = np.asarray(first, dtype=np.int64)
        scalar = positions.ndim == 0
        positions = np.atleast_1d(positions)
        part = np.searchsorted(self.offsets[1:], positions, side="right")
        pieces = []
        edges = np.flatnonzero(np.diff(part)) + 1
        for run in np.split(np.arange(len(positions)), edges):
            if not len(run):
                continue
            p = int(part[run[0]])
            local = positions[run] - self.offsets[p]
            step = np.diff(local)
            sel = slice(int(local[0]), int(local[-1]) + 1) if (len(local) == 1 or np.all(step == 1)) else local
            pieces.append(np.asarray(self.parts[p][(sel,) + rest].values))
        if not pieces:
            out = np.zeros((0,) + tuple(np.asarray(self.parts[0][(slice(0, 0),) + rest].values).shape[1:]),
                           dtype=self.dtype)
        else:
            out = np.concatenate(pieces, axis=0)
        return out[0] if scalar else out
