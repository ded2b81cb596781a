#!/usr/bin/env bash
# Submit a Strata job to Spark: local mode, a standalone cluster, or whatever the config names.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: ./spark-submit.sh JOB [--env ENV] [--master URL] [--run-date YYYY-MM-DD] [job args...]

Runs jobs/JOB.py with spark-submit. lib/ is packaged for --py-files, conf/ and expectations/
are shipped with --archives (the driver reads them from this checkout).

  JOB                 a file in jobs/ without .py (e.g. upload, check, ingest, silver, gold, anomalies, pipeline, train, maintain)
  --env ENV           configuration environment: conf/ENV.yaml over conf/base.yaml (default: local)
  --master URL        overrides spark.master of the config: local[*], spark://host:port, ...
  --run-date DATE     logical date of the run (default: today, UTC)
  -h, --help          this text

The Delta connector (--packages/--jars from lake.delta_spark_packages / lake.delta_spark_jars)
is passed only when lake.engine is delta-spark. Extra spark-submit options can be given in
SPARK_SUBMIT_OPTS_EXTRA. Any other argument goes to the job (./spark-submit.sh JOB --help lists them).

Arguments and config are checked before Spark starts (with the job's own argument parser), the
job's expectation suites before its Spark session; a failure exits 1 with the JSON summary.

Exit codes: 0 ok, 2 a quality gate blocked publication, 1 any other error (bad arguments too).
Stdout is one line, the job's JSON summary (job, env, run_id, run_date, status, tables, counts);
logs go to stderr.
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

# A failure of this script itself: one line on stderr, the JSON summary on stdout, exit 1.
fail() {
  echo "spark-submit.sh: $1" >&2
  "$PY" -c 'import json, sys; print(json.dumps({"job": sys.argv[1], "env": sys.argv[2], "run_id": None, "run_date": None, "status": "failed", "tables": {}, "error": sys.argv[3]}))' "$JOB" "$ENV_NAME" "$1"
  exit 1
}

export STRATA_CONF_DIR="$ROOT/conf"
# The checks below import this checkout's lib/ (the job gets the same code through --py-files).
export PYTHONPATH="$ROOT/lib${PYTHONPATH:+:$PYTHONPATH}"
if [[ "$JOB" == "check" || "$JOB" == "upload" ]]; then
  # Jobs that need no cluster run in plain Python: upload copies files; the pre-flight check
  # reports config errors itself (its sample is typed on a local[1] session it starts only when
  # there are rows to type).
  export PYSPARK_PYTHON="$PY" PYSPARK_DRIVER_PYTHON="$PY" SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"
  exec "$PY" "$JOB_FILE" --env "$ENV_NAME" "${JOB_ARGS[@]}"
fi
CHECK=("$PY" -m strata.runner --check "$JOB" --env "$ENV_NAME" "${JOB_ARGS[@]}")
for arg in "${JOB_ARGS[@]}"; do
  # The job's own help, without starting Spark.
  [[ "$arg" == "-h" || "$arg" == "--help" ]] && exec "${CHECK[@]}"
done
# Bad arguments or a bad config fail here, before the JVM starts, with one line on stderr and the
# job's JSON summary on stdout (the job's own add_arguments; about a tenth of a second). The job
# checks its expectation suites itself, before its Spark session.
"${CHECK[@]}" || exit 1
# The settings this script needs, in one Python start, one per line (an unset one is empty).
SETTINGS="$("$PY" -m strata.config --env "$ENV_NAME" lake.engine spark.master spark.driver_memory \
            lake.delta_spark_packages lake.delta_spark_jars)" || exit 1
mapfile -t SETTING <<< "$SETTINGS"
ENGINE="${SETTING[0]}"
[[ -n "$MASTER" ]] || MASTER="${SETTING[1]}"
DRIVER_MEMORY="${SETTING[2]}"
PACKAGES="${SETTING[3]:-}"; JARS="${SETTING[4]:-}"
if [[ "$ENGINE" == "delta-spark" && -z "$PACKAGES" && -z "$JARS" ]]; then
  fail "lake.engine is delta-spark but neither lake.delta_spark_packages nor lake.delta_spark_jars is set"
fi
# The job builds its session from config; keep its master equal to the one submitted.
export STRATA_SPARK__MASTER="$MASTER"

BUILD="$ROOT/build"
mkdir -p "$BUILD"
# Each archive is written beside its name and renamed into place: a submit running at the same
# time never reads a half-written one.
( cd "$ROOT/lib" && "$PY" - "$BUILD/strata-lib.zip" <<'PYZIP'
import os, pathlib, sys, zipfile
partial = f"{sys.argv[1]}.{os.getpid()}"
with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as z:
    for p in sorted(pathlib.Path("strata").rglob("*.py")):
        z.write(p)
os.replace(partial, sys.argv[1])
PYZIP
)
( cd "$ROOT" && "$PY" - "$BUILD/strata-conf.zip" <<'PYZIP'
import os, pathlib, sys, zipfile
partial = f"{sys.argv[1]}.{os.getpid()}"
with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as z:
    for top in ("conf", "expectations"):
        for p in sorted(pathlib.Path(top).rglob("*")):
            if p.is_file():
                z.write(p)
os.replace(partial, sys.argv[1])
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
  [[ -n "$PACKAGES" ]] && SUBMIT+=(--packages "$PACKAGES")
  [[ -n "$JARS" ]] && SUBMIT+=(--jars "$JARS")
fi
# shellcheck disable=SC2206
SUBMIT+=(${SPARK_SUBMIT_OPTS_EXTRA:-})

# Spark's PythonRunner hands the driver's stderr to the JVM's stdout; the supervisor sends every
# line back to stderr but the summary line, which alone goes to stdout (and forwards TERM/INT/HUP).
exec "$PY" -m strata.runner --submit "$JOB" "$ENV_NAME" -- \
  "${SUBMIT[@]}" "$JOB_FILE" --env "$ENV_NAME" "${JOB_ARGS[@]}"
