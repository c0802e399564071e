"""Named, composable interventions in the forward pass of a post-LN encoder, applied with hooks.

An intervention has a name in the site vocabulary, ``KIND:LAYER[.HEAD]`` (layers and heads 1-based):

============ ================================================================================================
``skip:l``   skip layer l: its output is its input (the identity)
``ffn:l``    remove the FFN of layer l: ``ff`` := 0, so ``ln2 = LN2(ln1)`` (residual and LN2 kept)
``attn:l``   remove the attention of layer l: ``attn`` := 0, so ``ln1 = LN1(x)`` (residual and LN1 kept)
``head:l.h`` disable head h of layer l: its attention becomes uniform over the sample's real (non-padding)
             tokens, a = 1/n, so its context vector is the mean of its value vectors (Kovaleva et al. 2019).
             This is not zeroing the head: the head still writes the average value into W_O. (The head's
             context vector is replaced; attention probabilities recorded elsewhere are the computed ones.)
``heads:l``  disable every head of layer l (uniform attention in all of them)
============ ================================================================================================

Several are composed with ``+`` (``skip:3+head:5.2``). ``none`` is the unmodified model. Hooks sit on the
model's own modules (the same ones :mod:`capture` reads), so no model code is edited.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

import torch

from bertology import BertologyError

from .capture import LAYER_HOOKS

#: the site an FFN or attention removal sets to zero
ZEROED_SITE = {"ffn": "ff", "attn": "attn"}
_NAME = re.compile(r"^(skip|ffn|attn|heads):(\d+)$|^head:(\d+)\.(\d+)$")


@dataclass(frozen=True, order=True)
class Intervention:
    """One elementary intervention: ``kind`` at ``layer`` (and ``head`` for ``head``), 1-based."""

    layer: int
    kind: str
    head: int = 0

    @property
    def name(self) -> str:
        return f"head:{self.layer}.{self.head}" if self.kind == "head" else f"{self.kind}:{self.layer}"

    def __str__(self) -> str:
        return self.name


def parse(spec: str) -> tuple[Intervention, ...]:
    """``"skip:3+head:5.2"`` → its elementary interventions; ``"none"`` → ()."""
    if spec.strip() in ("", "none"):
        return ()
    out = []
    for part in spec.split("+"):
        m = _NAME.match(part.strip())
        if not m:
            raise BertologyError(f"intervention {part!r}: expected one of skip:L, ffn:L, attn:L, head:L.H, heads:L "
                                 f"(layers and heads 1-based), joined with '+'")
        if m.group(1):
            out.append(Intervention(int(m.group(2)), m.group(1)))
        else:
            out.append(Intervention(int(m.group(3)), "head", int(m.group(4))))
    return tuple(sorted(out))


def name(interventions) -> str:
    return "+".join(i.name for i in interventions) or "none"


def check(interventions, n_layers: int, n_heads: int) -> None:
    for i in interventions:
        if not 1 <= i.layer <= n_layers:
            raise BertologyError(f"intervention {i}: the model has layers 1..{n_layers}")
        if i.kind == "head" and not 1 <= i.head <= n_heads:
            raise BertologyError(f"intervention {i}: the model has heads 1..{n_heads}")


def first_layer(interventions) -> int:
    """The lowest layer an intervention touches: layers below it compute exactly as in the plain model."""
    return min((i.layer for i in interventions), default=10 ** 9)


class Intervene:
    """Context manager that applies interventions to every forward pass of ``model`` while active.

    ``real`` is the (batch, seq) 0/1 mask of real tokens of the batch about to run; head disabling needs it
    (set it with :meth:`set_mask` before each forward pass, or pass ``attention_mask`` to the model and use
    :func:`run`, which does).
    """

    def __init__(self, model: torch.nn.Module, interventions):
        self.model = model
        self.interventions = tuple(interventions)
        self.handles: list = []
        self.real: torch.Tensor | None = None
        self._values: dict[int, torch.Tensor] = {}

    def set_mask(self, attention_mask: torch.Tensor) -> None:
        self.real = attention_mask

    def __enter__(self) -> "Intervene":
        layers = self.model.base_model.encoder.layer
        cfg = self.model.config
        check(self.interventions, len(layers), cfg.num_attention_heads)
        heads: dict[int, set[int]] = {}
        for i in self.interventions:
            layer = layers[i.layer - 1]
            if i.kind == "skip":
                self.handles.append(layer.register_forward_hook(_identity, with_kwargs=True))
            elif i.kind in ("ffn", "attn"):  # the site's output := 0 (ff or attn), at capture's own hook point
                path, _ = LAYER_HOOKS[ZEROED_SITE[i.kind]]
                self.handles.append(layer.get_submodule(path).register_forward_hook(_zero))
            elif i.kind == "head":
                heads.setdefault(i.layer - 1, set()).add(i.head - 1)
            elif i.kind == "heads":
                heads.setdefault(i.layer - 1, set()).update(range(cfg.num_attention_heads))
        for li, hs in heads.items():
            att = layers[li].attention.self
            self.handles.append(att.value.register_forward_hook(self._keep_values(li)))
            self.handles.append(att.register_forward_hook(self._uniform(li, sorted(hs), att.attention_head_size)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self._values.clear()

    def _keep_values(self, li: int):
        def hook(module, args, output):
            self._values[li] = output
        return hook

    def _uniform(self, li: int, heads: list[int], size: int):
        def hook(module, args, output):
            if self.real is None:
                raise RuntimeError("head disabling needs the batch's attention mask: call set_mask() first")
            context = output[0].clone()
            v = self._values.pop(li)                                     # (B, n, heads*size)
            m = self.real.to(v.dtype).unsqueeze(-1)                      # (B, n, 1)
            mean = (v * m).sum(1, keepdim=True) / m.sum(1, keepdim=True)  # (B, 1, heads*size)
            for h in heads:
                sl = slice(h * size, (h + 1) * size)
                context[:, :, sl] = mean[:, :, sl].expand(-1, context.shape[1], -1)
            return (context,) + tuple(output[1:])
        return hook


def _identity(module, args, kwargs, output):
    hidden = args[0] if args else kwargs["hidden_states"]
    return (hidden,) + tuple(output[1:]) if isinstance(output, tuple) else hidden


def _zero(module, args, output):
    return torch.zeros_like(output)


@contextlib.contextmanager
def intervened(model: torch.nn.Module, spec):
    """``with intervened(model, "skip:3") as iv:`` — ``spec`` a name or a tuple of :class:`Intervention`."""
    ivs = parse(spec) if isinstance(spec, str) else tuple(spec)
    with Intervene(model, ivs) as iv:
        yield iv
