"""The intervention-sweep store: per-sample logits of a dev store under every intervention, and the final
[CLS] of each layer-skipped model on dev and train (the compensation classifier's inputs).

One Zarr group written through xarray (every array has ``dimension_names``), assembled beside its path and
renamed into place only when complete. Dimensions: ``intervention`` (coordinate: its name, with ``kind``,
``layer``, ``head``), ``sample`` (the dev store's samples), ``class``, ``skip`` (0 = no layer skipped, else
the skipped layer), ``train_sample``, ``hidden``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import xarray as xr

from . import overwrite as replace
from .integrity import ARRAY_CONFIG, CODECS, reading_store
from .reader import StoreError

FORMAT = "bertology-intervention-sweep"
VERSION = 1


def write_sweep(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` (its string coordinates are kept in the attributes, as zarr 3 has no portable string
    array) atomically to ``path``."""
    path = Path(path)
    ds = ds.copy()
    ds.attrs.update(format=FORMAT, version=VERSION,
                    intervention_names=[str(x) for x in ds["intervention"].values],
                    kinds=[str(x) for x in ds["kind"].values])
    ds = ds.drop_vars(["intervention", "kind"])
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    encoding = {name: {"compressors": CODECS} for name in ds.variables}
    ds.to_zarr(str(tmp), mode="w", zarr_format=3, consolidated=False, encoding=encoding,
               write_empty_chunks=ARRAY_CONFIG["write_empty_chunks"])
    replace.remove(path, "sweep", flag="writing the sweep")
    tmp.replace(path)
    return path


def open_sweep(path: str | Path) -> xr.Dataset:
    """Open a sweep written by :func:`write_sweep`, with its named coordinates restored."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such intervention sweep; run `bertology intervene` first")
    ds = xr.open_zarr(reading_store(path, "rerun `bertology intervene` with the same settings to write it again"),
                      consolidated=False)
    if ds.attrs.get("format") != FORMAT:
        raise StoreError(f"{path}: not a bertology intervention sweep")
    if ds.attrs.get("version") != VERSION:
        raise StoreError(f"{path}: sweep version {ds.attrs.get('version')}, this bertology reads {VERSION}; rerun it")
    return ds.assign_coords(intervention=np.array(ds.attrs["intervention_names"], dtype=object),
                            kind=("intervention", np.array(ds.attrs["kinds"], dtype=object)))
