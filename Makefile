# The two commands of the README: `make run` and `make test`; `make serve` for production.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: run serve test lint install install-dev lock audit bench clean assets

# The dependencies come from lock files with hashes (requirements/*.txt, made by `make lock`
# from setup.cfg and requirements/build.in); pip refuses any file whose hash is not in them.
LOCK_RUNTIME := requirements/runtime.txt
LOCK_DEV := requirements/dev.txt
PIP_LOCKED := $(BIN)/python -m pip install --quiet --require-hashes
# `make lock` keeps the pinned versions that still fit; LOCK_FLAGS=--upgrade moves all to the
# newest, LOCK_FLAGS='--upgrade-package flask' one package
LOCK_FLAGS ?=
UV_COMPILE = $(BIN)/uv pip compile --quiet --no-config --universal --python-version 3.11 \
	--generate-hashes --custom-compile-command 'make lock' $(LOCK_FLAGS)
# pip-audit checks every pinned version against the vulnerability service and fails on a known
# vulnerability; --strict also fails when a package could not be checked
AUDIT_FLAGS ?= --strict

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# pip, setuptools and wheel come from the lock too; the project itself goes in without its
# dependencies (the lock has them) and without build isolation (no unhashed download)
$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml $(LOCK_RUNTIME)
	$(PIP_LOCKED) -r $(LOCK_RUNTIME)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed $(LOCK_DEV)
	$(PIP_LOCKED) -r $(LOCK_DEV)
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# regenerate the lock files after a change of setup.cfg, pyproject.toml or requirements/build.in
lock: install-dev
	$(UV_COMPILE) setup.cfg requirements/build.in -o $(LOCK_RUNTIME)
	$(UV_COMPILE) setup.cfg --extra dev requirements/build.in -c $(LOCK_RUNTIME) -o $(LOCK_DEV)

# the known vulnerabilities of every version pinned in the lock files
audit: install-dev
	$(BIN)/pip-audit --disable-pip --progress-spinner off $(AUDIT_FLAGS) \
		-r $(LOCK_RUNTIME) -r $(LOCK_DEV)

# the upload page's Uppy bundle (frontend/ -> donation_portal/web/static/build/, not committed):
# `npm ci` from frontend/package-lock.json when the lock changed, the build when a source did
FRONTEND_SOURCES := $(wildcard frontend/src/*.js) frontend/build.mjs
ASSETS := donation_portal/web/static/build/.built

frontend/node_modules/.installed: frontend/package.json frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund
	touch $@

$(ASSETS): frontend/node_modules/.installed $(FRONTEND_SOURCES)
	cd frontend && npm run --silent build
	touch $@

assets: $(ASSETS)

# the web server and one worker (with the beat scheduler), on SQLite and the embedded broker
run: install assets
	$(BIN)/python -m donation_portal.cli.run_dev --host $(HOST) --port $(PORT)

# gunicorn, a Celery worker and the beat scheduler (Procfile), after the migrations; the
# database, broker, storage and keys come from PORTAL_* (and AWS_*) variables: see README
serve: install assets
	PORTAL_ENV=production HOST=$(HOST) PORT=$(PORT) \
		$(BIN)/python -m donation_portal.cli.run_dev --procfile Procfile

lint: install-dev assets
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

test: lint assets
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install-dev
	$(BIN)/python bench/deid.py
	$(BIN)/python bench/storage.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
