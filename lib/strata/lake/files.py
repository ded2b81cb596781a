"""Data files of a Delta table, written and read on the executors with pyarrow.

Runs inside mapInArrow tasks: each task writes its rows as Parquet files under the table (local
disk or S3, same code) and returns one metadata row per file; the driver then commits those files
in one Delta transaction. Nothing here collects table data on the driver.
"""
from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
MAX_OPEN_WRITERS = 32          # per task; the least recently used one is closed beyond that
MAX_ROWS_PER_FILE = 2_000_000
# Arrow batches arrive 10k rows at a time; buffering them makes row groups of a useful size.
ROW_GROUP_ROWS = 500_000
STATS_STRING_MAX = 32          # Delta's default truncation length: longer strings get no stats

# One row per written file, returned from the tasks to the driver.
FILE_SCHEMA = pa.schema([
    ("path", pa.string()),              # relative to the table root
    ("size", pa.int64()),
    ("partition_values", pa.string()),  # JSON {column: string or null}
    ("num_records", pa.int64()),
    ("stats", pa.string()),             # Delta stats JSON
    ("modification_time", pa.int64()),
])
FILE_SCHEMA_DDL = ("path string, size long, partition_values string, num_records long, "
                   "stats string, modification_time long")


@dataclass(frozen=True)
class Location:
    """A table root that executors can reach: a local directory or s3://bucket/prefix.
    Picklable; the pyarrow filesystem is built where it is used."""
    uri: str
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")

    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        """(filesystem, root path inside it)."""
        if self.is_s3:
            kwargs: dict[str, Any] = {"region": self.s3_region}
            if self.s3_endpoint:
                scheme, _, host = self.s3_endpoint.partition("://")
                kwargs.update(endpoint_override=host, scheme=scheme)
            # Credentials: the standard AWS chain (environment, profile, instance role).
            return pafs.S3FileSystem(**kwargs), self.uri[len("s3://"):]
        return pafs.LocalFileSystem(), self.uri.removeprefix("file://")

    def child(self, relative: str) -> "Location":
        return Location(f"{self.uri}/{relative}", self.s3_endpoint, self.s3_region)


def partition_value_string(value: Any) -> str | None:
    """A partition value as Delta stores it in partitionValues."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def partition_dir(columns: tuple[str, ...], values: dict[str, str | None]) -> str:
    """Hive-style directory, escaped like Spark/Hive so Spark's partition discovery reads it."""
    return "/".join(f"{_hive_escape(c)}={HIVE_NULL if values[c] is None else _hive_escape(values[c])}"
                    for c in columns)


def _hive_escape(text: str) -> str:
    return "".join(ch if (ch.isalnum() and ch.isascii()) or ch in "_-. " else f"%{ord(ch):02X}"
                   for ch in text)


