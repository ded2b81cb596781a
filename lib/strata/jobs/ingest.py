"""Raw S3 objects -> the bronze Delta table, incrementally and exactly once.

Bronze is its own manifest: each row carries the (key, ETag) of the object it came from, in the
same atomic commit as the data, so an object is either fully in bronze or not at all. Objects
that yield no rows (empty, or unreadable) are recorded in ops.ingest_errors with the reason.
A changed object (same key, new ETag) is ingested again with the next _source_version.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
from collections import defaultdict

from pyspark.sql import DataFrame, SparkSession, functions as F

from strata.config import DatasetConfig
from strata.lake import Lake, TableSpec
from strata.quality import QUALITY_RESULTS, run_gate
from strata.runner import JobContext
from strata.sources.parse import (OBJECT_EMPTY, OBJECT_FAILED, OBJECT_OK, RECORD_ROW, parse_task,
                                  parsed_schema)
from strata.sources.s3 import RawObject, S3Settings, list_objects

log = logging.getLogger(__name__)

INGEST_ERRORS = TableSpec("ops", "ingest_errors")
OBJECTS_PER_TASK = 4


class TooManyBadObjects(RuntimeError):
    pass


def bronze_table(dataset: DatasetConfig) -> TableSpec:
    return TableSpec("bronze", dataset.name, partition_by=("_ingest_date",))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="a dataset of conf/datasets/")


def known_objects(lake: Lake, dataset: DatasetConfig) -> dict[str, set[str]]:
    """key -> ETags already accounted for: in bronze, or recorded as empty/unreadable."""
    known: dict[str, set[str]] = defaultdict(set)
    frames = []
    if lake.exists(bronze_table(dataset)):
        frames.append(lake.read(bronze_table(dataset)).select("_source_key", "_source_etag"))
    if lake.exists(INGEST_ERRORS):
        frames.append(lake.read(INGEST_ERRORS).where(F.col("dataset") == dataset.name)
                      .select(F.col("key").alias("_source_key"), F.col("etag").alias("_source_etag")))
    for frame in frames:
        for row in frame.distinct().collect():  # one row per object, never per record
            known[row._source_key].add(row._source_etag)
    return known


def parse_objects(spark: SparkSession, objects: list[RawObject], known: dict[str, set[str]],
                  settings: S3Settings, dataset: DatasetConfig) -> DataFrame:
    """Every record of the objects plus one status record per object, parsed on the executors."""
    listing = [(o.key, o.etag, len(known.get(o.key, ())) + 1) for o in objects]
    slices = max(1, min(len(objects), -(-len(objects) // OBJECTS_PER_TASK),
                        spark.sparkContext.defaultParallelism * 8))
    columns = list(dataset.schema)
    return (spark.createDataFrame(listing, "key string, etag string, version int")
            .repartition(slices)
            .mapInArrow(parse_task(settings, dataset.source.bucket, columns, dataset.source.format),
                        _ddl(parsed_schema(columns))))


def bronze_rows(parsed: DataFrame, failed: list[tuple[str, str]], run_id: str, run_date: dt.date,
                ingested_at: dt.datetime) -> DataFrame:
    """Records of the objects that were read to the end, with the run's metadata."""
    rows = parsed.where(F.col("_record") == RECORD_ROW).drop("_record")
    if failed:
        failed_df = parsed.sparkSession.createDataFrame(failed, "_source_key string, _source_etag string")
        rows = rows.join(F.broadcast(failed_df), ["_source_key", "_source_etag"], "left_anti")
    return (rows.withColumn("_ingested_at", F.lit(ingested_at).cast("timestamp"))
            .withColumn("_run_id", F.lit(run_id))
            .withColumn("_ingest_date", F.lit(run_date).cast("date")))


