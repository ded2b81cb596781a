"""Raw S3 objects -> the bronze Delta table, incrementally and exactly once.

Bronze is the source of truth: each row carries the (key, ETag) of the object it came from, in
the same atomic commit as the data, so an object is either fully in bronze or not at all. The
objects are looked up in ops.ingested_objects (strata.sources.manifest), which is kept complete
with bronze through its log, so a run never reads bronze's rows to know what it holds. Objects
that yield no rows (empty, or permanently unreadable) are recorded in ops.ingest_errors with the
reason; transient failures are not recorded, so the next run reads those objects again.
A changed object (same key, new ETag) is ingested again with the next _source_version.

One pass on the executors (strata.sources.ingest_task): each task reads, parses and writes its
objects as staged bronze Parquet files and returns only file metadata and per-object statuses.
The driver then gates the staged files (read back: what is validated is what gets committed)
and commits them in one Delta commit, or deletes them.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass

from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

from strata import catalog, publish
from strata.catalog import INGEST_ERRORS, INGESTED_OBJECTS, QUALITY_RESULTS
from strata.config import DatasetConfig
from strata.errors import QualityGateBlocked
from strata.lake import CommitOutcomeUnknown, Lake, LakeError, ReadSet, SchemaMismatchError, StagedFiles
from strata.lake.files import FILE_SCHEMA
from strata.runner import JobContext
from strata.sources.ingest_task import (OBJECT_DEFERRED, OBJECT_DENIED, OBJECT_EMPTY, OBJECT_FAILED, OBJECT_OK,
                                        RESULT_SCHEMA, IngestSpec, ingest_task)
from strata.sources.manifest import STATUS_OK, ObjectManifest
from strata.sources.s3 import RawObject
from strata.sources.store import list_objects, settings_for

log = logging.getLogger(__name__)

INGEST_ERRORS_SCHEMA = T.StructType([
    T.StructField("dataset", T.StringType()), T.StructField("key", T.StringType()),
    T.StructField("etag", T.StringType()), T.StructField("status", T.StringType()),
    T.StructField("reason", T.StringType()), T.StructField("rows_before_failure", T.LongType()),
    T.StructField("run_id", T.StringType()), T.StructField("recorded_at", T.TimestampType()),
    T.StructField("version", T.IntegerType()), T.StructField("config_fingerprint", T.StringType())])
OBJECTS_PER_TASK = 4


class TooManyBadObjects(RuntimeError):
    pass


class EnvironmentFailure(RuntimeError):
    """The executors cannot read the source at all (credentials, access): nothing is recorded."""


class ConfigMismatch(RuntimeError):
    """No object of the run matches the dataset's declared columns: the config is the suspect."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="a dataset of conf/datasets/")


