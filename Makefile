# Two entry points: `make demo` runs the system, `make test` checks it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt 2>/dev/null | cksum | cut -d' ' -f1)

.PHONY: demo test lint typecheck pytest install clean constraints browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24,<27"

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

# Development mode: the built-in token secret is accepted, services bind to loopback.
demo: install
	SONAE_DEVELOPMENT=true $(BIN)/sonae up --namespace drill.demo --demo

test: install browser lint typecheck pytest

# Debian's chromium and CJK fonts for the dashboard's browser test (apt, as root).
browser: install
	infra/tools/install_browser.sh $(VENV)

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

# Three workers, whole files per worker: most tests wait on brokers and processes, not CPU.
PYTEST_WORKERS ?= 3
pytest: install
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile

# Re-resolve the pinned set after changing dependencies in pyproject.toml.
constraints: $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade -e '.[dev]'
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean:
	rm -rf $(VENV) .sonae .mypy_cache .pytest_cache .ruff_cache
