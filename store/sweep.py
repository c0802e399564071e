"""The intervention-sweep store: per-sample logits of a dev store under every intervention, and the final
[CLS] of each layer-skipped model on dev and train (the compensation classifier's inputs).

One Zarr group written through xarray (every array has ``dimension_names``). On local disk it is assembled
beside its path and renamed into place when complete; on an object store (where a rename is a copy) it is
written in place and becomes readable when its last write, the group attribute ``complete: true`` (one PUT),
lands. A reader refuses a sweep whose ``complete`` is false. Dimensions: ``intervention`` (coordinate: its name, with ``kind``,
``layer``, ``head``), ``sample`` (the dev store's samples), ``class``, ``skip`` (0 = no layer skipped, else
the skipped layer), ``train_sample``, ``hidden``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from . import overwrite as replace
from .integrity import ARRAY_CONFIG, CODECS, reading_store
from .location import Location, locate
from .reader import StoreError

FORMAT = "bertology-intervention-sweep"
VERSION = 1


def write_sweep(ds: xr.Dataset, path: str | Path | Location) -> Path | Location:
    """Write ``ds`` (its string coordinates are kept in the attributes, as zarr 3 has no portable string
    array) to ``path`` (a path or URL), readable only once whole."""
    where = locate(path)
    ds = ds.copy()
    ds.attrs.update(format=FORMAT, version=VERSION, complete=False,
                    intervention_names=[str(x) for x in ds["intervention"].values],
                    kinds=[str(x) for x in ds["kind"].values])
    ds = ds.drop_vars(["intervention", "kind"])
    if where.local:
        target = Location(str(where.local_path.with_name(where.name + ".tmp")), where.options)
        target.remove()
    else:
        replace.remove(where, "sweep", flag="writing the sweep")
        target = where
    encoding = {name: {"compressors": CODECS} for name in ds.variables}
    ds.to_zarr(target.zarr_store(), mode="w", zarr_format=3, consolidated=False, encoding=encoding,
               write_empty_chunks=ARRAY_CONFIG["write_empty_chunks"])
    group = zarr.open_group(target.zarr_store(), mode="r+")
    group.attrs["complete"] = True
    if where.local:
        replace.remove(where, "sweep", flag="writing the sweep")
        target.local_path.replace(where.local_path)
        return where.local_path
    return where


def open_sweep(path: str | Path | Location) -> xr.Dataset:
    """Open a sweep (a path or URL) written by :func:`write_sweep`, with its named coordinates restored."""
    path = locate(path)
    if not path.exists():
        raise StoreError(f"{path}: no such intervention sweep; run `bertology intervene` first")
    ds = xr.open_zarr(reading_store(path, "rerun `bertology intervene` with the same settings to write it again"),
                      consolidated=False)
    if ds.attrs.get("format") != FORMAT:
        raise StoreError(f"{path}: not a bertology intervention sweep")
    if ds.attrs.get("version") != VERSION:
        raise StoreError(f"{path}: sweep version {ds.attrs.get('version')}, this bertology reads {VERSION}; rerun it")
    if ds.attrs.get("complete") is False:
        raise StoreError(f"{path}: the intervention sweep is unfinished (its writer stopped); rerun `bertology "
                         f"intervene` with the same settings")
    return ds.assign_coords(intervention=np.array(ds.attrs["intervention_names"], dtype=object),
                            kind=("intervention", np.array(ds.attrs["kinds"], dtype=object)))
