# Knowledge Distillation, Measured: build and test.
#
#   make book    build the site into _build/html (fails on any warning)
#   make test    everything, in order: unit, nbval and nbval-seeds (the three side by side), book, site (prints
#                each stage's wall time); installs what it needs first (.venv, and Chromium for the site test)
#   make unit | nbval | nbval-seeds | site | quick | bench | vendor | clean | distclean
#   (bench: benchmarks/run.py and benchmarks/losses.py; TRL in its own .venv-bench)
#
# Everything runs from the pinned virtual environment .venv (created by `make venv`). Numerics
# are pinned to AVX2 kernels by kd_lib.lab.numerics in every process that computes (the chapters'
# setup cell, tests/conftest.py, scripts/, benchmarks/), so committed outputs compare exactly on
# any AMD x86-64 CPU with AVX2 (not on Intel CPUs, measured); elsewhere nbval runs every cell and
# assert but skips the comparison.

SHELL       := /bin/bash
PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
PYTEST      := $(PY) -m pytest -p no:cacheprovider
JB          := $(VENV)/bin/jupyter-book
STAMP       := $(VENV)/.stamp
CHAPTERS    := $(sort $(wildcard book/*.ipynb))
SANITIZE    := tests/nbval_sanitize.cfg
CHROMIUM    ?= /usr/bin/chromium
# The second pass over the chapters shifts every training seed by 1000 x this (kd_lib.lab.notebook).
SEED_OFFSET ?= 1

# Tools started by the tests (jupyter, kernels) come from the venv, even without `activate`.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# The chapters' outputs are saved and compared without progress bars (kd_lib.runtime.show_progress).
export KD_PROGRESS := 0
# Playwright drives Debian's /usr/bin/chromium; it must never download a browser.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: venv book test unit quick nbval nbval-seeds site chromium bench vendor clean distclean

venv: $(STAMP)

# Redone only when the pins or the package metadata change.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -e .
	touch $(STAMP)

# A full, clean build: Sphinx does not repeat the warnings of unchanged pages on an incremental
# build (so -W would let them through), and pages of removed chapters must not linger.
book: $(STAMP)
	rm -rf _build/html
	$(JB) build . --all -W -n --keep-going

# The unit tests and the two nbval passes run side by side (each computes on one thread, so the
# three share the two cores: 62 s less than the unit tests first, measured 2026-12-03); their logs are printed
# when all are done. The other stages print as they run.
test: $(STAMP) chromium
	@start_all=$$(date +%s); \
	for stage in "unit nbval nbval-seeds" book site; do \
	    echo "=== make $$stage"; start=$$(date +%s); pids=""; failed=0; \
	    if [ "$$stage" = "$${stage% *}" ]; then \
	        $(MAKE) --no-print-directory $$stage || failed=1; \
	    else \
	        for part in $$stage; do \
	            $(MAKE) --no-print-directory $$part > .make-$$part.log 2>&1 & pids="$$pids $$!"; \
	        done; \
	        for pid in $$pids; do wait $$pid || failed=1; done; \
	        for part in $$stage; do cat .make-$$part.log; rm -f .make-$$part.log; done; \
	    fi; \
	    if [ $$failed -ne 0 ]; then \
	        echo "=== $$stage FAILED after $$(( $$(date +%s) - start )) s"; exit 1; \
	    fi; \
	    echo "=== $$stage passed in $$(( $$(date +%s) - start )) s"; \
	done; \
	echo "=== make test passed in $$(( $$(date +%s) - start_all )) s"

# Unit and repository tests (tests/site needs a built site: it is the `site` stage).
unit: $(STAMP)
	$(PYTEST) tests --ignore=tests/site -m "not site"

# The unit tests without the ones marked slow, for a quick check while editing.
quick: $(STAMP)
	$(PYTEST) tests --ignore=tests/site -m "not site and not slow"

# Re-execute every chapter and compare with its committed outputs. The outputs were made with
# the AVX2-pinned numerics of kd_lib.lab.numerics; where those cannot be pinned (not x86-64, or no
# AVX2) every cell and assert still runs, but the outputs are not compared, and this says so.
nbval: $(STAMP)
ifeq ($(CHAPTERS),)
	@echo "no chapters in book/*.ipynb: nothing to check"
else
	@if $(PY) -c "import sys; from kd_lib.lab.numerics import portable_numerics_status as s; \
	        status = s(); print('numerics:', status); sys.exit(0 if status.portable else 1)"; then \
	    echo $(PYTEST) --nbval $(CHAPTERS) --nbval-sanitize-with $(SANITIZE); \
	    $(PYTEST) --nbval $(CHAPTERS) --nbval-sanitize-with $(SANITIZE); \
	else \
	    echo "=== SKIPPING the output comparison: the committed outputs were computed with AVX2-pinned"; \
	    echo "=== x86-64 numerics, and this machine does not compute with them (the line above says"; \
	    echo "=== why). Every cell and every assert still runs (nbval --nbval-lax)."; \
	    $(PYTEST) --nbval-lax $(CHAPTERS); \
	fi
endif

# Every chapter again with every training, initialisation and transfer-set seed shifted
# (KD_BOOK_SEED_OFFSET): the outputs change, so only cells that fail (a claim's assert) count.
nbval-seeds: $(STAMP)
ifeq ($(CHAPTERS),)
	@echo "no chapters in book/*.ipynb: nothing to check"
else
	KD_BOOK_SEED_OFFSET=$(SEED_OFFSET) $(PYTEST) --nbval-lax $(CHAPTERS)
endif

# The built site in headless Chromium, offline (run `make book` first; `make test` does).
site: $(STAMP) chromium
	KD_CHROMIUM=$(CHROMIUM) $(PYTEST) tests/site -m site

# Debian's Chromium for the site test: installed with apt when missing (as root, or with
# password-less sudo); otherwise a message says what to install. Playwright never downloads one.
chromium:
	@if [ -x "$(CHROMIUM)" ]; then exit 0; fi; \
	if [ "$$(id -u)" -eq 0 ]; then SUDO=""; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo"; \
	else echo "The site test needs Chromium at $(CHROMIUM). Install Debian's package" \
	          "(sudo apt-get install -y chromium) or set CHROMIUM=/path/to/chromium, then re-run."; exit 1; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	    echo "No apt-get here: install Chromium yourself and set CHROMIUM=/path/to/chromium."; exit 1; fi; \
	echo "=== installing chromium (Debian package) for the site test"; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
	"$(CHROMIUM)" --version

# TRL for the loss benchmark's comparison lives in its own environment, never in the book's.
BENCH_VENV  := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.stamp

$(BENCH_STAMP): benchmarks/requirements-trl.txt pyproject.toml
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r benchmarks/requirements-trl.txt
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(BENCH_STAMP)

bench: $(STAMP) $(BENCH_STAMP)
	$(PY) benchmarks/run.py
	for vocab in 32000 128000; do for dtype in float32 bfloat16; do \
	    TRL_EXPERIMENTAL_SILENCE=1 $(BENCH_VENV)/bin/python benchmarks/losses.py --trl-only --vocab $$vocab --dtypes $$dtype && \
	    $(PY) benchmarks/losses.py --vocab $$vocab --dtypes $$dtype || exit 1; \
	done; done

# Re-download the JavaScript the site vendors (needs npm); the result is committed.
vendor:
	scripts/vendor_js.sh

clean:
	rm -rf _build .pytest_cache .jupyter_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(BENCH_VENV) *.egg-info
