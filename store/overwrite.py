"""Replacing a store or sweep: only ever something bertology wrote, never whatever a path happens to name."""

from __future__ import annotations

import json
from pathlib import Path

from bertology import BertologyError

from . import schema as S
from .location import Location, locate


def _zarr_attrs(where: Location) -> dict | None:
    """The group attributes of a Zarr v3 group at ``where``; None when it is not one."""
    meta = where / "zarr.json"
    try:
        if not meta.isfile():
            return None
        doc = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    return doc.get("attributes") or {} if doc.get("node_type") == "group" else None


def kind_of(path: str | Path | Location) -> str | None:
    """``'store'`` for an activation store (complete or not), ``'sweep'`` for an intervention sweep, else None."""
    attrs = _zarr_attrs(locate(path))
    if attrs is None:
        return None
    if (attrs.get(S.META_KEY) or {}).get("format") == S.FORMAT_NAME:
        return "store"
    if attrs.get("format") == "bertology-intervention-sweep":
        return "sweep"
    return None


def describe(where: Location) -> str:
    """What is at ``where``, in a few words (for a refusal)."""
    if where.local:
        path = where.local_path
        if path.is_symlink():
            return f"a symbolic link to {path.resolve()}"
        if path.is_file():
            return f"a file of {path.stat().st_size} bytes"
        if not path.is_dir():
            return "something that is neither a file nor a folder"
    elif where.isfile():
        return f"an object of {where.size()} bytes"
    entries = where.listdir()
    if _zarr_attrs(where) is not None:
        return "a Zarr group that is not a bertology store or sweep"
    shown = ", ".join(entries[:5]) + (", …" if len(entries) > 5 else "")
    return f"a folder with {len(entries)} entries ({shown})" if entries else "an empty folder"


def _free(where: Location) -> bool:
    """Nothing there, or an empty folder."""
    if where.local:
        p = where.local_path
        return (not p.exists() and not p.is_symlink()) or (p.is_dir() and not p.is_symlink() and not any(p.iterdir()))
    return not where.isfile() and not where.listdir()


def check(path: str | Path | Location, kind: str, flag: str = "--overwrite") -> None:
    """Refuse (naming what is there) unless ``path`` is free, an empty folder, or a bertology ``kind``."""
    where = locate(path)
    if _free(where):
        return
    is_folder = where.isdir() and not (where.local and where.local_path.is_symlink())
    found = kind_of(where) if is_folder else None
    if found != kind:
        raise BertologyError(
            f"{where}: {flag} replaces only a bertology {kind}, and this is "
            + (f"a bertology {found}" if found else describe(where))
            + "; nothing was removed. Choose another output path, or remove it yourself if it is yours to lose")


def remove(path: str | Path | Location, kind: str, flag: str = "--overwrite") -> None:
    """Remove the bertology ``kind`` ('store' or 'sweep') at ``path``; refuse anything else (see :func:`check`)."""
    where = locate(path)
    check(where, kind, flag)
    if where.local and where.local_path.is_dir() and not any(where.local_path.iterdir()):
        where.local_path.rmdir()
    else:
        where.remove()
