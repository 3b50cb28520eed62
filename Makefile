# ibnb: build the book, execute notebooks, run tests. `make help` lists the targets.
#   make book            create/refresh the venv, execute changed notebooks, build _build/html
#   make test            unit tests + notebook smoke runs + warning-free book build
# Variables: VENV (virtual environment), PROFILE (smoke|cpu|gpu), IBNB_DATA (data root).

VENV ?= $(HOME)/.cache/ibnb/venv
PY := $(VENV)/bin/python
PROFILE ?= cpu
# Data root: the offline copies next to the checkout when present, else ./data.
IBNB_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),$(abspath data))
export IBNB_DATA
# This checkout's ibnb comes first on the path, so a shared venv never runs another checkout's code.
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

# The venv is (re)built when missing or when requirements.txt changed since the last
# install: the sha256 of requirements.txt is kept in $(STAMP).
REQ_SHA := $(shell python3 -c "import hashlib;print(hashlib.sha256(open('requirements.txt','rb').read()).hexdigest())")
STAMP := $(VENV)/.ibnb-requirements.sha256

.PHONY: help venv browser book run html test bench clean

help:
	@echo "make book   - venv + execute changed notebooks (PROFILE=$(PROFILE)) + build _build/html/index.html"
	@echo "make test   - venv + chromium + pytest (unit tests, notebook smoke runs, book build, browser check)"
	@echo "make run    - execute notebooks only (PROFILE=smoke|cpu|gpu)"
	@echo "make html   - build the HTML from the saved notebooks, no execution"
	@echo "make bench  - images/s of fit vs a bare training loop"
	@echo "make venv   - create/refresh $(VENV)"
	@echo "make clean  - remove _build and Python caches"
	@echo "IBNB_DATA=$(IBNB_DATA)"

venv:
	@if [ -x "$(PY)" ] && [ "$$(cat '$(STAMP)' 2>/dev/null)" = "$(REQ_SHA)" ]; then \
		echo "venv up to date: $(VENV)"; \
	else \
		echo "Creating/refreshing venv $(VENV) (requirements.txt changed or venv missing)"; \
		{ [ -x "$(PY)" ] || python3 -m venv "$(VENV)"; } && \
		"$(PY)" -m pip install -r requirements.txt && \
		echo "$(REQ_SHA)" > "$(STAMP)"; \
	fi

book: venv
	"$(PY)" -m ibnb build --profile $(PROFILE)

run: venv
	"$(PY)" -m ibnb run --profile $(PROFILE)

html: venv
	"$(PY)" -m ibnb build --no-run

# The browser test (tests/test_browser.py) needs a Chromium binary: Debian's package, installed here
# when neither `chromium` on PATH nor IBNB_CHROMIUM is there (apt-get as root, else sudo).
browser:
	@if [ -n "$$IBNB_CHROMIUM" ] || command -v chromium >/dev/null 2>&1; then \
		echo "chromium found: $${IBNB_CHROMIUM:-$$(command -v chromium)}"; \
	else \
		echo "Installing Debian's chromium for the browser test"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; \
	fi

test: venv browser
	"$(PY)" -m pytest -q

bench: venv
	"$(PY)" -m ibnb.bench --model cnn

clean:
	rm -rf _build .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
