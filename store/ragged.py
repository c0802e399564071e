"""The store's ragged layout, in one place: where each sample's tokens and attention pairs lie.

Token-level variables share one flat ``token`` axis (sample s occupies ``token_start[s] … + length[s]``) and
the attention maps one flat ``pair`` axis (``pair_start[s] … + length[s]²``, pairs ordered i·n + j). Every
reader of the store goes through the ``ds.bertology`` accessor (xarray's extension mechanism) instead of
that arithmetic::

    ds.bertology.tokens(17, "token_ln2")      # (token, token_layer, hidden) of sample 17, no padding
    ds.bertology.attention(17)                 # (layer, head, query, key)
    ds.bertology.token_slice(17)               # slice(start, stop) on the token axis
    ds.bertology.spans(slice(0, 64))           # (t0, t1, offsets): a block of samples on the token axis
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import xarray as xr

from .schema import HEAD, LAYER


@xr.register_dataset_accessor("bertology")
class RaggedLayout:
    """``ds.bertology``: a store's ragged token and pair axes, per sample and per block of samples."""

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    @cached_property
    def starts(self) -> np.ndarray:
        """(sample,) each sample's first position on the token axis."""
        return np.asarray(self._ds["token_start"].values, dtype=np.int64)

    @cached_property
    def lengths(self) -> np.ndarray:
        """(sample,) each sample's number of tokens (special tokens included, no padding)."""
        return np.asarray(self._ds["length"].values, dtype=np.int64)

    @cached_property
    def pair_starts(self) -> np.ndarray:
        """(sample,) each sample's first position on the pair axis."""
        return np.asarray(self._ds["pair_start"].values, dtype=np.int64)

    def token_slice(self, i: int) -> slice:
        """Sample ``i``'s tokens on the token axis."""
        start = int(self.starts[i])
        return slice(start, start + int(self.lengths[i]))

    def pair_slice(self, i: int) -> slice:
        """Sample ``i``'s (query, key) pairs on the pair axis."""
        start = int(self.pair_starts[i])
        return slice(start, start + int(self.lengths[i]) ** 2)

    def tokens(self, i: int, var: str = "token_ln2") -> xr.DataArray:
        """A token-level variable's rows of sample ``i`` (e.g. ``token_ff``, or ``token_text``)."""
        return self._ds[var].isel(token=self.token_slice(i))

    def attention(self, i: int) -> xr.DataArray:
        """Sample ``i``'s attention maps, (layer, head, query, key)."""
        n = int(self.lengths[i])
        flat = self._ds["attention"].isel(pair=self.pair_slice(i))        # (pair, layer, head)
        values = np.asarray(flat.values).reshape(n, n, flat.sizes[LAYER], flat.sizes[HEAD]).transpose(2, 3, 0, 1)
        return xr.DataArray(values, dims=(LAYER, HEAD, "query", "key"),
                            coords={LAYER: flat[LAYER].values, HEAD: flat[HEAD].values})

    def spans(self, idx: slice) -> tuple[int, int, np.ndarray]:
        """A block of consecutive samples on the token axis: (t0, t1, each sample's offset from t0)."""
        starts = self.starts[idx]
        lengths = self.lengths[idx]
        if not len(starts):
            return 0, 0, starts
        t0 = int(starts[0])
        return t0, int(starts[-1] + lengths[-1]), starts - t0

    def pair_span(self, idx: slice) -> tuple[int, int]:
        """A block of consecutive samples on the pair axis: (p0, p1)."""
        starts = self.pair_starts[idx]
        lengths = self.lengths[idx]
        return (int(starts[0]), int(starts[-1] + lengths[-1] ** 2)) if len(starts) else (0, 0)

    def token_blocks(self, idx: slice, max_tokens: int = 8192):
        """Consecutive sample ranges within ``idx`` whose tokens fit in ``max_tokens``: (i0, i1, t0, t1)."""
        starts, lengths = self.starts, self.lengths
        i, stop = idx.start or 0, len(starts) if idx.stop is None else idx.stop
        while i < stop:
            j = i + 1
            while j < stop and starts[j] + lengths[j] - starts[i] <= max_tokens:
                j += 1
            yield i, j, int(starts[i]), int(starts[j - 1] + lengths[j - 1])
            i = j
