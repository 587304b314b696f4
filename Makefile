# The two commands of README.md:  `make book`  and  `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
JB := $(VENV)/bin/jupyter-book
# The profile the book is executed in: WMKIT_PROFILE if set, else gpu with CUDA, else cpu.
PROFILE = $(shell $(PY) -c "import wmkit; print(wmkit.default_profile_name())" 2>/dev/null || echo cpu)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: book test setup vendor book-smoke serve lint test-deps clean clean-cache help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup:  ## create .venv/ and install wmkit (keeps an installed torch)
	@./tools/setup.sh

vendor:  ## copy the book's JavaScript (widgets manager, RequireJS, MathJax) into book/_static/vendor
	@./tools/vendor_js.sh

book: setup vendor  ## COMMAND 1: set up, execute every notebook in the default profile, build the HTML book
	@p=$(PROFILE); echo "Building the book in the '$$p' profile (notebook outputs are cached per profile)"; \
	  cfg=_config.yml; if [ "$$p" = gpu ]; then \
	    mkdir -p _build/gpu && sed 's/^  timeout: 1800$$/  timeout: -1/' _config.yml > _build/gpu/_config.yml \
	    && cfg=_build/gpu/_config.yml && echo "gpu profile: paper-scale runs of hours to days, so no per-cell timeout"; fi; \
	  WMKIT_PROFILE=$$p WMKIT_RENDER=static $(JB) build . --config $$cfg --path-output _build/$$p -W --keep-going \
	  && rm -f _build/html && ln -s $$p/_build/html _build/html \
	  && echo "" && echo "The book is in $$(pwd)/_build/html/index.html" \
	  && echo "Serve it (offline is fine) with:  make serve   ->  http://$(HOST):$(PORT)/"

book-smoke: setup vendor  ## build the book in the smoke profile into _build/smoke (fast, numbers meaningless)
	WMKIT_PROFILE=smoke WMKIT_RENDER=static $(JB) build . --path-output _build/smoke -W --keep-going

serve:  ## serve the built book on http://127.0.0.1:8000 (PORT=... to change)
	@test -e _build/html/index.html || { echo "No book yet: run 'make book' first"; exit 1; }
	@echo "Serving $$(readlink -f _build/html) on http://$(HOST):$(PORT)/  (Ctrl-C to stop)"
	$(PY) -m http.server $(PORT) --bind $(HOST) --directory _build/html

test-deps:  ## what the browser test needs: Debian's chromium (installed here if missing and possible)
	@./tools/install_chromium.sh

test: setup vendor test-deps  ## COMMAND 2: the whole test suite (smoke profile), lint included
	WMKIT_PROFILE=smoke $(PY) -m pytest -ra --durations=15

lint:  ## ruff
	$(VENV)/bin/ruff check .

clean-cache:  ## forget executed notebook outputs (after changing wmkit code the notebooks rely on)
	rm -rf _build/*/_build/.jupyter_cache

clean:  ## remove build outputs (keeps .venv)
	rm -rf _build book/_static/vendor tools/js/node_modules