def config_fingerprint(dataset: DatasetConfig) -> str:
    """What an object's readability depends on in the config: a failure judged under another
    fingerprint is not final (the config was fixed since), so the object is read again."""
    judged = {"columns": list(dataset.schema), "format": dataset.source.format}
    return hashlib.sha256(json.dumps(judged, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class KnownObjects:
    """The objects already accounted for, as of the bronze version read (the bronze commit is fenced
    by it: a concurrent ingest that committed since makes this one conflict). A concurrent run may
    record the same failed object twice: harmless, the newest version counts."""
    latest: dict[str, tuple[int, str]]  # key -> (version, ETag) of its newest accounted-for version
    bronze_read: ReadSet
    manifest: ObjectManifest | None = None

    def is_new(self, obj: RawObject) -> bool:
        """New unless its current ETag is the newest version seen: A -> B -> A is a new version."""
        return self.latest.get(obj.key, (0, None))[1] != obj.etag

    def next_version(self, key: str) -> int:
        return self.latest.get(key, (0, None))[0] + 1


def known_objects(lake: Lake, dataset: DatasetConfig, objects: list[RawObject] | None = None) -> KnownObjects:
    """Per listed key (None: every key), the newest version accounted for: in bronze, or recorded
    as empty/unreadable under the current config. Looked up in the manifest's partitions of the
    listed keys' folders, never in bronze's rows; one row per listed key reaches the driver."""
    manifest = ObjectManifest(lake, dataset)
    entries = manifest.entries(None if objects is None else [o.key for o in objects])
    accounted = entries.where((F.col("status") == STATUS_OK) |
                              (F.col("config_fingerprint") == config_fingerprint(dataset)))
    newest = accounted.groupBy("key").agg(F.max_by(F.struct("version", "etag"), "version").alias("v"))
    latest = {row.key: (row.v.version, row.v.etag) for row in newest.collect()}
    return KnownObjects(latest, ReadSet(manifest.bronze_version), manifest)


def listing_start(lake: Lake, dataset: DatasetConfig) -> str | None:
    """Where an incremental listing starts (S3 StartAfter): the newest dated folder the manifest
    holds, less source.lookback_days. None: list everything (source.listing: full, or nothing
    ingested yet)."""
    if dataset.source.listing != "dated":
        return None
    newest = ObjectManifest(lake, dataset).newest_date_prefix()
    if newest is None:
        return None
    start = newest - dt.timedelta(days=dataset.source.lookback_days)
    return f"{dataset.source.key_prefix}/{start:%Y/%m/%d}"


def bronze_schema(dataset: DatasetConfig) -> T.StructType:
    """The source columns as strings, then lineage, run metadata and the partition column."""
    return T.StructType(
        [T.StructField(c, T.StringType()) for c in dataset.schema]
        + [T.StructField(name, type_) for name, type_ in (
            ("_source_key", T.StringType()), ("_source_etag", T.StringType()),
            ("_source_version", T.IntegerType()), ("_source_row", T.LongType()),
            ("_corrupt_record", T.StringType()), ("_error", T.StringType()),
            ("_ingested_at", T.TimestampType()), ("_run_id", T.StringType()), ("_ingest_date", T.DateType()))])


def check_bronze_schema(lake: Lake, dataset: DatasetConfig) -> None:
    """Before anything is staged: the dataset's columns must fit bronze, or be new columns that
    schema evolution lets bronze take."""
    table = catalog.bronze(dataset)
    if not lake.exists(table):
        return
    have = {f.name for f in lake.read(table, partitions=[]).schema.fields}  # the schema only
    declared = [f.name for f in bronze_schema(dataset).fields]
    missing = [c for c in have if c not in declared]
    new = [c for c in declared if c not in have]
    if missing or (new and not dataset.schema_evolution):
        raise SchemaMismatchError(
            f"{table.qualified_name}: the dataset's schema does not fit bronze (new columns {new}, "
            f"columns no longer declared {missing}); set schema_evolution: true in its config to add "
            "new columns; nothing was staged")


def stage_objects(ctx: JobContext, dataset: DatasetConfig, settings, objects: list[RawObject],
                  known: KnownObjects, ingested_at: dt.datetime) -> tuple[StagedFiles, list]:
    """Executors read, parse and write the objects as staged bronze files (one pass, nothing
    through the driver). Returns the staged files and one status row per object."""
    spark, bronze = ctx.spark, catalog.bronze(dataset)
    schema = bronze_schema(dataset)
    spec = IngestSpec(settings, dataset.source.container, tuple(dataset.schema), dataset.source.format,
                      ctx.lake.staging_location(bronze), to_arrow_schema(schema), bronze.partition_by,
                      ingested_at, ctx.run_id, ctx.run_date)
    listing = [(o.key, o.etag, known.next_version(o.key)) for o in objects]
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
    source = dataset.source
    settings = settings_for(ctx.config, source)
    ingested_at = dt.datetime.now(dt.timezone.utc)
    # Listing first: a bad endpoint, bucket, folder or credentials fails before Spark starts.
    objects = list_objects(settings, source, probe=source.listing == "dated")
    lake, bronze = ctx.lake, catalog.bronze(dataset)
    start_after = listing_start(lake, dataset)
    if source.listing == "dated":  # the probe only checked that the source can be listed
        objects = list_objects(settings, source, start_after=start_after)
    check_bronze_schema(lake, dataset)
    known = known_objects(lake, dataset, objects)
    new = [o for o in objects if known.is_new(o)]
    counts = ctx.counts
    counts.update({"dataset": dataset.name, "objects_listed": len(objects), "objects_new": len(new),
                   "listed_after": start_after,
                   "objects_ingested": 0, "objects_empty": 0, "objects_failed": 0, "objects_deferred": 0,
                   "rows_read": 0, "rows_written": 0, "corrupt_rows": 0, "rows_discarded_from_failed_objects": 0,
                   "no_new_data": not new})
    log.info("%s: %d objects listed, %d new", dataset.name, len(objects), len(new))
    try:
        if new:
            _ingest(ctx, dataset, settings, new, known, ingested_at, counts)
        elif dataset.require_new_data:
            raise QualityGateBlocked(f"{dataset.name}: no new raw object under {source.uri} "
                                     "and the dataset requires new data every run")
    finally:
        if known.manifest is not None:
            known.manifest.close()
        for table in (bronze, INGEST_ERRORS, INGESTED_OBJECTS, QUALITY_RESULTS):
            if lake.exists(table):
                ctx.record_table(table)
    return counts


def _ingest(ctx: JobContext, dataset: DatasetConfig, settings, new: list[RawObject],
            known: KnownObjects, ingested_at: dt.datetime, counts: dict) -> None:
    lake, source = ctx.lake, dataset.source
    committing = False
    committed = None
    staged, statuses = stage_objects(ctx, dataset, settings, new, known, ingested_at)
    by_status = defaultdict(list)
    for s in statuses:
        by_status[s.status].append(s)
    ok, failed, empty = by_status[OBJECT_OK], by_status[OBJECT_FAILED], by_status[OBJECT_EMPTY]
    deferred, denied = by_status[OBJECT_DEFERRED], by_status[OBJECT_DENIED]
    if denied and (ok or failed or empty):
        # Some objects were readable: the environment works, these objects are refused (e.g. a
        # key policy). Not recorded: read again next run, and reported.
        deferred, denied = deferred + denied, []
    rows_read, corrupt = sum(s.records for s in ok), sum(s.corrupt for s in ok)
    counts.update(objects_ingested=len(ok), objects_empty=len(empty), objects_failed=len(failed),
                  objects_deferred=len(deferred), rows_read=rows_read, rows_written=rows_read - corrupt,
                  corrupt_rows=corrupt, rows_discarded_from_failed_objects=sum(s.records for s in failed))
    if deferred:
        counts["deferred_examples"] = [f"{s.key}: {s.reason}" for s in deferred[:3]]
        log.warning("%s: %d object(s) deferred to the next run (transient S3 failures), e.g. %s",
                    dataset.name, len(deferred), counts["deferred_examples"][0])
    try:
        if denied:
            raise EnvironmentFailure(
                f"the executors cannot read {source.object_uri(denied[0].key)}: {denied[0].reason} "
                f"({len(denied)} object(s)); check "
                f"{'that the executors can read the folder' if source.is_local else 'the AWS credential chain of the executors'}"
                "; nothing was committed or recorded")
        mismatched = [s for s in failed if s.schema_mismatch]
        if mismatched and not ok and len(mismatched) == len(failed):
            raise ConfigMismatch(
                f"none of the {len(mismatched)} object(s) read has the columns of conf/datasets/{dataset.name}.yaml, "
                f"e.g. {mismatched[0].key}: {mismatched[0].reason}; fix the schema (or the files); "
                "nothing was committed or recorded")
        if len(failed) > dataset.max_bad_objects:
            examples = "; ".join(f"{s.key}: {s.reason}" for s in failed[:3])
            raise TooManyBadObjects(f"{len(failed)} unreadable objects (max_bad_objects={dataset.max_bad_objects}); "
                                    f"nothing was committed. e.g. {examples}")
        if staged.rows != rows_read:
            raise RuntimeError(f"ingest {dataset.name}: {rows_read} records read but {staged.rows} staged")
        if staged.files:
            # The gate reads the staged files back: it validates exactly what will be committed.
            publish.gate(ctx, [(staged.table, lake.read_staged(staged))], always=True)
        committing = bool(staged.files)
        if committing:
            # Fenced by the bronze version the known objects were read at: if another ingest
            # committed since, this one conflicts instead of ingesting the same objects twice.
            committed = lake.commit_staged(staged, known.bronze_read)
    except BaseException as exc:
        # The staged files go unless the commit may have landed: a LakeError says nothing was
        # committed (the lake looked its commit up in the log), except CommitOutcomeUnknown; files
        # of a crash are orphans for vacuum.
        if not committing or (isinstance(exc, LakeError) and not isinstance(exc, CommitOutcomeUnknown)):
            try:
                lake.discard_staged(staged)
            except Exception as discard_error:  # noqa: BLE001 - the original error is the one to report
                log.warning("%s: could not delete staged files: %s", dataset.name, discard_error)
        raise
    fingerprint = config_fingerprint(dataset)
    versions = {o.key: known.next_version(o.key) for o in new}
    if failed or empty:
        # After the data commit: a crash in between only means these are read again next run.
        lake.append(INGEST_ERRORS, ctx.spark.createDataFrame(
            [(dataset.name, s.key, s.etag, s.status, s.reason, s.records, ctx.run_id, ingested_at,
              versions[s.key], fingerprint) for s in failed + empty], INGEST_ERRORS_SCHEMA))
    # Last: until it lands, readers of the manifest take this run's objects from bronze's log.
    recorded = [(s.key, s.etag, versions[s.key], OBJECT_OK, fingerprint, ctx.run_date) for s in ok if committed] + \
        [(s.key, s.etag, versions[s.key], s.status, fingerprint, None) for s in failed + empty]
    if recorded and known.manifest is not None:
        known.manifest.record(recorded, committed.version if committed else known.bronze_read.version, ctx.run_id)
