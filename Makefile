# Knowledge Distillation, Measured: build and test.
#
#   make book    build the site into _build/html (fails on any warning)
#   make test    everything, in order: unit, nbval, book, site (prints each stage's wall time)
#   make unit | nbval | site | quick | bench | vendor | clean | distclean
#
# Everything runs from the pinned virtual environment .venv (created by `make venv`).

SHELL       := /bin/bash
PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
PYTEST      := $(PY) -m pytest -p no:cacheprovider
JB          := $(VENV)/bin/jupyter-book
STAMP       := $(VENV)/.stamp
CHAPTERS    := $(sort $(wildcard book/*.ipynb))
SANITIZE    := tests/nbval_sanitize.cfg

# Tools started by the tests (jupyter, kernels) come from the venv, even without `activate`.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# Playwright drives Debian's /usr/bin/chromium; it must never download a browser.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: venv book test unit quick nbval site bench vendor clean distclean

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

test: $(STAMP)
	@start_all=$$(date +%s); \
	for stage in unit nbval book site; do \
	    echo "=== make $$stage"; start=$$(date +%s); \
	    if ! $(MAKE) --no-print-directory $$stage; then \
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

# Re-execute every chapter and compare with its committed outputs.
nbval: $(STAMP)
ifeq ($(CHAPTERS),)
	@echo "no chapters in book/*.ipynb: nothing to check"
else
	$(PYTEST) --nbval $(CHAPTERS) --nbval-sanitize-with $(SANITIZE)
endif

# The built site in headless Chromium, offline (run `make book` first; `make test` does).
site: $(STAMP)
	$(PYTEST) tests/site -m site

bench: $(STAMP)
	$(PY) benchmarks/run.py

# Re-download the JavaScript the site vendors (needs npm); the result is committed.
vendor:
	scripts/vendor_js.sh

clean:
	rm -rf _build .pytest_cache .jupyter_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info
