# `make run` and `make test` are all a newcomer needs: both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint format bench clean

run: $(VENV)/.installed
	$(BIN)/python chat.py

# On an embedded PostgreSQL 18, or on a server of yours (a role with CREATEDB; README, "Tests"):
#   make test TEST_DATABASE_URL=postgresql://user:pass@host:port/db
test: $(VENV)/.dev-installed
	$(BIN)/python -m pytest

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(VENV)/.dev-installed
	$(BIN)/python bench/run.py

# make backup; make restore FILE=backups/chat-….dump [FORCE=1]: see backup.py
.PHONY: backup restore
backup: $(VENV)/.installed
	$(BIN)/python backup.py backup

restore: $(VENV)/.installed
	$(BIN)/python backup.py restore "$(FILE)" $(if $(filter 1,$(FORCE)),--force)

format: $(VENV)/.dev-installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

$(VENV)/.installed: requirements.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-output
