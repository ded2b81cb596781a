"""Silver -> gold for one run date: a features table (one row per trip, for training and scoring)
and an analysis table aggregated for the warehouse, both gated by their suites.

The run date's gold work is the event-date partitions that silver refined on that date; both
tables replace exactly those partitions in one commit each, so a re-run is idempotent.
"""
from __future__ import annotations

import argparse
import datetime as dt

from pyspark.sql import DataFrame, functions as F

from strata.config import DatasetConfig
from strata.jobs.silver import quarantine_table, silver_table
from strata.lake import TableSpec
from strata.quality import QUALITY_RESULTS, QUARANTINE_COLUMN, gate_and_split
from strata.runner import JobContext
from strata.transforms import gold as T
from strata.transforms.silver import quarantine_rows


def features_table(dataset: DatasetConfig) -> TableSpec:
    return TableSpec("gold", f"{dataset.name}_features", partition_by=tuple(dataset.partition_by))


def analysis_table(dataset: DatasetConfig) -> TableSpec:
    analysis = dataset.gold.analysis
    return TableSpec("gold", analysis.name,
                     partition_by=tuple(c for c in dataset.partition_by if c in analysis.group_by))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="a dataset of conf/datasets/")


def publish(ctx: JobContext, frame: DataFrame, target: TableSpec, partitions: list[dict]) -> dict:
    """Gate the frame (cached here), quarantine the rows its row rules reject, replace the
    partitions with the rest. Returns counts."""
    frame = frame.persist()
    now = dt.datetime.now(dt.timezone.utc)
    try:
        good, rejected = gate_and_split(ctx.lake, frame, target.layer, target.name, target, ctx.run_id, ctx.job,
                                        ctx.config.quality)
        commit = ctx.lake.overwrite_partitions(target, good, partitions=partitions)
        quarantine = quarantine_table(target.name)
        rejected_rows = rejected.withColumn("_source_key", F.lit(None).cast("string")).withColumn(
            "_source_row", F.lit(None).cast("long"))
        record = F.to_json(F.struct(*[F.col(c) for c in frame.columns]))
        quarantined = ctx.lake.overwrite_partitions(
            quarantine, quarantine_rows(rejected_rows, record, F.col(QUARANTINE_COLUMN), target.qualified_name,
                                        ctx.run_id, ctx.run_date, now),
            partitions=[{"quarantined_on": ctx.run_date}])
    finally:
        frame.unpersist()
    for table in (target, quarantine, QUALITY_RESULTS):
        if ctx.lake.exists(table):
            ctx.record_table(table)
    return {"rows": commit.rows_added, "quarantined": quarantined.rows_added}


def run(ctx: JobContext) -> dict:
    dataset = ctx.config.dataset(ctx.args.dataset)
    if dataset.gold is None:
        raise ValueError(f"dataset {dataset.name} has no gold section in its config")
    silver = ctx.lake.read(silver_table(dataset))
    refined = silver.where(F.col("_refined_on") == F.lit(ctx.run_date).cast("date"))
    partition_rows = refined.select(*dataset.partition_by).distinct().collect()
    partitions = [row.asDict() for row in partition_rows]
    counts: dict = {"dataset": dataset.name, "partitions": len(partitions)}
    if not partitions:
        return counts
    rows = silver.join(F.broadcast(refined.select(*dataset.partition_by).distinct()), dataset.partition_by)
    gold = dataset.gold
    features = T.features(rows, dataset.keys, dataset.partition_by, gold.features, gold.label)
    counts["features"] = publish(ctx, features, features_table(dataset), partitions)
    if gold.analysis:
        table = analysis_table(dataset)
        analysis = T.aggregate(rows, gold.analysis.group_by, gold.analysis.metrics)
        counts["analysis"] = publish(ctx, analysis, table,
                                     [{c: p[c] for c in table.partition_by} for p in partitions])
    return counts
