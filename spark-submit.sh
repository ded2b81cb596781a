#!/usr/bin/env bash
# Submit a Strata job to Spark: local mode, a standalone cluster, or whatever the config names.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: ./spark-submit.sh JOB [--env ENV] [--master URL] [--run-date YYYY-MM-DD] [job args...]

Runs jobs/JOB.py with spark-submit. lib/ is packaged for --py-files, conf/ and expectations/
are shipped with --archives (the driver reads them from this checkout).

  JOB                 a file in jobs/ without .py (e.g. lake_smoke, ingest, silver, gold, pipeline)
  --env ENV           configuration environment: conf/ENV.yaml over conf/base.yaml (default: local)
  --master URL        overrides spark.master of the config: local[*], spark://host:port, ...
  --run-date DATE     logical date of the run (default: today, UTC)
  -h, --help          this text

The Delta connector (--packages/--jars from lake.delta_spark_packages / lake.delta_spark_jars)
is passed only when lake.engine is delta-spark. Extra spark-submit options can be given in
SPARK_SUBMIT_OPTS_EXTRA. Any other argument goes to the job (./spark-submit.sh JOB --help lists them).

Exit codes: 0 ok, 2 a quality gate blocked publication, 1 any other error.
The last line of output is the job's JSON summary (job, env, run_id, run_date, status, tables, counts).
USAGE
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${STRATA_PYTHON:-$ROOT/.venv/bin/python}"

if [[ $# -eq 0 || "$1" == "-h" || "$1" == "--help" ]]; then
  usage
  [[ $# -eq 0 ]] && exit 1 || exit 0
fi
JOB="$1"; shift
JOB_FILE="$ROOT/jobs/$JOB.py"
if [[ ! -f "$JOB_FILE" ]]; then
  echo "spark-submit.sh: unknown job '$JOB'; jobs: $(cd "$ROOT/jobs" && ls *.py | sed 's/\.py$//' | tr '\n' ' ')" >&2
  exit 1
fi
if [[ ! -x "$PY" ]]; then
  echo "spark-submit.sh: no Python environment at $PY; run 'make venv' first (or set STRATA_PYTHON)" >&2
  exit 1
fi

ENV_NAME="local"; MASTER=""; JOB_ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --env) ENV_NAME="${2:?--env needs a value}"; shift 2 ;;
    --env=*) ENV_NAME="${1#*=}"; shift ;;
    --master) MASTER="${2:?--master needs a value}"; shift 2 ;;
    --master=*) MASTER="${1#*=}"; shift ;;
    *) JOB_ARGS+=("$1"); shift ;;
  esac
done

export STRATA_CONF_DIR="$ROOT/conf"
# A bad config fails here, before Spark, with one line on stderr and the usual JSON summary.
config() { "$PY" -m strata.config --env "$ENV_NAME" "$1"; }
if ! ENGINE="$(config lake.engine)"; then
  "$PY" -c 'import json, sys; print(json.dumps({"job": sys.argv[1], "env": sys.argv[2], "status": "failed", "tables": {}, "error": "config error"}))' "$JOB" "$ENV_NAME"
  exit 1
fi
[[ -n "$MASTER" ]] || MASTER="$(config spark.master)"
DRIVER_MEMORY="$(config spark.driver_memory)"
# The job builds its session from config; keep its master equal to the one submitted.
export STRATA_SPARK__MASTER="$MASTER"

BUILD="$ROOT/build"
mkdir -p "$BUILD"
( cd "$ROOT/lib" && "$PY" - <<'PYZIP'
import pathlib, zipfile
with zipfile.ZipFile("../build/strata-lib.zip", "w", zipfile.ZIP_DEFLATED) as z:
    for p in sorted(pathlib.Path("strata").rglob("*.py")):
        z.write(p)
PYZIP
)
( cd "$ROOT" && "$PY" - <<'PYZIP'
import pathlib, zipfile
with zipfile.ZipFile("build/strata-conf.zip", "w", zipfile.ZIP_DEFLATED) as z:
    for top in ("conf", "expectations"):
        for p in sorted(pathlib.Path(top).rglob("*")):
            if p.is_file():
                z.write(p)
PYZIP
)

SPARK_HOME="${SPARK_HOME:-$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}"
export SPARK_HOME
export PYSPARK_PYTHON="$PY" PYSPARK_DRIVER_PYTHON="$PY"
case "$MASTER" in local*|spark://127.0.0.1*|spark://localhost*) export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}" ;; esac

SUBMIT=("$SPARK_HOME/bin/spark-submit" --master "$MASTER" --name "strata-$JOB"
        --driver-memory "$DRIVER_MEMORY"
        --py-files "$BUILD/strata-lib.zip"
        --archives "$BUILD/strata-conf.zip#strata_conf"
        --conf "spark.pyspark.python=$PY"
        --conf "spark.executorEnv.STRATA_CONF_DIR=strata_conf/conf"
        --conf "spark.ui.showConsoleProgress=false"
        --conf "spark.driver.extraJavaOptions=-Dlog4j2.configurationFile=file:$ROOT/conf/log4j2.properties")
if [[ "$ENGINE" == "delta-spark" ]]; then
  PACKAGES="$(config lake.delta_spark_packages)"; JARS="$(config lake.delta_spark_jars)"
  if [[ -z "$PACKAGES" && -z "$JARS" ]]; then
    echo "spark-submit.sh: lake.engine is delta-spark but neither lake.delta_spark_packages nor lake.delta_spark_jars is set" >&2
    exit 1
  fi
  [[ -n "$PACKAGES" ]] && SUBMIT+=(--packages "$PACKAGES")
  [[ -n "$JARS" ]] && SUBMIT+=(--jars "$JARS")
fi
# shellcheck disable=SC2206
SUBMIT+=(${SPARK_SUBMIT_OPTS_EXTRA:-})

exec "${SUBMIT[@]}" "$JOB_FILE" --env "$ENV_NAME" "${JOB_ARGS[@]}"
