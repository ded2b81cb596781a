"""The delta-rs engine: Spark writes the data files on the executors, the driver commits them
with deltalake (atomic, optimistic concurrency). Works on local disk and on S3 without any
Delta or s3a jars."""
from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Iterable
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.fs as pafs
from deltalake import CommitProperties, DeltaTable, Schema
from deltalake import exceptions as delta_errors
from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions
from pyspark.sql import DataFrame, Window, functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

from strata.lake import files
from strata.lake.base import (MAINTENANCE_OPERATIONS, CommitOutcomeUnknown, CommitResult, CompactResult,
                              ConflictError, Lake, LakeError, ReadSet, SchemaMismatchError, StagedFiles,
                              TableNotFoundError, TableSpec, partition_matcher)
from strata.lake.schema import conform

PartitionKey = tuple  # partition values as Delta strings, in partition column order
MAX_COMMIT_ATTEMPTS = 10
_SIDE, _RANK = "__strata_side", "__strata_rank"  # upsert's version ranking (1 = the newest)
# <root>/_strata_inflight/<layer>/<table>/: one marker per write whose data files are in the table
# and not committed yet; vacuum leaves the files such a marker covers alone.
INFLIGHT_DIR = "_strata_inflight"
DEFAULT_INFLIGHT_TTL_HOURS = 48
log = logging.getLogger(__name__)


