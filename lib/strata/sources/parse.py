"""Parsing raw objects on the executors, streamed: an object of any size needs one batch of memory.

A mapInArrow task gets rows (key, etag, version) and yields, for each object, its records as
strings (CSV and JSON lines as they came, Parquet values rendered as text) and then one status
record for the object: ok with its row count, empty, or failed with the reason. Nothing is
dropped: a malformed line is a record with `_corrupt_record` (its raw text) and `_error`.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from botocore.exceptions import BotoCoreError, ClientError

from strata.sources.s3 import S3Settings

BATCH_ROWS = 8192
RECORD_ROW = "row"
OBJECT_OK, OBJECT_EMPTY, OBJECT_FAILED = "object_ok", "object_empty", "object_failed"
METADATA_FIELDS = [
    ("_source_key", pa.string()), ("_source_etag", pa.string()), ("_source_version", pa.int32()),
    ("_source_row", pa.int64()), ("_corrupt_record", pa.string()), ("_error", pa.string()),
    ("_record", pa.string()),
]


class UnreadableObject(Exception):
    """The object as a whole cannot be read: recorded with this reason, none of its rows kept."""


def parsed_schema(columns: list[str]) -> pa.Schema:
    return pa.schema([(c, pa.string()) for c in columns] + METADATA_FIELDS)


def object_format(key: str, configured: str) -> str:
    name = key.lower()
    for suffix, fmt in ((".csv.gz", "csv.gz"), (".csv", "csv"), (".jsonl.gz", "jsonl.gz"), (".json.gz", "jsonl.gz"),
                        (".jsonl", "jsonl"), (".json", "jsonl"), (".parquet", "parquet")):
        if name.endswith(suffix):
            return fmt
    if configured != "auto":
        return configured
    raise UnreadableObject(f"unsupported object type (by extension): {key.rsplit('/', 1)[-1]}")


def parse_task(settings: S3Settings, bucket: str, columns: list[str], configured_format: str):
    """The mapInArrow function over (key, etag, version) rows."""
    schema = parsed_schema(columns)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        client = settings.client()
        for batch in batches:
            for key, etag, version in zip(*(batch.column(c).to_pylist() for c in ("key", "etag", "version"))):
                yield from _parse_object(client, settings, bucket, key, etag, version, columns,
                                         configured_format, schema)

    return run


def _parse_object(client, settings, bucket, key, etag, version, columns, configured_format, schema):
    """Rows of one object, then its status record. If the object fails midway, the rows already
    yielded are disowned by the failed status (the job drops rows of failed objects)."""
    builder = _BatchBuilder(schema, key, etag, version)
    rows = 0
    try:
        fmt = object_format(key, configured_format)
        records = (_parquet_records(settings, bucket, key, etag, columns) if fmt == "parquet"
                   else _text_records(client, bucket, key, etag, fmt, columns))
        for values, corrupt, error in records:
            rows += 1
            builder.add(values, rows, corrupt, error)
            if builder.full:
                yield builder.flush()
        status, reason = (OBJECT_OK, None) if rows else (OBJECT_EMPTY, "empty object: no records")
    except UnreadableObject as exc:
        status, reason = OBJECT_FAILED, str(exc)
    except (ClientError, BotoCoreError) as exc:
        status, reason = OBJECT_FAILED, f"S3 read failed: {exc}"
    if builder.rows:
        yield builder.flush()
    yield builder.status(status, rows, reason)


def _text_records(client, bucket: str, key: str, etag: str, fmt: str,
                  columns: list[str]) -> Iterator[tuple[dict | None, str | None, str | None]]:
    # IfMatch: the bytes we read are the version we listed, or the read fails.
    body = client.get_object(Bucket=bucket, Key=key, IfMatch=etag)["Body"]
    raw: Any = gzip.GzipFile(fileobj=body) if fmt.endswith(".gz") else body
    text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
    try:
        lines = _lines(text)
        yield from (_csv_records(lines, columns) if fmt.startswith("csv") else _json_records(lines, columns))
    except (EOFError, OSError, zlib.error) as exc:
        raise UnreadableObject(f"corrupt or truncated compressed data: {exc}") from None
    except UnicodeDecodeError:
        raise UnreadableObject("not UTF-8 text (binary data?)") from None
    finally:
        body.close()


def _lines(text: io.TextIOBase) -> Iterator[str]:
    """Physical lines without their line ending; blank lines are not records."""
    for line in text:
        line = line.rstrip("\r\n")
        if line.strip():
            yield line


def _csv_records(lines: Iterator[str], columns: list[str]):
    try:
        header_line = next(lines)
    except StopIteration:
        return
    header = next(csv.reader([header_line]))
    missing = [c for c in columns if c not in header]
    unexpected = [c for c in header if c not in columns]
    if missing or unexpected:
        raise UnreadableObject(f"wrong header: missing {missing}, unexpected {unexpected}")
    for line in lines:
        try:
            fields = next(csv.reader([line], strict=True))
        except csv.Error as exc:
            yield None, line, f"malformed CSV line: {exc}"
            continue
        if len(fields) != len(header):
            yield None, line, f"malformed CSV line: expected {len(header)} fields, found {len(fields)}"
            continue
        yield {name: (value if value != "" else None) for name, value in zip(header, fields)}, None, None


def _json_records(lines: Iterator[str], columns: list[str]):
    known = set(columns)
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield None, line, f"malformed JSON line: {exc.msg}"
            continue
        if not isinstance(record, dict):
            yield None, line, "malformed JSON line: not an object"
            continue
        unexpected = sorted(set(record) - known)
        if unexpected:
            yield None, line, f"unexpected fields {unexpected}"
            continue
        yield {name: _as_text(record.get(name)) for name in columns}, None, None


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _parquet_records(settings: S3Settings, bucket: str, key: str, etag: str, columns: list[str]):
    """Parquet needs random access: ranged reads through pyarrow's S3 filesystem, batch by batch."""
    fs_args: dict[str, Any] = {"region": settings.region}
    if settings.endpoint_url:
        scheme, _, host = settings.endpoint_url.partition("://")
        fs_args.update(endpoint_override=host, scheme=scheme)
    try:
        parquet = pq.ParquetFile(pafs.S3FileSystem(**fs_args).open_input_file(f"{bucket}/{key}"))
    except (OSError, pa.ArrowInvalid) as exc:
        raise UnreadableObject(f"not a readable Parquet file: {str(exc).splitlines()[0]}") from None
    names = parquet.schema_arrow.names
    missing = [c for c in columns if c not in names]
    unexpected = [c for c in names if c not in columns]
    if missing or unexpected:
        raise UnreadableObject(f"wrong columns: missing {missing}, unexpected {unexpected}")
    try:
        for chunk in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            texts = {c: _arrow_text(chunk.column(c)).to_pylist() for c in columns}
            for i in range(chunk.num_rows):
                yield {c: texts[c][i] for c in columns}, None, None
    except (OSError, pa.ArrowInvalid) as exc:
        raise UnreadableObject(f"corrupt Parquet data: {str(exc).splitlines()[0]}") from None


