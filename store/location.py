"""Where a store, sweep or results folder lives: a local path or a URL of any fsspec protocol.

``s3://bucket/prefix/dev.zarr``, ``gs://…``, ``az://…``, ``file:///data/dev.zarr`` and plain paths all name
a :class:`Location`. Credentials and endpoints come from the standard environment of the protocol's library
(for S3: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``), or
from storage options (``--storage-options JSON``, kept for this process in ``BERTOLOGY_STORAGE_OPTIONS``).
A location is written into metadata, tables, logs and the index only as its URL: never with its options.
When a location is pickled (a task graph sent to dask workers) it carries its URL and only the options that
are not secrets; a worker takes credentials from its own environment.

What is atomic differs: a local rename is, an object-store rename is not, while an object PUT is. So a
finished file is written with :meth:`Location.write_bytes` (local: a temporary file renamed into place;
object store: one PUT), and a store or sweep is complete only when its group metadata says so (one PUT).
"""

from __future__ import annotations

import json
import os
import posixpath
from pathlib import Path

import fsspec

#: Storage-option keys that hold secrets: never pickled, logged or recorded.
SECRET_KEYS = frozenset({
    "key", "secret", "token", "password", "session_token", "sas_token", "account_key", "client_secret",
    "credential", "credentials", "connection_string", "aws_access_key_id", "aws_secret_access_key",
    "aws_session_token",
})
OPTIONS_ENV = "BERTOLOGY_STORAGE_OPTIONS"


def storage_options() -> dict:
    """The storage options of this process (``--storage-options``), ``{}`` when none were given."""
    text = os.environ.get(OPTIONS_ENV)
    if not text:
        return {}
    options = json.loads(text)
    if not isinstance(options, dict):
        raise ValueError(f"{OPTIONS_ENV} must hold a JSON object, got {text[:40]!r}")
    return options


def public_options(options: dict) -> dict:
    """``options`` without its secrets (recursively): what may travel in a pickle."""
    return {k: public_options(v) if isinstance(v, dict) else v
            for k, v in options.items() if k.lower() not in SECRET_KEYS}


