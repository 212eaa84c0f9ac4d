# Two commands matter: `make demo` (set up, start the local stack, run the platform end to end)
# and `make test` (set up, then every test). Everything else is a building block of those two.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3.11
UV_VERSION := 0.13.9
UV := .tools/uv/bin/uv
VENV := .venv
TRITON_VENV := .venv-triton
# Model Analyzer in an environment of its own: it pins protobuf<5 and tritonclient 2.51 (whose perf_analyzer runs here).
MODEL_ANALYZER_VENV := .tools/model-analyzer
PY := $(VENV)/bin/python
# The platform is installed editable into .venv (no PYTHONPATH); the Kubernetes tools of `make k8s-tools`
# (helm, kubectl, …) are in .tools/bin.
export PATH := $(CURDIR)/$(VENV)/bin:$(CURDIR)/.tools/bin:$(PATH)
export PYTHONUNBUFFERED := 1

# Synthetic applicants generated when data/ has no Home Credit CSVs (the real Kaggle files are used if present).
DEMO_APPLICANTS ?= 20000
# The BFF's port: the same BFF_PORT variable the BFF and devstack read.
BFF_PORT ?= 8080
BFF_URL := http://127.0.0.1:$(BFF_PORT)
# The local stack's addresses and credentials as environment variables, for the platform's commands.
STACK_ENV = eval "$$($(PY) -m devstack env)" &&
FEATURES_BODY := {"AMT_INCOME_TOTAL": 50000, "AMT_CREDIT": 200000, "AMT_ANNUITY": 15000, "DAYS_BIRTH": -12000, "DAYS_EMPLOYED": -2000, "bureau_credit_count": 3, "bureau_credit_active_count": 1, "bureau_credit_days_enddate_mean": -500, "bureau_amt_credit_sum": 300000, "bureau_amt_credit_sum_overdue": 0}

.PHONY: help setup lock lint fmt test demo demo-drift demo-rollout stack-up stack-down stack-reset stack-status data features train serve predict dashboards k8s-tools prometheus-tools analyze bench bench-tools

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON_BOOT) -m venv .tools/uv
	.tools/uv/bin/pip install --quiet uv==$(UV_VERSION)

# The stamp files make setup a no-op until a lock file changes. Bytecode is compiled at install: every
# service and test process imports these packages, and with PYTHONDONTWRITEBYTECODE set (as here) Python
# would otherwise compile them again in each one (`import monitor.service` here: 14.7 s without, 5.9 s with).
$(VENV)/.installed: requirements.lock pyproject.toml | $(UV)
	test -x $(PY) || $(UV) venv --quiet --python $(PYTHON_BOOT) $(VENV)
	$(UV) pip sync --quiet --compile-bytecode --python $(PY) requirements.lock
	$(UV) pip install --quiet --no-deps --python $(PY) -e .
	touch $@

$(TRITON_VENV)/.installed: requirements-triton.lock | $(UV)
	test -x $(TRITON_VENV)/bin/python || $(UV) venv --quiet --python $(PYTHON_BOOT) $(TRITON_VENV)
	$(UV) pip sync --quiet --compile-bytecode --python $(TRITON_VENV)/bin/python requirements-triton.lock
	touch $@

setup: $(VENV)/.installed $(TRITON_VENV)/.installed ## Create the Python environments (idempotent)

$(MODEL_ANALYZER_VENV)/.installed: benchmarks/model_analyzer/requirements.lock | $(UV)
	test -x $(MODEL_ANALYZER_VENV)/bin/python || $(UV) venv --quiet --python $(PYTHON_BOOT) $(MODEL_ANALYZER_VENV)
	$(UV) pip sync --quiet --compile-bytecode --python $(MODEL_ANALYZER_VENV)/bin/python benchmarks/model_analyzer/requirements.lock
	touch $@

lock: | $(UV) ## Re-resolve the pinned lock files from the .in files
	$(UV) pip compile --quiet --python-version 3.11 requirements.in -o requirements.lock
	$(UV) pip compile --quiet --python-version 3.11 requirements-triton.in -o requirements-triton.lock

k8s-tools: | $(UV) ## helm, kubectl, kubernetes-validate, checkov, hadolint, CRD validators into .tools/ (idempotent)
	tools/install-k8s-tools.sh

prometheus-tools: ## Prometheus 2.42 + promtool (Debian's package unpacked, no daemon) into .tools/prometheus (idempotent)
	tools/install-prometheus.sh

lint: $(VENV)/.installed ## ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

stack-up: setup prometheus-tools ## Start the local stack (idempotent, health-checked; logs in .stack/logs)
	$(PY) -m devstack up

stack-down: $(VENV)/.installed ## Stop what stack-up started (system services stay up)
	$(PY) -m devstack down

stack-reset: $(VENV)/.installed ## stack-down, then delete all its state: .stack/, its MLflow database, vhost, Redis keys
	$(PY) -m devstack reset

stack-status: $(VENV)/.installed ## Health of every stack component
	$(PY) -m devstack status

# Test worker processes (pytest-xdist), each given whole test files: a worker starts its own private servers
# (S3, MLflow, Triton), and a file's tests share its module fixtures. TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2

test: setup lint k8s-tools prometheus-tools bench-tools ## Set up and run every test (unit, integration on the real stack, chart)
	$(VENV)/bin/pytest --numprocesses $(TEST_WORKERS) --dist loadfile