def write_task(location: Location, partition_by: tuple[str, ...], schema: pa.Schema):
    """A mapInArrow function: writes the task's rows as Parquet files under location, yields
    FILE_SCHEMA rows describing them."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        writer = PartitionedWriter(location, partition_by, schema)
        for batch in batches:
            writer.write(pa.Table.from_batches([batch]))
        yield pa.RecordBatch.from_pylist(writer.close(), schema=FILE_SCHEMA)

    return run


class PartitionedWriter:
    """Parquet files of one writer (a task, or one object of a task) under location, split by
    partition values: at most MAX_OPEN_WRITERS open at once, files rolled at MAX_ROWS_PER_FILE."""

    def __init__(self, location: Location, partition_by: tuple[str, ...], schema: pa.Schema):
        self.fs, self.root = location.filesystem()
        self.partition_by = partition_by
        self.schema = schema
        self.data_columns = [f.name for f in schema if f.name not in partition_by]
        self.file_schema = pa.schema([schema.field(c) for c in self.data_columns])
        self.writer_id = uuid.uuid4().hex
        self.open_files: dict[tuple, _OpenFile] = {}
        self.done: list[dict[str, Any]] = []
        self.counter = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        table = table.select(self.schema.names).cast(self.schema)
        for key, values, part in _split_by_partition(table, self.partition_by):
            current = self.open_files.pop(key, None)  # re-inserted last: dicts keep LRU order
            if current is not None and current.rows >= MAX_ROWS_PER_FILE:
                self.done.append(current.close())
                current = None
            if current is None:
                if len(self.open_files) >= MAX_OPEN_WRITERS:
                    oldest = next(iter(self.open_files))
                    self.done.append(self.open_files.pop(oldest).close())
                self.counter += 1
                directory = partition_dir(self.partition_by, values)
                name = f"part-{self.counter:05d}-{self.writer_id}.snappy.parquet"
                relative = f"{directory}/{name}" if directory else name
                current = _OpenFile(self.fs, f"{self.root}/{relative}", relative, values, self.file_schema)
            self.open_files[key] = current
            current.write(part.select(self.data_columns))

    def close(self) -> list[dict[str, Any]]:
        """FILE_SCHEMA rows (as dicts) of every file written."""
        self.done.extend(f.close() for f in self.open_files.values())
        self.open_files = {}
        return self.done

    def discard(self) -> None:
        """Delete every file written so far (nothing of them was committed)."""
        for written in self.close():
            self.fs.delete_file(f"{self.root}/{written['path']}")
        self.done = []


class _OpenFile:
    def __init__(self, fs: pafs.FileSystem, full_path: str, relative: str,
                 partition_values: dict[str, str | None], schema: pa.Schema):
        if isinstance(fs, pafs.LocalFileSystem):  # S3 has no directories to create
            fs.create_dir(full_path.rsplit("/", 1)[0], recursive=True)
        self.sink = fs.open_output_stream(full_path)
        self.writer = pq.ParquetWriter(self.sink, schema, compression="snappy")
        self.relative = relative
        self.partition_values = partition_values
        self.rows = 0
        self.pending: list[pa.Table] = []
        self.pending_rows = 0

    def write(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.pending_rows += table.num_rows
        self.rows += table.num_rows
        if self.pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.writer.write_table(pa.concat_tables(self.pending), row_group_size=ROW_GROUP_ROWS)
            self.pending, self.pending_rows = [], 0

    def close(self) -> dict[str, Any]:
        self._flush()
        self.writer.close()
        size = self.sink.tell()
        self.sink.close()
        return {
            "path": self.relative,  # deltalake URL-encodes it in the log
            "size": size,
            "partition_values": json.dumps(self.partition_values),
            "num_records": self.rows,
            "stats": json.dumps(_stats(self.writer.writer.metadata)),
            "modification_time": int(time.time() * 1000),
        }


def _split_by_partition(table: pa.Table, partition_by: tuple[str, ...]):
    """(key, {column: delta string}, rows) for each partition present in table."""
    if not partition_by:
        yield (), {}, table
        return
    if len(partition_by) == 1:
        column = table.column(partition_by[0])
        uniques = [{partition_by[0]: v} for v in pc.unique(column).to_pylist()]
    else:
        uniques = table.select(list(partition_by)).group_by(list(partition_by)).aggregate([]).to_pylist()
    for row in uniques:
        mask = None
        for col, value in row.items():
            cond = pc.is_null(table.column(col)) if value is None else pc.equal(table.column(col), value)
            mask = cond if mask is None else pc.and_(mask, cond)
        part = table if len(uniques) == 1 else table.filter(mask)
        values = {c: partition_value_string(row[c]) for c in partition_by}
        yield tuple(values[c] for c in partition_by), values, part


def _stats(metadata: pq.FileMetaData) -> dict[str, Any]:
    """Delta file statistics (numRecords, nullCount, minValues, maxValues) of top-level columns,
    from the Parquet footer just written."""
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    usable: dict[str, bool] = {}
    for rg in range(metadata.num_row_groups):
        group = metadata.row_group(rg)
        for ci in range(group.num_columns):
            col = group.column(ci)
            name = col.path_in_schema
            if "." in name:  # nested: no stats
                continue
            st = col.statistics
            if st is None:
                usable[name] = False
                continue
            nulls[name] = nulls.get(name, 0) + st.null_count
            if not st.has_min_max:
                if st.null_count < group.num_rows:
                    usable[name] = False
                continue
            lo, hi = _stat_value(st.min), _stat_value(st.max)
            if lo is None or hi is None:
                usable[name] = False
                continue
            usable.setdefault(name, True)
            mins[name] = lo if name not in mins else min(mins[name], lo)
            maxs[name] = hi if name not in maxs else max(maxs[name], hi)
    keep = [n for n, ok in usable.items() if ok and n in mins]
    return {
        "numRecords": metadata.num_rows,
        "minValues": {n: _stat_json(mins[n]) for n in keep},
        "maxValues": {n: _stat_json(maxs[n]) for n in keep},
        "nullCount": nulls,
    }


def _stat_value(value: Any) -> Any:
    if isinstance(value, bool) or isinstance(value, (bytes, bytearray)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str) and len(value) > STATS_STRING_MAX:
        return None
    return value


def _stat_json(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc)
            return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def read_frame(spark, location: Location, schema, partition_by: tuple[str, ...],
               selected: list[dict[str, Any]]):
    """A DataFrame (Spark schema) of these data files of a table at location; each file a dict
    with path (relative to the table root) and partition_values ({column: Delta string})."""
    if not selected:
        return spark.createDataFrame([], schema)
    if not location.is_s3:
        # Spark's own vectorised reader; partition values come from the hive-style directories.
        uri = location.uri.rstrip("/")
        paths = [f"{uri}/{f['path']}" for f in selected]
        return spark.read.schema(schema).option("basePath", uri).parquet(*paths).select(*schema.fieldNames())
    # No s3a here: executors read the files with pyarrow.
    from pyspark.sql.pandas.types import to_arrow_schema

    listing = spark.createDataFrame([(f["path"], json.dumps(f["partition_values"])) for f in selected],
                                    "path string, partition_values string")
    parallelism = max(1, min(len(selected), spark.sparkContext.defaultParallelism * 2))
    return listing.repartition(parallelism).mapInArrow(
        read_task(location, to_arrow_schema(schema), partition_by), schema)


def read_task(location: Location, schema: pa.Schema, partition_by: tuple[str, ...]):
    """A mapInArrow function over (path, partition_values) rows: reads each data file with
    pyarrow and yields its rows with the partition columns restored, in schema order."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        fs, root = location.filesystem()
        for batch in batches:
            for path, values in zip(batch.column("path").to_pylist(),
                                    batch.column("partition_values").to_pylist()):
                values = json.loads(values)
                parquet = pq.ParquetFile(fs.open_input_file(f"{root}/{path}"))
                for chunk in parquet.iter_batches(batch_size=65536):
                    table = pa.Table.from_batches([chunk])
                    columns = []
                    for field in schema:
                        if field.name in partition_by:
                            columns.append(_partition_array(values.get(field.name), field.type, table.num_rows))
                        elif field.name in table.column_names:
                            columns.append(table.column(field.name).cast(field.type))
                        else:  # column added to the table after this file was written
                            columns.append(pa.nulls(table.num_rows, field.type))
                    yield from pa.Table.from_arrays(columns, schema=schema).to_batches()

    return run


def _partition_array(value: str | None, type_: pa.DataType, length: int) -> pa.Array:
    if value is None:
        return pa.nulls(length, type_)
    scalar: Any
    if pa.types.is_date(type_):
        scalar = dt.date.fromisoformat(value)
    elif pa.types.is_timestamp(type_):
        scalar = dt.datetime.fromisoformat(value)
        if type_.tz:
            scalar = scalar.replace(tzinfo=dt.timezone.utc)
    elif pa.types.is_boolean(type_):
        scalar = value.lower() == "true"
    else:
        return pa.array([value] * length, pa.string()).cast(type_)
    return pa.array([scalar] * length, type_)
