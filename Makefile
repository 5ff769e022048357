# The book's two entry points are `make book` and `make test`; both set up .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JB     := $(VENV)/bin/jupyter-book build . -W -n --keep-going

.PHONY: help venv book book-all test unit notebooks notebooks-portable lint format tolerances clean browser

help:
	@echo "make book        build the HTML book into _build/html"
	@echo "make test        unit tests + nbval on every notebook, a clean -W book build, the browser check"
	@echo "make unit        unit tests only (no notebooks)"
	@echo "make browser     open every page of the built book in headless Chromium (after make book)"
	@echo "make notebooks   nbval on the notebooks only"
	@echo "make notebooks-portable  nbval on the notebooks under an emulated CPU without AVX (part of make test)"
	@echo "make lint        ruff on the library, tests and notebooks; the CI workflow schema"
	@echo "make format      ruff format + fixes"
	@echo "make tolerances  print the measured max abs differences behind the test tolerances"
	@echo "make execute     run the notebooks (or NB=book/x.ipynb) from a fresh kernel, store outputs"
	@echo "make sync-notebooks  rewrite the notebooks' Colab set-up cell and metadata"
	@echo "make colab       rewrite colab/, the Colab edition of the chapters (after editing a chapter)"
	@echo "make newest      run every colab/ notebook in a fresh venv of the newest packages (registry; 8-20 min)"
	@echo "make bench       re-measure the CPU benchmarks behind chapter 8 (about 10 minutes)"
	@echo "make gpu-evidence      on a CUDA GPU, no .venv, no network, under 8 minutes: CUDA tests, compile"
	@echo "                 check, attention/model benchmarks, a chapter-7 epoch -> book/data/*_gpu.json"
	@echo "                 (GPU_EVIDENCE_OUT=dir to write elsewhere; upstream from .gpu/vit_pytorch-*.whl)."
	@echo "                 On the device machine, one run call: carry [\".gpu\"], command"
	@echo "                 'PYTHONPATH=. make gpu-evidence GPU_EVIDENCE_OUT=\$$OUT' (README.md, GPU evidence)"
	@echo "make gpu-evidence-dry  the same steps on the CPU at tiny sizes, into _build/gpu-evidence-dry"
	@echo "make clean       remove the build output"

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	@touch $@

venv: $(STAMP)

book: $(STAMP)
	$(JB)

# Rebuild every page so that warnings from unchanged pages are not hidden by the cache.
book-all: $(STAMP)
	$(JB) --all

test: $(STAMP)
	$(PY) -m pytest
	$(MAKE) notebooks-portable
	$(MAKE) book-all
	$(MAKE) browser

# Every page of the built book in headless Chromium, offline (needs `make book` first and Debian's
# chromium; .ci/run installs it). Screenshots land in _build/screenshots.
browser: $(STAMP)
	VIT_BOOK_BROWSER=1 $(PY) -m pytest tests/browser -p no:nbval -o addopts=-ra -s -q

unit: $(STAMP)
	$(PY) -m pytest tests -p no:nbval -o addopts=-ra

notebooks: $(STAMP)
	$(PY) -m pytest book

# nbval again, as on a CPU without AVX: torch's kernels for the baseline instruction set, MKL limited
# to SSE4.2 (this changes the order of torch's reductions, hence the last digits of float results).
# The stored outputs were executed on another machine; both runs must pass on them.
EMULATED_CPU := ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2
notebooks-portable: $(STAMP)
	$(EMULATED_CPU) $(PY) -m pytest book -q -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

tolerances: $(STAMP)
	$(PY) scripts/measure_tolerances.py

clean:
	rm -rf _build

.PHONY: sync-notebooks execute digits-ablation
sync-notebooks: $(STAMP)  ## rewrite each notebook's Colab set-up cell (URL from _config.yml) and metadata
	$(PY) scripts/notebooks.py sync

execute: $(STAMP)  ## run every notebook (or NB=book/x.ipynb) from a fresh kernel and store outputs
	$(PY) scripts/notebooks.py execute $(NB)

.PHONY: bench bench-quick
bench: $(STAMP)  ## re-measure book/data/bench_*_cpu.json (chapter 8): attention sweep, then model sweep
	$(PY) -m vit_lib.bench attention
	$(PY) -m vit_lib.bench model

bench-quick: $(STAMP)  ## the benchmarks on tiny sizes, printing only (what tests/test_bench.py runs)
	$(PY) -m vit_lib.bench attention --quick
	$(PY) -m vit_lib.bench model --quick --compile-backend eager

digits-ablation: $(STAMP)  ## re-measure book/data/digits_ablation.json (chapter 6), a few minutes
	$(PY) scripts/digits_ablation.py

.PHONY: colab newest
colab: $(STAMP)  ## rewrite colab/NN_*.ipynb, the Colab edition of book/NN_*.ipynb (tests fail when stale)
	$(PY) scripts/colab_edition.py

# Not part of `make test`: it needs the package registry and takes minutes; .ci/run runs it as its
# own step. Needs no project venv: it builds its own under _build/newest.
newest:  ## every Colab-edition notebook, top to bottom, in a fresh venv of the newest releases
	$(PYTHON) scripts/newest_packages.py

# The GPU machine has no .venv (its python3 holds torch, timm, triton): no $(STAMP) here, and nothing
# to install. Upstream vit-pytorch comes from a wheel in .gpu/ (or $$VIT_PYTORCH_WHEEL) when there is one.
.PHONY: gpu-evidence gpu-evidence-dry
GPU_EVIDENCE_OUT ?= book/data
gpu-evidence:  ## on a CUDA GPU: CUDA tests, compile check, benchmarks, an epoch -> $(GPU_EVIDENCE_OUT)/*_gpu.json
	$(PYTHON) scripts/gpu_evidence.py --out-dir $(GPU_EVIDENCE_OUT)

gpu-evidence-dry: $(STAMP)  ## every gpu-evidence step on the CPU at tiny sizes (tests/test_gpu_evidence.py)
	$(PY) scripts/gpu_evidence.py --dry --out-dir _build/gpu-evidence-dry
