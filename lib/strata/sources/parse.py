"""Parsing raw objects on the executors, streamed: an object of any size needs a few batches of memory.

An object becomes Arrow record batches of its records: the source columns as strings (CSV and
JSON lines as they came, Parquet values rendered as text), `_source_row` (the record's position
in the object) and, for a malformed line, `_corrupt_record` (its raw text) and `_error`.

CSV (plain or gzip) takes a fast path first: pyarrow's streaming reader, splitting on commas
without quote handling. It is accepted only when the object has exactly the expected header,
every line has the header's field count and no field holds a quote character, i.e. when
splitting on commas is exactly what a CSV reader does. Anything else (quotes, malformed lines,
bad bytes, a truncated stream) raises NeedsLineParser, and the caller parses the object again
with the line parser: the reference, which keeps malformed lines with a reason and names what
makes an object unreadable.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
import tempfile
import zlib
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from botocore.exceptions import BotoCoreError, ClientError


BATCH_ROWS = 8192
CSV_BLOCK_BYTES = 1 << 20  # the fast path reads (and holds) about this much CSV text at a time
PARQUET_SPOOL_BYTES = 16 << 20  # a Parquet object up to this size is held in memory, a larger one on local disk
COPY_BYTES = 1 << 20
RECORD_FIELDS = [("_source_row", pa.int64()), ("_corrupt_record", pa.string()), ("_error", pa.string())]


class UnreadableObject(Exception):
    """The object as a whole cannot be read: recorded with this reason, none of its rows kept."""


class SchemaMismatch(UnreadableObject):
    """The object's columns are not the dataset's: the object or the dataset's config is wrong."""


class NeedsLineParser(Exception):
    """The CSV fast path cannot vouch for this object: parse it with the line parser."""


def record_schema(columns: list[str]) -> pa.Schema:
    return pa.schema([(c, pa.string()) for c in columns] + RECORD_FIELDS)


def object_format(key: str, configured: str) -> str:
    name = key.lower()
    for suffix, fmt in ((".csv.gz", "csv.gz"), (".csv", "csv"), (".jsonl.gz", "jsonl.gz"), (".json.gz", "jsonl.gz"),
                        (".jsonl", "jsonl"), (".json", "jsonl"), (".parquet", "parquet")):
        if name.endswith(suffix):
            return fmt
    if configured != "auto":
        return configured
    raise UnreadableObject(f"unsupported object type (by extension): {key.rsplit('/', 1)[-1]}")


def read_object(client, bucket: str, key: str, etag: str, fmt: str,
                columns: list[str], fast: bool = True) -> Iterator[pa.RecordBatch]:
    """The object's records as record_schema batches. Raises UnreadableObject, botocore errors,
    and (fast=True, CSV only) NeedsLineParser. Every format is read at `etag`: an object replaced
    since it was listed fails with a 412 PreconditionFailed ClientError."""
    if fmt == "parquet":
        return _parquet_batches(client, bucket, key, etag, columns)
    if fast and fmt.startswith("csv"):
        return _csv_fast_batches(client, bucket, key, etag, fmt, columns)
    return _batches(_text_records(client, bucket, key, etag, fmt, columns), columns)


def _get(client, bucket: str, key: str, etag: str):
    # IfMatch: the bytes we read are the version we listed, or the read fails.
    return client.get_object(Bucket=bucket, Key=key, IfMatch=etag)["Body"]


def _csv_fast_batches(client, bucket: str, key: str, etag: str, fmt: str,
                      columns: list[str]) -> Iterator[pa.RecordBatch]:
    body = _get(client, bucket, key, etag)
    try:
        text = _QuoteWatch(gzip.GzipFile(fileobj=body) if fmt.endswith(".gz") else body)
        reader = pacsv.open_csv(
            pa.PythonFile(text, mode="r"),
            read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=False),
            # A line with the wrong field count raises (no invalid_row_handler): line parser.
            parse_options=pacsv.ParseOptions(quote_char=False),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in columns},
                                                 strings_can_be_null=True, null_values=[""]))
        if sorted(reader.schema.names) != sorted(columns):
            raise NeedsLineParser("header is not exactly the dataset's columns")
        schema = record_schema(columns)
        first = 1
        for batch in reader:
            if text.saw_quote:  # checked before any row of a block read with a quote is used
                raise NeedsLineParser("quote characters")
            if batch.num_rows == 0:
                continue
            yield _records([batch.column(c) for c in columns], first, schema)
            first += batch.num_rows
        if text.saw_quote:
            raise NeedsLineParser("quote characters")
    except (NeedsLineParser, ClientError, BotoCoreError):
        raise  # a failed read (or a file changed since listed) is the source's, not the format's
    except Exception as exc:  # noqa: BLE001 - whatever it is, the line parser decides and names it
        raise NeedsLineParser(f"{type(exc).__name__}: {exc}") from None
    finally:
        body.close()


