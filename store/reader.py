"""Reading an activation store as a lazy, labelled ``xarray.Dataset``.

``open_store`` refuses anything that is not a complete bertology store of a schema this version reads.
The ragged axes (``token``, ``pair``) are addressed per sample through the ``ds.bertology`` accessor
(:mod:`ragged`); :func:`sample_tokens` and :func:`sample_attention` are its two most common uses.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import xarray as xr
import zarr


from . import ragged  # noqa: F401 - registers the ds.bertology accessor
from . import schema as S
from . import shards
from .errors import StoreError  # re-exported: the reader's refusals
from .integrity import reading_store
from .location import Location, locate

# Workflow tools leave marker files in directory outputs (Snakemake's `.snakemake_timestamp`): not ours.
warnings.filterwarnings("ignore", message=r"Object at \.snakemake_timestamp is not recognized", module="zarr")


def read_attrs(path: str | Path | Location) -> dict:
    """The store's group attributes, after checking it is a bertology store of a known schema."""
    path = locate(path)
    if not path.exists():
        raise StoreError(f"{path}: no such store")
    try:
        attrs = dict(zarr.open_group(path.zarr_store(read_only=True), mode="r").attrs)
    except Exception as e:  # noqa: BLE001
        raise StoreError(f"{path}: not a zarr store ({type(e).__name__}: {e})") from None
    meta = attrs.get(S.META_KEY)
    if not isinstance(meta, dict) or meta.get("format") != S.FORMAT_NAME:
        raise StoreError(f"{path}: is a zarr group but not a bertology activation store (no '{S.META_KEY}' metadata)")
    if meta.get("schema_version") != S.SCHEMA_VERSION:
        raise StoreError(
            f"{path}: store schema version {meta.get('schema_version')}, this bertology reads version "
            f"{S.SCHEMA_VERSION}; re-extract it with this version"
        )
    return attrs


def is_complete(path: str | Path | Location, attrs: dict | None = None) -> bool:
    """Whether the store at ``path`` is complete (a sharded one: every shard); ``attrs`` from :func:`read_attrs`."""
    path = locate(path)
    attrs = read_attrs(path) if attrs is None else attrs
    n = attrs[S.META_KEY].get(shards.SHARDS)
    if n:
        return not shards.unfinished(path, int(n))
    return bool((attrs.get(S.PROGRESS_KEY) or {}).get("complete"))


def open_store(path: str | Path | Location, *, allow_incomplete: bool = False, dask: bool = True) -> xr.Dataset:
    """Open a store (a path or URL) lazily, with named dimensions and coordinates: dask-backed, or with
    ``dask=False`` as lazily indexed zarr arrays (what analysis tasks use: each reads only the chunks it
    indexes, with no dask graph of its own, so tasks never schedule nested computations).

    Dimensions: ``sample`` (coordinate: data-row id), ``layer`` (1..L), ``site`` (attn res1 ln1 ff res2 ln2),
    ``head`` (1..h), ``class`` (label names), ``hidden``, ``ff_hidden``, and the ragged ``token``,
    ``token_layer`` and ``pair`` axes. ``ds.attrs`` holds the extraction metadata.
    """
    path = locate(path)
    attrs = read_attrs(path)
    if attrs[S.META_KEY].get(shards.SHARDS):  # filled by N `extract --shard K/N` processes
        return shards.open_sharded(path, attrs, allow_incomplete=allow_incomplete, dask=dask, open_store=open_store)
    progress = attrs.get(S.PROGRESS_KEY) or {}
    if not progress.get("complete") and not allow_incomplete:
        raise StoreError(
            f"{path}: extraction is incomplete ({progress.get('windows_done', 0)} windows written); "
            f"rerun the same `bertology extract` command to resume it"
        )
    fix = ("re-extract it (the same `bertology extract` command with --overwrite)" if progress.get("complete") else
           "rerun the same `bertology extract` command to resume it, or add --overwrite to start again")
    # without dask, nothing is cached in memory: a dataset sent to a worker carries no data, only its store
    if dask:
        ds = xr.open_zarr(reading_store(path, fix), consolidated=False, chunks={})
    else:
        ds = xr.open_dataset(reading_store(path, fix), engine="zarr", consolidated=False, chunks=None, cache=False)
    ds = ds.set_coords([c for c in S.SAMPLE_COORDS + S.TOKEN_COORDS if c in ds])
    ds.attrs = dict(attrs[S.META_KEY])
    ds.attrs["complete"] = bool(progress.get("complete"))
    return ds


def sample_tokens(ds: xr.Dataset, i: int, var: str = "token_ln2") -> xr.DataArray:
    """The token-level rows of sample ``i`` (its position on the sample axis) for a ragged variable."""
    return ds.bertology.tokens(i, var)


def sample_attention(ds: xr.Dataset, i: int) -> xr.DataArray:
    """Attention of sample ``i`` as a (layer, head, query, key) array of shape (L, h, n, n)."""
    if "attention" not in ds:
        raise StoreError("this store holds no attention maps (extracted with --no-attention or --cls-only)")
    return ds.bertology.attention(i)