class DeltaRsLake(Lake):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._inflight: dict[str, str] = {}  # qualified table name -> the marker this lake holds
        # A process that ends normally has nothing in flight: its uncommitted files are orphans.
        atexit.register(self._release_all)

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

    def append(self, table: TableSpec, df: DataFrame, read: ReadSet | None = None) -> CommitResult:
        if not self.exists(table):
            try:
                return self._create(table, df.schema, self._write_files(table, df, table.partition_by))
            except ConflictError:
                pass  # created concurrently: append to it, if what we read allows (checked in _commit)
        delta = self._delta(table)
        df, partition_by = self._conform(table, delta, df)
        return self._append_adds(table, delta, self._write_files(table, df, partition_by), df.schema, read)

    def _append_adds(self, table: TableSpec, delta: DeltaTable, adds: list[AddAction],
                     schema: T.StructType, read: ReadSet | None) -> CommitResult:
        if not adds:
            return self._result(table, delta.version(), "APPEND (nothing to write)", [], [])
        return self._commit(table, delta, adds, [], "append", schema, "APPEND", read)

    def overwrite(self, table: TableSpec, df: DataFrame) -> CommitResult:
        if not self.exists(table):
            return self._create(table, df.schema, self._write_files(table, df, table.partition_by))
        delta = self._delta(table)
        df, partition_by = self._conform(table, delta, df)
        adds = self._write_files(table, df, partition_by)
        removes = [_remove(f) for f in self._snapshot(delta, partition_by)]
        return self._commit(table, delta, adds, removes, "append", df.schema, "OVERWRITE",
                            ReadSet(delta.version()))

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
        # The replaced partitions are what this write read: a concurrent append into one of
        # them must fail this commit, not survive beside the rewrite.
        return self._commit(table, delta, adds, removes, "append", df.schema, "OVERWRITE PARTITIONS",
                            ReadSet(delta.version(), frozenset(targets)),
                            replaced=_keys_to_dicts(targets, partition_by))

    def upsert(self, table: TableSpec, df: DataFrame, keys: list[str], newer_by: list[str] | None = None,
               retract: DataFrame | None = None) -> CommitResult:
        missing = [c for c in [*keys, *(newer_by or [])] if c not in df.columns]
        if missing:
            raise SchemaMismatchError(f"{table.qualified_name}: upsert columns {missing} are not columns of the frame")
        cached = source = df.persist()
        ranked = None
        try:
            any_null = F.lit(False)
            for key in keys:
                any_null = any_null | F.col(key).isNull()
            invalid = source.groupBy(*keys).count().where((F.col("count") > 1) | any_null).limit(1).collect()
            if invalid:
                raise LakeError(f"{table.qualified_name}: upsert frame has duplicate keys or a null key, e.g. "
                                f"{invalid[0].asDict()}; de-duplicate and quarantine null keys first")
            if not self.exists(table):
                return self.append(table, source, ReadSet(-1))
            delta = self._delta(table)
            source, partition_by = self._conform(table, delta, source)
            snapshot = self._snapshot(delta, partition_by)
            touched = self._touched_partitions(delta, snapshot, source, keys, partition_by, retract)
            current_files = [f for f in snapshot if touched is None or f["key"] in touched]
            current = self._read_files(table, delta, current_files)
            retracted = 0
            if retract is not None:
                retract = retract.distinct()
                gone = current.join(retract, retract.columns, "left_semi")
                retracted = gone.join(source.select(*keys), on=keys, how="left_anti").count()
                current = current.join(retract, retract.columns, "left_anti")
            unchanged = current.join(source.select(*keys), on=keys, how="left_anti")
            if newer_by:
                ranked = _rank_versions(current, source, keys, newer_by).persist()
                winners = ranked.where(F.col(_RANK) == 1).drop(_RANK, _SIDE)
                skipped = ranked.where((F.col(_RANK) > 1) & (F.col(_SIDE) == 1)).count()
            else:
                winners, skipped = source, 0
            adds = self._write_files(table, unchanged.unionByName(winners), partition_by)
            removes = [_remove(f) for f in current_files]
            # What it read: the whole table when it looked keys or retracted rows up everywhere
            # (a concurrent write of the same key into another partition must conflict).
            whole = touched is None or not set(partition_by) <= set(keys) or retract is not None
            read = ReadSet(delta.version(), None if whole else frozenset(touched))
            result = self._commit(table, delta, adds, removes, "append", source.schema, "UPSERT", read,
                                  replaced=_keys_to_dicts(touched, partition_by) if touched is not None else [])
            return dataclasses.replace(result, rows_skipped=skipped, rows_retracted=retracted)
        finally:
            if ranked is not None:
                ranked.unpersist()
            cached.unpersist()  # not `source`: conforming made it a projection of the cached frame

    def _touched_partitions(self, delta: DeltaTable, snapshot: list[dict], source: DataFrame, keys: list[str],
                            partition_by: tuple[str, ...], retract: DataFrame | None) -> set[PartitionKey] | None:
        """Partitions the upsert must rewrite: those of the new rows and, unless the partition
        columns are part of the key, those where the keys live now, and those holding rows to
        retract. None: unpartitioned."""
        if not partition_by:
            return None
        look_up_keys = not set(partition_by) <= set(keys)
        prunable = [k for k in keys if isinstance(source.schema[k].dataType, _PRUNABLE_TYPES)] if look_up_keys else []
        # One pass over the new rows: their partitions and, per partition, each key's range.
        ranges = _partition_key_ranges(source, partition_by, prunable)
        touched = set(ranges)
        outside = [f for f in snapshot if f["key"] not in touched]  # touched ones are read anyway
        lookups = []
        if look_up_keys:
            # Only a file whose key stats can hold a new row's key can hold an older version of
            # it; a file without usable stats is always read.
            stats = _key_stats(delta, prunable)
            candidates = [f for f in outside if _may_hold(stats.get(f["path"]), list(ranges.values()), prunable)]
            lookups.append((source.select(*keys), candidates))
        if retract is not None:
            lookups.append((retract, outside))
        for lookup, candidates in lookups:
            if not candidates:
                continue
            columns = set(lookup.columns) | set(partition_by)
            existing = self._read_files(None, delta, candidates).select(*sorted(columns))
            found = existing.join(lookup, on=lookup.columns, how="left_semi")
            touched |= set(_distinct_partition_keys(found, partition_by))
        return touched

    def _conform(self, table: TableSpec, delta: DeltaTable,
                 df: DataFrame) -> tuple[DataFrame, tuple[str, ...]]:
        partition_by = tuple(delta.metadata().partition_columns)
        if table.partition_by and tuple(table.partition_by) != partition_by:
            raise LakeError(f"{table.qualified_name}: table is partitioned by {list(partition_by)}, "
                            f"the spec says {list(table.partition_by)}")
        conformed, new_fields = conform(df, _spark_schema(delta), table.qualified_name, table.schema_evolution)
        if new_fields:
            self._add_columns(delta, new_fields)
        return conformed, partition_by

    def _add_columns(self, delta: DeltaTable, new_fields: list[T.StructField]) -> None:
        """A metadata-only commit of its own, before the data commit: delta-rs's
        create_write_transaction commits add/remove actions only and cannot change the schema,
        and write_deltalake(schema_mode="merge") would write the data files itself. A crash in
        between leaves the new (nullable, empty) columns and no data: harmless."""
        arrow = to_arrow_schema(T.StructType(new_fields))
        delta.alter.add_columns(Schema.from_arrow(arrow).fields, commit_properties=self._commit_properties())

    def _write_files(self, table: TableSpec, df: DataFrame, partition_by: Iterable[str]) -> list[AddAction]:
        """Executors write df as Parquet files under the table; returns their add actions."""
        self._hold(table)
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
        # In the table itself: committing is then only the log entry, no copy. The in-flight
        # marker keeps vacuum off the staged files until they are committed or discarded.
        self._hold(table)
        return self._location(table)

    def discard_staged(self, staged: StagedFiles) -> None:
        super().discard_staged(staged)
        self._release(staged.table)

    def commit_staged(self, staged: StagedFiles, read: ReadSet | None = None) -> CommitResult:
        table = staged.table
        adds = [_add_action(f) for f in staged.files]
        if not self.exists(table):
            try:
                return self._create(table, staged.schema, adds)
            except ConflictError:
                pass  # created concurrently: append to it, if what we read allows (checked in _commit)
        delta = self._delta(table)
        partition_by = tuple(delta.metadata().partition_columns)
        have = {f.name: f.dataType for f in _spark_schema(delta).fields}
        staged_types = {f.name: f.dataType for f in staged.schema.fields}
        new_fields = [f for f in staged.schema.fields if f.name not in have]
        if partition_by != tuple(table.partition_by) or set(have) - set(staged_types) or \
                any(staged_types[name] != type_ for name, type_ in have.items()) or \
                (new_fields and not table.schema_evolution):
            raise SchemaMismatchError(
                f"{table.qualified_name}: staged files have schema {staged.schema.simpleString()} partitioned "
                f"by {list(table.partition_by)}; the table has {_spark_schema(delta).simpleString()} "
                f"partitioned by {list(partition_by)}")
        if new_fields:
            self._add_columns(delta, new_fields)
        return self._append_adds(table, delta, adds, _spark_schema(delta), read)

    def _commit_properties(self, commit_id: str | None = None,
                           partitions: list[dict] | None = None) -> CommitProperties:
        metadata = dict(self.commit_metadata)
        metadata["strata.partitions"] = partitions or []
        if commit_id:
            metadata["strata.commit_id"] = commit_id
        # delta-rs never retries on its own: it cannot know what this write read (see _commit).
        return CommitProperties(custom_metadata=metadata, max_commit_retries=0)

    def _create(self, table: TableSpec, schema: T.StructType, adds: list[AddAction]) -> CommitResult:
        commit_id = uuid.uuid4().hex
        try:
            create_table_with_add_actions(
                self.path(table), Schema.from_arrow(to_arrow_schema(schema)), adds, mode="error",
                partition_by=list(table.partition_by) or None, storage_options=self.storage_options,
                commit_properties=self._commit_properties(commit_id, _changed_partitions(adds, [])))
        except Exception as exc:  # noqa: BLE001 - a DeltaError, or a lost response (OSError): look it up
            if not self.exists(table):
                raise LakeError(f"{table.qualified_name}: create failed: {_first_line(exc)}; "
                                "nothing was committed") from None
            if self._find_commit(table, commit_id, -1) is None:
                raise ConflictError(f"{table.qualified_name}: created concurrently by another writer") from None
            # Our create landed although the call failed (e.g. its response was lost).
        return self._result(table, 0, "CREATE", adds, [])

    def _commit(self, table: TableSpec, delta: DeltaTable, adds: list[AddAction],
                removes: list[RemoveAction], mode: str, schema: T.StructType, operation: str,
                read: ReadSet | None = None, replaced: list[dict] | None = None) -> CommitResult:
        """Commit on top of `delta`. A concurrent commit makes delta-rs fail ours (no retries of its
        own); we then check the winners against what this write read (`read`, and the files it
        removes) and either raise ConflictError or commit again on the new version. A commit
        call that failed is looked up in the log before anything is reported: its response may
        have been lost after the log entry was written."""
        commit_id = uuid.uuid4().hex
        properties = self._commit_properties(commit_id, _changed_partitions(adds, removes))
        partition_by = tuple(delta.metadata().partition_columns)
        if read is not None:
            self._check_conflicts(table, read, read.version, delta.version(), removes, partition_by)
        for _ in range(MAX_COMMIT_ATTEMPTS):
            base = delta.version()
            try:
                delta.create_write_transaction(
                    [*adds, *removes], mode, Schema.from_arrow(to_arrow_schema(schema)),
                    partition_by=list(partition_by) or None, commit_properties=properties)
            except delta_errors.SchemaMismatchError as exc:
                raise SchemaMismatchError(f"{table.qualified_name}: {_first_line(exc)}") from None
            except delta_errors.CommitFailedError as exc:
                version = self._find_commit(table, commit_id, base)
                if version is None:
                    latest = self._delta(table)
                    if latest.version() == base:  # no concurrent commit: a failure of its own
                        raise LakeError(f"{table.qualified_name}: commit failed: {_first_line(exc)}; "
                                        "nothing was committed") from None
                    # a genuine concurrent commit: check it, then try again on top of it
                    self._check_conflicts(table, read, base, latest.version(), removes, partition_by)
                    delta = latest
                    continue
            except Exception as exc:  # noqa: BLE001 - a lost response or a storage error: look it up
                version = self._find_commit(table, commit_id, base)
                if version is None:
                    raise LakeError(f"{table.qualified_name}: commit failed: {_first_line(exc)}; "
                                    "nothing was committed (its log entry is not there)") from None
            else:
                version = self._find_commit(table, commit_id, base)
                if version is None:  # it succeeded: never report it as "nothing committed"
                    raise CommitOutcomeUnknown(f"{table.qualified_name}: commit {commit_id} succeeded but is not "
                                               "found in the log after committing")
            return self._result(table, version, operation, adds, removes, replaced or [])
        raise ConflictError(f"{table.qualified_name}: {MAX_COMMIT_ATTEMPTS} concurrent commits in a row won over "
                            "this one; nothing was committed, re-run")

    def _check_conflicts(self, table: TableSpec, read: ReadSet | None, after: int, until: int,
                         removes: list[RemoveAction], partition_by: tuple[str, ...]) -> None:
        """ConflictError if a commit in (after, until] changed data this write read or removed a
        file it removes."""
        removing = {r.path for r in removes}
        for version in range(after + 1, until + 1):
            for action in self._log_entry(table, version):
                change = action.get("add") or action.get("remove")
                if change is None:
                    continue
                path = unquote(change["path"])
                values = change.get("partitionValues") or {}
                key = tuple(values.get(c) for c in partition_by)
                if "remove" in action and path in removing:
                    why = "removed a file that this write replaces"
                elif read is not None and change.get("dataChange", True) and \
                        (read.partitions is None or key in read.partitions):
                    where = "the table" if read.partitions is None else f"partition {dict(zip(partition_by, key))}"
                    why = f"changed data in {where}, which this write read at version {read.version}"
                else:
                    continue
                raise ConflictError(f"{table.qualified_name}: conflicted with a concurrent commit (version {version}), "
                                    f"which {why}; nothing was committed, re-run")

    def _log_entry(self, table: TableSpec, version: int) -> list[dict[str, Any]]:
        fs, root = self._location(table).filesystem()
        with fs.open_input_stream(f"{root}/_delta_log/{version:020d}.json") as stream:
            return [json.loads(line) for line in stream.read().decode().splitlines() if line.strip()]

    def _find_commit(self, table: TableSpec, commit_id: str, after: int) -> int | None:
        """The version of our commit (by its id) if it is in the log after `after`."""
        try:
            latest = self._delta(table)
            entries = latest.history(latest.version() - after)
        except Exception as exc:  # noqa: BLE001
            raise CommitOutcomeUnknown(
                f"{table.qualified_name}: the commit call failed and its log cannot be read to tell whether "
                f"it landed ({_first_line(exc)}); look for strata.commit_id={commit_id} in its history") from None
        for entry in entries:
            if entry.get("strata.commit_id") == commit_id:
                return entry["version"]
        return None

    def _result(self, table: TableSpec, version: int, operation: str, adds: list[AddAction],
                removes: list[RemoveAction], replaced: list[dict] | None = None) -> CommitResult:
        self._release(table)  # committed: its files are referenced now
        return CommitResult(
            table=table.qualified_name, path=self.path(table), version=version, operation=operation,
            files_added=len(adds), files_removed=len(removes),
            rows_added=sum(json.loads(a.stats)["numRecords"] for a in adds),
            partitions_replaced=replaced or [])

    # ---- snapshot and reads ----------------------------------------------------------------
    def _snapshot(self, delta: DeltaTable, partition_by: tuple[str, ...],
                  keep=None) -> list[dict[str, Any]]:
        """The snapshot's files: path, size, num_records, partition values (Delta strings);
        only those whose partition values `keep` accepts, when given."""
        actions = pa.table(delta.get_add_actions(flatten=False)).to_pylist()
        snapshot = []
        for action in actions:
            values = {c: files.partition_value_string((action.get("partition") or {}).get(c))
                      for c in partition_by}
            if keep is not None and not keep(values):
                continue
            # The log URL-encodes paths; add and remove actions take them raw.
            snapshot.append({"path": unquote(action["path"]), "size": action["size_bytes"],
                             "num_records": action.get("num_records"), "partition_values": values,
                             "key": tuple(values[c] for c in partition_by)})
        return snapshot

    def _removes(self, delta: DeltaTable, partition_by: tuple[str, ...],
                 targets: set[PartitionKey]) -> list[RemoveAction]:
        return [_remove(f) for f in self._snapshot(delta, partition_by) if f["key"] in targets]

    def read(self, table: TableSpec, version: int | None = None, timestamp: datetime | None = None,
             partitions: list[dict[str, Any]] | None = None) -> DataFrame:
        delta = self._delta(table, version, timestamp)
        partition_by = tuple(delta.metadata().partition_columns)
        keep = None if partitions is None else partition_matcher(table.qualified_name, partition_by, partitions)
        return self._read_files(table, delta, self._snapshot(delta, partition_by, keep))

    def partition_values(self, table: TableSpec) -> list[dict[str, str | None]]:
        delta = self._delta(table)
        partition_by = tuple(delta.metadata().partition_columns)
        distinct = {f["key"]: f["partition_values"] for f in self._snapshot(delta, partition_by)}
        return list(distinct.values())

    def max_value(self, table: TableSpec, column: str,
                  partitions: list[dict[str, Any]] | None = None) -> Any:
        """From the files' statistics when every selected file has them (no file is opened)."""
        delta = self._delta(table)
        partition_by = tuple(delta.metadata().partition_columns)
        keep = partition_matcher(table.qualified_name, partition_by, partitions)
        best, complete = None, True
        for action in pa.table(delta.get_add_actions(flatten=False)).to_pylist():
            values = {c: files.partition_value_string((action.get("partition") or {}).get(c)) for c in partition_by}
            if not keep(values):
                continue
            stats = action.get("max") or {}
            if stats.get(column) is None:
                nulls = (action.get("null_count") or {}).get(column)
                if nulls is None or nulls != action.get("num_records"):
                    complete = False  # no statistics for it: look at the rows
                    break
                continue  # only nulls in this file
            best = stats[column] if best is None else max(best, stats[column])
        return best if complete else super().max_value(table, column, partitions)

    def read_added(self, table: TableSpec, after: int, until: int) -> DataFrame:
        """The files that commits (after, until] added and `until` still holds, from the log."""
        added = set()
        for version in range(after + 1, until + 1):
            for action in self._log_entry(table, version):
                if "add" in action:
                    added.add(unquote(action["add"]["path"]))
        delta = self._delta(table, until)
        partition_by = tuple(delta.metadata().partition_columns)
        return self._read_files(table, delta, [f for f in self._snapshot(delta, partition_by) if f["path"] in added])

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
        delta = self._delta(table)
        fetch = limit
        while True:
            raw = delta.history(fetch)
            entries = [e for e in raw if e.get("operation") not in MAINTENANCE_OPERATIONS]
            if fetch is None or len(entries) >= limit or len(raw) < fetch:
                break
            fetch *= 4  # upkeep commits were left out: look further back
        return [{
            "version": entry["version"],
            "timestamp": datetime.fromtimestamp(entry["timestamp"] / 1000, timezone.utc).isoformat(),
            "operation": entry.get("operation"),
            "job": entry.get("strata.job"),
            "run_id": entry.get("strata.run_id"),
            "run_date": entry.get("strata.run_date"),
            "parameters": entry.get("operationParameters", {}),
            "partitions": entry.get("strata.partitions"),
        } for entry in entries[:limit]]

    # ---- upkeep ------------------------------------------------------------------------------
    def compact(self, table: TableSpec, target_size: int) -> CompactResult:
        """delta-rs's optimize.compact: bins never span partitions; one OPTIMIZE commit whose
        actions all have dataChange=false and which records no changed partition. It never
        retries on top of a concurrent commit (max_commit_retries=0): a ConflictError instead."""
        delta = self._delta(table)
        before, version_before = self._snapshot(delta, ()), delta.version()
        commit_id = uuid.uuid4().hex
        self._hold(table)  # its new files are uncommitted until the commit lands
        try:
            delta.optimize.compact(target_size=target_size,
                                   commit_properties=self._commit_properties(commit_id, []))
        except Exception as exc:  # noqa: BLE001 - a conflict, or a lost response: look it up
            if self._find_commit(table, commit_id, version_before) is None:
                if isinstance(exc, delta_errors.CommitFailedError):
                    raise ConflictError(f"{table.qualified_name}: compaction lost to a concurrent commit "
                                        f"({_first_line(exc)}); nothing was committed, re-run") from None
                raise LakeError(f"{table.qualified_name}: compaction failed: {_first_line(exc)}; "
                                "nothing was committed") from None
        finally:
            self._release(table)
        version = self._find_commit(table, commit_id, version_before)
        after = self._snapshot(self._delta(table), ())
        return CompactResult(table.qualified_name, version_before, version_before if version is None else version,
                             len(before), len(after), sum(f["size"] for f in before), sum(f["size"] for f in after))

    def vacuum(self, table: TableSpec, retention_hours: int | None = None,
               orphan_grace_hours: int | None = None, inflight_ttl_hours: int | None = None) -> list[str]:
        """Removed files past retention: delta-rs's (lite) vacuum, which commits VACUUM START/END
        with our commit info. Never-committed files: deleted here, not by delta-rs's full vacuum,
        which deletes every unreferenced file older than the retention by modification time (with
        retention 0, a running writer's uncommitted files). An orphan goes only if it is
        orphan_grace_hours old and older than every live in-flight marker of the table (a writer
        creates its marker before its first file and deletes it after its commit)."""
        grace = orphan_grace_hours if orphan_grace_hours is not None else \
            (retention_hours if retention_hours is not None else 168)
        ttl = DEFAULT_INFLIGHT_TTL_HOURS if inflight_ttl_hours is None else inflight_ttl_hours
        delta = self._delta(table)
        unreferenced = set(delta.vacuum(retention_hours=0, dry_run=True, enforce_retention_duration=False, full=True))
        orphans = unreferenced - _tombstones(delta)
        # Markers after the file listing: a listed file's writer had its marker before the file.
        live = self._live_markers(table, ttl)
        latest = self._delta(table)  # and a writer that committed since is no orphan's
        orphans -= {f["path"] for f in self._snapshot(latest, ())} | _tombstones(latest)
        deleted = []
        fs, root = self._location(table).filesystem()
        if orphans:
            cutoff = time.time_ns() - int(grace * 3600 * 1e9)
            oldest_live = min(live, default=None)
            paths = sorted(orphans)
            for path, info in zip(paths, fs.get_file_info([f"{root}/{p}" for p in paths])):
                if info.type != pafs.FileType.File or info.mtime_ns > cutoff or \
                        (oldest_live is not None and info.mtime_ns >= oldest_live):
                    continue
                fs.delete_file(info.path)
                deleted.append(path)
        # delta-rs plans every expired tombstone of the log, deleted already or not, and commits
        # VACUUM START/END whenever its plan is not empty: run it only when one is still there.
        expired = sorted(set(latest.vacuum(retention_hours=retention_hours, dry_run=True,
                                           enforce_retention_duration=False)))
        present = [path for path, info in zip(expired, fs.get_file_info([f"{root}/{p}" for p in expired]))
                   if info.type == pafs.FileType.File]
        if present:
            latest.vacuum(retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False,
                          full=False, commit_properties=self._commit_properties())
        return present + deleted

    # ---- in-flight markers -------------------------------------------------------------------
    def _markers(self, table: TableSpec) -> files.Location:
        # Beside the tables, not in them: a write that fails before its table exists leaves no folder there.
        return files.Location(f"{self.root}/{INFLIGHT_DIR}/{table.layer}/{table.name}", self.s3_endpoint,
                              self.s3_region)

    def _hold(self, table: TableSpec) -> None:
        """Mark this lake's write to table as in flight (before any of its files is written)."""
        if table.qualified_name in self._inflight:
            return
        fs, folder = self._markers(table).filesystem()
        if isinstance(fs, pafs.LocalFileSystem):
            fs.create_dir(folder, recursive=True)
        path = f"{folder}/{self.run_id}-{uuid.uuid4().hex[:8]}.json"
        with fs.open_output_stream(path) as out:
            out.write(json.dumps({"job": self.job, "run_id": self.run_id, "run_date": self.run_date}).encode())
        self._inflight[table.qualified_name] = path

    def _release(self, table: TableSpec, quiet: bool = False) -> None:
        path = self._inflight.pop(table.qualified_name, None)
        if path is None:
            return
        try:
            self._markers(table).filesystem()[0].delete_file(path)
        except Exception as exc:  # noqa: BLE001 - a stale marker only delays orphan cleanup until it expires
            if not quiet:
                log.warning("%s: could not delete in-flight marker %s: %s", table.qualified_name, path,
                            _first_line(exc))

    def _release_all(self) -> None:
        # At exit (after a failed write, say): best effort, the storage may be gone already.
        for name in list(self._inflight):
            layer, _, table_name = name.partition(".")
            self._release(TableSpec(layer, table_name), quiet=True)

    def _live_markers(self, table: TableSpec, ttl_hours: float) -> list[int]:
        """Modification times (ns) of the table's in-flight markers; those older than ttl_hours
        are a dead run's and are deleted."""
        fs, folder = self._markers(table).filesystem()
        expiry = time.time_ns() - int(ttl_hours * 3600 * 1e9)
        live = []
        for info in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
            if info.type != pafs.FileType.File:
                continue
            if info.mtime_ns < expiry:
                log.info("%s: in-flight marker %s expired (a dead run's): deleted", table.qualified_name, info.path)
                fs.delete_file(info.path)
            else:
                live.append(info.mtime_ns)
        return live


