"""The ingest job's executor side: each object is read, parsed and written as bronze Parquet
files in one pass, so no record crosses into the JVM or the driver.

A task gets (key, etag, version) rows and returns small result rows only: one per object (its
status, below) and one per data file written (files.FILE_SCHEMA, staged for the driver
to gate and commit). An object's rows are all written or none: they are held in memory until
the object has been read to the end, and an object too large for that (OBJECT_BUFFER_BYTES)
streams into files of its own, deleted if the object fails. Completed objects of a task share
its files, so files are sized by the task, not by the objects.

Object statuses: ok (record and corrupt counts); empty; failed (permanent: the object itself
cannot be read as the dataset, with the reason and the records read before the failure);
deferred (transient: throttling, 5xx, resets, timeouts still failing after object_read_attempts
reads, or the object changed or vanished since it was listed: read again by the next run, never
recorded as handled); denied (the executor has no access or no credentials: when no object of the
run could be read, a failure of the environment that fails the run; otherwise deferred like a
transient failure).
"""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any, Iterator

import pyarrow as pa
from botocore.exceptions import (BotoCoreError, ClientError, NoCredentialsError, NoRegionError,
                                 PartialCredentialsError)

from strata.lake.files import FILE_SCHEMA, Location, PartitionedWriter
from strata.sources.parse import (NeedsLineParser, SchemaMismatch, UnreadableObject, object_format,
                                  read_object)
from strata.sources.local import FolderSettings
from strata.sources.s3 import S3Settings

OBJECT_OK, OBJECT_EMPTY, OBJECT_FAILED = "ok", "empty", "failed"
OBJECT_DEFERRED, OBJECT_DENIED = "deferred", "denied"
# S3 error codes that say the caller may not read, whatever the object: the environment is wrong.
ACCESS_ERRORS = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                 "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem"}
OBJECT_BUFFER_BYTES = 64 << 20

RESULT_SCHEMA = pa.schema([
    ("kind", pa.string()),  # "object" or "file"
    ("key", pa.string()), ("etag", pa.string()), ("status", pa.string()),
    ("records", pa.int64()), ("corrupt", pa.int64()), ("reason", pa.string()),
    ("schema_mismatch", pa.bool_()),
    *FILE_SCHEMA,
])


@dataclass(frozen=True)
class IngestSpec:
    """What every task needs; picklable."""
    settings: S3Settings | FolderSettings   # builds the executor's client (S3 or a local folder)
    bucket: str                             # the bucket, or the folder keys are relative to
    columns: tuple[str, ...]
    configured_format: str
    location: Location        # where the staged bronze files go
    schema: pa.Schema         # bronze: source columns, lineage, run metadata, _ingest_date
    partition_by: tuple[str, ...]
    ingested_at: dt.datetime
    run_id: str
    ingest_date: dt.date
    buffer_bytes: int = OBJECT_BUFFER_BYTES


