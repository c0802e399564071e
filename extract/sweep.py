"""``bertology intervene``: a dev store's samples under every intervention of a sweep, by partial forwards.

For each intervention (``none``; ``skip:l``, ``ffn:l``, ``attn:l``, ``heads:l`` for every layer; ``head:l.h``
for every head) the logits of every dev sample come from a partial forward that starts at the intervention's
layer from the stored token states (:mod:`partial`), not from the tokens. For the layer-skip compensation
classifier it also records the final [CLS] of each layer-skipped model on the dev samples and on a
train subset, and the measured encoder wall time and FLOPs of each skipped model on dev.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from bertology import BertologyError, __version__
from bertology.store import open_store
from bertology.store.sweep import write_sweep

from .batching import collate, encode, length_batches
from .extraction import pick_device
from .interventions import Intervene, Intervention, first_layer
from .models import load_classifier
from .partial import LayerInputs, forward_from
from .tasks import load_split

FAMILIES = ("skip", "ffn", "attn", "heads", "head")


def plan(n_layers: int, n_heads: int, families=FAMILIES) -> list[tuple[Intervention, ...]]:
    """The sweep's interventions, ``()`` (none) first, then by family and layer."""
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise BertologyError(f"unknown intervention families {sorted(unknown)}; choose from {', '.join(FAMILIES)}")
    out: list[tuple[Intervention, ...]] = [()]
    for kind in FAMILIES:
        if kind not in families:
            continue
        for layer in range(1, n_layers + 1):
            if kind == "head":
                out += [(Intervention(layer, "head", h),) for h in range(1, n_heads + 1)]
            else:
                out.append((Intervention(layer, kind),))
    return out


def layer_flops(n: np.ndarray, hidden: int, ff: int) -> np.ndarray:
    """Multiply-adds × 2 of one post-LN layer on sequences of ``n`` tokens: Q, K, V and W_O projections
    (4nH²), attention scores and the weighted sum (2n²H), the FFN (2nHF)."""
    n = np.asarray(n, dtype=np.float64)
    return 2.0 * (4 * n * hidden ** 2 + 2 * n ** 2 * hidden + 2 * n * hidden * ff)


@torch.no_grad()
def _train_cls(lm, enc, skip: int, batch_size: int, dev) -> np.ndarray:
    """Final-layer [CLS] of the model with layer ``skip`` skipped (0: none), on tokenised train samples."""
    out = np.zeros((len(enc), lm.model.config.hidden_size), dtype=np.float32)
    use_types = lm.model.config.type_vocab_size >= 2
    ivs = (Intervention(skip, "skip"),) if skip else ()
    for b in length_batches(enc.lengths, np.arange(len(enc)), batch_size):
        batch = collate(enc, b, lm.tokenizer.pad_token_id, use_types, dev)
        with Intervene(lm.model, ivs):
            h = lm.model(**batch, output_hidden_states=True).hidden_states[-1]
        out[b] = h[:, 0].float().cpu().numpy()
    return out


