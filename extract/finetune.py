"""``bertology finetune``: a seeded, CPU-friendly fine-tune of a BERT-family encoder on one GLUE task.

Length-bucketed batches with dynamic padding, AdamW with linear warm-up and decay, a progress bar. The
result is a ``save_pretrained`` checkpoint (model and tokenizer, ``id2label`` set to the task's label names)
plus ``metrics.json`` with the dev metrics. The checkpoint is written to a temporary folder and renamed, so
a crash never leaves a half-written one.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import bertology
from bertology import BertologyError

from .batching import Encoded, check_max_length, collate, encode, length_batches, shuffled_length_batches
from .extraction import pick_device
from .models import LoadedModel, check_checkpoint_out, load_classifier, quiet_transformers
from .tasks import Split, load_split


def task_metrics(labels: np.ndarray, preds: np.ndarray, n_classes: int = 2, regression: bool = False) -> dict[str, float]:
    """Accuracy and Matthews correlation (CoLA's metric; Gorodkin's k-class form), with F1 of class 1 for two
    classes (MRPC's and QQP's metric) or macro-F1 for more; a regression's Pearson (STS-B's metric) and
    Spearman correlations and mean squared error."""
    from sklearn.metrics import f1_score, matthews_corrcoef

    if regression:
        from scipy.stats import pearsonr, spearmanr

        constant = np.ptp(preds) == 0 or np.ptp(labels) == 0   # a correlation is then undefined: 0
        return {"pearson": 0.0 if constant else float(pearsonr(labels, preds)[0]),
                "spearman": 0.0 if constant else float(spearmanr(labels, preds)[0]),
                "mse": float(np.mean((labels - preds) ** 2))}

    f1 = {"f1": float(f1_score(labels, preds, zero_division=0))} if n_classes == 2 else \
        {"macro_f1": float(f1_score(labels, preds, average="macro", labels=np.arange(n_classes), zero_division=0))}
    return {"accuracy": float((labels == preds).mean()), **f1, "mcc": float(matthews_corrcoef(labels, preds))}


@torch.no_grad()
def predict(lm: LoadedModel, enc: Encoded, batch_size: int = 64, device="cpu", regression: bool = False) -> np.ndarray:
    """Predicted class per sample (a regression: the predicted score), in input order."""
    lm.model.eval()
    pad = lm.tokenizer.pad_token_id or 0
    use_types = (getattr(lm.model.config, "type_vocab_size", 0) or 0) >= 2
    preds = np.zeros(len(enc), dtype=np.float64 if regression else np.int64)
    for idx in length_batches(enc.lengths, np.arange(len(enc)), batch_size):
        logits = lm.model(**collate(enc, idx, pad, use_types, device)).logits
        preds[idx] = (logits[:, 0] if regression else logits.argmax(-1)).float().cpu().numpy()
    return preds


def loss_of(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    """The fine-tuning loss: cross-entropy over the classes, or a regression's squared error."""
    if regression:
        return torch.nn.functional.mse_loss(logits[:, 0], labels.float())
    return torch.nn.functional.cross_entropy(logits, labels)


