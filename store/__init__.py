"""The activation store: the on-disk contract every analysis reads (chunked Zarr, opened as xarray)."""

from .integrity import ChunkError, verify
from .ragged import RaggedLayout
from .reader import StoreError, open_store, read_attrs, sample_attention, sample_tokens
from .schema import EMBED, FF_ACT, SITES, TOKEN_SITES

__all__ = ["open_store", "read_attrs", "sample_tokens", "sample_attention", "RaggedLayout", "StoreError",
           "ChunkError", "verify", "SITES", "FF_ACT", "EMBED", "TOKEN_SITES"]
