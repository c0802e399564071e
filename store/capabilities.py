"""What one store holds, as one record the analyses ask their questions of.

A store may be a full capture, ``--cls-only``, ``--attention-only``, or hold token states for some sites
or layers only (``--token-sites``, ``--token-layers``). :func:`capabilities` reads that once from the
store's variables and coordinates; each analysis of :mod:`bertology.analysis.registry` states what it
needs as a predicate over this record, so what a store supports is decided in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from .schema import EMBED, SITES, TOKEN_SITES, is_regression, token_var

#: The sites of a post-LN layer that a layer's whole decomposition (norm-based attribution) reads per token.
ATTRIBUTION_SITES = (EMBED,) + SITES


@dataclass(frozen=True)
class Capabilities:
    """``layers``: the model's layers; ``token_layers`` and ``token_sites``: where token states are stored;
    ``attention``: whether attention maps are; ``class_counts``: samples per class; ``pairs``: whether the
    samples are text pairs (a second text, segment 1)."""

    samples: int
    class_counts: tuple[int, ...]
    layers: tuple[int, ...]
    token_layers: tuple[int, ...]
    token_sites: frozenset[str]
    attention: bool
    pairs: bool = False
    regression: bool = False        # a regression task (one output, scores for labels): no classes
    @property
    def tokens(self) -> bool:
        """Any token-level state at all (not ``--cls-only`` or ``--attention-only``)."""
        return bool(self.token_sites)

    def missing_tokens(self, *sites: str, every_layer: bool = False) -> str | None:
        """Why the store lacks token states of every site in ``sites`` (at every layer of the model, with
        ``every_layer``), as the fix a user applies; None when it has them."""
        missing = [s for s in sites if s not in self.token_sites]
        if missing:
            return (f"the store holds no token states at {', '.join(missing)} (re-extract without --cls-only, "
                    f"--attention-only or a --token-sites list that leaves them out)")
        if every_layer and set(self.token_layers) != set(self.layers):
            return (f"token states at every layer (the store has layer(s) "
                    f"{', '.join(map(str, self.token_layers))} of {len(self.layers)}): re-extract without "
                    f"--token-layers")
        return None

    def missing_attention(self) -> str | None:
        """Why the store has no attention maps, as the fix (None when it has them)."""
        return None if self.attention else ("the store holds no attention maps: re-extract without --no-attention "
                                            "or --cls-only")

    def missing_full_capture(self) -> str | None:
        """Why the store is not a full capture (attention and every site's token states at every layer: what a
        layer's whole decomposition reads), as the fix; None when it is one."""
        if not self.attention:
            return f"a full capture: {self.missing_attention()}"
        why = self.missing_tokens(*ATTRIBUTION_SITES, every_layer=True)
        return None if why is None else why if why.startswith("token states") else f"a full capture: {why}"

    @classmethod
    def full_capture(cls, n_layers: int = 1, pairs: bool = False) -> "Capabilities":
        """What ``extract`` stores by default (every site at every layer, and attention): the workflow's
        dev stores, whose tables the workflow declares before any store exists."""
        layers = tuple(range(1, n_layers + 1))
        return cls(samples=0, class_counts=(), layers=layers, token_layers=layers,
                   token_sites=frozenset(TOKEN_SITES), attention=True, pairs=pairs)


def capabilities(ds: xr.Dataset) -> Capabilities:
    """The :class:`Capabilities` of an open store."""
    sites = frozenset(s for s in TOKEN_SITES if token_var(s) in ds)
    token_layers = tuple(int(l) for l in ds["token_layer"].values) if "token_layer" in ds.coords else ()
    regression = is_regression(ds.attrs)
    labels = np.asarray(ds["label"].values, dtype=np.int64) if not regression else np.zeros(0, int)
    counts = np.bincount(labels, minlength=ds.sizes.get("class", 0)) if len(labels) else np.zeros(0, int)
    return Capabilities(samples=int(ds.sizes["sample"]), class_counts=tuple(int(c) for c in counts),
                        regression=regression,
                        layers=tuple(int(l) for l in ds["layer"].values), token_layers=token_layers,
                        token_sites=sites, attention="attention" in ds,
                        pairs="text_b" in ds and bool(np.any(ds["text_b"].values != "")))



