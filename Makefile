# The two commands of the README: `make run` and `make test`; `make serve` for production.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: run serve test lint install install-dev bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# the web server and one worker (with the beat scheduler), on SQLite and the embedded broker
run: install
	$(BIN)/python -m donation_portal.cli.run_dev --host $(HOST) --port $(PORT)

# gunicorn, a Celery worker and the beat scheduler (Procfile), after the migrations; the
# database, broker, storage and keys come from PORTAL_* (and AWS_*) variables: see README
serve: install
	PORTAL_ENV=production HOST=$(HOST) PORT=$(PORT) \
		$(BIN)/python -m donation_portal.cli.run_dev --procfile Procfile

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install-dev
	$(BIN)/python bench/deid.py
	$(BIN)/python bench/storage.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
