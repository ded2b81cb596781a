"""Failed runs (ops.failed_runs), one row per job, dataset and run date that failed or was
blocked, so that the pipeline (or a scheduler) never takes a run date whose last run failed for
done. Successful runs leave no row: their commits say they happened, and a run with nothing to
do then changes no table."""
from __future__ import annotations

import datetime as dt
import logging

from pyspark.sql import functions as F
from pyspark.sql import types as T

from strata.catalog import FAILED_RUNS
from strata.lake import Lake

log = logging.getLogger(__name__)

FAILED_RUNS_SCHEMA = T.StructType([
    T.StructField("dataset", T.StringType()), T.StructField("job", T.StringType()),
    T.StructField("run_date", T.DateType()), T.StructField("run_id", T.StringType()),
    T.StructField("status", T.StringType()), T.StructField("error", T.StringType()),
    T.StructField("failed_at", T.TimestampType())])


def record_failure(lake: Lake, dataset: str, job: str, run_date: dt.date, run_id: str, status: str,
                   error: str) -> None:
    """Append the failed run. Never raises: a log that cannot be written must not hide the job's
    own error (the caller re-raises it)."""
    try:
        row = (dataset, job, run_date, run_id, status, error[:2000], dt.datetime.now(dt.timezone.utc))
        lake.append(FAILED_RUNS, lake.spark.createDataFrame([row], FAILED_RUNS_SCHEMA))
    except Exception as exc:  # noqa: BLE001
        log.warning("could not record the failed %s of %s in %s: %s", job, dataset, FAILED_RUNS.qualified_name, exc)


def last_failure(lake: Lake, dataset: str, job: str, run_date: dt.date) -> dt.datetime | None:
    """When job last failed for dataset and run date (UTC), None if it never did."""
    if not lake.exists(FAILED_RUNS):
        return None
    latest = (lake.read(FAILED_RUNS)
              .where((F.col("dataset") == dataset) & (F.col("job") == job) & (F.col("run_date") == F.lit(run_date)))
              .agg(F.max("failed_at").alias("at")).first().at)
    # Spark hands timestamps back as naive datetimes in the driver's local time zone
    return latest.astimezone(dt.timezone.utc) if latest is not None else None
