"""Shared fixtures: the GLUE folder, tiny random BERT/RoBERTa/ELECTRA checkpoints, synthetic splits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bertology.extract.tasks import Example, Split, get_task

REPO = Path(__file__).resolve().parents[1]


def snakemake(results: Path, glue_dir: Path, *extra: str, configfile: Path | list[Path] = REPO / "config" / "tiny.yaml"):
    # the venv's snakemake from a shell where nothing is activated: the workflow finds its own `bertology`
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    env = dict(os.environ, PATH=path)
    files = [str(f) for f in (configfile if isinstance(configfile, list) else [configfile])]   # later ones win
    cmd = [os.path.join(venv_bin, "snakemake"), "--cores", "2", "--configfile", *files,
           "--config", f"glue_dir={glue_dir}", f"results={results}", *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    """The real GLUE data (CI sets GLUE_DIR=../shared/glue). Missing data is an error, not a skip."""
    path = Path(os.environ.get("GLUE_DIR", REPO.parent / "shared" / "glue"))
    if not (path / "SST-2" / "dev.tsv").is_file():
        raise RuntimeError(f"GLUE data not found at {path}; set GLUE_DIR to the classic glue_data folder")
    return path


@pytest.fixture(scope="session")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from bertology.extract.models import resolve

    return AutoTokenizer.from_pretrained(resolve("minilm-l6"))


def _tiny_config(family: str, vocab_size: int):
    from transformers import BertConfig, ElectraConfig, RobertaConfig

    common = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=160, num_labels=2)
    if family == "bert":
        return BertConfig(**common)
    if family == "roberta":  # WordPiece tokenizer with pad id 0; RoBERTa has no segment embeddings
        return RobertaConfig(**common, pad_token_id=0, bos_token_id=101, eos_token_id=102, type_vocab_size=1)
    if family == "electra":  # embedding_size != hidden_size exercises ELECTRA's embeddings_project
        return ElectraConfig(**common, embedding_size=16)
    raise ValueError(family)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, minilm_tokenizer) -> dict[str, Path]:
    """Tiny randomly initialised classifiers of each supported family, saved as checkpoint directories."""
    from transformers import AutoModelForSequenceClassification

    root = tmp_path_factory.mktemp("tiny_models")
    out = {}
    for i, family in enumerate(("bert", "roberta", "electra")):
        torch.manual_seed(i)
        model = AutoModelForSequenceClassification.from_config(_tiny_config(family, minilm_tokenizer.vocab_size))
        path = root / family
        model.save_pretrained(path)
        minilm_tokenizer.save_pretrained(path)
        out[family] = path
    return out


WORDS = ("the a film movie is was not very good bad great dull , . plot actors story really quite "
         "boring funny sad it 's an of and to in that with").split()


def make_split(n: int, task: str = "sst2", seed: int = 0, max_words: int = 40) -> Split:
    """A synthetic split with mixed lengths (1..max_words words per text) and balanced labels."""
    rng = np.random.default_rng(seed)
    spec = get_task(task)

    def sentence():
        return " ".join(rng.choice(WORDS, size=int(rng.integers(1, max_words + 1))))

    examples = [Example(i, sentence(), sentence() if spec.is_pair else None, int(i % 2)) for i in range(n)]
    return Split(spec, "dev", examples, source="synthetic", sha256="0" * 64)


@pytest.fixture(scope="session")
def tiny_results(tmp_path_factory, tiny_models) -> Path:
    """A results folder with one analysed tiny-BERT SST-2 dev store (``sst2/dev.zarr``, ``sst2/analysis``).

    Shared, read-only: a test that damages or changes files copies what it needs first.
    """
    from bertology.analysis.run import AnalyzeConfig, analyze
    from bertology.extract.extraction import ExtractConfig, extract

    root = tmp_path_factory.mktemp("tiny_results")
    store = extract(str(tiny_models["bert"]), make_split(90, seed=3), root / "sst2" / "dev.zarr",
                    ExtractConfig(window=64), progress=False)
    analyze(store, root / "sst2" / "analysis", AnalyzeConfig(resamples=50, probe=False, permutations=0,
                                                             attribution_samples=4))
    return root


@pytest.fixture(scope="session")
def tiny_index(tiny_results, tmp_path_factory) -> Path:
    """The DuckDB index of :func:`tiny_results` (read-only for tests)."""
    from bertology.analysis.index import build_index

    db = tmp_path_factory.mktemp("tiny_index") / "bertology.duckdb"
    build_index(tiny_results, db)
    return db


@pytest.fixture(scope="session")
def tiny_workflow(tmp_path_factory, glue_dir) -> Path:
    """The tiny profile's whole workflow (Snakemake, config/tiny.yaml), run once: its results folder.

    Shared, read-only: tests that rerun or change it work on copies or other folders.
    """
    results = tmp_path_factory.mktemp("tiny") / "results"
    proc = snakemake(results, glue_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return results
