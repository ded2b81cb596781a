"""The delta-rs engine: Spark writes the data files on the executors, the driver commits them
with deltalake (atomic, optimistic concurrency). Works on local disk and on S3 without any
Delta or s3a jars."""
from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Iterable
from urllib.parse import unquote

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Schema
from deltalake import exceptions as delta_errors
from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions
from pyspark.sql import DataFrame, functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

from strata.lake import files
from strata.lake.base import (CommitResult, ConflictError, Lake, LakeError, SchemaMismatchError,
                              StagedFiles, TableNotFoundError, TableSpec)
from strata.lake.schema import conform

PartitionKey = tuple  # partition values as Delta strings, in partition column order


class DeltaRsLake(Lake):
    # ---- locations -------------------------------------------------------------------------
    def _location(self, table: TableSpec) -> files.Location:
        return files.Location(self.path(table), self.s3_endpoint, self.s3_region)

    @property
    def storage_options(self) -> dict[str, str] | None:
        if not self.root.startswith("s3://"):
            return None
        options = {"AWS_REGION": self.s3_region}
        if self.s3_endpoint:
            options["AWS_ENDPOINT_URL"] = self.s3_endpoint
            if self.s3_endpoint.startswith("http://"):
                options["AWS_ALLOW_HTTP"] = "true"
        return options

    def _delta(self, table: TableSpec, version: int | None = None,
               timestamp: datetime | None = None) -> DeltaTable:
        try:
            delta = DeltaTable(self.path(table), version=version, storage_options=self.storage_options)
            if timestamp is not None:
                delta.load_as_version(timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=timezone.utc))
            return delta
        except delta_errors.TableNotFoundError:
            raise TableNotFoundError(f"{table.qualified_name}: no Delta table at {self.path(table)}") from None
        except delta_errors.DeltaError as exc:
            raise LakeError(f"{table.qualified_name}: {_first_line(exc)}") from None

    def exists(self, table: TableSpec) -> bool:
        return DeltaTable.is_deltatable(self.path(table), storage_options=self.storage_options)

    # ---- writes ----------------------------------------------------------------------------
    def create(self, table: TableSpec, schema: T.StructType) -> CommitResult:
        return self._create(table, schema, [])

    def append(self, table: TableSpec, df: DataFrame) -> CommitResult:
        if not self.exists(table):
            try:
                return self._create(table, df.schema, self._write_files(table, df, table.partition_by))
            except ConflictError:
                pass  # another writer created it first: append to theirs
        delta = self._delta(table)
        df, partition_by = self._conform(table, delta, df)
        return self._append_adds(table, delta, self._write_files(table, df, partition_by), df.schema)

    def _append_adds(self, table: TableSpec, delta: DeltaTable, adds: list[AddAction],
                     schema: T.StructType) -> CommitResult:
        if not adds:
            return self._result(table, delta.version(), "APPEND (nothing to write)", [], [])
        return self._commit(table, delta, adds, [], "append", schema, "APPEND")

    def overwrite(self, table: TableSpec, df: DataFrame) -> CommitResult:
        if not self.exists(table):
            return self._create(table, df.schema, self._write_files(table, df, table.partition_by))
        delta = self._delta(table)
        df, partition_by = self._conform(table, delta, df)
        adds = self._write_files(table, df, partition_by)
        return self._commit(table, delta, adds, [], "overwrite", df.schema, "OVERWRITE")

    def overwrite_partitions(self, table: TableSpec, df: DataFrame,
                             partitions: list[dict[str, Any]] | None = None) -> CommitResult:
        if not self.exists(table):
            return self._create(table, df.schema, self._write_files(table, df, table.partition_by))
        delta = self._delta(table)
        df, partition_by = self._conform(table, delta, df)
        if not partition_by:
            raise LakeError(f"{table.qualified_name} is not partitioned; use overwrite")
        adds = self._write_files(table, df, partition_by)
        written = {_add_key(a, partition_by) for a in adds}
        if partitions is None:
            targets = written
        else:
            targets = {tuple(files.partition_value_string(p[c]) for c in partition_by) for p in partitions}
            outside = written - targets
            if outside:
                raise LakeError(f"{table.qualified_name}: frame has rows in partitions {sorted(outside, key=str)[:5]} "
                                f"outside the ones to overwrite; nothing was committed")
        removes = self._removes(delta, partition_by, targets)
        return self._commit(table, delta, adds, removes, "append", df.schema, "OVERWRITE PARTITIONS",
                            replaced=_keys_to_dicts(targets, partition_by))

    def upsert(self, table: TableSpec, df: DataFrame, keys: list[str]) -> CommitResult:
        missing = [k for k in keys if k not in df.columns]
        if missing:
            raise SchemaMismatchError(f"{table.qualified_name}: upsert keys {missing} are not columns of the frame")
        source = df.persist()
        try:
            duplicates = source.groupBy(*keys).count().where("count > 1").limit(1).collect()
            if duplicates:
                raise LakeError(f"{table.qualified_name}: upsert frame has duplicate keys, e.g. "
                                f"{duplicates[0].asDict()}; de-duplicate before upserting")
            if not self.exists(table):
                return self.append(table, source)
            delta = self._delta(table)
            source, partition_by = self._conform(table, delta, source)
            snapshot = self._snapshot(delta, partition_by)
            touched = self._touched_partitions(delta, snapshot, source, keys, partition_by)
            current_files = [f for f in snapshot if touched is None or f["key"] in touched]
            current = self._read_files(table, delta, current_files)
            merged = current.join(source.select(*keys), on=keys, how="left_anti").unionByName(source)
            adds = self._write_files(table, merged, partition_by)
            removes = [_remove(f) for f in current_files]
            replaced = _keys_to_dicts(touched, partition_by) if touched is not None else []
            return self._commit(table, delta, adds, removes, "append", source.schema, "UPSERT",
                                replaced=replaced)
        finally:
            source.unpersist()

    def _touched_partitions(self, delta: DeltaTable, snapshot: list[dict], source: DataFrame,
                            keys: list[str], partition_by: tuple[str, ...]) -> set[PartitionKey] | None:
        """Partitions the upsert must rewrite: those of the new rows and, unless the partition
        columns are part of the key, those where the keys live now. None: unpartitioned."""
        if not partition_by:
            return None
        touched = set(_distinct_partition_keys(source, partition_by))
        if not set(partition_by) <= set(keys):
            existing = self._read_files(None, delta, snapshot).select(*keys, *partition_by)
            moved = existing.join(source.select(*keys), on=keys, how="left_semi")
            touched |= set(_distinct_partition_keys(moved, partition_by))
        return touched

    def _conform(self, table: TableSpec, delta: DeltaTable,
                 df: DataFrame) -> tuple[DataFrame, tuple[str, ...]]:
        partition_by = tuple(delta.metadata().partition_columns)
        if table.partition_by and tuple(table.partition_by) != partition_by:
            raise LakeError(f"{table.qualified_name}: table is partitioned by {list(partition_by)}, "
                            f"the spec says {list(table.partition_by)}")
        conformed, new_fields = conform(df, _spark_schema(delta), table.qualified_name, table.schema_evolution)
        if new_fields:
            # Delta-rs adds columns in a metadata-only commit of its own, before the data commit.
            arrow = to_arrow_schema(T.StructType(new_fields))
            delta.alter.add_columns(Schema.from_arrow(arrow).fields,
                                    commit_properties=self._commit_properties())
        return conformed, partition_by

    def _write_files(self, table: TableSpec, df: DataFrame, partition_by: Iterable[str]) -> list[AddAction]:
        """Executors write df as Parquet files under the table; returns their add actions."""
        partition_by = tuple(partition_by)
        missing = [c for c in partition_by if c not in df.columns]
        if missing:
            raise SchemaMismatchError(f"{table.qualified_name}: partition column(s) {missing} not in frame")
        if partition_by:
            # Like Spark's own writer: each task meets its partitions one after another, so it
            # keeps one file open at a time and writes full row groups.
            df = df.sortWithinPartitions(*partition_by)
        writer = files.write_task(self._location(table), partition_by, to_arrow_schema(df.schema))
        rows = df.mapInArrow(writer, files.FILE_SCHEMA_DDL).collect()
        return [_add_action(row.asDict()) for row in rows]

    def staging_location(self, table: TableSpec) -> files.Location:
        # In the table itself: committing is then only the log entry, no copy.
        return self._location(table)

    def commit_staged(self, staged: StagedFiles) -> CommitResult:
        table = staged.table
        adds = [_add_action(f) for f in staged.files]
        if not self.exists(table):
            try:
                return self._create(table, staged.schema, adds)
            except ConflictError:
                pass  # another writer created it first: append to theirs
        delta = self._delta(table)
        partition_by = tuple(delta.metadata().partition_columns)
        if partition_by != tuple(table.partition_by) or \
                _spark_schema(delta).simpleString() != staged.schema.simpleString():
            raise SchemaMismatchError(
                f"{table.qualified_name}: staged files have schema {staged.schema.simpleString()} partitioned "
                f"by {list(table.partition_by)}; the table has {_spark_schema(delta).simpleString()} "
                f"partitioned by {list(partition_by)}")
        return self._append_adds(table, delta, adds, staged.schema)

    def _commit_properties(self, commit_id: str | None = None) -> CommitProperties:
        metadata = dict(self.commit_metadata)
        if commit_id:
            metadata["strata.commit_id"] = commit_id
        return CommitProperties(custom_metadata=metadata)

    def _create(self, table: TableSpec, schema: T.StructType, adds: list[AddAction]) -> CommitResult:
        try:
            create_table_with_add_actions(
                self.path(table), Schema.from_arrow(to_arrow_schema(schema)), adds, mode="error",
                partition_by=list(table.partition_by) or None, storage_options=self.storage_options,
                commit_properties=self._commit_properties())
        except delta_errors.DeltaError as exc:
            if self.exists(table):
                raise ConflictError(f"{table.qualified_name}: created concurrently by another writer") from None
            raise LakeError(f"{table.qualified_name}: create failed: {_first_line(exc)}") from None
        return self._result(table, 0, "CREATE", adds, [])

    def _commit(self, table: TableSpec, delta: DeltaTable, adds: list[AddAction],
                removes: list[RemoveAction], mode: str, schema: T.StructType, operation: str,
                replaced: list[dict] | None = None) -> CommitResult:
        read_version = delta.version()
        commit_id = uuid.uuid4().hex
        try:
            delta.create_write_transaction(
                [*adds, *removes], mode, Schema.from_arrow(to_arrow_schema(schema)),
                partition_by=delta.metadata().partition_columns or None,
                commit_properties=self._commit_properties(commit_id))
        except delta_errors.CommitFailedError as exc:
            raise ConflictError(f"{table.qualified_name}: commit on version {read_version} conflicted with "
                                f"a concurrent commit: {_first_line(exc)}; nothing was committed") from None
        except delta_errors.SchemaMismatchError as exc:
            raise SchemaMismatchError(f"{table.qualified_name}: {_first_line(exc)}") from None
        version = self._committed_version(table, commit_id, read_version)
        return self._result(table, version, operation, adds, removes, replaced or [])

    def _committed_version(self, table: TableSpec, commit_id: str, read_version: int) -> int:
        """The version our commit got (concurrent writers may have committed around it)."""
        latest = self._delta(table)
        for entry in latest.history(latest.version() - read_version):
            if entry.get("strata.commit_id") == commit_id:
                return entry["version"]
        raise LakeError(f"{table.qualified_name}: commit {commit_id} not found in the log after committing")

    def _result(self, table: TableSpec, version: int, operation: str, adds: list[AddAction],
                removes: list[RemoveAction], replaced: list[dict] | None = None) -> CommitResult:
        return CommitResult(
            table=table.qualified_name, path=self.path(table), version=version, operation=operation,
            files_added=len(adds), files_removed=len(removes),
            rows_added=sum(json.loads(a.stats)["numRecords"] for a in adds),
            partitions_replaced=replaced or [])

    # ---- snapshot and reads ----------------------------------------------------------------
    def _snapshot(self, delta: DeltaTable, partition_by: tuple[str, ...]) -> list[dict[str, Any]]:
        """The snapshot's files: path, size, num_records, partition values (Delta strings)."""
        actions = pa.table(delta.get_add_actions(flatten=False)).to_pylist()
        snapshot = []
        for action in actions:
            values = {c: files.partition_value_string((action.get("partition") or {}).get(c))
                      for c in partition_by}
            # The log URL-encodes paths; add and remove actions take them raw.
            snapshot.append({"path": unquote(action["path"]), "size": action["size_bytes"],
                             "num_records": action.get("num_records"), "partition_values": values,
                             "key": tuple(values[c] for c in partition_by)})
        return snapshot

    def _removes(self, delta: DeltaTable, partition_by: tuple[str, ...],
                 targets: set[PartitionKey]) -> list[RemoveAction]:
        return [_remove(f) for f in self._snapshot(delta, partition_by) if f["key"] in targets]

    def read(self, table: TableSpec, version: int | None = None,
             timestamp: datetime | None = None) -> DataFrame:
        delta = self._delta(table, version, timestamp)
        partition_by = tuple(delta.metadata().partition_columns)
        return self._read_files(table, delta, self._snapshot(delta, partition_by))

    def _read_files(self, table: TableSpec | None, delta: DeltaTable, selected: list[dict]) -> DataFrame:
        location = files.Location(delta.table_uri.rstrip("/"), self.s3_endpoint, self.s3_region)
        return files.read_frame(self.spark, location, _spark_schema(delta),
                                tuple(delta.metadata().partition_columns), selected)

    def version(self, table: TableSpec) -> int:
        return self._delta(table).version()

    def row_count(self, table: TableSpec) -> int:
        delta = self._delta(table)
        return sum(f["num_records"] or 0 for f in self._snapshot(delta, ()))

    def history(self, table: TableSpec, limit: int | None = None) -> list[dict[str, Any]]:
        return [{
            "version": entry["version"],
            "timestamp": datetime.fromtimestamp(entry["timestamp"] / 1000, timezone.utc).isoformat(),
            "operation": entry.get("operation"),
            "job": entry.get("strata.job"),
            "run_id": entry.get("strata.run_id"),
            "run_date": entry.get("strata.run_date"),
            "parameters": entry.get("operationParameters", {}),
        } for entry in self._delta(table).history(limit)]

    def vacuum(self, table: TableSpec, retention_hours: int | None = None) -> list[str]:
        return self._delta(table).vacuum(
            retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False,
            full=True, commit_properties=self._commit_properties())


