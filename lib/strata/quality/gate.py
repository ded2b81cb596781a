"""The jobs' gate: load a layer's suite, validate, record the results, enforce, then split the
rows the row rules quarantine."""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import DataFrame, functions as F
from pyspark.sql import types as T

from strata.catalog import QUALITY_RESULTS, TableSpec
from strata.config import QualityConfig
from strata.lake.base import Lake
from strata.quality.common import SEVERITIES
from strata.quality.outcomes import GateResult, enforce
from strata.quality.results import results_frame
from strata.quality.rules import QUARANTINE_COLUMN, split_rows
from strata.quality.suites import load_suite
from strata.quality.validation import validate

logger = logging.getLogger(__name__)


def run_gate(lake: Lake, df: DataFrame, layer: str, table: str, target: TableSpec, run_id: str,
             job: str, docs_dir: Path | str | None, *,
             expectations_dir: Path | None = None) -> GateResult:
    """Validate df (cached by the caller) with expectations/<layer>/<table>.json, append the
    results rows to quality.results (always, also when the gate blocks), log the docs path, then
    enforce() (raises QualityGateBlocked on an error failure)."""
    suite = load_suite(layer, table, expectations_dir)
    table_version = lake.version(target) if lake.exists(target) else None
    result = validate(df, suite, layer, table, docs_dir=docs_dir, run_id=run_id)
    lake.append(QUALITY_RESULTS, results_frame(lake.spark, result, run_id, job, table_version,
                                               result.validated_at or datetime.now(timezone.utc)))
    failed = {s: len(result.failed(s)) for s in SEVERITIES}
    logger.info("%s.%s: %d expectation(s), %d error and %d warn failure(s); results in %s; "
                "Data Docs: %s", layer, table, len(result.outcomes), failed["error"],
                failed["warn"], QUALITY_RESULTS.qualified_name, result.docs_path or "not built")
    enforce(result)
    return result


def gate_and_split(lake: Lake, df: DataFrame, layer: str, table: str, target: TableSpec, run_id: str,
                   job: str, quality: QualityConfig) -> tuple[DataFrame, DataFrame]:
    """A layer's gate: run_gate, then split_rows by the same suite -> (good, quarantined).
    With quality.gates off, every row is good and nothing is validated."""
    if not quality.gates:
        return df, df.limit(0).withColumn(QUARANTINE_COLUMN, F.array().cast(T.ArrayType(T.StringType())))
    run_gate(lake, df, layer, table, target, run_id, job, quality.data_docs_dir)
    return split_rows(df, load_suite(layer, table))
