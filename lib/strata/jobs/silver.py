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

from strata.config import DatasetConfig
from strata import catalog
from strata.catalog import QUALITY_RESULTS
from strata.quality import QUARANTINE_COLUMN, gate_and_split
from strata.runner import JobContext
from strata.sources.manifest import ObjectManifest
from strata.transforms import silver as T


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="a dataset of conf/datasets/")


class NotReconciled(RuntimeError):
    """Silver's counts do not add up to the bronze rows read: nothing is committed."""


def run(ctx: JobContext) -> dict:
    dataset = ctx.config.dataset(ctx.args.dataset)
    lake, target, quarantine = ctx.lake, catalog.silver(dataset), catalog.quarantine_of(catalog.silver(dataset))
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
        for table in (target, quarantine, QUALITY_RESULTS):
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
    lake, target, quarantine = ctx.lake, catalog.silver(dataset), catalog.quarantine_of(catalog.silver(dataset))
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
    # Whole-suite validation of the candidate batch: mostly thresholds decide whether to block.
    good, failed_rules = gate_and_split(lake, candidate, "silver", dataset.name, target, ctx.run_id, ctx.job,
                                        ctx.config.quality)
    upserted = good.drop(T.RAW)

    def to_quarantine(df: DataFrame, record, reasons) -> DataFrame:
        return T.quarantine_rows(df, record, reasons, target.qualified_name, ctx.run_id, ctx.run_date, now)

    quarantined = (
        to_quarantine(bronze.transform(T.corrupt_records), F.col("_corrupt_record"),
                      F.array(F.concat(F.lit("corrupt record: "), F.col("_error"))))
        .unionByName(to_quarantine(unrefinable, F.to_json(T.RAW), F.col(T.ROW_ERRORS)))
        .unionByName(to_quarantine(failed_rules, F.to_json(T.RAW), F.col(QUARANTINE_COLUMN))))

    # Reconciled before anything is committed: a run whose counts do not add up publishes nothing.
    counts.update(upserted=upserted.count(), quarantined=quarantined.count())
    accounted = counts["upserted"] + counts["duplicates_dropped"] + counts["quarantined"] + counts["superseded_rows"]
    counts["reconciled"] = accounted == counts["bronze_rows_read"]
    if not counts["reconciled"]:
        raise NotReconciled(f"silver {dataset.name}: {counts['bronze_rows_read']} bronze rows read but {accounted} "
                            "accounted for (upserted + duplicates + quarantined + superseded); nothing was committed")

    # Rows silver must no longer hold: those of earlier versions of re-delivered objects, and
    # records that fail a rule now (a rule added since they were refined).
    retract = (unrefinable.select(*T.RECORD_ID).unionByName(failed_rules.select(*T.RECORD_ID)))
    redelivered = bronze.where(F.col("_source_version") > 1).select("_source_key", "_source_version").distinct()
    if redelivered.limit(1).count():
        keys = [row[0] for row in redelivered.select("_source_key").distinct().collect()]
        retract = retract.unionByName(T.superseded_records(manifest.bronze_rows(keys), redelivered))
    commit = lake.upsert(target, upserted, keys=dataset.keys, newer_by=dataset.version_by, retract=retract)
    written = lake.overwrite_partitions(quarantine, quarantined, partitions=[{"quarantined_on": ctx.run_date}])
    if written.rows_added != counts["quarantined"]:  # the frame was counted, then computed again to write
        raise NotReconciled(f"silver {dataset.name}: {counts['quarantined']} rows to quarantine were counted but "
                            f"{written.rows_added} written to {quarantine.qualified_name}")
    counts.update(stale_skipped=commit.rows_skipped, retracted=commit.rows_retracted,
                  silver_files_rewritten=commit.files_removed)