def _tombstones(delta: DeltaTable) -> set[str]:
    """Files that commits removed and that are still on storage (paths as vacuum gives them)."""
    return set(delta.vacuum(retention_hours=0, dry_run=True, enforce_retention_duration=False))


def _spark_schema(delta: DeltaTable) -> T.StructType:
    return from_arrow_schema(pa.schema(delta.schema().to_arrow()))


def _add_action(file: dict[str, Any]) -> AddAction:
    """The add action of a file the executors wrote (a files.FILE_SCHEMA row)."""
    return AddAction(file["path"], file["size"], json.loads(file["partition_values"]), file["modification_time"],
                     True, file["stats"])


def _remove(file: dict[str, Any]) -> RemoveAction:
    return RemoveAction(file["path"], True, int(time.time() * 1000), file["size"], file["partition_values"])


def _rank_versions(current: DataFrame, source: DataFrame, keys: list[str], newer_by: list[str]) -> DataFrame:
    """The table's rows of source's keys and source's rows, ranked per key by newer_by (newest
    first; on a tie the new row wins, so a re-run replaces a row with itself)."""
    rivals = (current.join(source.select(*keys), on=keys, how="left_semi").withColumn(_SIDE, F.lit(0))
              .unionByName(source.withColumn(_SIDE, F.lit(1))))
    newest_first = Window.partitionBy(*keys).orderBy(*[F.col(c).desc_nulls_last() for c in newer_by],
                                                     F.col(_SIDE).desc())
    return rivals.withColumn(_RANK, F.row_number().over(newest_first))


