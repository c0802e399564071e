"""Partial forward passes: run layers l…L (and the classification head) from stored token states.

An intervention at layer l leaves layers 1…l−1 unchanged, so their output need not be recomputed: the
token states entering layer l are in the store (``embed`` for layer 1, ``ln2`` of layer l−1 otherwise).
Starting there gives the same logits as a full forward pass with the same intervention, up to the store's
precision (exact to float32 rounding for a float32 store; tested in ``tests/test_interventions.py``).
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from bertology import BertologyError
from bertology.store.schema import EMBED, token_var

from .interventions import Intervene


def classify(model: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The classification head on the last layer's output: BERT's pooler + linear, RoBERTa's and ELECTRA's
    [CLS] head."""
    if model.config.model_type == "bert":
        return model.classifier(model.dropout(model.base_model.pooler(hidden)))
    return model.classifier(hidden)


def bidirectional_mask(model: torch.nn.Module, hidden: torch.Tensor, mask: torch.Tensor):
    """The layer-level attention mask the model itself builds from a (batch, seq) 0/1 mask."""
    from transformers.masking_utils import create_bidirectional_mask

    return create_bidirectional_mask(config=model.config, inputs_embeds=hidden, attention_mask=mask)


@torch.no_grad()
def forward_from(model: torch.nn.Module, hidden: torch.Tensor, mask: torch.Tensor, start: int,
                 interventions=()) -> tuple[torch.Tensor, torch.Tensor]:
    """Run layers ``start``…L on ``hidden`` (the states entering layer ``start``, (B, n, H), padded with
    ``mask``) under ``interventions``; return (logits, the last layer's [CLS] ``ln2``)."""
    layers = model.base_model.encoder.layer
    if any(i.layer < start for i in interventions):
        raise BertologyError(f"an intervention below layer {start} cannot run from layer {start}'s stored input")
    skipped = {i.layer for i in interventions if i.kind == "skip"}   # not computed at all: skipping saves time
    m4 = bidirectional_mask(model, hidden, mask)
    with Intervene(model, [i for i in interventions if i.kind != "skip"]) as iv:
        iv.set_mask(mask)
        h = hidden
        for number, layer in enumerate(layers[start - 1:], start=start):
            if number in skipped:
                continue
            out = layer(h, m4)
            h = out[0] if isinstance(out, tuple) else out
        return classify(model, h), h[:, 0]


class LayerInputs:
    """The stored token states entering each layer, read once per layer and cut into padded batches."""

    def __init__(self, ds: xr.Dataset):
        self.ds = ds
        self.starts = ds.bertology.starts
        self.lengths = ds.bertology.lengths
        self._layer: int | None = None
        self._rows: np.ndarray | None = None

    def available(self, layer: int) -> bool:
        if layer == 1:
            return token_var(EMBED) in self.ds
        return "token_ln2" in self.ds and (layer - 1) in set(self.ds["token_layer"].values.tolist())

    def rows(self, layer: int) -> np.ndarray:
        """(tokens, hidden) float32: every token's state entering ``layer``."""
        if self._layer != layer:
            if not self.available(layer):
                raise BertologyError(f"the store has no token states entering layer {layer} (token_ln2 at layer "
                                     f"{layer - 1}, or token_embed for layer 1); extract with all token layers")
            var = self.ds[token_var(EMBED)] if layer == 1 else self.ds["token_ln2"].sel(token_layer=layer - 1)
            self._rows, self._layer = np.asarray(var.values, dtype=np.float32), layer
        return self._rows

    def batch(self, layer: int, idx: np.ndarray, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.rows(layer)
        n = int(self.lengths[idx].max())
        hidden = np.zeros((len(idx), n, rows.shape[1]), dtype=np.float32)
        mask = np.zeros((len(idx), n), dtype=np.int64)
        for r, i in enumerate(idx):
            k = self.lengths[i]
            hidden[r, :k] = rows[self.starts[i]:self.starts[i] + k]
            mask[r, :k] = 1
        return torch.from_numpy(hidden).to(device), torch.from_numpy(mask).to(device)
