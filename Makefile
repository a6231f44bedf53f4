# The portal's everyday commands. `make help` lists them.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
export PORTAL_INSTANCE_PATH ?= $(CURDIR)/instance

.PHONY: help run dev test test-pg lint format bench migrate clean

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

clean: ## Remove the virtualenv and caches (keeps instance/)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
