# The book's two entry points are `make book` and `make test`; both set up .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JB     := $(VENV)/bin/jupyter-book build . -W -n --keep-going

.PHONY: help venv book book-all test unit notebooks notebooks-portable lint format tolerances clean browser \
	sync-notebooks execute digits-ablation bench bench-quick colab newest gpu-evidence gpu-evidence-dry

help:  ## this list (each target's note after its double hash)
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "make %-20s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "On the GPU machine, one run call: carry [\".gpu\"], command"
	@echo "  'PYTHONPATH=. make gpu-evidence GPU_EVIDENCE_OUT=\$$OUT' (README.md, GPU evidence)"

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	@touch $@

venv: $(STAMP)  ## create .venv and install requirements.txt (the other targets do this on first use)

book: $(STAMP)  ## build the HTML book into _build/html
	$(JB)

# Rebuild every page so that warnings from unchanged pages are not hidden by the cache.
book-all: $(STAMP)  ## rebuild every page (warnings of unchanged pages are not hidden by the cache)
	$(JB) --all

test: $(STAMP)  ## unit tests + nbval on every notebook, the emulated-CPU nbval, a clean -W book build, the browser check
	$(PY) -m pytest
	$(MAKE) notebooks-portable
	$(MAKE) book-all
	$(MAKE) browser

# Every page of the built book in headless Chromium, offline (needs `make book` first and Debian's
# chromium; .ci/run installs it). Screenshots land in _build/screenshots.
browser: $(STAMP)  ## open every page of the built book in headless Chromium (after make book)
	VIT_BOOK_BROWSER=1 $(PY) -m pytest tests/browser -p no:nbval -o addopts=-ra -s -q

unit: $(STAMP)  ## unit tests only (no notebooks)
	$(PY) -m pytest tests -p no:nbval -o addopts=-ra

notebooks: $(STAMP)  ## nbval on the notebooks only
	$(PY) -m pytest book

# nbval again, as on a CPU without AVX: torch's kernels for the baseline instruction set, MKL limited
# to SSE4.2 (this changes the order of torch's reductions, hence the last digits of float results).
# The stored outputs were executed on another machine; both runs must pass on them.
EMULATED_CPU := ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2
notebooks-portable: $(STAMP)  ## nbval on the notebooks under an emulated CPU without AVX (part of make test)
	$(EMULATED_CPU) $(PY) -m pytest book -q -p no:cacheprovider

lint: $(STAMP)  ## ruff on the library, tests and notebooks; the CI workflow schema
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml

format: $(STAMP)  ## ruff format + fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

tolerances: $(STAMP)  ## print the measured max abs differences behind the test tolerances
	$(PY) scripts/measure_tolerances.py

clean:  ## remove the build output
	rm -rf _build

sync-notebooks: $(STAMP)  ## rewrite each notebook's Colab set-up cell (URL from _config.yml) and metadata
	$(PY) scripts/notebooks.py sync

execute: $(STAMP)  ## run every notebook (or NB=book/x.ipynb) from a fresh kernel and store outputs
	$(PY) scripts/notebooks.py execute $(NB)

bench: $(STAMP)  ## re-measure book/data/bench_*_cpu.json (chapter 8): attention sweep, then model sweep
	$(PY) -m vit_lib.bench attention --out book/data/bench_attention_cpu.json
	$(PY) -m vit_lib.bench model --out book/data/bench_model_cpu.json

bench-quick: $(STAMP)  ## the benchmarks on tiny sizes, printing only (what tests/test_bench.py runs)
	$(PY) -m vit_lib.bench attention --quick
	$(PY) -m vit_lib.bench model --quick --compile-backend eager

digits-ablation: $(STAMP)  ## re-measure book/data/digits_ablation.json (chapter 6), a few minutes
	$(PY) scripts/digits_ablation.py

colab: $(STAMP)  ## rewrite colab/NN_*.ipynb, the Colab edition of book/NN_*.ipynb (tests fail when stale)
	$(PY) scripts/colab_edition.py

# Not part of `make test`: it needs the package registry and takes minutes; .ci/run runs it as its
# own step. Needs no project venv: it builds its own under _build/newest.
newest:  ## every Colab-edition notebook, top to bottom, in a fresh venv of the newest releases
	$(PYTHON) scripts/newest_packages.py

# The GPU machine has no .venv (its python3 holds torch, timm, triton): no $(STAMP) here, and nothing
# to install. Upstream vit-pytorch comes from a wheel in .gpu/ (or $$VIT_PYTORCH_WHEEL) when there is one.
GPU_EVIDENCE_OUT ?= book/data
gpu-evidence:  ## on a CUDA GPU, no .venv, no network: CUDA tests, compile check, benchmarks, an epoch -> book/data/*_gpu.json (GPU_EVIDENCE_OUT=dir elsewhere; upstream from .gpu/vit_pytorch-*.whl)
	$(PYTHON) scripts/gpu_evidence.py --out-dir $(GPU_EVIDENCE_OUT)

gpu-evidence-dry: $(STAMP)  ## every gpu-evidence step on the CPU at tiny sizes (tests/test_gpu_evidence.py)
	$(PY) scripts/gpu_evidence.py --dry --out-dir _build/gpu-evidence-dry
