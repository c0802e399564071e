"""Writing an activation store: laid out once, filled window by window, complete only after its last write.

A store is planned in full before any model runs: tokenization fixes every sample's length, hence the
offsets of the ragged token and attention axes, so every array is created at its final shape. Samples are
then written in *windows* of consecutive samples; after each window the group attribute
``bertology_progress`` records how many windows are done. An interrupted run resumes at the next window and
rewrites exactly what a clean run would have written (on disk zarr's LocalStore replaces chunk files
atomically; on an object store every chunk is one PUT, which is atomic too, so a crash never leaves a torn
chunk), so the finished store is byte-identical to an uninterrupted one. The store becomes readable
(``complete: true``) only after its last write: one write of the group's metadata, which needs no rename.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from bertology import BertologyError

from . import schema as S
from . import overwrite as replace
from .integrity import ARRAY_CONFIG, CODECS
from .location import Location, locate


@dataclass
class StorePlan:
    """Everything a store will hold that is known before the forward passes."""

    meta: dict                     # recorded as the group attribute `bertology`; also the resume fingerprint
    sample_ids: np.ndarray         # (n,) data-row ids: the `sample` coordinate
    labels: np.ndarray             # (n,)
    text_a: list[str]
    text_b: list[str]
    lengths: np.ndarray            # (n,) tokens per sample, no padding
    token_ids: np.ndarray          # (total_tokens,)
    token_text: list[str]
    token_segment: np.ndarray      # (total_tokens,)
    class_names: list[str]
    n_layers: int
    n_heads: int
    hidden: int
    ff_hidden: int
    token_sites: tuple[str, ...]   # which sites are stored per token (may be empty)
    token_layers: tuple[int, ...]  # which layers (1-based) are stored per token
    attention: bool                # store attention maps
    dtype: str = "float16"
    window: int = 128              # samples per committed window
    sample_chunk: int = 64
    token_chunk: int = 4096
    pair_chunk: int = 16384

    @property
    def n_samples(self) -> int:
        return len(self.sample_ids)

    @property
    def token_start(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    @property
    def pair_start(self) -> np.ndarray:
        sq = self.lengths.astype(np.int64) ** 2
        return np.concatenate([[0], np.cumsum(sq)[:-1]]).astype(np.int64)

    @property
    def n_windows(self) -> int:
        return -(-self.n_samples // self.window)

    def window_slice(self, w: int) -> slice:
        return slice(w * self.window, min((w + 1) * self.window, self.n_samples))


def _canonical(meta: dict) -> dict:
    """Meta as it reads back from JSON (tuples become lists), for fingerprint comparison."""
    return json.loads(json.dumps(meta))


class StoreWriter:
    """Creates (or resumes) a store at ``path`` and writes it window by window."""

    def __init__(self, path: str | Path | Location, plan: StorePlan, *, overwrite: bool = False):
        self.path = locate(path)
        self.plan = plan
        if plan.window % plan.sample_chunk:
            raise ValueError("window must be a multiple of sample_chunk")
        self.windows_done = 0
        exists = self.path.exists()
        if exists:
            if overwrite:
                replace.remove(self.path, "store")
                exists = False
            else:
                self.windows_done = self._resume_point()
        if not exists:
            self._create()
        self.group = zarr.open_group(self.path.zarr_store(), mode="r+")

    # -- set-up ---------------------------------------------------------------------------------------
    def _resume_point(self) -> int:
        try:
            attrs = dict(zarr.open_group(self.path.zarr_store(read_only=True), mode="r").attrs)
        except Exception:  # noqa: BLE001 - anything unreadable is not ours to resume
            raise BertologyError(
                f"{self.path}: exists and is not a bertology store; choose another --out or pass --overwrite"
            ) from None
        progress = attrs.get(S.PROGRESS_KEY)
        if S.META_KEY not in attrs or progress is None:
            raise BertologyError(f"{self.path}: exists and is not a bertology store; pass --overwrite to replace it")
        if progress.get("complete"):
            raise BertologyError(f"{self.path}: is already a complete store; pass --overwrite to extract it again")
        old, new = attrs[S.META_KEY], _canonical(self.plan.meta)
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise BertologyError(
                f"{self.path}: is an unfinished store of a different extraction (differs in: {', '.join(diff)}); "
                f"rerun with the same settings to resume it, or pass --overwrite"
            )
        return int(progress["windows_done"])

    def _array(self, name, shape, dims, dtype, chunks, fill=0):
        g = self._g
        return g.create_array(
            name, shape=shape, chunks=chunks, dtype=dtype, dimension_names=list(dims),
            fill_value=fill, compressors=CODECS, config=ARRAY_CONFIG,
        )

    def _put(self, name, values, dims, chunks=None):
        values = np.asarray(values)
        if chunks is None:
            chunks = values.shape if values.size else (1,) * values.ndim
        fill = "" if values.dtype.kind == "U" else 0
        arr = self._array(name, values.shape, dims, values.dtype if values.dtype.kind != "U" else str, chunks, fill)
        if values.size:
            arr[...] = values
        return arr

    def _create(self):
        p = self.plan
        self._g = g = zarr.open_group(self.path.zarr_store(), mode="w", zarr_format=3)
        n, L, H, F, h = p.n_samples, p.n_layers, p.hidden, p.ff_hidden, p.n_heads
        T = int(p.lengths.sum())
        P = int((p.lengths.astype(np.int64) ** 2).sum())
        sc, tc, pc = p.sample_chunk, p.token_chunk, p.pair_chunk
        dt = p.dtype
        # coordinates
        self._put(S.SAMPLE, p.sample_ids.astype(np.int64), [S.SAMPLE], (max(n, 1),))
        self._put(S.LAYER, np.arange(1, L + 1, dtype=np.int32), [S.LAYER])
        self._put(S.SITE, np.array(S.SITES), [S.SITE])
        self._put(S.HEAD, np.arange(1, h + 1, dtype=np.int32), [S.HEAD])
        self._put(S.CLASS, np.array(p.class_names), [S.CLASS])
        # per-sample, known before any forward pass
        regression = S.is_regression(p.meta)
        self._put("label", p.labels.astype(np.float64 if regression else np.int64), [S.SAMPLE], (max(n, 1),))
        self._put("length", p.lengths.astype(np.int32), [S.SAMPLE], (max(n, 1),))
        self._put("token_start", p.token_start, [S.SAMPLE], (max(n, 1),))
        self._put("pair_start", p.pair_start, [S.SAMPLE], (max(n, 1),))
        self._put("text_a", np.array(p.text_a, dtype=str), [S.SAMPLE], (min(max(n, 1), 4096),))
        self._put("text_b", np.array(p.text_b, dtype=str), [S.SAMPLE], (min(max(n, 1), 4096),))
        # per-token, known before any forward pass
        tchunk = (min(max(T, 1), 65536),)
        self._put("token_sample", np.repeat(np.arange(n, dtype=np.int32), p.lengths), [S.TOKEN], tchunk)
        self._put("token_position", np.concatenate([np.arange(k, dtype=np.int16) for k in p.lengths]), [S.TOKEN], tchunk)
        self._put("token_id", p.token_ids.astype(np.int32), [S.TOKEN], tchunk)
        self._put("token_segment", p.token_segment.astype(np.int8), [S.TOKEN], tchunk)
        self._put("token_text", np.array(p.token_text, dtype=str), [S.TOKEN], tchunk)
        # filled by the forward passes
        self._array("cls", (n, L, len(S.SITES), H), [S.SAMPLE, S.LAYER, S.SITE, S.HIDDEN], dt, (sc, 1, len(S.SITES), H))
        self._array("cls_ff_act", (n, L, F), [S.SAMPLE, S.LAYER, S.FF_HIDDEN], dt, (sc, 1, F))
        self._array("cls_embed", (n, H), [S.SAMPLE, S.HIDDEN], dt, (sc, H))
        C = len(p.class_names)
        self._array("logits", (n, C), [S.SAMPLE, S.CLASS], "float32", (sc, C))
        self._array("probs", (n, C), [S.SAMPLE, S.CLASS], "float32", (sc, C))
        self._array("pred", (n,), [S.SAMPLE], "float64" if regression else "int64", (sc,))
        if p.token_sites:
            self._put(S.TOKEN_LAYER, np.array(p.token_layers, dtype=np.int32), [S.TOKEN_LAYER])
        for site in p.token_sites:
            name = S.token_var(site)
            if site == S.EMBED:
                self._array(name, (T, H), [S.TOKEN, S.HIDDEN], dt, (tc, H))
            elif site == S.FF_ACT:
                self._array(name, (T, len(p.token_layers), F), [S.TOKEN, S.TOKEN_LAYER, S.FF_HIDDEN], dt,
                            (max(tc // 4, 1), 1, F))
            else:
                self._array(name, (T, len(p.token_layers), H), [S.TOKEN, S.TOKEN_LAYER, S.HIDDEN], dt, (tc, 1, H))
        if p.attention:
            self._array("attention", (P, L, h), [S.PAIR, S.LAYER, S.HEAD], dt, (pc, 1, h))
        g.attrs[S.META_KEY] = _canonical(p.meta)
        g.attrs[S.PROGRESS_KEY] = {"complete": False, "windows_done": 0}

    # -- filling ----------------------------------------------------------------------------------------
    def write_window(self, w: int, data: dict[str, np.ndarray]) -> None:
        """Write window ``w``: sample-axis arrays for its samples, token/pair arrays for their spans.

        ``data`` maps variable names to arrays whose first axis is this window's samples, tokens or pairs.
        The window counts as done only when :meth:`commit` records it.
        """
        p, g = self.plan, self.group
        sl = p.window_slice(w)
        t0 = int(p.token_start[sl.start])
        t1 = int(p.token_start[sl.stop - 1] + p.lengths[sl.stop - 1])
        p0 = int(p.pair_start[sl.start])
        p1 = int(p.pair_start[sl.stop - 1] + int(p.lengths[sl.stop - 1]) ** 2)
        for name, values in data.items():
            dims = g[name].metadata.dimension_names
            span = {S.SAMPLE: sl, S.TOKEN: slice(t0, t1), S.PAIR: slice(p0, p1)}[dims[0]]
            expected = span.stop - span.start
            if values.shape[0] != expected:
                raise ValueError(f"{name}: window {w} has {expected} rows on {dims[0]}, got {values.shape[0]}")
            with zarr.config.set({"array.write_empty_chunks": ARRAY_CONFIG["write_empty_chunks"]}):
                g[name][span] = values.astype(g[name].dtype, copy=False)

    def commit(self, w: int) -> None:
        """Record that windows 0..w are fully written (the resume point)."""
        self.windows_done = w + 1
        self.group.attrs[S.PROGRESS_KEY] = {"complete": False, "windows_done": self.windows_done}

    def finish(self) -> None:
        """Mark the store complete: the last write, after which readers accept it."""
        if self.windows_done != self.plan.n_windows:
            raise RuntimeError(f"finish() after {self.windows_done} of {self.plan.n_windows} windows")
        self.group.attrs[S.PROGRESS_KEY] = {"complete": True, "windows_done": self.windows_done}
