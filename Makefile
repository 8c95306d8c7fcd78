# The two commands of the README: `make run` and `make test`.
# Both need only Python 3.11+ and make; everything else goes into .venv.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

HOST ?= 127.0.0.1
PORT ?= 5000
MAIL_PORT ?= 8025

.PHONY: run test lint venv mail-sink clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Microblog needs Python 3.11 or newer ($(PYTHON) is older)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

# Serve the app in debug mode with a local SMTP server that prints every email,
# so that "Forgot your password?" works with nothing to configure.
run: venv
	FLASK_DEBUG=1 $(BIN)/flask db upgrade
	@echo "Microblog: http://$(HOST):$(PORT)   emails are printed below (SMTP on $(HOST):$(MAIL_PORT))"
	FLASK_DEBUG=1 $(BIN)/flask mail sink --host $(HOST) --port $(MAIL_PORT) & sink=$$!; \
	trap 'kill $$sink 2>/dev/null' EXIT INT TERM; \
	FLASK_DEBUG=1 MAIL_SERVER=$(HOST) MAIL_PORT=$(MAIL_PORT) MAIL_USE_TLS=false MAIL_USE_SSL=false \
	MAIL_USERNAME= MAIL_PASSWORD= SERVER_NAME=$(HOST):$(PORT) PREFERRED_URL_SCHEME=http \
		$(BIN)/flask run --host $(HOST) --port $(PORT)

mail-sink: venv
	FLASK_DEBUG=1 $(BIN)/flask mail sink --host $(HOST) --port $(MAIL_PORT)

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artifacts
