# The two commands: `make run` brings the platform up, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
VAR_DIR := $(or $(MLOPS_VAR_DIR),$(CURDIR)/var)
MLFLOW_UI_STORE := $(or $(MLFLOW_TRACKING_URI),sqlite:///$(VAR_DIR)/mlflow.db)
# `PORT=8001 make run` when 8000 is taken
PORT ?= 8000

.PHONY: run serve test fuzz mutation lint bench bench-crm mlflow-ui clean-var screenshots

$(BIN)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(BIN)/.installed-dev: requirements-dev.txt $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

## run: install if needed, migrate, create the demo users and model, start web + worker + beat on PORT (8000);
## Ctrl-C stops the three gracefully (run.py: the worker finishes its running tasks, STOP_TIMEOUT 30 s at most)
run: $(BIN)/.installed
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py setup_demo --url http://127.0.0.1:$(PORT)
	@echo "MLOps Site on http://127.0.0.1:$(PORT)/admin/  (API docs: /api/docs/, metrics: /metrics). Ctrl-C stops all."
	@# web, worker and beat write their metrics to one directory, so /metrics also counts what the
	@# worker did (the CRM refresh's segment updates, its batch predictions); wiped at each start. Alert
	@# e-mails go to oncall@localhost unless ALERT_EMAIL_RECIPIENTS says otherwise: the worker prints them.
	rm -rf "$(VAR_DIR)/prometheus" && mkdir -p "$(VAR_DIR)/prometheus"
	PROMETHEUS_MULTIPROC_DIR="$(VAR_DIR)/prometheus" PATH="$(CURDIR)/$(BIN):$$PATH" DEBUG=$${DEBUG:-1} ALERT_EMAIL_RECIPIENTS=$${ALERT_EMAIL_RECIPIENTS-oncall@localhost} WEB_HOST=$${WEB_HOST:-127.0.0.1} $(BIN)/python run.py --port $(PORT)

## serve: the production web server alone (granian, serve.py): PORT (8000), WEB_WORKERS (2), DEBUG off, so
## SECRET_KEY is required; static files are collected first. The Dockerfile, compose and the Procfile run the same.
serve: $(BIN)/.installed
	DEBUG=$${DEBUG:-0} $(BIN)/python manage.py collectstatic --noinput -v 0
	DEBUG=$${DEBUG:-0} HTTPS_ONLY=$${HTTPS_ONLY:-0} $(BIN)/python serve.py

## test: install what the tests need and run the whole suite (PostgreSQL/Redis when DATABASE_URL/CELERY_BROKER_URL are set)
test: $(BIN)/.installed-dev
	$(BIN)/pytest

## fuzz: schemathesis against the API's OpenAPI schema with many more cases than the suite's (FUZZ_EXAMPLES per
## operation, positive and negative; any 5xx or answer the schema does not describe fails)
fuzz: $(BIN)/.installed-dev
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-100} $(BIN)/pytest -p no:cacheprovider -s tests/test_fuzz.py

## bench: our prediction API (serve.py) against `mlflow models serve` on the same models, single rows and
## batches of 100 and 1,000 rows, the empty-request floor and gunicorn on the same app (about 13 minutes; `--postgres
## postgres://postgres@127.0.0.1:5432` for the store in PostgreSQL, as in production); prints a JSON summary too
bench: $(BIN)/.installed
	$(BIN)/python bench/serving.py

## bench-crm: the CRM refresh of 100,000 customers in batches against one request per customer (about 10 minutes)
bench-crm: $(BIN)/.installed
	$(BIN)/python bench/crm.py

## screenshots: the monitoring pages in headless Chromium with seeded data, saved to docs/screenshots/
screenshots: $(BIN)/.installed-dev
	SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots $(BIN)/pytest -q -p no:cacheprovider tests/monitoring/test_dashboards_browser.py

## mutation: mutmut over the modules that hold the promises (governance services, promotion and registration,
## serving's predict/runtime/access/feedback, the prediction log writer), each against its own test files on
## SQLite, MUTATION_TIME_LIMIT seconds a group (1800); prints the score per group. GROUPS="access feedback" picks.
## Slow (README, "Mutation testing"): not part of CI.
mutation: $(BIN)/.installed-dev
	$(BIN)/python tools/mutation.py $(GROUPS)

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/lint-imports

## mlflow-ui: the MLflow UI on the same store, http://127.0.0.1:5000 (MLFLOW_UI_PORT); Ctrl-C stops all its processes
mlflow-ui: $(BIN)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python run.py mlflow-ui --store "$(MLFLOW_UI_STORE)" --port $${MLFLOW_UI_PORT:-5000}

clean-var:
	rm -rf "$(VAR_DIR)"