def run(ctx: JobContext) -> dict:
    dataset = ctx.config.dataset(ctx.args.dataset)
    s3 = ctx.config.s3
    settings = S3Settings(s3.endpoint_url, s3.region, s3.connect_timeout_seconds, s3.max_attempts)
    ingested_at = dt.datetime.now(dt.timezone.utc)
    # Listing first: a bad endpoint, bucket or credentials fails before Spark starts.
    objects = list_objects(settings, dataset.source.bucket, dataset.source.prefix, dataset.source.pattern)
    lake, bronze = ctx.lake, bronze_table(dataset)
    known = known_objects(lake, dataset)
    new = [o for o in objects if o.etag not in known.get(o.key, set())]
    counts = {"dataset": dataset.name, "objects_listed": len(objects), "objects_new": len(new),
              "objects_ingested": 0, "objects_empty": 0, "objects_failed": 0, "rows_read": 0,
              "rows_written": 0, "corrupt_rows": 0, "rows_discarded_from_failed_objects": 0}
    log.info("%s: %d objects listed, %d new", dataset.name, len(objects), len(new))
    if new:
        _ingest(ctx, dataset, settings, bronze, new, known, ingested_at, counts)
    for table in (bronze, INGEST_ERRORS, QUALITY_RESULTS):
        if lake.exists(table):
            ctx.record_table(table)
    return counts


def _ingest(ctx: JobContext, dataset: DatasetConfig, settings: S3Settings, bronze: TableSpec,
            new: list[RawObject], known: dict[str, set[str]], ingested_at: dt.datetime, counts: dict) -> None:
    lake = ctx.lake
    parsed = parse_objects(ctx.spark, new, known, settings, dataset).persist()
    try:
        statuses = (parsed.where(F.col("_record") != RECORD_ROW)
                    .select("_source_key", "_source_etag", "_record", "_source_row", "_error").collect())
        failed = [s for s in statuses if s._record == OBJECT_FAILED]
        empty = [s for s in statuses if s._record == OBJECT_EMPTY]
        if len(failed) > dataset.max_bad_objects:
            examples = "; ".join(f"{s._source_key}: {s._error}" for s in failed[:3])
            raise TooManyBadObjects(f"{len(failed)} unreadable objects (max_bad_objects={dataset.max_bad_objects}); "
                                    f"nothing was committed. e.g. {examples}")
        ok_rows = sum(s._source_row for s in statuses if s._record == OBJECT_OK)
        counts.update(objects_ingested=sum(s._record == OBJECT_OK for s in statuses),
                      objects_empty=len(empty), objects_failed=len(failed), rows_read=ok_rows,
                      rows_discarded_from_failed_objects=sum(s._source_row for s in failed))

        if ok_rows:
            rows = bronze_rows(parsed, [(s._source_key, s._source_etag) for s in failed],
                               ctx.run_id, ctx.run_date, ingested_at).persist()
            try:
                run_gate(lake, rows, "bronze", dataset.name, bronze, ctx.run_id, ctx.job,
                         ctx.config.quality.data_docs_dir)
                commit = lake.append(bronze, rows)
                corrupt = rows.where(F.col("_corrupt_record").isNotNull()).count()
            finally:
                rows.unpersist()
            counts.update(rows_written=commit.rows_added - corrupt, corrupt_rows=corrupt)
        if failed or empty:
            # After the data commit: a crash in between only means these are retried next run.
            lake.append(INGEST_ERRORS, ctx.spark.createDataFrame(
                [(dataset.name, s._source_key, s._source_etag, s._record.removeprefix("object_"), s._error,
                  s._source_row, ctx.run_id, ingested_at) for s in failed + empty],
                "dataset string, key string, etag string, status string, reason string, "
                "rows_before_failure long, run_id string, recorded_at timestamp"))
    finally:
        parsed.unpersist()


def _ddl(schema) -> str:
    return ", ".join(f"`{f.name}` {'int' if str(f.type) == 'int32' else 'long' if str(f.type) == 'int64' else 'string'}"
                     for f in schema)
