# The two commands of the README: `make run` and `make test`.
# Both need only Python 3.11+ and make; everything else goes into .venv.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

HOST ?= 127.0.0.1
PORT ?= 5000
MAIL_PORT ?= 8025

.PHONY: run test lint lock mutants venv mail-sink clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Microblog needs Python 3.11 or newer ($(PYTHON) is older)"; exit 1; }
	@echo "Installing Microblog's dependencies into $(VENV)..."
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	@touch $(STAMP)

# Serve the app in debug mode under a local SMTP server that keeps every email
# (read them at /_mail), so that "Forgot your password?" works with nothing to set.
# Other ports: make run PORT=5001 MAIL_PORT=8026. The sink runs the app and stops
# with it (Ctrl-C); a taken port stops it at once, with a line saying so.
DEV_SETTINGS := FLASK_DEBUG=1 SERVER_NAME=$(HOST):$(PORT) PREFERRED_URL_SCHEME=http MAIL_POLL_INTERVAL=1 \
	MAIL_SERVER=$(HOST) MAIL_PORT=$(MAIL_PORT) MAIL_USE_TLS=false MAIL_USE_SSL=false \
	MAIL_USERNAME= MAIL_PASSWORD=

run: venv
	@out=$$(FLASK_DEBUG=1 $(BIN)/flask db upgrade 2>&1) || { echo "$$out"; exit 1; }
	@$(DEV_SETTINGS) $(BIN)/flask mail sink --host $(HOST) --port $(MAIL_PORT) -- \
		$(BIN)/flask run --host $(HOST) --port $(PORT)

mail-sink: venv
	@$(DEV_SETTINGS) $(BIN)/flask mail sink --host $(HOST) --port $(MAIL_PORT)

# The suite runs on TEST_WORKERS processes (pytest-xdist), the slowest files first and
# whole, every other test on its own (pytest_xdist_make_scheduler in tests/conftest.py), so that no process ends alone
# on a long file; each has its own PostgreSQL database and Redis database (see README).
# TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2

test: venv
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --no-loadscope-reorder $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The lock files, every transitive dependency pinned, made from requirements*.in:
# to add or upgrade a dependency, edit the .in file, then run `make lock`.
PIP_COMPILE := $(BIN)/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links

lock: venv
	$(PIP_COMPILE) --output-file requirements.txt requirements.in
	$(PIP_COMPILE) --output-file requirements-dev.txt requirements-dev.in

# Mutation testing of the modules that carry the promises ([tool.mutmut] in
# pyproject.toml says which, and with which tests), on SQLite. Slow: not part of
# `make test` or CI. It resumes where it stopped; `make mutants MUTANTS='app.security*'`
# runs one module's mutants. It has a virtualenv of its own, so that it can use another
# Python: Python 3.11.7 stops mutmut's first pass with "AST constructor recursion
# depth mismatch" (CPython gh-106905); `MUTANTS_PYTHON=python3.12` does not.
MUTANTS_PYTHON ?= $(PYTHON)
MUTANTS_VENV := .venv-mutants
MUTANTS_NICE ?= 10
MUTANTS ?=
# A Redis database of its own (its tests empty it) for the RQ backend's mutants, e.g.
# MUTANTS_REDIS_URL=redis://127.0.0.1:6379/9; set it from the first run, whose pass over
# the tests maps each test to the functions it runs. Without it they count as "no tests".
MUTANTS_REDIS_URL ?=
# Two processes at a time, or one with Redis: the Redis tests of two would share its
# database and empty it under each other, failing tests that pass alone, so that mutants
# no test kills counted as killed.
MUTMUT_JOBS ?= $(if $(MUTANTS_REDIS_URL),1,2)

mutants: requirements-dev.txt
	@test -x $(MUTANTS_VENV)/bin/mutmut || { $(MUTANTS_PYTHON) -m venv $(MUTANTS_VENV) && \
		$(MUTANTS_VENV)/bin/python -m pip install --quiet -r requirements-dev.txt; }
	TEST_DATABASE_URL= TEST_REDIS_URL=$(MUTANTS_REDIS_URL) nice -n $(MUTANTS_NICE) $(MUTANTS_VENV)/bin/mutmut run \
		--max-children $(MUTMUT_JOBS) $(MUTANTS)
	$(MUTANTS_VENV)/bin/python bench/mutation_score.py --survivors

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artifacts mutants $(MUTANTS_VENV)
