"""``bertology intervene``: a dev store's samples under every intervention of a sweep, by partial forwards.

For each intervention (``none``; ``skip:l``, ``ffn:l``, ``attn:l``, ``heads:l`` for every layer; ``head:l.h``
for every head) the logits of every dev sample come from a partial forward that starts at the intervention's
layer from the stored token states (:mod:`partial`), not from the tokens. For the layer-skip compensation
classifier it also records the final [CLS] of each layer-skipped model on the dev samples and on a
train subset, and the measured encoder wall time and FLOPs of each skipped model on dev.

``skip_layers`` restricts the layer skips (and their compensation features) to chosen layers, e.g. the
a-priori candidates from separability; the other families always cover every layer.
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
from bertology.store import overwrite as replace
from bertology.store import schema as S
from bertology.store.location import locate
from bertology.store.sweep import write_sweep

from .batching import collate, encode, length_batches
from .extraction import pick_device
from .interventions import Intervention, first_layer
from .models import load_classifier, require_trained_head
from .partial import LayerInputs, forward_from
from .tasks import load_split

FAMILIES = ("skip", "ffn", "attn", "heads", "head")


def plan(n_layers: int, n_heads: int, families=FAMILIES, skip_layers=None) -> list[tuple[Intervention, ...]]:
    """The sweep's interventions, ``()`` (none) first, then by family and layer (``skip_layers``: only these
    layers are skipped; default every layer)."""
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise BertologyError(f"unknown intervention families {sorted(unknown)}; choose from {', '.join(FAMILIES)}")
    skips = _skip_layers(n_layers, skip_layers)
    out: list[tuple[Intervention, ...]] = [()]
    for kind in FAMILIES:
        if kind not in families:
            continue
        for layer in range(1, n_layers + 1):
            if kind == "skip" and layer not in skips:
                continue
            if kind == "head":
                out += [(Intervention(layer, "head", h),) for h in range(1, n_heads + 1)]
            else:
                out.append((Intervention(layer, kind),))
    return out


def _skip_layers(n_layers: int, skip_layers=None) -> list[int]:
    if skip_layers is None:
        return list(range(1, n_layers + 1))
    layers = sorted({int(x) for x in skip_layers})
    bad = [x for x in layers if not 1 <= x <= n_layers]
    if bad:
        raise BertologyError(f"skip layers {bad} are outside this model's layers 1..{n_layers}")
    return layers


def layer_flops(n: np.ndarray, hidden: int, ff: int) -> np.ndarray:
    """Multiply-adds × 2 of one post-LN layer on sequences of ``n`` tokens: Q, K, V and W_O projections
    (4nH²), attention scores and the weighted sum (2n²H), the FFN (2nHF)."""
    n = np.asarray(n, dtype=np.float64)
    return 2.0 * (4 * n * hidden ** 2 + 2 * n ** 2 * hidden + 2 * n * hidden * ff)


@torch.no_grad()
def skip_features(lm, enc, skips: list[int], batch_size: int, dev, progress: bool = False,
                  desc: str = "skip features") -> np.ndarray:
    """Final-layer [CLS] of the unmodified model (row 0) and of the model with layer ``skips[k]`` skipped
    (row k + 1), on tokenised samples. One plain forward per batch gives every layer's output; skipping
    layer l then reruns only layers l+1…L from the output of layer l−1."""
    out = np.zeros((len(skips) + 1, len(enc), lm.model.config.hidden_size), dtype=np.float32)
    use_types = lm.model.config.type_vocab_size >= 2
    batches = length_batches(enc.lengths, np.arange(len(enc)), batch_size)
    for b in tqdm(batches, desc=desc, unit="batch", disable=not progress):
        batch = collate(enc, b, lm.tokenizer.pad_token_id, use_types, dev)
        hs = lm.model(**batch, output_hidden_states=True).hidden_states
        out[0, b] = hs[-1][:, 0].float().cpu().numpy()
        for k, layer in enumerate(skips, start=1):
            _, cls = forward_from(lm.model, hs[layer - 1], batch["attention_mask"], layer,
                                  (Intervention(layer, "skip"),))
            out[k, b] = cls.float().cpu().numpy()
    return out


def sweep(model: str, store: str | Path, out: str | Path, *, families=FAMILIES, glue_dir=None, data=None,
          carve_train_from_dev: float | None = None, train_limit: int | None = 2000, batch_size: int = 64,
          seed: int = 0, carve_seed: int | None = None, device: str | None = None, progress: bool = True,
          skip_layers=None, allow_untrained_head: bool = False) -> Path:
    """Run the sweep for the dev ``store`` with checkpoint ``model`` (the one the store was extracted with)
    and write it to ``out`` (see :mod:`bertology.store.sweep`)."""
    for name, value in (("--batch-size", batch_size), ("--train-limit", train_limit if train_limit is not None else 1)):
        if value <= 0:
            raise BertologyError(f"{name} must be positive; got {value}")
    ds = open_store(store)
    replace.check(out, "sweep", flag="intervene --out")
    dev = pick_device(device)
    lm = load_classifier(model, label_names=tuple(ds.attrs["label_names"]), device=dev)
    require_trained_head(lm, allow_untrained_head, "Sweep")
    if lm.sha256 != ds.attrs["model_sha256"]:
        raise BertologyError(f"{model}: weights sha256 {lm.sha256[:12]}… differ from the checkpoint {store} was "
                             f"extracted with ({ds.attrs['model_sha256'][:12]}…); sweep with that checkpoint")
    cfg = lm.model.config
    n_layers, n_heads = cfg.num_hidden_layers, cfg.num_attention_heads
    skips = _skip_layers(n_layers, skip_layers) if "skip" in families else []
    specs = plan(n_layers, n_heads, families, skips)
    n, n_cls = ds.sizes["sample"], ds.sizes["class"]
    inputs = LayerInputs(ds)
    lengths = ds["length"].values.astype(np.int64)
    batches = length_batches(lengths, np.arange(n), batch_size)
    logits = np.zeros((len(specs), n, n_cls), dtype=np.float32)
    skip_axis = [0] + skips                                   # 0: nothing skipped (the classifier's control)
    cls_final = np.zeros((len(skip_axis), n, cfg.hidden_size), dtype=np.float32)
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
                cls_final[skip_axis.index(ivs[0].layer if ivs else 0), b] = cls.float().cpu().numpy()
        bar.update()
    bar.close()
    # wall time and FLOPs of the encoder on dev with each layer skipped (0: none), from the embeddings on
    wall = np.zeros(len(skip_axis))
    for k, skip in enumerate(skip_axis):
        ivs = (Intervention(skip, "skip"),) if skip else ()
        t0 = time.perf_counter()
        for b in batches:
            h, m = inputs.batch(1, b, dev)
            forward_from(lm.model, h, m, 1, ivs)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        wall[k] = time.perf_counter() - t0
    per_layer = layer_flops(lengths, cfg.hidden_size, cfg.intermediate_size).sum()
    head = n * 2.0 * (cfg.hidden_size ** 2 + cfg.hidden_size * n_cls)
    flops = np.array([n_layers * per_layer + head - (per_layer if s else 0.0) for s in skip_axis])
    # the compensation classifier's train features: a train subset through each layer-skipped model
    if carve_seed is None:   # the dev store's own carve-out, so the train part never overlaps its samples
        carve_seed = int((ds.attrs.get("carve_out") or {}).get("seed", seed))
    task = ds.attrs["task"]
    if ds.attrs.get("data"):   # the user's own data: the store's columns and classes, read from --data or where recorded
        from .user_data import UserTask

        task = UserTask.from_record(ds.attrs["data"], data)
    train = load_split(task, "train", glue_dir, carve_train_from_dev=carve_train_from_dev,
                       carve_seed=carve_seed, limit=train_limit)
    enc = encode(lm.tokenizer, train, int(ds.attrs["max_length"]))
    train_cls = skip_features(lm, enc, skips, batch_size, dev, progress, f"skip features {ds.attrs['task']}/train")
    names = ["+".join(i.name for i in s) or "none" for s in specs]
    regression = S.is_regression(ds.attrs)
    pred = logits[..., 0].astype(np.float64) if regression else logits.argmax(-1).astype(np.int64)
    label_type = np.float64 if regression else np.int64
    result = xr.Dataset(
        {
            "logits": (("intervention", "sample", "class"), logits),
            "pred": (("intervention", "sample"), pred),
            "label": (("sample",), ds["label"].values.astype(label_type)),
            "cls_final": (("skip", "sample", "hidden"), cls_final),
            "train_cls_final": (("skip", "train_sample", "hidden"), train_cls),
            "train_label": (("train_sample",), train.labels.astype(label_type)),
            "wall_seconds": (("skip",), wall),
            "flops": (("skip",), flops),
        },
        coords={
            "intervention": np.array(names, dtype=object),
            "kind": ("intervention", np.array([s[0].kind if s else "none" for s in specs], dtype=object)),
            "layer": ("intervention", np.array([s[0].layer if s else 0 for s in specs], dtype=np.int64)),
            "head": ("intervention", np.array([s[0].head if s else 0 for s in specs], dtype=np.int64)),
            "sample": ds["sample"].values, "skip": np.array(skip_axis, dtype=np.int64),
        },
        attrs={
            "task": ds.attrs["task"], "task_type": ds.attrs.get("task_type", "classification"), "model": str(model), "model_sha256": lm.sha256, "store": locate(store).resolved(),
            "n_layers": n_layers, "n_heads": n_heads, "label_names": list(ds.attrs["label_names"]),
            "families": list(families), "skip_layers": skips, "train_file": train.source, "train_sha256": train.sha256,
            "train_carve_out": train.carve_out or {}, "train_n": len(train), "seed": seed,
            "device": str(dev), "bertology_version": __version__,
            "classifier_head": "trained" if lm.head_trained else "untrained",
        },
    )
    return write_sweep(result, out)