def ingest_task(spec: IngestSpec):
    """The mapInArrow function over (key, etag, version) rows, yielding RESULT_SCHEMA rows."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        client = spec.settings.client()
        shared = PartitionedWriter(spec.location, spec.partition_by, spec.schema)
        results: list[dict[str, Any]] = []
        for batch in batches:
            for key, etag, version in zip(*(batch.column(c).to_pylist() for c in ("key", "etag", "version"))):
                results.extend(_ingest_object(client, spec, shared, key, etag, version))
        results.extend({"kind": "file", **f} for f in shared.close())
        yield pa.RecordBatch.from_pylist(results, schema=RESULT_SCHEMA)

    return run


def _ingest_object(client, spec: IngestSpec, shared: PartitionedWriter, key: str, etag: str,
                   version: int) -> list[dict[str, Any]]:
    settings = spec.settings
    for attempt in range(1, settings.object_read_attempts + 1):
        rows = _ObjectRows(spec, key, etag, version)
        try:
            _read_into(rows, client, spec, key, etag)
        except UnreadableObject as exc:
            rows.discard()
            return [_status(key, etag, OBJECT_FAILED, rows, str(exc), isinstance(exc, SchemaMismatch))]
        except (ClientError, BotoCoreError) as exc:
            rows.discard()
            status, reason = _s3_failure(exc)
            if status == OBJECT_DEFERRED and attempt < settings.object_read_attempts and _retryable(exc):
                time.sleep(settings.retry_backoff_seconds * 2 ** (attempt - 1))
                continue
            return [_status(key, etag, status, rows, f"{reason} (after {attempt} read(s))")]
        if rows.records == 0:
            return [_status(key, etag, OBJECT_EMPTY, rows, "empty object: no records")]
        files = rows.write_to(shared)
        return [*({"kind": "file", **f} for f in files), _status(key, etag, OBJECT_OK, rows, None)]
    raise AssertionError("unreachable: the last attempt returns")


def _read_into(rows: "_ObjectRows", client, spec: IngestSpec, key: str, etag: str) -> None:
    fmt = object_format(key, spec.configured_format)
    try:
        rows.take(read_object(client, spec.bucket, key, etag, fmt, list(spec.columns)))
    except NeedsLineParser:
        rows.discard()
        rows.reset()
        rows.take(read_object(client, spec.bucket, key, etag, fmt, list(spec.columns), fast=False))


def _s3_failure(exc: ClientError | BotoCoreError) -> tuple[str, str]:
    """(status, reason) of an S3 error: denied (the environment) or deferred (read it next run)."""
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError, NoRegionError)):
        return OBJECT_DENIED, f"no usable AWS credentials on the executor: {exc}"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ACCESS_ERRORS or status in (401, 403):
            return OBJECT_DENIED, f"access denied: {code or status}: {error.get('Message', '')}".rstrip(": ")
        if code == "InvalidObjectState":  # archived (e.g. Glacier): the object, not the environment
            return OBJECT_FAILED, f"not readable in its storage class: {code}"
        if code in ("PreconditionFailed", "412") or status == 412:
            return OBJECT_DEFERRED, "changed since it was listed"
        if code in ("NoSuchKey", "404") or status == 404:
            return OBJECT_DEFERRED, "deleted since it was listed"
        return OBJECT_DEFERRED, f"S3 error {code or status}: {error.get('Message', '')}".rstrip(": ")
    return OBJECT_DEFERRED, f"S3 read failed: {type(exc).__name__}: {exc}"


def _retryable(exc: ClientError | BotoCoreError) -> bool:
    """Transient failures are worth another read; a changed or deleted object is not."""
    if isinstance(exc, ClientError):
        return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") not in (404, 412)
    return True


def _status(key: str, etag: str, status: str, rows: "_ObjectRows", reason: str | None,
            schema_mismatch: bool = False) -> dict[str, Any]:
    return {"kind": "object", "key": key, "etag": etag, "status": status, "records": rows.records,
            "corrupt": rows.corrupt, "reason": reason, "schema_mismatch": schema_mismatch}


class _ObjectRows:
    """The bronze rows of one object while it is being read: in memory, or past buffer_bytes in
    files of its own."""

    def __init__(self, spec: IngestSpec, key: str, etag: str, version: int):
        self.spec = spec
        self.constants = {"_source_key": key, "_source_etag": etag, "_source_version": version,
                          "_ingested_at": spec.ingested_at, "_run_id": spec.run_id,
                          "_ingest_date": spec.ingest_date}
        self.reset()

    def reset(self) -> None:
        """Start the object again from its first record (after discard)."""
        self.buffered: list[pa.Table] = []
        self.buffered_bytes = 0
        self.own: PartitionedWriter | None = None
        self.records = 0
        self.corrupt = 0

    def take(self, batches: Iterator[pa.RecordBatch]) -> None:
        for batch in batches:
            self.records += batch.num_rows
            self.corrupt += batch.num_rows - batch.column("_corrupt_record").null_count
            table = self._bronze(batch)
            if self.own is None and self.buffered_bytes + table.nbytes > self.spec.buffer_bytes:
                self.own = PartitionedWriter(self.spec.location, self.spec.partition_by, self.spec.schema)
                for buffered in self.buffered:
                    self.own.write(buffered)
                self.buffered, self.buffered_bytes = [], 0
            if self.own is not None:
                self.own.write(table)
            else:
                self.buffered.append(table)
                self.buffered_bytes += table.nbytes

    def _bronze(self, batch: pa.RecordBatch) -> pa.Table:
        columns = []
        for field in self.spec.schema:
            if field.name in self.constants:
                columns.append(pa.repeat(pa.scalar(self.constants[field.name], field.type), batch.num_rows))
            else:
                columns.append(batch.column(field.name))
        return pa.Table.from_arrays(columns, schema=self.spec.schema)

    def write_to(self, shared: PartitionedWriter) -> list[dict[str, Any]]:
        """Hands the rows over: buffered ones to the task's files; returns the object's own files."""
        for table in self.buffered:
            shared.write(table)
        self.buffered = []
        return self.own.close() if self.own is not None else []

    def discard(self) -> None:
        self.buffered = []
        if self.own is not None:
            self.own.discard()