def _changed_partitions(adds: list[AddAction], removes: list[RemoveAction]) -> list[dict[str, str | None]]:
    """The partitions a commit changes, recorded in its commit info for downstream jobs."""
    changed = {json.dumps(dict(action.partition_values or {}), sort_keys=True) for action in [*adds, *removes]}
    return [json.loads(values) for values in sorted(changed)]


def _add_key(add: AddAction, partition_by: tuple[str, ...]) -> PartitionKey:
    return tuple(add.partition_values.get(c) for c in partition_by)


def _keys_to_dicts(keys: Iterable[PartitionKey], partition_by: tuple[str, ...]) -> list[dict]:
    return [dict(zip(partition_by, key)) for key in sorted(keys, key=lambda k: [str(v) for v in k])]


def _partition_strings(df: DataFrame, partition_by: tuple[str, ...]) -> list:
    """The partition columns as the Delta strings of their values."""
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
    return as_strings


def _distinct_partition_keys(df: DataFrame, partition_by: tuple[str, ...]) -> list[PartitionKey]:
    """Distinct partition values as Delta strings, computed by Spark (only these few rows reach
    the driver)."""
    return [tuple(row) for row in df.select(*_partition_strings(df, partition_by)).distinct().collect()]


# Key types whose Delta stats are exact bounds (timestamps are cut to milliseconds: not a bound).
_PRUNABLE_TYPES = (T.StringType, T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.DateType)
KeyRanges = dict[str, tuple[Any, Any]]  # key column -> (min, max)


