"""Tokenisation and length-bucketed batches with dynamic padding (no compute wasted on padding)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bertology import BertologyError

from .tasks import Split


def max_positions(config) -> int:
    """The longest sequence the model's position embeddings cover (RoBERTa's start after its padding id)."""
    n = int(getattr(config, "max_position_embeddings", 0) or 0)
    if getattr(config, "model_type", "") == "roberta":
        n -= int(getattr(config, "pad_token_id", 1) or 0) + 1
    return n


def check_max_length(tokenizer, config, max_length: int, pair: bool) -> None:
    """Refuse a ``--max-length`` that truncation cannot honour: below the special tokens plus one token of each
    text, or beyond the model's positions."""
    low = tokenizer.num_special_tokens_to_add(pair=pair) + (2 if pair else 1)
    high = max_positions(config)
    if not low <= max_length <= high:
        raise BertologyError(
            f"--max-length {max_length}: must lie in [{low}, {high}] for this model "
            f"({'sentence pairs need' if pair else 'a sentence needs'} {low - (2 if pair else 1)} special tokens plus "
            f"at least one token per text; the model has {high} positions)")


@dataclass
class Encoded:
    """A tokenised split: per-sample token ids and segment ids, unpadded."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.input_ids], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(tokenizer, split: Split, max_length: int) -> Encoded:
    """Tokenise a split with the model's own tokenizer; pairs are truncated longest-first to ``max_length``."""
    a = [e.text_a for e in split.examples]
    b = [e.text_b for e in split.examples] if split.task.is_pair else None
    enc = tokenizer(a, b, truncation=True, max_length=max_length, padding=False, return_token_type_ids=True)
    types = enc.get("token_type_ids") or [[0] * len(x) for x in enc["input_ids"]]
    return Encoded(list(enc["input_ids"]), list(types), split.labels)


def collate(enc: Encoded, idx, pad_id: int, use_token_types: bool, device="cpu") -> dict[str, torch.Tensor]:
    """A right-padded batch of samples ``idx``, padded only to the longest sample in it."""
    n = max(len(enc.input_ids[i]) for i in idx)
    ids = torch.full((len(idx), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(idx), n), dtype=torch.long)
    types = torch.zeros((len(idx), n), dtype=torch.long)
    for r, i in enumerate(idx):
        k = len(enc.input_ids[i])
        ids[r, :k] = torch.tensor(enc.input_ids[i])
        mask[r, :k] = 1
        types[r, :k] = torch.tensor(enc.token_type_ids[i])
    batch = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    if use_token_types:
        batch["token_type_ids"] = types.to(device)
    return batch


def length_batches(lengths: np.ndarray, idx: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Split ``idx`` into batches of similar length (longest first); deterministic for fixed input."""
    order = idx[np.argsort(-lengths[idx], kind="stable")]
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def shuffled_length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                            pool: int = 50) -> list[np.ndarray]:
    """Training batches: shuffle, bucket by length within pools of ``pool`` batches, shuffle batch order."""
    perm = rng.permutation(len(lengths))
    batches: list[np.ndarray] = []
    step = batch_size * pool
    for s in range(0, len(perm), step):
        batches += length_batches(lengths, perm[s:s + step], batch_size)
    return [batches[i] for i in rng.permutation(len(batches))]