def finetune(
    model: str,
    train: Split,
    dev: Split,
    out: str | Path,
    *,
    epochs: float = 3.0,
    batch_size: int = 32,
    lr: float = 5e-5,
    weight_decay: float = 0.01,
    warmup: float = 0.1,
    max_length: int = 128,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
) -> dict:
    """Fine-tune ``model`` on ``train``, score it on ``dev``, and save checkpoint + metrics to ``out``."""
    out = Path(out)
    for name, value in (("--batch-size", batch_size), ("--epochs", epochs), ("--lr", lr)):
        if not value > 0:
            raise BertologyError(f"{name} must be positive; got {value}")
    check_checkpoint_out(out)
    dev_ = pick_device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    regression = train.task.is_regression
    lm = load_classifier(model, label_names=train.task.label_names, seed=seed, device=dev_, new_head=True)
    check_max_length(lm.tokenizer, lm.model.config, max_length, train.task.is_pair)
    enc_train = encode(lm.tokenizer, train, max_length)
    enc_dev = encode(lm.tokenizer, dev, max_length)
    pad = lm.tokenizer.pad_token_id or 0
    use_types = (getattr(lm.model.config, "type_vocab_size", 0) or 0) >= 2
    epoch_batches = math.ceil(len(enc_train) / batch_size)
    total = max(1, int(round(epochs * epoch_batches)))
    decay = [p for n, p in lm.model.named_parameters() if not any(k in n for k in ("bias", "LayerNorm", "norm"))]
    rest = [p for n, p in lm.model.named_parameters() if any(k in n for k in ("bias", "LayerNorm", "norm"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=lr)
    n_warm = int(warmup * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, n_warm) if s < n_warm else max(0.0, (total - s) / max(1, total - n_warm)))
    lm.model.train()
    bar = tqdm(total=total, desc=f"finetune {train.task.name}", unit="step", disable=not progress)
    step, t0, losses = 0, time.perf_counter(), []
    while step < total:
        for idx in shuffled_length_batches(enc_train.lengths, batch_size, rng):
            if step >= total:
                break
            batch = collate(enc_train, idx, pad, use_types, dev_)
            labels = torch.as_tensor(enc_train.labels[idx], device=dev_)
            loss = loss_of(lm.model(**batch).logits, labels, regression)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lm.model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    bar.close()
    train_seconds = time.perf_counter() - t0
    preds = predict(lm, enc_dev, device=dev_, regression=regression)
    metrics = {
        "task": train.task.name,
        "metric": train.task.metric,
        "dev": task_metrics(enc_dev.labels, preds, len(train.task.label_names), regression),
        "task_type": "regression" if regression else "classification",
        "n_train": len(train),
        "n_dev": len(dev),
        "train_file": train.source,
        "dev_file": dev.source,
        "train_sha256": train.sha256,
        "dev_sha256": dev.sha256,
        **({"data": train.task.record({"train": train.source, "dev": dev.source})}
           if hasattr(train.task, "record") else {}),
        "carve_out": train.carve_out,
        "base_model": model,
        "base_model_sha256": lm.sha256,
        "epochs": epochs,
        "steps": total,
        "batch_size": batch_size,
        "lr": lr,
        "max_length": max_length,
        "seed": seed,
        "final_train_loss": float(np.mean(losses[-20:])),
        "train_seconds": round(train_seconds, 2),
        "device": str(dev_),
        "bertology_version": bertology.__version__,
    }
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    with quiet_transformers():
        lm.model.save_pretrained(tmp)
        lm.tokenizer.save_pretrained(tmp)
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return metrics


def finetune_task(model: str, task: str, out, *, glue_dir=None, max_train: int | None = None,
                  carve_train_from_dev: float | None = None, seed: int = 0, carve_seed: int | None = None,
                  **kw) -> dict:
    """Load a task's train and dev splits (carving train out of dev if asked, with ``carve_seed``, default
    ``seed``: fine-tuning seeds that are to share one dev set share it) and fine-tune with ``seed``."""
    carve_seed = seed if carve_seed is None else carve_seed
    if hasattr(task, "record"):   # the user's own data: its classes and task type settled once, from train
        from .user_data import resolve

        task = resolve(task, carved=bool(carve_train_from_dev))
    train = load_split(task, "train", glue_dir, carve_train_from_dev=carve_train_from_dev, carve_seed=carve_seed)
    dev = load_split(task, "dev", glue_dir, carve_train_from_dev=carve_train_from_dev, carve_seed=carve_seed)
    if max_train is not None:
        if max_train <= 0:
            raise BertologyError(f"--max-train must be positive; got {max_train}")
        if max_train < len(train):  # a seeded random subset, not the file's first rows (which may be sorted)
            keep = np.sort(np.random.default_rng(seed).permutation(len(train))[:max_train])
            train.examples = [train.examples[i] for i in keep]
    return finetune(model, train, dev, out, seed=seed, **kw)