def _spark_schema(delta: DeltaTable) -> T.StructType:
    return from_arrow_schema(pa.schema(delta.schema().to_arrow()))


def _add_action(file: dict[str, Any]) -> AddAction:
    """The add action of a file the executors wrote (a files.FILE_SCHEMA row)."""
    return AddAction(file["path"], file["size"], json.loads(file["partition_values"]), file["modification_time"],
                     True, file["stats"])


def _remove(file: dict[str, Any]) -> RemoveAction:
    return RemoveAction(file["path"], True, int(time.time() * 1000), file["size"], file["partition_values"])


def _add_key(add: AddAction, partition_by: tuple[str, ...]) -> PartitionKey:
    return tuple(add.partition_values.get(c) for c in partition_by)


def _keys_to_dicts(keys: Iterable[PartitionKey], partition_by: tuple[str, ...]) -> list[dict]:
    return [dict(zip(partition_by, key)) for key in sorted(keys, key=lambda k: [str(v) for v in k])]


def _distinct_partition_keys(df: DataFrame, partition_by: tuple[str, ...]) -> list[PartitionKey]:
    """Distinct partition values as Delta strings, computed by Spark (only these few rows reach
    the driver)."""
    as_strings = []
    for column in partition_by:
        dtype = df.schema[column].dataType
        if isinstance(dtype, (T.TimestampType, T.TimestampNTZType)):
            value = F.date_format(column, "yyyy-MM-dd HH:mm:ss.SSSSSS")
        elif isinstance(dtype, T.BooleanType):
            value = F.lower(F.col(column).cast("string"))
        else:
            value = F.col(column).cast("string")
        as_strings.append(value.alias(column))
    return [tuple(row) for row in df.select(*as_strings).distinct().collect()]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