def sweep(model: str, store: str | Path, out: str | Path, *, families=FAMILIES, glue_dir=None,
          carve_train_from_dev: float | None = None, train_limit: int | None = 2000, batch_size: int = 64,
          seed: int = 0, device: str | None = None, progress: bool = True) -> Path:
    """Run the sweep for the dev ``store`` with checkpoint ``model`` (the one the store was extracted with)
    and write it to ``out`` (see :mod:`bertology.store.sweep`)."""
    ds = open_store(store)
    dev = pick_device(device)
    lm = load_classifier(model, label_names=tuple(ds.attrs["label_names"]), device=dev)
    if lm.sha256 != ds.attrs["model_sha256"]:
        raise BertologyError(f"{model}: weights sha256 {lm.sha256[:12]}… differ from the checkpoint {store} was "
                             f"extracted with ({ds.attrs['model_sha256'][:12]}…); sweep with that checkpoint")
    cfg = lm.model.config
    n_layers, n_heads = cfg.num_hidden_layers, cfg.num_attention_heads
    specs = plan(n_layers, n_heads, families)
    n, n_cls = ds.sizes["sample"], ds.sizes["class"]
    inputs = LayerInputs(ds)
    lengths = ds["length"].values.astype(np.int64)
    batches = length_batches(lengths, np.arange(n), batch_size)
    logits = np.zeros((len(specs), n, n_cls), dtype=np.float32)
    cls_final = np.zeros((n_layers + 1, n, cfg.hidden_size), dtype=np.float32)
    order = sorted(range(len(specs)), key=lambda k: (min(first_layer(specs[k]), 1 if not specs[k] else 10 ** 9), k))
    bar = tqdm(total=len(specs), desc=f"intervene {ds.attrs['task']}", unit="intervention", disable=not progress)
    for k in order:
        ivs = specs[k]
        start = first_layer(ivs) if ivs else 1
        for b in batches:
            h, m = inputs.batch(start, b, dev)
            lg, cls = forward_from(lm.model, h, m, start, ivs)
            logits[k, b] = lg.float().cpu().numpy()
            if not ivs or ivs[0].kind == "skip":
                cls_final[ivs[0].layer if ivs else 0, b] = cls.float().cpu().numpy()
        bar.update()
    bar.close()
    # wall time and FLOPs of the encoder on dev with each layer skipped (0: none), from the embeddings on
    wall = np.zeros(n_layers + 1)
    for skip in range(n_layers + 1):
        ivs = (Intervention(skip, "skip"),) if skip else ()
        t0 = time.perf_counter()
        for b in batches:
            h, m = inputs.batch(1, b, dev)
            forward_from(lm.model, h, m, 1, ivs)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        wall[skip] = time.perf_counter() - t0
    per_layer = layer_flops(lengths, cfg.hidden_size, cfg.intermediate_size).sum()
    head = n * 2.0 * (cfg.hidden_size ** 2 + cfg.hidden_size * n_cls)
    flops = np.array([n_layers * per_layer + head - (per_layer if s else 0.0) for s in range(n_layers + 1)])
    # the compensation classifier's train features: a train subset through each layer-skipped model
    train = load_split(ds.attrs["task"], "train", glue_dir, carve_train_from_dev=carve_train_from_dev,
                       carve_seed=seed, limit=train_limit)
    enc = encode(lm.tokenizer, train, int(ds.attrs["max_length"]))
    train_cls = np.stack([_train_cls(lm, enc, s, batch_size, dev) for s in tqdm(
        range(n_layers + 1), desc=f"skip features {ds.attrs['task']}/train", disable=not progress)])
    names = ["+".join(i.name for i in s) or "none" for s in specs]
    result = xr.Dataset(
        {
            "logits": (("intervention", "sample", "class"), logits),
            "pred": (("intervention", "sample"), logits.argmax(-1).astype(np.int64)),
            "label": (("sample",), ds["label"].values.astype(np.int64)),
            "cls_final": (("skip", "sample", "hidden"), cls_final),
            "train_cls_final": (("skip", "train_sample", "hidden"), train_cls),
            "train_label": (("train_sample",), train.labels.astype(np.int64)),
            "wall_seconds": (("skip",), wall),
            "flops": (("skip",), flops),
        },
        coords={
            "intervention": np.array(names, dtype=object),
            "kind": ("intervention", np.array([s[0].kind if s else "none" for s in specs], dtype=object)),
            "layer": ("intervention", np.array([s[0].layer if s else 0 for s in specs], dtype=np.int64)),
            "head": ("intervention", np.array([s[0].head if s else 0 for s in specs], dtype=np.int64)),
            "sample": ds["sample"].values, "skip": np.arange(n_layers + 1),
        },
        attrs={
            "task": ds.attrs["task"], "model": str(model), "model_sha256": lm.sha256, "store": str(Path(store).resolve()),
            "n_layers": n_layers, "n_heads": n_heads, "label_names": list(ds.attrs["label_names"]),
            "families": list(families), "train_file": train.source, "train_sha256": train.sha256,
            "train_carve_out": train.carve_out or {}, "train_n": len(train), "seed": seed,
            "device": str(dev), "bertology_version": __version__,
        },
    )
    return write_sweep(result, out)
