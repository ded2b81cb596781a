"""A first end-to-end job over the lake: write the run date's events, upsert corrections, read
back. Idempotent per run date: a re-run replaces that date's partition with the same rows."""
from __future__ import annotations

import argparse

from pyspark.sql import DataFrame, SparkSession, functions as F

from strata.lake import TableSpec
from strata.runner import JobContext

EVENTS = TableSpec("smoke", "events", partition_by=("event_date",))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=10_000, help="events to write for the run date")


def events_for(spark: SparkSession, run_date, rows: int) -> DataFrame:
    return (spark.range(rows)
            .select(F.col("id").alias("event_id"),
                    F.lit(run_date).cast("date").alias("event_date"),
                    (F.col("id") % 7).cast("int").alias("kind"),
                    F.round(F.col("id") * 0.5, 2).alias("amount")))


def corrections(events: DataFrame) -> DataFrame:
    """Every 10th event gets a corrected amount, plus one new late event."""
    changed = events.where(F.col("event_id") % 10 == 0).withColumn("amount", F.col("amount") + 1)
    late = events.limit(1).select(F.lit(-1).cast("long").alias("event_id"), "event_date", "kind", "amount")
    return changed.unionByName(late)


def run(ctx: JobContext) -> dict:
    lake = ctx.lake
    events = events_for(ctx.spark, ctx.run_date, ctx.args.rows)
    written = lake.overwrite_partitions(EVENTS, events, partitions=[{"event_date": ctx.run_date}])
    upserted = lake.upsert(EVENTS, corrections(events), keys=["event_id", "event_date"])
    day = lake.read(EVENTS).where(F.col("event_date") == F.lit(ctx.run_date).cast("date"))
    rows_read = day.count()
    expected = ctx.args.rows + 1
    if rows_read != expected:
        raise RuntimeError(f"read back {rows_read} rows for {ctx.run_date}, expected {expected}")
    ctx.record_table(EVENTS)
    return {"master": ctx.spark.sparkContext.master, "rows_written": written.rows_added, "upsert_rows_rewritten": upserted.rows_added,
            "rows_read": rows_read, "files_rewritten_by_upsert": upserted.files_removed}
