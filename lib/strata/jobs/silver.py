"""Bronze -> silver for one run date: type, derive, de-duplicate, quarantine, gate, upsert.

Reads the bronze partition ingested on the run date. Re-running a date upserts the same rows and
replaces that date's quarantine records, so the job is idempotent per run date. Versions of a key
are ordered by the dataset's version_by (ingest time, then object version): a re-run of an older
date never replaces a newer row (stale_skipped). Rows that earlier versions of a re-delivered
object put in silver, and records that now fail a rule, are retracted in the same commit.
Rows of objects that bronze holds a newer version of are superseded, never refined again.
Reconciles before committing: bronze rows read = upserted + duplicates dropped + quarantined +
superseded.
"""
from __future__ import annotations

import argparse
import datetime as dt

from pyspark.sql import DataFrame, functions as F

from strata import catalog, publish
from strata.catalog import QUALITY_RESULTS
from strata.config import DatasetConfig
from strata.publish import NotReconciled
from strata.runner import JobContext
from strata.sources.manifest import ObjectManifest
from strata.transforms import silver as T


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="a dataset of conf/datasets/")


def run(ctx: JobContext) -> dict:
    dataset = ctx.config.dataset(ctx.args.dataset)
    lake, target = ctx.lake, catalog.silver(dataset)
    now = dt.datetime.now(dt.timezone.utc)
    counts = ctx.counts
    counts["dataset"] = dataset.name
    try:
        # Only the run date's bronze partition; other versions of its objects via the manifest.
        batch = lake.read(catalog.bronze(dataset), partitions=[{"_ingest_date": ctx.run_date}])
        objects = ObjectManifest(lake, dataset)
        bronze = _current_versions(objects, batch, counts)
        typed = T.prepare(bronze, dataset, ctx.run_date, ctx.run_id).persist()
        try:
            _refine(ctx, dataset, objects, bronze, typed, now, counts)
        finally:
            typed.unpersist()
            objects.close()
    finally:
        for table in (target, catalog.quarantine_of(target), QUALITY_RESULTS):
            if lake.exists(table):
                ctx.record_table(table)
    return counts


def _current_versions(manifest: ObjectManifest, batch: DataFrame, counts: dict) -> DataFrame:
    """The batch without the rows of objects that bronze has a newer version of: a re-run of an
    older date must not bring back what a re-delivery retracted. They count as superseded."""
    objects = batch.select("_source_key", "_source_version").distinct()
    keys = [row[0] for row in objects.select("_source_key").distinct().collect()]  # the run's objects
    stale = (objects.join(T.newest_versions(manifest.bronze_versions(keys), objects), "_source_key")
             .where(F.col("_source_version") < F.col("_newest_version"))
             .select("_source_key", "_source_version").collect())  # one row per stale object
    counts.update(superseded_objects=len(stale), superseded_rows=0)
    if not stale:
        return batch
    current = batch.join(F.broadcast(batch.sparkSession.createDataFrame(stale, objects.schema)),
                         ["_source_key", "_source_version"], "left_anti")
    counts["superseded_rows"] = batch.count() - current.count()
    return current


def _refine(ctx: JobContext, dataset: DatasetConfig, manifest: ObjectManifest, bronze: DataFrame, typed: DataFrame,
            now: dt.datetime, counts: dict) -> None:
    target = catalog.silver(dataset)
    counts.update(bronze_rows_read=bronze.count() + counts["superseded_rows"],
                  duplicates_dropped=typed.where(F.col(T.DUP_RANK) > 1).count())
    counts["no_new_data"] = counts["bronze_rows_read"] == 0
    if counts["bronze_rows_read"] == counts["superseded_rows"]:
        counts.update(upserted=0, quarantined=0, reconciled=True)
        return
    latest = typed.where(F.col(T.DUP_RANK) == 1)
    unrefinable = latest.where(F.size(T.ROW_ERRORS) > 0)
    # The candidate batch is a filter over the cached typed batch, not a second cache: a second
    # copy of every row spilled to disk at 5M rows and cost more than the gate itself.
    candidate = latest.where(F.size(T.ROW_ERRORS) == 0).drop(T.DUP_RANK, T.ROW_ERRORS)

    def to_quarantine(df: DataFrame, record, reasons) -> DataFrame:
        return publish.quarantine_rows(df, record, reasons, target, ctx.run_id, ctx.run_date, now)

    # Rows that never reach the gate: records that did not parse, and rows that cannot be typed.
    rejected_before = (
        to_quarantine(bronze.transform(T.corrupt_records), F.col("_corrupt_record"),
                      F.array(F.concat(F.lit("corrupt record: "), F.col("_error"))))
        .unionByName(to_quarantine(unrefinable, F.to_json(T.RAW), F.col(T.ROW_ERRORS))))
    # Rows silver must no longer hold: those of earlier versions of re-delivered objects, and
    # records that can no longer be refined.
    retract = unrefinable.select(*T.RECORD_ID)
    redelivered = bronze.where(F.col("_source_version") > 1).select("_source_key", "_source_version").distinct()
    if redelivered.limit(1).count():
        keys = [row[0] for row in redelivered.select("_source_key").distinct().collect()]
        retract = retract.unionByName(T.superseded_records(manifest.bronze_rows(keys), redelivered))
    # Records that fail a rule now (one added since they were refined) are retracted too.
    how = publish.Upsert(dataset.keys, newer_by=dataset.version_by, retract=retract,
                         retract_rejected=tuple(T.RECORD_ID))
    output = publish.Output(target, candidate, how, record=F.to_json(T.RAW), drop=(T.RAW,),
                            rejected_before=rejected_before)
    # Whole-suite validation of the candidate batch: mostly thresholds decide whether to block.
    [prepared] = publish.prepare(ctx, [output])

    # Reconciled before anything is committed: a run whose counts do not add up publishes nothing.
    counts.update(upserted=prepared.good.count(), quarantined=prepared.quarantined.count())
    prepared.quarantined_count = counts["quarantined"]
    accounted = counts["upserted"] + counts["duplicates_dropped"] + counts["quarantined"] + counts["superseded_rows"]
    counts["reconciled"] = accounted == counts["bronze_rows_read"]
    if not counts["reconciled"]:
        raise NotReconciled(f"silver {dataset.name}: {counts['bronze_rows_read']} bronze rows read but {accounted} "
                            "accounted for (upserted + duplicates + quarantined + superseded); nothing was committed")
    [published] = publish.write(ctx, [prepared])
    commit = published.table
    counts.update(stale_skipped=commit.rows_skipped, retracted=commit.rows_retracted,
                  silver_files_rewritten=commit.files_removed)
