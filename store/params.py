"""A store's model parameters: the checkpoint the store records (``model_path``), verified by its checksum.

Analyses that need weights (norm-based attribution) read them here, never by loading the model: the store's
metadata names the checkpoint directory and the sha256 of its weight files, and :class:`ModelParameters`
refuses weights whose checksum differs. Parameters come back as numpy arrays in the papers' orientation
(``x @ W``), split per head where the attention uses them per head.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .reader import StoreError

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


def weights_sha256(path: str | Path) -> str:
    """One sha256 over every weight file of a checkpoint directory, in name order."""
    files = sorted({f for pat in WEIGHT_PATTERNS for f in Path(path).glob(pat)})
    if not files:
        raise StoreError(f"{path}: no weight files ({', '.join(WEIGHT_PATTERNS)})")
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class LayerParams:
    """One post-LN layer: attention value and output projections per head, LN1, the FFN, LN2.

    ``W_V`` (heads, d, d_head), ``b_V`` (heads, d_head), ``W_O`` (heads, d_head, d), ``b_O`` (d);
    ``W_1`` (d, d_ff), ``b_1`` (d_ff), ``W_2`` (d_ff, d), ``b_2`` (d); LayerNorm γ, β and ε.
    """

    W_V: np.ndarray
    b_V: np.ndarray
    W_O: np.ndarray
    b_O: np.ndarray
    ln1_gamma: np.ndarray
    ln1_beta: np.ndarray
    W_1: np.ndarray
    b_1: np.ndarray
    W_2: np.ndarray
    b_2: np.ndarray
    ln2_gamma: np.ndarray
    ln2_beta: np.ndarray
    eps: float
    activation: str


def _tensors(path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    st = sorted(path.glob("*.safetensors"))
    if st:
        from safetensors.numpy import load_file

        for f in st:
            out.update(load_file(str(f)))
        return out
    import torch  # a pytorch_model.bin checkpoint

    for f in sorted(path.glob("pytorch_model*.bin")):
        out.update({k: v.float().numpy() for k, v in torch.load(f, map_location="cpu", weights_only=True).items()})
    return out


class ModelParameters:
    """The verified parameters of the checkpoint a store was extracted with; ``layer(l)`` (1-based)."""

    def __init__(self, attrs: dict, checkpoint: str | Path | None = None):
        path = Path(checkpoint or attrs["model_path"])
        if not (path / "config.json").is_file():
            raise StoreError(f"{path}: the checkpoint this store was extracted with is not there (moved?); pass its "
                             f"directory explicitly (its weights must have sha256 {attrs['model_sha256'][:12]}…)")
        digest = weights_sha256(path)
        if digest != attrs["model_sha256"]:
            raise StoreError(f"{path}: weights sha256 {digest[:12]}… differ from the checkpoint the store was "
                             f"extracted with ({attrs['model_sha256'][:12]}…)")
        self.path, self.config = path, json.loads((path / "config.json").read_text())
        self.n_heads = int(self.config["num_attention_heads"])
        self._t = _tensors(path)

    def __getstate__(self):  # to dask workers: the encoder layers' parameters only (not the embeddings)
        state = dict(self.__dict__)
        state["_t"] = {k: v for k, v in self._t.items() if "encoder.layer." in k}
        return state

    def _get(self, layer: int, suffix: str, alt: str | None = None) -> np.ndarray:
        keys = [k for k in self._t if k.endswith(f"encoder.layer.{layer - 1}.{suffix}")
                or (alt and k.endswith(f"encoder.layer.{layer - 1}.{alt}"))]
        if len(keys) != 1:
            raise StoreError(f"{self.path}: expected one parameter '*encoder.layer.{layer - 1}.{suffix}', found {keys}")
        return np.asarray(self._t[keys[0]], dtype=np.float64)

    def layer(self, layer: int) -> LayerParams:
        g = lambda s, alt=None: self._get(layer, s, alt)  # noqa: E731
        W_V, b_V = g("attention.self.value.weight").T, g("attention.self.value.bias")      # (d, d), (d,)
        W_O = g("attention.output.dense.weight").T                                         # (d, d)
        d, h = W_V.shape[0], self.n_heads
        dh = W_V.shape[1] // h
        return LayerParams(
            W_V=W_V.reshape(d, h, dh).transpose(1, 0, 2), b_V=b_V.reshape(h, dh),
            W_O=W_O.reshape(h, dh, d), b_O=g("attention.output.dense.bias"),
            ln1_gamma=g("attention.output.LayerNorm.weight", "attention.output.LayerNorm.gamma"),
            ln1_beta=g("attention.output.LayerNorm.bias", "attention.output.LayerNorm.beta"),
            W_1=g("intermediate.dense.weight").T, b_1=g("intermediate.dense.bias"),
            W_2=g("output.dense.weight").T, b_2=g("output.dense.bias"),
            ln2_gamma=g("output.LayerNorm.weight", "output.LayerNorm.gamma"),
            ln2_beta=g("output.LayerNorm.bias", "output.LayerNorm.beta"),
            eps=float(self.config.get("layer_norm_eps", 1e-12)), activation=str(self.config.get("hidden_act", "gelu")))