data: $(VENV)/.installed ## Synthetic Home Credit CSVs in data/ (kept if present: real Kaggle files win)
	$(PY) data/synthetic_home_credit.py --applicants $(DEMO_APPLICANTS)

features: data ## Raw CSVs -> S3 -> Parquet offline store -> feast apply -> Redis online store
	$(STACK_ENV) $(PY) -m feature_store upload
	$(STACK_ENV) $(PY) -m feature_store run

train: ## Train, export to ONNX, register in MLflow, gate the champion alias
	$(STACK_ENV) $(PY) -m trainer

serve: ## Model sync (champion -> Triton), log worker, monitor, job worker and BFF as managed daemons
	$(PY) -m devstack start-app model_sync -- $(PY) -m model_sync
	$(PY) -m devstack start-app log_worker -- $(PY) -m log_worker
	$(PY) -m devstack start-app monitor -- $(PY) -m monitor
	$(PY) -m devstack start-app job_worker -- $(PY) -m job_worker
	$(PY) -m devstack start-app bff --health $(BFF_URL)/health/ready -- $(PY) -m bff

predict: ## The README's three curl calls against the BFF, then the inference-log table in S3
	@echo "--- POST /predict (features in the body)"
	curl -sS --fail-with-body -X POST $(BFF_URL)/predict -H 'Content-Type: application/json' -d '$(FEATURES_BODY)'
	@echo; echo "--- POST /predict (features from the online store)"
	curl -sS --fail-with-body -X POST $(BFF_URL)/predict -H 'Content-Type: application/json' -d '{"SK_ID_CURR": 100002}'
	@echo; echo "--- POST /predict/batch (two rows)"
	curl -sS --fail-with-body -X POST $(BFF_URL)/predict/batch -H 'Content-Type: application/json' -d '[$(FEATURES_BODY), {"SK_ID_CURR": 100002, "AMT_CREDIT": 250000}]'
	@echo; echo "--- inference logs (the Delta table in S3; the worker flushes a partial batch after BATCH_MAX_AGE_S)"
	sleep 7
	$(VENV)/bin/mlops logs query --since 15m --limit 5

dashboards: $(VENV)/.installed ## Every Grafana dashboard drawn from the local Prometheus: .stack/dashboards/*.png
	$(STACK_ENV) $(PY) -m dashboards render --range 15m --out .stack/dashboards

bench-tools: $(MODEL_ANALYZER_VENV)/.installed ## wrk (Debian's package) and Model Analyzer + perf_analyzer (.tools/model-analyzer) for the benchmarks (idempotent)
	command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; } || { echo "wrk is missing and apt-get could not install it: install Debian's wrk package" >&2; exit 1; }

bench: setup bench-tools ## Every benchmark, one after the other (~50 min on this machine): rewrites benchmarks/results/
	$(PY) benchmarks/serving/run.py --out benchmarks/results/serving.md
	$(PY) benchmarks/serving/call_merging.py --out benchmarks/results/serving_call_merging.md
	$(PY) benchmarks/inference_logging/run.py --out benchmarks/results/inference_logging.md
	$(PY) benchmarks/inference_logging/table.py --out benchmarks/results/inference_log_table.md
	$(PY) benchmarks/inference_logging/message_size.py --out benchmarks/results/inference_log_message_size.md
	$(PY) benchmarks/inference_logging/reader.py --out benchmarks/results/log_worker_reader.md
	$(PY) benchmarks/batch_scoring/run.py --out benchmarks/results/batch_scoring.md
	$(PY) benchmarks/startup/run.py --out benchmarks/results/startup.md
	$(PY) benchmarks/model_analyzer/run.py

analyze: setup $(MODEL_ANALYZER_VENV)/.installed ## Model Analyzer search (~15 min) + side-by-side check -> benchmarks/results/model_analyzer.md, its PNG
	$(PY) benchmarks/model_analyzer/run.py

# Prometheus' graph page for the p99 latency of /predict over the last 15 minutes.
P99_GRAPH := http://127.0.0.1:9090/graph?g0.expr=histogram_quantile(0.99%2C%20sum%20by%20(le%2C%20route)%20(rate(bff_request_duration_seconds_bucket%5B1m%5D)))&g0.tab=0&g0.range_input=15m

demo: stack-up features train serve predict ## Set up, start the stack, run the platform end to end
	@echo; echo "MLflow UI: http://127.0.0.1:5000   BFF docs: $(BFF_URL)/docs   stack: make stack-status / make stack-down"
	@echo "Prometheus: http://127.0.0.1:9090/targets   alerts: http://127.0.0.1:9090/alerts"
	@echo "  p99 latency by route: $(P99_GRAPH)"
	@echo "  dashboards as pictures: make dashboards (then open .stack/dashboards/*.png)"

demo-drift: $(VENV)/.installed ## After `make demo`: shifted traffic + labels -> drift gauges, alert, retraining, new challenger
	$(STACK_ENV) $(PY) -m monitor.drift_demo

demo-rollout: $(VENV)/.installed ## After `make demo`: a challenger as a 20 % canary under traffic, promoted or rolled back by the analysis
	$(STACK_ENV) $(PY) -m monitor.rollout_demo