def _records(values: list[pa.Array], first: int, schema: pa.Schema) -> pa.RecordBatch:
    """Well-formed records numbered from `first`: the source columns' values, no corrupt record."""
    length = len(values[0])
    rows = pa.array(np.arange(first, first + length, dtype=np.int64))
    nulls = pa.nulls(length, pa.string())
    return pa.RecordBatch.from_arrays([*values, rows, nulls, nulls], schema=schema)


class _QuoteWatch(io.RawIOBase):
    """A readable stream that notes whether any byte read was a quote character (memchr speed)."""

    def __init__(self, raw):
        super().__init__()
        self.raw = raw
        self.saw_quote = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        if b'"' in data:
            self.saw_quote = True
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def _text_records(client, bucket: str, key: str, etag: str, fmt: str,
                  columns: list[str]) -> Iterator[tuple[dict | None, str | None, str | None]]:
    body = _get(client, bucket, key, etag)
    raw: Any = gzip.GzipFile(fileobj=body) if fmt.endswith(".gz") else body
    text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
    try:
        lines = _lines(text)
        yield from (_csv_records(lines, columns) if fmt.startswith("csv") else _json_records(lines, columns))
    except BotoCoreError:
        raise  # a transfer failure (botocore's read timeout is an OSError too): transient, not the data
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
        raise SchemaMismatch(f"wrong header: missing {missing}, unexpected {unexpected}")
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


def _batches(records, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """(values, corrupt, error) records, numbered from 1, as record_schema batches."""
    schema = record_schema(columns)
    buffer: dict[str, list] = {f.name: [] for f in schema}
    row = 0
    try:
        for values, corrupt, error in records:
            row += 1
            for name in columns:
                buffer[name].append(values.get(name) if values else None)
            buffer["_source_row"].append(row)
            buffer["_corrupt_record"].append(corrupt)
            buffer["_error"].append(error)
            if len(buffer["_source_row"]) >= BATCH_ROWS:
                yield pa.RecordBatch.from_pydict(buffer, schema=schema)
                buffer = {f.name: [] for f in schema}
    except UnreadableObject:
        if buffer["_source_row"]:  # the caller discards them, but counts them as read before the failure
            yield pa.RecordBatch.from_pydict(buffer, schema=schema)
        raise
    if buffer["_source_row"]:
        yield pa.RecordBatch.from_pydict(buffer, schema=schema)


def _parquet_batches(client, bucket: str, key: str, etag: str, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """Parquet needs random access (its footer comes first): the object, read in one GET at its
    listed ETag, is spooled (in memory up to PARQUET_SPOOL_BYTES, then in a temporary file, gone
    when closed), then read batch by batch."""
    with tempfile.SpooledTemporaryFile(max_size=PARQUET_SPOOL_BYTES) as spool:
        body = _get(client, bucket, key, etag)
        try:
            shutil.copyfileobj(body, spool, COPY_BYTES)  # a failed transfer raises botocore's error
        finally:
            body.close()
        spool.seek(0)
        yield from _parquet_file_batches(spool, columns)


def _parquet_file_batches(source, columns: list[str]) -> Iterator[pa.RecordBatch]:
    try:
        parquet = pq.ParquetFile(source)
    except (OSError, pa.ArrowInvalid) as exc:
        raise UnreadableObject(f"not a readable Parquet file: {str(exc).splitlines()[0]}") from None
    names = parquet.schema_arrow.names
    missing = [c for c in columns if c not in names]
    unexpected = [c for c in names if c not in columns]
    if missing or unexpected:
        raise SchemaMismatch(f"wrong columns: missing {missing}, unexpected {unexpected}")
    schema = record_schema(columns)
    first = 1
    try:
        for chunk in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            yield _records([_arrow_text(chunk.column(c)) for c in columns], first, schema)
            first += chunk.num_rows
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
