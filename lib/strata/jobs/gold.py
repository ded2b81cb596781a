"""Silver -> gold for one run date: a features table (one row per trip, for training and scoring)
and an analysis table aggregated for the warehouse, both gated by their suites.

The run date's gold work is every event-date partition whose silver content changed on that date
(partitions_to_rebuild); both tables are gated first, then each replaces exactly those partitions
in one commit, so a re-run is idempotent and a block publishes neither.
"""
from __future__ import annotations

import argparse

from pyspark.sql import DataFrame, functions as F

from strata import catalog, publish
from strata.config import DatasetConfig
from strata.lake import files
from strata.runner import JobContext
from strata.transforms import gold as T


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="a dataset of conf/datasets/")


def partitions_to_rebuild(ctx: JobContext, dataset: DatasetConfig, silver: DataFrame) -> list[dict]:
    """The event partitions whose silver content changed on the run date: every partition the run
    date's silver commits changed (a key that moved leaves one and enters another; retracted rows
    leave theirs), from their commit info, plus those of the rows refined on the run date (commits
    written before partitions were recorded)."""
    columns = list(dataset.partition_by)
    refined = silver.where(F.col("_refined_on") == F.lit(ctx.run_date).cast("date")).select(*columns).distinct()
    found = {tuple(files.partition_value_string(v) for v in row) for row in refined.collect()}
    changed = ctx.lake.changed_partitions(catalog.silver(dataset), ctx.run_date.isoformat()) or []
    found |= {tuple(p.get(c) for c in columns) for p in changed}
    return [dict(zip(columns, key)) for key in sorted(found, key=lambda k: [str(v) for v in k])]


def _rows_of(ctx: JobContext, silver: DataFrame, partitions: list[dict], columns: list[str]) -> DataFrame:
    """The silver rows whose values of `columns` (some of silver's partition columns) are those of
    one of `partitions`."""
    values = sorted({tuple(p[c] for c in columns) for p in partitions}, key=lambda k: [str(v) for v in k])
    wanted = ctx.spark.createDataFrame(values, ", ".join(f"`{c}` string" for c in columns))
    wanted = wanted.select(*[F.col(c).cast(silver.schema[c].dataType).alias(c) for c in columns])
    return silver.join(F.broadcast(wanted), on=[silver[c].eqNullSafe(wanted[c]) for c in columns], how="left_semi")


def run(ctx: JobContext) -> dict:
    dataset = ctx.config.dataset(ctx.args.dataset)
    if dataset.gold is None:
        raise ValueError(f"dataset {dataset.name} has no gold section in its config")
    silver = ctx.lake.read(catalog.silver(dataset))
    partitions = partitions_to_rebuild(ctx, dataset, silver)
    counts = ctx.counts
    counts.update({"dataset": dataset.name, "partitions": len(partitions), "no_new_data": not partitions})
    if not partitions:
        return counts
    columns = list(dataset.partition_by)
    gold = dataset.gold
    tables = dict(zip(["features", "analysis"], catalog.gold_tables(dataset)))
    rows = _rows_of(ctx, silver, partitions, columns)
    frames = {"features": T.features(rows, dataset.keys, columns, gold.features, gold.label)}
    if gold.analysis:
        # An analysis table partitioned by fewer columns than silver is rebuilt from every silver
        # row of each partition it replaces, not only from the silver partitions that changed.
        if list(tables["analysis"].partition_by) != columns:
            rows = _rows_of(ctx, silver, partitions, list(tables["analysis"].partition_by))
        frames["analysis"] = T.aggregate(rows, gold.analysis.group_by, gold.analysis.metrics)
    outputs = [publish.Output(tables[name], frame.persist(),
                              publish.ReplacePartitions([{c: p[c] for c in tables[name].partition_by}
                                                         for p in partitions]))
               for name, frame in frames.items()]
    try:
        # Every table is gated before any is published: a block leaves all of them untouched.
        for name, published in zip(frames, publish.publish(ctx, outputs)):
            counts[name] = published.counts()
    finally:
        for output in outputs:
            output.frame.unpersist()
    return counts
