"""``bertology extract``: one forward pass per sample that fills an activation store.

For every layer the store receives the [CLS] vector at every site (dense), the token states of the chosen
sites and layers (ragged, no padding), every head's attention probabilities (ragged), and the logits. The
samples of each window are run in length-sorted batches (dynamic padding), then written back in data order.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import bertology
from bertology import BertologyError
from bertology.store import schema as S
from bertology.store.location import Location, locate
from bertology.store.shards import shard_name, shard_windows, write_top
from bertology.store.writer import StorePlan, StoreWriter

from .batching import Encoded, check_max_length, collate, encode, length_batches
from .capture import ATTENTION, LAYER_HOOKS, Capture
from .models import LoadedModel, load_classifier, require_trained_head
from .pipeline import WindowPipeline
from .tasks import Split, load_split

DTYPES = {"float16": np.float16, "float32": np.float32}


@dataclass
class ExtractConfig:
    """What to capture and how. ``token_sites=()`` with ``attention=False`` is the cheap `cls`-only mode."""

    token_sites: tuple[str, ...] = S.TOKEN_SITES
    token_layers: tuple[int, ...] | None = None    # None: every layer
    attention: bool = True
    dtype: str = "float16"
    max_length: int = 128
    batch_size: int = 32
    window: int = 128
    seed: int = 0
    allow_untrained_head: bool = False             # accept a classifier head newly initialised at load
    overlap_writes: bool | None = None             # writer thread beside the forward passes (None: on a GPU)
    extra_meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.validate()

    def validate(self, n_layers: int | None = None) -> None:
        """Refuse a setting outside its valid set, naming it (at construction; the token layers again against
        the model's ``n_layers`` once it is loaded)."""
        bad = [s for s in self.token_sites if s not in S.TOKEN_SITES]
        if bad:
            raise BertologyError(f"unknown token site(s) {bad}; choose from {', '.join(S.TOKEN_SITES)}")
        if self.token_layers is not None and n_layers is not None:
            out = [l for l in self.token_layers if not 1 <= l <= n_layers]
            if out:
                raise BertologyError(f"token layer(s) {out} out of range; layers are numbered 1..{n_layers}")
        if self.dtype not in DTYPES:
            raise BertologyError(f"dtype must be one of {', '.join(DTYPES)}; got {self.dtype!r}")
        if self.window <= 0 or self.window % 64:
            raise BertologyError(f"window must be a positive multiple of 64; got {self.window}")
        if self.batch_size <= 0:
            raise BertologyError(f"--batch-size must be a positive number of sequences; got {self.batch_size}")


def plan_store(lm: LoadedModel, split: Split, enc: Encoded, cfg: ExtractConfig) -> StorePlan:
    """Everything about the store that is fixed before any forward pass, including its metadata."""
    config = lm.model.config
    L = config.num_hidden_layers
    token_layers = tuple(cfg.token_layers) if cfg.token_layers is not None else tuple(range(1, L + 1))
    token_sites = tuple(s for s in S.TOKEN_SITES if s in cfg.token_sites)  # canonical order
    flat_ids = [t for ids in enc.input_ids for t in ids]
    meta = {
        "format": S.FORMAT_NAME,
        "schema_version": S.SCHEMA_VERSION,
        "bertology_version": bertology.__version__,
        "software": {"torch": torch.__version__, "transformers": __import__("transformers").__version__,
                     "python": platform.python_version()},
        "model": lm.ref,
        "model_path": str(lm.path),
        "model_sha256": lm.sha256,
        "model_type": lm.model_type,
        "n_layers": L,
        "n_heads": config.num_attention_heads,
        "hidden": config.hidden_size,
        "ff_hidden": config.intermediate_size,
        "tokenizer": str(getattr(lm.tokenizer, "name_or_path", lm.path)),
        "max_length": cfg.max_length,
        "segment_policy": lm.segment_policy,
        "task": split.task.name,
        "split": split.split,
        "label_names": list(split.task.label_names),
        "metric": split.task.metric,
        "task_type": "regression" if split.task.is_regression else "classification",
        "data_file": split.source,
        "data_sha256": split.sha256,
        **({"data": split.task.record({split.split: split.source})} if hasattr(split.task, "record") else {}),
        "carve_out": split.carve_out,
        "n_samples": len(split),
        "dtype": cfg.dtype,
        "seed": cfg.seed,
        "sites": list(S.SITES),
        "token_sites": list(token_sites),
        "token_layers": list(token_layers) if token_sites else [],
        "attention": cfg.attention,
        "batch_size": cfg.batch_size,
        "window": cfg.window,
        "classifier_head": "trained" if lm.head_trained else "untrained",
        **cfg.extra_meta,
    }
    return StorePlan(
        meta=meta,
        sample_ids=np.array([e.sample_id for e in split.examples], dtype=np.int64),
        labels=enc.labels,
        text_a=[e.text_a for e in split.examples],
        text_b=[e.text_b or "" for e in split.examples],
        lengths=enc.lengths,
        token_ids=np.array(flat_ids, dtype=np.int64),
        token_text=lm.tokenizer.convert_ids_to_tokens(flat_ids),
        token_segment=np.array([t for ts in enc.token_type_ids for t in ts], dtype=np.int64),
        class_names=list(split.task.label_names),
        n_layers=L,
        n_heads=config.num_attention_heads,
        hidden=config.hidden_size,
        ff_hidden=config.intermediate_size,
        token_sites=token_sites,
        token_layers=token_layers,
        attention=cfg.attention,
        dtype=cfg.dtype,
        window=cfg.window,
    )


def _run_window(lm: LoadedModel, enc: Encoded, plan: StorePlan, w: int, cfg: ExtractConfig,
                device) -> dict[str, np.ndarray]:
    """Forward the samples of window ``w`` and lay their states out as the store's arrays."""
    sl = plan.window_slice(w)
    idx = np.arange(sl.start, sl.stop)
    n = len(idx)
    L, H, F, h = plan.n_layers, plan.hidden, plan.ff_hidden, plan.n_heads
    np_dtype = DTYPES[plan.dtype]
    tl = [l - 1 for l in plan.token_layers]
    out = {
        "cls": np.zeros((n, L, len(S.SITES), H), np_dtype),
        "cls_ff_act": np.zeros((n, L, F), np_dtype),
        "cls_embed": np.zeros((n, H), np_dtype),
        "logits": np.zeros((n, len(plan.class_names)), np.float32),
    }
    per_sample: dict[str, list] = {S.token_var(s): [None] * n for s in plan.token_sites}
    if plan.attention:
        per_sample["attention"] = [None] * n
    pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    use_types = (getattr(lm.model.config, "type_vocab_size", 0) or 0) >= 2
    sites = tuple(LAYER_HOOKS) + (S.EMBED,)
    cast = torch.float16 if plan.dtype == "float16" else torch.float32
    with Capture(lm.model, sites=sites, attention=plan.attention) as cap, torch.inference_mode():
        for batch_idx in length_batches(plan.lengths, idx, cfg.batch_size):
            cap.reset()
            batch = collate(enc, batch_idx, pad_id, use_types, device)
            logits = lm.model(**batch).logits
            # (L, B, N, W), cast on the device; a site stored only at [CLS] leaves the device at position 0 alone
            on_device = {s: torch.stack(cap.states[s])[:, :, : None if s in plan.token_sites else 1].to(cast)
                         for s in LAYER_HOOKS}
            on_device[S.EMBED] = cap.states[S.EMBED][:, : None if S.EMBED in plan.token_sites else 1].to(cast)
            if plan.attention:
                on_device[ATTENTION] = torch.stack(cap.states[ATTENTION]).to(cast)
            on_device["logits"] = logits.float()
            st = to_host(on_device)
            emb, att, logits = st.pop(S.EMBED), st.pop(ATTENTION, None), st.pop("logits")
            for r, i in enumerate(batch_idx):
                j = i - sl.start
                k = int(plan.lengths[i])
                out["logits"][j] = logits[r]
                out["cls"][j] = np.stack([st[s][:, r, 0] for s in S.SITES], axis=1)
                out["cls_ff_act"][j] = st[S.FF_ACT][:, r, 0]
                out["cls_embed"][j] = emb[r, 0]
                for s in plan.token_sites:
                    if s == S.EMBED:
                        per_sample[S.token_var(s)][j] = emb[r, :k]
                    else:
                        per_sample[S.token_var(s)][j] = st[s][tl, r, :k].transpose(1, 0, 2)
                if att is not None:
                    per_sample["attention"][j] = att[:, r, :, :k, :k].transpose(2, 3, 0, 1).reshape(k * k, L, h)
    lg = out["logits"].astype(np.float64)
    p = np.exp(lg - lg.max(axis=1, keepdims=True))
    out["probs"] = (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
    out["pred"] = (out["logits"][:, 0].astype(np.float64) if S.is_regression(plan.meta)   # the predicted score
                   else out["logits"].argmax(axis=1).astype(np.int64))
    for name, parts in per_sample.items():
        out[name] = np.concatenate(parts, axis=0)
    return out


def to_host(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Tensors as numpy arrays. From a GPU, every copy is queued at once into pinned host memory
    (asynchronous device-to-host transfers) and waited for once."""
    first = next(iter(tensors.values()))
    if first.device.type != "cuda":
        return {k: v.cpu().numpy() for k, v in tensors.items()}
    host = {k: torch.empty(v.shape, dtype=v.dtype, pin_memory=True) for k, v in tensors.items()}
    for k, v in tensors.items():
        host[k].copy_(v, non_blocking=True)
    torch.cuda.current_stream(first.device).synchronize()
    return {k: v.numpy() for k, v in host.items()}


def pick_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BertologyError(f"--device {device}: no CUDA device is available (torch {torch.__version__})")
    return torch.device(device)


def extract(
    model: str | LoadedModel,
    split: Split,
    out,
    cfg: ExtractConfig | None = None,
    *,
    overwrite: bool = False,
    device: str | None = None,
    progress: bool = True,
    on_window=None,
    shard: tuple[int, int] | None = None,
) -> "Path | Location":
    """Run ``model`` over ``split`` and write (or resume) the store at ``out`` (a path or URL); return
    its ``Path`` (on local disk) or its :class:`~bertology.store.location.Location` (a URL).

    ``on_window(w)`` is called after window ``w`` is committed (used by tests to simulate a crash).
    ``shard=(K, N)`` extracts only the K-th of N consecutive ranges of windows, into the store's sub-store
    for that shard (:mod:`bertology.store.shards`): N such calls, at once or not, fill one store.
    """
    cfg = cfg or ExtractConfig()
    dev = pick_device(device)
    lm = model if isinstance(model, LoadedModel) else load_classifier(
        model, label_names=split.task.label_names, seed=cfg.seed, device=dev,
        new_head=cfg.allow_untrained_head)   # a reference model (pre-trained) may head another task: replaced
    lm.model.to(dev)
    cfg.validate(lm.model.config.num_hidden_layers)
    require_trained_head(lm, cfg.allow_untrained_head, "Extract")
    check_max_length(lm.tokenizer, lm.model.config, cfg.max_length, split.task.is_pair)
    enc = encode(lm.tokenizer, split, cfg.max_length)
    plan = plan_store(lm, split, enc, cfg)
    target = out
    if shard is not None:
        split, target, samples = _shard(locate(out), split, plan, shard, overwrite)
        enc = encode(lm.tokenizer, split, cfg.max_length)
        plan = plan_store(lm, split, enc, cfg)
        plan.meta["shard"] = {"index": shard[0], "of": shard[1], "samples": samples}  # positions [lo, hi)
    writer = StoreWriter(target, plan, overwrite=overwrite)
    bar = tqdm(total=plan.n_samples, initial=min(writer.windows_done * plan.window, plan.n_samples),
               unit="seq", desc=f"extract {split.task.name}/{split.split}", disable=not progress)
    def committed(w):
        bar.update(plan.window_slice(w).stop - plan.window_slice(w).start)
        if on_window is not None:
            on_window(w)

    overlap = dev.type == "cuda" if cfg.overlap_writes is None else cfg.overlap_writes
    with WindowPipeline(writer, committed, threaded=overlap) as pipeline:   # w+1's forward while w is written
        for w in range(writer.windows_done, plan.n_windows):
            pipeline.put(w, _run_window(lm, enc, plan, w, cfg, dev))
    bar.close()
    writer.finish()
    where = locate(out)
    return where.local_path if where.local else where


def _shard(out: Location, split: Split, plan: StorePlan, shard: tuple[int, int], overwrite: bool):
    """The samples of one shard (whole windows) and its sub-store, after writing the store's top metadata."""
    k, n = shard
    windows = shard_windows(plan.n_windows, n, k)
    write_top(out, plan.meta, n, overwrite)
    lo, hi = windows.start * plan.window, min(windows.stop * plan.window, plan.n_samples)
    return replace(split, examples=split.examples[lo:hi]), out / shard_name(k, n), [lo, hi]


def extract_task(model: str, task: str, split: str, out, *, glue_dir=None, limit=None,
                 carve_train_from_dev=None, cfg: ExtractConfig | None = None, carve_seed: int | None = None, **kw):
    """Load a GLUE split and extract it (the CLI's entry point); a carve-out uses ``carve_seed`` (default: the
    extraction's seed)."""
    cfg = cfg or ExtractConfig()
    data = load_split(task, split, glue_dir, carve_train_from_dev=carve_train_from_dev,
                      carve_seed=cfg.seed if carve_seed is None else carve_seed, limit=limit)
    return extract(model, data, out, cfg, **kw)