def _partition_key_ranges(df: DataFrame, partition_by: tuple[str, ...],
                          keys: list[str]) -> dict[PartitionKey, KeyRanges]:
    """Per partition of df's rows: each key column's (min, max), in one aggregation (a row per
    partition reaches the driver)."""
    aggregates = [F.struct(F.min(k).alias("lo"), F.max(k).alias("hi")).alias(f"__range_{i}")
                  for i, k in enumerate(keys)] or [F.count(F.lit(1)).alias("__rows")]
    grouped = df.groupBy(*_partition_strings(df, partition_by)).agg(*aggregates).collect()
    return {tuple(row[c] for c in partition_by): {k: (row[f"__range_{i}"]["lo"], row[f"__range_{i}"]["hi"])
                                                   for i, k in enumerate(keys)}
            for row in grouped}


def _key_stats(delta: DeltaTable, keys: list[str]) -> dict[str, KeyRanges]:
    """Per file path: (min, max) of each key column that has usable stats, from the log."""
    if not keys:
        return {}
    stats = {}
    for action in pa.table(delta.get_add_actions(flatten=False)).to_pylist():
        lows, highs = action.get("min") or {}, action.get("max") or {}
        usable = {}
        for k in keys:
            lo, hi = lows.get(k), highs.get(k)
            # Other writers cut long strings in stats (a cut max is no bound): not usable.
            if lo is None or hi is None or (isinstance(hi, str) and len(hi) >= files.STATS_STRING_MAX):
                continue
            usable[k] = (lo, hi)
        stats[unquote(action["path"])] = usable
    return stats


def _may_hold(file_ranges: KeyRanges | None, source_ranges: list[KeyRanges], keys: list[str]) -> bool:
    """Whether a file with these key stats can hold a key in one of the source's ranges (yes
    when any key column lacks stats)."""
    if not keys or not file_ranges or any(k not in file_ranges for k in keys):
        return True
    return any(all(file_ranges[k][0] <= r[k][1] and r[k][0] <= file_ranges[k][1] for k in keys)
               for r in source_ranges)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
