"""Bronze -> silver for one run date: type, derive, de-duplicate, quarantine, gate, upsert.

Reads the bronze partition ingested on the run date. Re-running a date upserts the same rows and
replaces that date's quarantine records, so the job is idempotent per run date. Reconciles:
bronze rows read = upserted + duplicates dropped + quarantined.
"""
from __future__ import annotations

import argparse
import datetime as dt

from pyspark.sql import DataFrame, functions as F

from strata.config import DatasetConfig
from strata.jobs.ingest import bronze_table
from strata.lake import TableSpec
from strata.quality import QUALITY_RESULTS, QUARANTINE_COLUMN, gate_and_split
from strata.runner import JobContext
from strata.transforms import silver as T


def silver_table(dataset: DatasetConfig) -> TableSpec:
    return TableSpec("silver", dataset.name, partition_by=tuple(dataset.partition_by),
                     schema_evolution=dataset.schema_evolution)


def quarantine_table(name: str) -> TableSpec:
    return TableSpec("quarantine", name, partition_by=("quarantined_on",))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="a dataset of conf/datasets/")


def run(ctx: JobContext) -> dict:
    dataset = ctx.config.dataset(ctx.args.dataset)
    lake, target, quarantine = ctx.lake, silver_table(dataset), quarantine_table(dataset.name)
    now = dt.datetime.now(dt.timezone.utc)
    bronze = lake.read(bronze_table(dataset)).where(F.col("_ingest_date") == F.lit(ctx.run_date).cast("date"))

    typed = (bronze.transform(T.parsed_records)
             .transform(lambda df: T.cast_to_schema(df, dataset.schema, dataset.timestamp_format))
             .transform(lambda df: T.derive(df, dataset.derive))
             .transform(lambda df: T.rank_duplicates(df, dataset.keys))
             .withColumn("_refined_on", F.lit(ctx.run_date).cast("date"))
             .withColumn("_refined_run_id", F.lit(ctx.run_id))
             .persist())
    latest = typed.where(F.col(T.DUP_RANK) == 1)
    # The candidate batch is a filter over the cached typed batch, not a second cache: a second
    # copy of every row spilled to disk at 5M rows and cost more than the gate itself.
    candidate = latest.where(F.size(T.CAST_ERRORS) == 0).drop(T.DUP_RANK, T.CAST_ERRORS)
    try:
        counts = {"dataset": dataset.name, "bronze_rows_read": bronze.count(),
                  "duplicates_dropped": typed.where(F.col(T.DUP_RANK) > 1).count()}
        # Whole-suite validation of the candidate batch: mostly thresholds decide whether to block.
        good, failed_rules = gate_and_split(lake, candidate, "silver", dataset.name, target, ctx.run_id, ctx.job,
                                            ctx.config.quality)
        upserted = good.drop(T.RAW)

        def to_quarantine(df: DataFrame, record, reasons) -> DataFrame:
            return T.quarantine_rows(df, record, reasons, target.qualified_name, ctx.run_id, ctx.run_date, now)

        quarantined = (
            to_quarantine(bronze.transform(T.corrupt_records), F.col("_corrupt_record"),
                          F.array(F.concat(F.lit("corrupt record: "), F.col("_error"))))
            .unionByName(to_quarantine(latest.where(F.size(T.CAST_ERRORS) > 0), F.to_json(T.RAW), F.col(T.CAST_ERRORS)))
            .unionByName(to_quarantine(failed_rules, F.to_json(T.RAW), F.col(QUARANTINE_COLUMN))))

        commit = lake.upsert(target, upserted, keys=dataset.keys)
        written = lake.overwrite_partitions(quarantine, quarantined, partitions=[{"quarantined_on": ctx.run_date}])
        counts.update(upserted=upserted.count(), quarantined=written.rows_added,
                      silver_files_rewritten=commit.files_removed)
    finally:
        typed.unpersist()
    reconciled = counts["upserted"] + counts["duplicates_dropped"] + counts["quarantined"]
    counts["reconciled"] = reconciled == counts["bronze_rows_read"]
    if not counts["reconciled"]:
        raise RuntimeError(f"silver {dataset.name}: {counts['bronze_rows_read']} bronze rows read but "
                           f"{reconciled} accounted for (upserted + duplicates + quarantined)")
    for table in (target, quarantine, QUALITY_RESULTS):
        if lake.exists(table):
            ctx.record_table(table)
    return counts
