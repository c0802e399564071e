"""Capturing every sub-block state of a post-LN encoder with forward hooks on the model's own modules.

The layer is not re-implemented: each site is read where the model computes it.

======== ===========================================================================
site     hook
======== ===========================================================================
embed    input of layer 1 (the embeddings' output, projected where ELECTRA does)
attn     output of ``attention.output.dense`` (W_O x + b_O, before dropout/residual)
res1     input of ``attention.output.LayerNorm``
ln1      output of ``attention.output.LayerNorm``
ff_act   output of ``intermediate`` (dense + activation)
ff       output of ``output.dense`` (before dropout/residual)
res2     input of ``output.LayerNorm``
ln2      output of ``output.LayerNorm``
(attn.)  second output of ``attention.self`` under eager attention: the probabilities
======== ===========================================================================

In eval mode dropout is the identity, so ``res1 = x + attn`` and ``res2 = ln1 + ff`` hold exactly.
"""

from __future__ import annotations

import torch

from bertology.store.schema import EMBED, FF_ACT

# site -> (module path inside a layer, "in" for the module's input or "out" for its output)
LAYER_HOOKS: dict[str, tuple[str, str]] = {
    "attn": ("attention.output.dense", "out"),
    "res1": ("attention.output.LayerNorm", "in"),
    "ln1": ("attention.output.LayerNorm", "out"),
    FF_ACT: ("intermediate", "out"),
    "ff": ("output.dense", "out"),
    "res2": ("output.LayerNorm", "in"),
    "ln2": ("output.LayerNorm", "out"),
}
ATTENTION = "attention"


class Capture:
    """Context manager that records sites during forward passes of a BERT-family model.

    After a forward pass, ``self.states[site]`` is a list over layers (layer 1 first) of (batch, seq, width)
    tensors, ``self.states["embed"]`` a (batch, seq, hidden) tensor, and ``self.states["attention"]`` a list
    over layers of (batch, heads, seq, seq) probabilities. Attention needs ``attn_implementation="eager"``.
    """

    def __init__(self, model: torch.nn.Module, sites=tuple(LAYER_HOOKS) + (EMBED,), attention: bool = True):
        self.model = model
        self.sites = tuple(sites)
        self.attention = attention
        self.handles: list = []
        self.states: dict = {}

    def __enter__(self) -> "Capture":
        base = self.model.base_model
        layers = base.encoder.layer
        if self.attention and getattr(self.model.config, "_attn_implementation", "eager") != "eager":
            raise RuntimeError("attention capture needs the model loaded with attn_implementation='eager'")
        self.reset()
        if EMBED in self.sites:  # the input of layer 1 (after ELECTRA's embeddings_project, where present)
            self.handles.append(layers[0].register_forward_pre_hook(self._store(EMBED, None, "in")))
        for i, layer in enumerate(layers):
            for site in self.sites:
                if site == EMBED:
                    continue
                path, where = LAYER_HOOKS[site]
                module = layer.get_submodule(path)
                if where == "in":
                    self.handles.append(module.register_forward_pre_hook(self._store(site, i, where)))
                else:
                    self.handles.append(module.register_forward_hook(self._store(site, i, where)))
            if self.attention:
                self.handles.append(layer.attention.self.register_forward_hook(self._store(ATTENTION, i, "attn")))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def reset(self) -> None:
        n = len(self.model.base_model.encoder.layer)
        self.states = {s: (None if s == EMBED else [None] * n) for s in self.sites}
        if self.attention:
            self.states[ATTENTION] = [None] * n

    def _store(self, site: str, layer: int | None, where: str):
        def pre_hook(module, args):
            self._put(site, layer, args[0])

        def hook(module, args, output):
            if where == "attn":
                probs = output[1]
                if probs is None:
                    raise RuntimeError("attention probabilities not returned; load with attn_implementation='eager'")
                self._put(site, layer, probs)
            else:
                self._put(site, layer, output[0] if isinstance(output, tuple) else output)

        return pre_hook if where == "in" else hook

    def _put(self, site, layer, value):
        value = value.detach()
        if layer is None:
            self.states[site] = value
        else:
            self.states[site][layer] = value