def _arrow_text(array: pa.Array) -> pa.Array:
    """Values as the text a CSV of them would hold."""
    if pa.types.is_timestamp(array.type):
        seconds = array.cast(pa.timestamp("s", array.type.tz), safe=False)
        if pc.all(pc.equal(seconds.cast(array.type), array)).as_py() is not False:
            return pc.strftime(seconds, format="%Y-%m-%d %H:%M:%S")  # whole seconds, as CSV has them
        return pc.strftime(array, format="%Y-%m-%d %H:%M:%S")  # %S keeps the fraction
    if pa.types.is_boolean(array.type):
        return pc.if_else(array, "true", "false")
    return array.cast(pa.string())


class _BatchBuilder:
    def __init__(self, schema: pa.Schema, key: str, etag: str, version: int):
        self.schema = schema
        self.source_columns = [f.name for f in schema if not f.name.startswith("_")]
        self.meta = (key, etag, version)
        self._reset()

    def _reset(self) -> None:
        self.columns: dict[str, list] = {f.name: [] for f in self.schema}
        self.rows = 0

    @property
    def full(self) -> bool:
        return self.rows >= BATCH_ROWS

    def add(self, values: dict | None, row: int, corrupt: str | None, error: str | None,
            record: str = RECORD_ROW) -> None:
        for name in self.source_columns:
            self.columns[name].append(values.get(name) if values else None)
        for name, value in zip(("_source_key", "_source_etag", "_source_version"), self.meta):
            self.columns[name].append(value)
        self.columns["_source_row"].append(row)
        self.columns["_corrupt_record"].append(corrupt)
        self.columns["_error"].append(error)
        self.columns["_record"].append(record)
        self.rows += 1

    def flush(self) -> pa.RecordBatch:
        batch = pa.RecordBatch.from_pydict(self.columns, schema=self.schema)
        self._reset()
        return batch

    def status(self, record: str, rows: int, reason: str | None) -> pa.RecordBatch:
        """The object's status record: _source_row holds its record count."""
        self.add(None, rows, None, reason, record)
        return self.flush()
