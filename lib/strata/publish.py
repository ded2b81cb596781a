"""The one way a job publishes a table: gate -> split -> write -> quarantine.

    gate     validate each frame with its table's suite (expectations/<layer>/<name>.json); the
             results rows of every gate go to quality.results in one commit, also when one
             blocks; then an error failure raises QualityGateBlocked before anything is written.
    split    the suite's row rules divide each frame into good rows and rejected ones.
    write    the good rows go to the table, as an upsert by key or a replacement of partitions.
    quarantine  the rejected rows (and any the job rejected before the gate) replace the run
             date's partition of the table's quarantine table (catalog.quarantine_of).

prepare() does the first two for every output of a job before write() publishes any, so a
block leaves every table of the job untouched, and a job can reconcile its counts in between
(silver does). publish() is both in one call.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame, functions as F
from pyspark.sql import types as T

from strata import catalog, quality
from strata.catalog import QUALITY_RESULTS, TableSpec
from strata.lake import CommitResult
from strata.quality import QUARANTINE_COLUMN

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upsert:
    """Insert or replace rows by key (Lake.upsert): newer_by orders versions across runs,
    retract names rows the table must no longer hold."""
    keys: list[str]
    newer_by: list[str] | None = None
    retract: DataFrame | None = None
    # Columns by which the rows the gate rejects are retracted as well (a record refined before
    # that fails a rule now must leave the table).
    retract_rejected: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReplacePartitions:
    """Replace exactly these partitions (Delta partition values) with the good rows."""
    partitions: list[dict[str, Any]]


@dataclass
class Output:
    """One table a job publishes. frame: the rows, cached by the caller (the gate reads it
    several times). record: what a quarantine row keeps of a rejected row (default: the row as
    JSON). drop: columns the gate sees but the table does not keep. rejected_before: rows the
    job rejected before the gate, already in quarantine shape (quarantine_rows)."""
    table: TableSpec
    frame: DataFrame
    how: Upsert | ReplacePartitions
    record: Column | None = None
    drop: tuple[str, ...] = ()
    rejected_before: DataFrame | None = None


@dataclass
class Prepared:
    """An output after its gate: the rows to write, the rows the gate rejected (with
    QUARANTINE_COLUMN) and the quarantine rows (those and the output's rejected_before)."""
    output: Output
    good: DataFrame
    rejected: DataFrame
    quarantined: DataFrame
    # Set by a job that counted the quarantine rows (to reconcile): write() checks that the same
    # number was written, since the frame is computed again to write it.
    quarantined_count: int | None = None


@dataclass(frozen=True)
class Published:
    table: CommitResult
    quarantine: CommitResult

    def counts(self) -> dict[str, int]:
        return {"rows": self.table.rows_added, "quarantined": self.quarantine.rows_added}


class NotReconciled(RuntimeError):
    """What was written does not match what was counted: the job must not report success."""


def quarantine_rows(df: DataFrame, record: Column, reasons: Column, table: TableSpec, run_id: str,
                    run_date: dt.date, quarantined_at: dt.datetime) -> DataFrame:
    """The quarantine tables' shape: the table the row was meant for, the original record, why,
    where it came from (when the row carries lineage), and when."""
    lineage = set(df.columns)
    source_key = F.col("_source_key") if "_source_key" in lineage else F.lit(None).cast("string")
    source_row = F.col("_source_row") if "_source_row" in lineage else F.lit(None)
    return df.select(
        F.lit(table.qualified_name).alias("table"), record.alias("record"), reasons.alias("failed_rules"),
        source_key.alias("source_key"), source_row.cast("long").alias("source_row"),
        F.lit(run_id).alias("run_id"), F.lit(quarantined_at).cast("timestamp").alias("quarantined_at"),
        F.lit(run_date).cast("date").alias("quarantined_on"))


def gate(ctx, checks: list[tuple[TableSpec, DataFrame]], *, always: bool = False) -> list[Any]:
    """Validate each (table, frame) with the table's suite; append every result to
    quality.results in one commit; then raise QualityGateBlocked on the first error failure.
    Returns the GateResults (None for each when quality.gates is off and not `always`: the
    bronze gate always runs)."""
    if not checks or not (always or ctx.config.quality.gates):
        return [None] * len(checks)
    lake, results, rows = ctx.lake, [], None
    for table, frame in checks:
        layer, name = catalog.suite_name(table)
        result = quality.validate(frame, quality.load_suite(layer, name), layer, name,
                                  docs_dir=ctx.config.quality.data_docs_dir, run_id=ctx.run_id)
        version = lake.version(table) if lake.exists(table) else None
        frame_rows = quality.results_frame(lake.spark, result, ctx.run_id, ctx.job, version,
                                           result.validated_at or dt.datetime.now(dt.timezone.utc))
        rows = frame_rows if rows is None else rows.unionByName(frame_rows)
        results.append(result)
        failed = {s: len(result.failed(s)) for s in quality.SEVERITIES}
        log.info("%s.%s: %d expectation(s), %d error and %d warn failure(s); Data Docs: %s", layer, name,
                 len(result.outcomes), failed["error"], failed["warn"], result.docs_path or "not built")
    lake.append(QUALITY_RESULTS, rows)
    ctx.record_table(QUALITY_RESULTS)
    for result in results:
        quality.enforce(result)
    return results


def prepare(ctx, outputs: list[Output]) -> list[Prepared]:
    """Gate every output (a block raises before anything is written), then split each by its
    suite's row rules into good rows and quarantine rows."""
    try:
        gate(ctx, [(o.table, o.frame) for o in outputs])
    except BaseException:
        _record_tables(ctx, outputs)  # the summary shows them as the block left them
        raise
    now = dt.datetime.now(dt.timezone.utc)
    prepared = []
    for output in outputs:
        good, rejected = _split(ctx, output)
        record = output.record if output.record is not None else F.to_json(F.struct(*output.frame.columns))
        quarantined = quarantine_rows(rejected, record, F.col(QUARANTINE_COLUMN), output.table, ctx.run_id,
                                      ctx.run_date, now)
        if output.rejected_before is not None:
            quarantined = output.rejected_before.unionByName(quarantined)
        prepared.append(Prepared(output, good.drop(*output.drop), rejected, quarantined))
    return prepared


def write(ctx, prepared: list[Prepared]) -> list[Published]:
    """Write each output's good rows, then its quarantine rows (the run date's partition).
    Tables written are reported in the job's summary line whatever the outcome."""
    published = []
    try:
        for item in prepared:
            output, lake = item.output, ctx.lake
            if isinstance(output.how, Upsert):
                retract = output.how.retract
                if output.how.retract_rejected:
                    rejected = item.rejected.select(*output.how.retract_rejected)
                    retract = rejected if retract is None else retract.unionByName(rejected)
                commit = lake.upsert(output.table, item.good, keys=output.how.keys, newer_by=output.how.newer_by,
                                     retract=retract)
            else:
                commit = lake.overwrite_partitions(output.table, item.good, partitions=output.how.partitions)
            quarantine = catalog.quarantine_of(output.table)
            written = lake.overwrite_partitions(quarantine, item.quarantined,
                                                partitions=[{"quarantined_on": ctx.run_date}])
            if item.quarantined_count is not None and written.rows_added != item.quarantined_count:
                raise NotReconciled(f"{item.quarantined_count} rows to quarantine were counted but "
                                    f"{written.rows_added} written to {quarantine.qualified_name}")
            published.append(Published(commit, written))
    finally:
        _record_tables(ctx, [item.output for item in prepared])
    return published


def publish(ctx, outputs: list[Output]) -> list[Published]:
    """Gate, split and write every output: nothing is written unless every gate passes."""
    return write(ctx, prepare(ctx, outputs))


def _record_tables(ctx, outputs: list[Output]) -> None:
    for output in outputs:
        for table in (output.table, catalog.quarantine_of(output.table)):
            if ctx.lake.exists(table):
                ctx.record_table(table)


def _split(ctx, output: Output) -> tuple[DataFrame, DataFrame]:
    if not ctx.config.quality.gates:
        no_reasons = F.array().cast(T.ArrayType(T.StringType()))
        return output.frame, output.frame.limit(0).withColumn(QUARANTINE_COLUMN, no_reasons)
    return quality.split_rows(output.frame, quality.load_suite(*catalog.suite_name(output.table)))
