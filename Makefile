# One command each: `make demo` runs the pipeline on the embedded local default,
# `make test` runs the whole suite. Both bootstrap .venv on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

export SPARK_LOCAL_IP ?= 127.0.0.1
export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: venv demo s3 mlflow-ui orchestrator test test-fast bench lock clean

venv: $(STAMP)

# Reinstall only when the dependency declarations change.
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version' 
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,orchestration]'
	$(PY) -m pip check
	@touch $(STAMP)

DAYS ?= 7
demo: venv
	$(PY) -m strata_dev.demo --env local --days $(DAYS)

# A local S3 endpoint in the foreground for jobs run by hand with --env local (S3_PORT=0: a free port).
S3_PORT ?= 0
s3: venv
	@$(PY) -m strata_dev.local_s3 --port $(S3_PORT)

# The MLflow UI over the local tracking store (runs, metrics, plots, registered models).
MLFLOW_PORT ?= 5000
mlflow-ui: venv
	$(PY) -m mlflow ui --host 127.0.0.1 --port $(MLFLOW_PORT) \
	  --backend-store-uri "$$($(PY) -m strata.config --env local mlflow.tracking_uri)"

# The Dagster UI and daemon (schedules, sensors, backfills) on 127.0.0.1 over the local lake:
# orchestration/, each asset a `spark-submit.sh JOB --env $(ORCHESTRATOR_ENV)` run. Dagster's
# storage under .strata/dagster. Raw data comes from the S3 endpoint of STRATA_S3__ENDPOINT_URL
# (start one with `make s3` in another shell and export what it prints).
DAGSTER_PORT ?= 3000
ORCHESTRATOR_ENV ?= local
DAGSTER_HOME_DIR := $(abspath .strata/dagster)
orchestrator: venv
	@mkdir -p $(DAGSTER_HOME_DIR)
	@cp orchestration/dagster.yaml $(DAGSTER_HOME_DIR)/dagster.yaml
	DAGSTER_HOME=$(DAGSTER_HOME_DIR) STRATA_ENV=$(ORCHESTRATOR_ENV) PYTHONPATH=$(abspath lib):$(abspath .) \
	  $(VENV)/bin/dagster dev -m orchestration.definitions -h 127.0.0.1 -p $(DAGSTER_PORT)

test: venv
	$(PY) -m pytest

test-fast: venv
	$(PY) -m pytest -m "not slow and not cluster"

bench: venv
	$(PY) bench/lake_write.py

lock: venv
	(echo "# Exact versions CI and make install (pip install -c constraints.txt). Regenerate with 'make lock'."; \
	 $(PY) -m pip freeze --exclude-editable) > constraints.txt

clean:
	rm -rf build lake .strata spark-warehouse metastore_db