def is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a location by URL (``proto://…``) rather than as a local path."""
    return "://" in str(path)


class Location:
    """A path or URL, with the filesystem that reaches it.

    ``url`` is how messages, metadata and the index name it (a local path stays a path); ``fs`` and
    ``path`` are the fsspec filesystem and its path; ``local`` says whether it is on this machine's disk.
    """

    def __init__(self, where: str | os.PathLike | "Location", options: dict | None = None):
        if isinstance(where, Location):
            self.url, self.options = where.url, where.options if options is None else options
        else:
            text = os.fspath(where)
            self.url = text.rstrip("/") if is_url(text) and not text.endswith("://") else text
            self.options = storage_options() if options is None else options
        self._fs = None

    # -- identity ------------------------------------------------------------------------------------
    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0] if is_url(self.url) else "file"

    @property
    def local(self) -> bool:
        return self.protocol in ("file", "local")

    @property
    def local_path(self) -> Path:
        """The path on this machine's disk (only for a local location)."""
        if not self.local:
            raise ValueError(f"{self.url}: not on the local disk")
        return Path(self.url.split("://", 1)[1] if is_url(self.url) else self.url)

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        if self._fs is None:
            if self.local:
                self._fs = fsspec.filesystem("file")
            else:
                self._fs = fsspec.filesystem(self.protocol, **self.options)
        return self._fs

    @property
    def path(self) -> str:
        """The path within :attr:`fs`."""
        if self.local:
            return str(self.local_path.absolute())
        return self.url.split("://", 1)[1]

    @property
    def name(self) -> str:
        return posixpath.basename(self.url.rstrip("/")) if not self.local else self.local_path.name

    def __truediv__(self, part: str) -> "Location":
        if self.local:
            return Location(str(self.local_path / part), self.options)
        return Location(f"{self.url}/{part}", self.options)

    @property
    def parent(self) -> "Location":
        if self.local:
            return Location(str(self.local_path.parent), self.options)
        return Location(self.url.rsplit("/", 1)[0], self.options)

    def relative_from(self, folder: "Location") -> str | None:
        """This path as seen from ``folder``, when both are on this disk (a results folder can move as a whole);
        None otherwise."""
        return os.path.relpath(self.resolved(), folder.resolved()) if self.local and folder.local else None

    def named_by(self, relative: str | None, recorded: str) -> "Location":
        """What a record in this folder names: beside it at ``relative`` (as it was when recorded, so a moved
        results folder still finds it), else at the ``recorded`` path or URL."""
        return Location(os.path.normpath(self.local_path / relative)) if relative and self.local else Location(recorded)

    def resolved(self) -> str:
        """A stable name for the index: the absolute local path, or the URL."""
        return str(self.local_path.resolve()) if self.local else self.url

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"Location({self.url!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Location) and self.resolved() == other.resolved()

    def __hash__(self) -> int:
        return hash(self.resolved())

    def __reduce__(self):  # the URL and non-secret options only: workers bring their own credentials
        return (_arrive, (self.url, public_options(self.options)))

    # -- reading and writing -------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.local_path.exists() if self.local else self.fs.exists(self.path)

    def isdir(self) -> bool:
        return self.local_path.is_dir() if self.local else self.fs.isdir(self.path)

    def isfile(self) -> bool:
        return self.local_path.is_file() if self.local else self.fs.isfile(self.path)

    def listdir(self) -> list[str]:
        """Names of the entries directly below (empty when nothing is there)."""
        if self.local:
            return sorted(p.name for p in self.local_path.iterdir()) if self.local_path.is_dir() else []
        try:
            return sorted(posixpath.basename(p.rstrip("/")) for p in self.fs.ls(self.path, detail=False))
        except FileNotFoundError:
            return []

    def walk(self):
        """``(folder, subfolder names, file names)`` below this location, top-down; remove names from the
        subfolder list to keep the walk out of them (as ``os.walk``)."""
        if self.local:
            for root, dirs, files in os.walk(self.local_path):
                yield Location(root, self.options), dirs, files
            return
        proto = self.protocol
        for root, dirs, files in self.fs.walk(self.path):
            yield Location(f"{proto}://{root.rstrip('/')}", self.options), dirs, files

    def read_bytes(self) -> bytes:
        return self.local_path.read_bytes() if self.local else self.fs.cat_file(self.path)

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def write_bytes(self, data: bytes) -> None:
        """Write the whole file or nothing: a reader never sees half of it."""
        if self.local:
            p = self.local_path
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(p.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(p)
        else:
            self.fs.pipe_file(self.path, data)  # one PUT (or one completed multipart upload): atomic

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def remove(self) -> None:
        """Remove a file or a whole folder (prefix) below this location."""
        if self.local:
            import shutil

            p = self.local_path
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
        elif self.fs.exists(self.path):
            self.fs.rm(self.path, recursive=True)

    def mkdir(self) -> None:
        if self.local:
            self.local_path.mkdir(parents=True, exist_ok=True)
        # object stores have no folders: a prefix exists once something is written below it

    def size(self) -> int:
        """Bytes of every file below (or of the file)."""
        if self.local:
            p = self.local_path
            return p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        return int(self.fs.du(self.path, total=True))

    def zarr_store(self, read_only: bool = False):
        """The Zarr store at this location: zarr's ``LocalStore`` on disk (chunk files replaced atomically),
        ``FsspecStore`` elsewhere (every chunk one PUT)."""
        from zarr.storage import FsspecStore, LocalStore

        if self.local:
            return LocalStore(str(self.local_path), read_only=read_only)
        return FsspecStore.from_url(self.url, storage_options=dict(self.options) or None, read_only=read_only)


def _arrive(url: str, options: dict) -> Location:
    """A location unpickled (on a dask worker): its non-secret options, and the secrets this process was
    given itself (a LocalCluster's workers inherit ``BERTOLOGY_STORAGE_OPTIONS``), never the sender's."""
    own = storage_options()
    secrets = {k: v for k, v in own.items() if k.lower() in SECRET_KEYS}
    return Location(url, {**options, **secrets})


def locate(where: str | os.PathLike | Location, options: dict | None = None) -> Location:
    """``where`` as a :class:`Location` (unchanged if it already is one)."""
    return where if isinstance(where, Location) and options is None else Location(where, options)
