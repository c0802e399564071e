"""Replacing a store or sweep: only ever something bertology wrote, never whatever a path happens to name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bertology import BertologyError

from . import schema as S


def _zarr_attrs(path: Path) -> dict | None:
    """The group attributes of a Zarr v3 group at ``path``; None when it is not one."""
    meta = path / "zarr.json"
    if not meta.is_file():
        return None
    try:
        doc = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    return doc.get("attributes") or {} if doc.get("node_type") == "group" else None


def kind_of(path: Path) -> str | None:
    """``'store'`` for an activation store (complete or not), ``'sweep'`` for an intervention sweep, else None."""
    attrs = _zarr_attrs(path)
    if attrs is None:
        return None
    if (attrs.get(S.META_KEY) or {}).get("format") == S.FORMAT_NAME:
        return "store"
    if attrs.get("format") == "bertology-intervention-sweep":
        return "sweep"
    return None


def describe(path: Path) -> str:
    """What is at ``path``, in a few words (for a refusal)."""
    if path.is_symlink():
        return f"a symbolic link to {path.resolve()}"
    if path.is_file():
        return f"a file of {path.stat().st_size} bytes"
    if path.is_dir():
        entries = sorted(p.name for p in path.iterdir())
        if _zarr_attrs(path) is not None:
            return "a Zarr group that is not a bertology store or sweep"
        shown = ", ".join(entries[:5]) + (", …" if len(entries) > 5 else "")
        return f"a folder with {len(entries)} entries ({shown})" if entries else "an empty folder"
    return "something that is neither a file nor a folder"


def check(path: str | Path, kind: str, flag: str = "--overwrite") -> None:
    """Refuse (naming what is there) unless ``path`` is free, an empty folder, or a bertology ``kind``."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        return
    found = kind_of(path) if path.is_dir() and not path.is_symlink() else None
    if found != kind:
        raise BertologyError(
            f"{path}: {flag} replaces only a bertology {kind}, and this is "
            + (f"a bertology {found}" if found else describe(path))
            + "; nothing was removed. Choose another output path, or remove it yourself if it is yours to lose")


def remove(path: str | Path, kind: str, flag: str = "--overwrite") -> None:
    """Remove the bertology ``kind`` ('store' or 'sweep') at ``path``; refuse anything else (see :func:`check`)."""
    check(path, kind, flag)
    path = Path(path)
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()
    elif path.exists():
        shutil.rmtree(path)
