"""Silver -> gold for one run date: a features table (one row per trip, for training and scoring)
and an analysis table aggregated for the warehouse, both gated by their suites.

The run date's gold work is every event-date partition whose silver content changed on that date
(partitions_to_rebuild); both tables are gated first, then each replaces exactly those partitions
in one commit, so a re-run is idempotent and a block publishes neither.
"""
from __future__ import annotations

import argparse

from pyspark.sql import functions as F

from strata import catalog, publish
from strata.config import DatasetConfig
from strata.lake import files
from strata.runner import JobContext
from strata.transforms import gold as T


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="a dataset of conf/datasets/")


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
    columns, gold = list(dataset.partition_by), dataset.gold
    tables = dict(zip(["features", "analysis"], catalog.gold_tables(dataset)))
    frames = {"features": T.features(silver, dataset.keys, columns, gold.features, gold.label)}
    if gold.analysis:
        rows, analysis_by = silver, list(tables["analysis"].partition_by)
        if analysis_by != columns:
            # An analysis table partitioned by fewer columns than silver is rebuilt from every
            # silver row of each partition it replaces, not only the silver partitions that changed.
            rows = ctx.lake.read(catalog.silver(dataset), partitions=[{c: p[c] for c in analysis_by} for p in partitions])
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
