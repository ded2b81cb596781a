"""Raw S3 objects -> the bronze Delta table, incrementally and exactly once.

Bronze is its own manifest: each row carries the (key, ETag) of the object it came from, in the
same atomic commit as the data, so an object is either fully in bronze or not at all. Objects
that yield no rows (empty, or unreadable) are recorded in ops.ingest_errors with the reason.
A changed object (same key, new ETag) is ingested again with the next _source_version.

One pass on the executors (strata.sources.ingest_task): each task reads, parses and writes its
objects as staged bronze Parquet files and returns only file metadata and per-object statuses.
The driver then gates the staged files (read back: what is validated is what gets committed)
and commits them in one Delta commit, or deletes them.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
from collections import defaultdict

from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

from strata.config import DatasetConfig
from strata.lake import Lake, StagedFiles, TableSpec
from strata.lake.files import FILE_SCHEMA
from strata.quality import QUALITY_RESULTS, run_gate
from strata.runner import JobContext
from strata.sources.ingest_task import (OBJECT_EMPTY, OBJECT_FAILED, OBJECT_OK, RESULT_SCHEMA,
                                        IngestSpec, ingest_task)
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


def bronze_schema(dataset: DatasetConfig) -> T.StructType:
    """The source columns as strings, then lineage, run metadata and the partition column."""
    return T.StructType(
        [T.StructField(c, T.StringType()) for c in dataset.schema]
        + [T.StructField(name, type_) for name, type_ in (
            ("_source_key", T.StringType()), ("_source_etag", T.StringType()),
            ("_source_version", T.IntegerType()), ("_source_row", T.LongType()),
            ("_corrupt_record", T.StringType()), ("_error", T.StringType()),
            ("_ingested_at", T.TimestampType()), ("_run_id", T.StringType()), ("_ingest_date", T.DateType()))])


def stage_objects(ctx: JobContext, dataset: DatasetConfig, settings: S3Settings, objects: list[RawObject],
                  known: dict[str, set[str]], ingested_at: dt.datetime) -> tuple[StagedFiles, list]:
    """Executors read, parse and write the objects as staged bronze files (one pass, nothing
    through the driver). Returns the staged files and one status row per object."""
    spark, bronze = ctx.spark, bronze_table(dataset)
    schema = bronze_schema(dataset)
    spec = IngestSpec(settings, dataset.source.bucket, tuple(dataset.schema), dataset.source.format,
                      ctx.lake.staging_location(bronze), to_arrow_schema(schema), bronze.partition_by,
                      ingested_at, ctx.run_id, ctx.run_date)
    listing = [(o.key, o.etag, len(known.get(o.key, ())) + 1) for o in objects]
    slices = max(1, min(len(objects), -(-len(objects) // OBJECTS_PER_TASK),
                        spark.sparkContext.defaultParallelism * 8))
    results = (spark.createDataFrame(listing, "key string, etag string, version int")
               .repartition(slices)
               .mapInArrow(ingest_task(spec), from_arrow_schema(RESULT_SCHEMA))
               .collect())
    files = tuple({name: r[name] for name in FILE_SCHEMA.names} for r in results if r.kind == "file")
    return StagedFiles(bronze, schema, files), [r for r in results if r.kind == "object"]


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
        _ingest(ctx, dataset, settings, new, known, ingested_at, counts)
    for table in (bronze, INGEST_ERRORS, QUALITY_RESULTS):
        if lake.exists(table):
            ctx.record_table(table)
    return counts


def _ingest(ctx: JobContext, dataset: DatasetConfig, settings: S3Settings, new: list[RawObject],
            known: dict[str, set[str]], ingested_at: dt.datetime, counts: dict) -> None:
    lake = ctx.lake
    staged, statuses = stage_objects(ctx, dataset, settings, new, known, ingested_at)
    ok = [s for s in statuses if s.status == OBJECT_OK]
    failed = [s for s in statuses if s.status == OBJECT_FAILED]
    empty = [s for s in statuses if s.status == OBJECT_EMPTY]
    try:
        if len(failed) > dataset.max_bad_objects:
            examples = "; ".join(f"{s.key}: {s.reason}" for s in failed[:3])
            raise TooManyBadObjects(f"{len(failed)} unreadable objects (max_bad_objects={dataset.max_bad_objects}); "
                                    f"nothing was committed. e.g. {examples}")
        rows_read, corrupt = sum(s.records for s in ok), sum(s.corrupt for s in ok)
        if staged.rows != rows_read:
            raise RuntimeError(f"ingest {dataset.name}: {rows_read} records read but {staged.rows} staged")
        counts.update(objects_ingested=len(ok), objects_empty=len(empty), objects_failed=len(failed),
                      rows_read=rows_read, rows_written=rows_read - corrupt, corrupt_rows=corrupt,
                      rows_discarded_from_failed_objects=sum(s.records for s in failed))
        if staged.files:
            # The gate reads the staged files back: it validates exactly what will be committed.
            run_gate(lake, lake.read_staged(staged), "bronze", dataset.name, staged.table, ctx.run_id, ctx.job,
                     ctx.config.quality.data_docs_dir)
    except BaseException:
        try:  # nothing was committed (a crash leaves them to vacuum, as orphans)
            lake.discard_staged(staged)
        except Exception as exc:  # noqa: BLE001 - the original error is the one to report
            log.warning("%s: could not delete staged files: %s", dataset.name, exc)
        raise
    # Never discarded from here on: a commit that raised may still have landed.
    if staged.files:
        lake.commit_staged(staged)
    if failed or empty:
        # After the data commit: a crash in between only means these are retried next run.
        lake.append(INGEST_ERRORS, ctx.spark.createDataFrame(
            [(dataset.name, s.key, s.etag, s.status, s.reason, s.records, ctx.run_id, ingested_at)
             for s in failed + empty],
            "dataset string, key string, etag string, status string, reason string, "
            "rows_before_failure long, run_id string, recorded_at timestamp"))

