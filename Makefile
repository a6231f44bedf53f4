# The portal's everyday commands. `make help` lists them.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
export PORTAL_INSTANCE_PATH ?= $(CURDIR)/instance

.PHONY: help run dev test test-pg lint format bench migrate lock clean

help: ## List the commands
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

run: ## Install what is missing, migrate the embedded database, serve on :$(PORT)
	@bash scripts/bootstrap.sh run
	@$(VENV)/bin/flask --app app db upgrade
	@echo ""
	@echo "  Portal is starting: http://$$(hostname -I 2>/dev/null | awk '{print $$1}' || echo 127.0.0.1):$(PORT)/  (also http://127.0.0.1:$(PORT)/)"
	@echo "  The first account you create becomes the admin."
	@echo ""
	@PORT=$(PORT) exec $(VENV)/bin/gunicorn -c python:portal.gunicorn_conf app:app

dev: ## Flask's debug server with reload (development only)
	@bash scripts/bootstrap.sh run
	@$(VENV)/bin/flask --app app db upgrade
	@$(VENV)/bin/flask --app app run --debug --port $(PORT)

test: ## Install what the tests need (sshd, Chromium, deps) and run the suite
	@bash scripts/bootstrap.sh test
	@$(PY) -m pytest $(PYTEST_ARGS)

test-pg: ## The suite against the local PostgreSQL (a dedicated database is created and dropped)
	@DATABASE_URL=$${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres} $(MAKE) test

lint: ## ruff lint and format check
	@bash scripts/bootstrap.sh test
	@$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: ## ruff format
	@$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

bench: ## Benchmarks (see bench/README.md); results go to docs/benchmarks.md
	@bash scripts/bootstrap.sh test
	@$(PY) bench/run_all.py

migrate: ## Apply migrations to $$DATABASE_URL (or the embedded SQLite)
	@$(VENV)/bin/flask --app app db upgrade

# The lock tool lives in a throwaway virtualenv of its own: it is not a project dependency.
LOCK_TOOL ?= /tmp/portal-lock-tool
UV_VERSION := 0.13.9
# The build backend (pyproject's build-system.requires) is locked too: bootstrap.sh builds the
# editable install without build isolation, so every package installed has a pinned hash.
BUILD_REQUIRES = python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))'
UV_COMPILE = $(LOCK_TOOL)/bin/uv pip compile pyproject.toml - --universal --python-version 3.11 \
	--generate-hashes --custom-compile-command "make lock" --quiet $(LOCK_ARGS)

lock: ## Re-pin requirements.lock / requirements-test.lock (with hashes) from pyproject.toml; LOCK_ARGS=--upgrade for newest
	@[ -x $(LOCK_TOOL)/bin/uv ] || { python3 -m venv $(LOCK_TOOL) && $(LOCK_TOOL)/bin/pip install -q uv==$(UV_VERSION); }
	@$(BUILD_REQUIRES) | $(UV_COMPILE) -o requirements.lock
	@$(BUILD_REQUIRES) | $(UV_COMPILE) --extra test -o requirements-test.lock
	@echo "requirements.lock and requirements-test.lock written; commit them with pyproject.toml"

clean: ## Remove the virtualenv and caches (keeps instance/)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
