"""Silver -> gold for one run date: a features table (one row per trip, for training and scoring)
and an analysis table aggregated for the warehouse, both gated by their suites.

The run date's gold work is every event-date partition whose silver content changed on that date
(partitions_to_rebuild); both tables are gated first, then each replaces exactly those partitions
in one commit, so a re-run is idempotent and a block publishes neither.
"""
from __future__ import annotations

import argparse
import datetime as dt

from pyspark.sql import DataFrame, functions as F

from strata.config import DatasetConfig
from strata import catalog
from strata.catalog import QUALITY_RESULTS, TableSpec
from strata.lake import files
from strata.quality import QUARANTINE_COLUMN, gate_and_split
from strata.runner import JobContext
from strata.transforms import gold as T
from strata.transforms.silver import quarantine_rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="a dataset of conf/datasets/")


def gate(ctx: JobContext, frame: DataFrame, target: TableSpec) -> tuple[DataFrame, DataFrame]:
    """Validate the (cached) frame with the target's suite: (good rows, rows its row rules reject).
    Raises QualityGateBlocked before anything is written."""
    return gate_and_split(ctx.lake, frame, target.layer, target.name, target, ctx.run_id, ctx.job, ctx.config.quality)


def publish(ctx: JobContext, frame: DataFrame, good: DataFrame, rejected: DataFrame, target: TableSpec,
            partitions: list[dict]) -> dict:
    """Replace the partitions with the good rows and the run date's quarantine with the rejected
    ones. Returns counts."""
    now = dt.datetime.now(dt.timezone.utc)
    commit = ctx.lake.overwrite_partitions(target, good, partitions=partitions)
    quarantine = catalog.quarantine_of(target)
    rejected_rows = rejected.withColumn("_source_key", F.lit(None).cast("string")).withColumn(
        "_source_row", F.lit(None).cast("long"))
    record = F.to_json(F.struct(*[F.col(c) for c in frame.columns]))
    quarantined = ctx.lake.overwrite_partitions(
        quarantine, quarantine_rows(rejected_rows, record, F.col(QUARANTINE_COLUMN), target.qualified_name,
                                    ctx.run_id, ctx.run_date, now),
        partitions=[{"quarantined_on": ctx.run_date}])
    return {"rows": commit.rows_added, "quarantined": quarantined.rows_added}


def partitions_to_rebuild(ctx: JobContext, dataset: DatasetConfig) -> list[dict]:
    """The event partitions whose silver content changed on the run date: every partition the run
    date's silver commits changed (a key that moved leaves one and enters another; retracted rows
    leave theirs), from their commit info; only when some commit of the date did not record them
    (written before partitions were recorded), those of the rows refined on the run date too."""
    columns = list(dataset.partition_by)
    changed = ctx.lake.changed_partitions(catalog.silver(dataset), ctx.run_date.isoformat())
    found = {tuple(p.get(c) for c in columns) for p in changed or []}
    if changed is None:  # a scan of all of silver, for old commits only
        silver = ctx.lake.read(catalog.silver(dataset))
        refined = silver.where(F.col("_refined_on") == F.lit(ctx.run_date).cast("date")).select(*columns).distinct()
        found |= {tuple(files.partition_value_string(v) for v in row) for row in refined.collect()}
    return [dict(zip(columns, key)) for key in sorted(found, key=lambda k: [str(v) for v in k])]


def run(ctx: JobContext) -> dict:
    dataset = ctx.config.dataset(ctx.args.dataset)
    if dataset.gold is None:
        raise ValueError(f"dataset {dataset.name} has no gold section in its config")
    partitions = partitions_to_rebuild(ctx, dataset)
    silver = ctx.lake.read(catalog.silver(dataset), partitions=partitions)  # only those it rebuilds
    counts = ctx.counts
    counts.update({"dataset": dataset.name, "partitions": len(partitions), "no_new_data": not partitions})
    if not partitions:
        return counts
    columns = list(dataset.partition_by)
    wanted = ctx.spark.createDataFrame([tuple(p[c] for c in columns) for p in partitions],
                                       ", ".join(f"`{c}` string" for c in columns))
    wanted = wanted.select(*[F.col(c).cast(silver.schema[c].dataType).alias(c) for c in columns])
    rows = silver.join(F.broadcast(wanted), on=[silver[c].eqNullSafe(wanted[c]) for c in columns], how="left_semi")
    gold = dataset.gold
    outputs = [(catalog.features(dataset), T.features(rows, dataset.keys, columns, gold.features, gold.label))]
    if gold.analysis:
        outputs.append((catalog.analysis(dataset), T.aggregate(rows, gold.analysis.group_by, gold.analysis.metrics)))
    frames = [frame.persist() for _, frame in outputs]
    try:
        # Every table is gated before any is published: a block leaves all of them untouched.
        verdicts = [gate(ctx, frame, target) for frame, (target, _) in zip(frames, outputs)]
        for frame, (target, _), (good, rejected) in zip(frames, outputs, verdicts):
            name = "features" if target == catalog.features(dataset) else "analysis"
            counts[name] = publish(ctx, frame, good, rejected, target,
                                   [{c: p[c] for c in target.partition_by} for p in partitions])
    finally:
        for frame in frames:
            frame.unpersist()
        for target, _ in outputs:
            for table in (target, catalog.quarantine_of(target), QUALITY_RESULTS):
                if ctx.lake.exists(table):
                    ctx.record_table(table)
    return counts
