"""The results rows: one row per expectation of a gate (RESULTS_SCHEMA), appended to the
quality results table (strata.catalog.QUALITY_RESULTS)."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from strata.quality.outcomes import GateResult

RESULTS_SCHEMA = T.StructType([
    T.StructField("run_id", T.StringType()),
    T.StructField("job", T.StringType()),
    T.StructField("layer", T.StringType()),
    T.StructField("table", T.StringType()),
    T.StructField("table_version", T.LongType()),
    T.StructField("expectation_type", T.StringType()),
    T.StructField("column", T.StringType()),
    T.StructField("kwargs", T.StringType()),
    T.StructField("severity", T.StringType()),
    T.StructField("success", T.BooleanType()),
    T.StructField("element_count", T.LongType()),
    T.StructField("unexpected_count", T.LongType()),
    T.StructField("unexpected_percent", T.DoubleType()),
    T.StructField("observed_value", T.StringType()),
    T.StructField("validated_at", T.TimestampType()),
])


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str, sort_keys=True)


def results_frame(spark: SparkSession, result: GateResult, run_id: str, job: str,
                  table_version: int | None, validated_at: datetime) -> DataFrame:
    """One row per expectation (RESULTS_SCHEMA). table_version: the target table's version the
    batch was validated against (None before its first commit). kwargs and observed_value are
    JSON strings (observed_value null when GX observed nothing, e.g. column map expectations)."""
    rows = [
        (run_id, job, result.layer, result.table, _int(table_version), o.expectation_type,
         o.column, json.dumps(o.kwargs, default=str, sort_keys=True), o.severity,
         bool(o.success), _int(o.element_count), _int(o.unexpected_count),
         None if o.unexpected_percent is None else float(o.unexpected_percent),
         _json_or_none(o.observed_value), validated_at)
        for o in result.outcomes
    ]
    return spark.createDataFrame(rows, RESULTS_SCHEMA)
