"""The lake interface: what every engine offers, and the errors it raises."""
from __future__ import annotations

import abc
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow.fs as pafs
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from strata.catalog import TableSpec
from strata.lake import files


# Commits that change no row: left out of Lake.history.
MAINTENANCE_OPERATIONS = frozenset({"OPTIMIZE", "VACUUM START", "VACUUM END"})


class LakeError(RuntimeError):
    """A lake operation failed; nothing was committed."""


def partition_matcher(table: str, partition_by: tuple[str, ...],
                      partitions: list[dict[str, Any]] | None):
    """A predicate over {column: Delta string} partition values: whether they are in one of
    `partitions` (None: every partition). Values are compared as Delta strings."""
    if partitions is None:
        return lambda values: True
    wanted = []
    for p in partitions:
        unknown = set(p) - set(partition_by)
        if unknown:
            raise LakeError(f"{table}: {sorted(unknown)} are not partition columns (the table is partitioned by "
                            f"{list(partition_by)})")
        wanted.append({c: files.partition_value_string(v) for c, v in p.items()})
    return lambda values: any(all(values.get(c) == v for c, v in w.items()) for w in wanted)


class SchemaMismatchError(LakeError):
    """The frame does not fit the table's schema."""


class ConflictError(LakeError):
    """A concurrent commit made this one invalid; re-run the operation."""


class TableNotFoundError(LakeError):
    pass


class CommitOutcomeUnknown(LakeError):
    """The commit call failed and the log could not be read to tell whether it landed."""


@dataclass(frozen=True)
class ReadSet:
    """What a write decided from: the table as of `version` (-1: it did not exist yet), the whole
    table (partitions None) or only these partitions (tuples of Delta partition-value strings in
    partition-column order). A data change there that someone else committed since makes the
    write a ConflictError with nothing committed, instead of overlapping it silently."""
    version: int
    partitions: frozenset[tuple[str | None, ...]] | None = None


@dataclass(frozen=True)
class CommitResult:
    table: str
    path: str
    version: int
    operation: str
    files_added: int = 0
    files_removed: int = 0
    rows_added: int = 0
    # upsert: offered rows not written because the table holds a newer version of their key
    rows_skipped: int = 0
    # upsert: rows of the table deleted because they matched `retract`, with no new row for their key
    rows_retracted: int = 0
    # partition values (as Delta stores them: strings) of the partitions this commit replaced
    partitions_replaced: list[dict[str, str | None]] = field(default_factory=list)


@dataclass(frozen=True)
class CompactResult:
    """A compaction: the table's live data files before and after. A compaction commit changes no
    row and records no changed partition; version == version_before when nothing was compacted."""
    table: str
    version_before: int
    version: int
    files_before: int
    files_after: int
    bytes_before: int
    bytes_after: int


@dataclass(frozen=True)
class StagedFiles:
    """Data files that executors wrote for a table and nobody has committed yet: invisible to
    the table's readers until commit_staged, deleted by discard_staged (after a crash they are
    orphans, which vacuum deletes)."""
    table: TableSpec
    schema: T.StructType
    files: tuple[dict[str, Any], ...]  # files.FILE_SCHEMA rows

    @property
    def rows(self) -> int:
        return sum(f["num_records"] for f in self.files)


class Lake(abc.ABC):
    """Delta tables under one root. Every commit records job, run_id and run_date in its commit
    info, so a table's history says which run wrote what."""

    def __init__(self, spark: SparkSession, root: str, job: str, run_id: str, run_date: str | None = None,
                 s3_endpoint: str | None = None, s3_region: str = "us-east-1"):
        self.spark = spark
        self.root = root.rstrip("/")
        self.job = job
        self.run_id = run_id
        self.run_date = run_date
        self.s3_endpoint = s3_endpoint
        self.s3_region = s3_region

    def path(self, table: TableSpec) -> str:
        return f"{self.root}/{table.layer}/{table.name}"

    @property
    def commit_metadata(self) -> dict[str, str]:
        metadata = {"strata.job": self.job, "strata.run_id": self.run_id}
        if self.run_date:
            metadata["strata.run_date"] = self.run_date
        return metadata

    @abc.abstractmethod
    def exists(self, table: TableSpec) -> bool: ...

    @abc.abstractmethod
    def create(self, table: TableSpec, schema: Any) -> CommitResult:
        """Create an empty table with this Spark StructType; error if it exists."""

    @abc.abstractmethod
    def append(self, table: TableSpec, df: DataFrame, read: ReadSet | None = None) -> CommitResult:
        """Append rows; creates the table on first write. With `read`, the append is fenced: it
        fails with ConflictError if data changed in the read set since read.version."""

    @abc.abstractmethod
    def overwrite(self, table: TableSpec, df: DataFrame) -> CommitResult:
        """Replace the whole table's contents."""

    @abc.abstractmethod
    def overwrite_partitions(self, table: TableSpec, df: DataFrame,
                             partitions: list[dict[str, Any]] | None = None) -> CommitResult:
        """Replace the given partitions (default: those present in df) with df's rows, atomically.
        Rows of df outside the given partitions are an error."""

    @abc.abstractmethod
    def upsert(self, table: TableSpec, df: DataFrame, keys: list[str], newer_by: list[str] | None = None,
               retract: DataFrame | None = None) -> CommitResult:
        """Insert or replace rows by key; df must have unique, non-null keys. Only touched
        partitions are rewritten, in one atomic commit.
        newer_by: columns that order versions of a key (latest wins across runs): a row of df
        replaces the table's row only if it is not older by these columns; older ones are
        skipped (CommitResult.rows_skipped).
        retract: rows of the table that match one of retract's rows on all of retract's columns
        are deleted in the same commit (CommitResult.rows_retracted: those whose key df does not
        bring back)."""

    # ---- staged writes: executors write the files, the driver checks them, then commits ----
    def staging_location(self, table: TableSpec) -> files.Location:
        """Where executors write staged files of table (files.PartitionedWriter, partitioned by
        table.partition_by). Here: a folder of this run outside the table; commit_staged appends
        a copy. An engine that can commit files where they lie stages them in the table."""
        return files.Location(f"{self.root}/_staging/{table.layer}/{table.name}/{self.run_id}",
                              self.s3_endpoint, self.s3_region)

    def read_staged(self, staged: StagedFiles) -> DataFrame:
        return files.read_frame(
            self.spark, self.staging_location(staged.table), staged.schema, staged.table.partition_by,
            [{"path": f["path"], "partition_values": json.loads(f["partition_values"])} for f in staged.files])

    def commit_staged(self, staged: StagedFiles, read: ReadSet | None = None) -> CommitResult:
        """Append the staged files' rows in one commit (creates the table on first write),
        fenced by `read` like append."""
        result = self.append(staged.table, self.read_staged(staged), read)
        self.discard_staged(staged)
        return result

    def discard_staged(self, staged: StagedFiles) -> None:
        fs, root = self.staging_location(staged.table).filesystem()
        for f in staged.files:
            fs.delete_file(f"{root}/{f['path']}")

    @abc.abstractmethod
    def read(self, table: TableSpec, version: int | None = None, timestamp: datetime | None = None,
             partitions: list[dict[str, Any]] | None = None) -> DataFrame:
        """The table's rows. partitions: only the rows of these partitions, each a {column: value}
        over some of the partition columns (a value None is the null partition); the files are
        chosen from the snapshot by their partition values before any is opened. [] reads no file
        (the schema only)."""

    def partition_values(self, table: TableSpec) -> list[dict[str, str | None]]:
        """The distinct partition values (Delta strings) of the table's current files."""
        columns = list(table.partition_by)
        if not columns:
            return []
        rows = self.read(table).select(*[F.col(c).cast("string").alias(c) for c in columns]).distinct().collect()
        return [row.asDict() for row in rows]

    def max_value(self, table: TableSpec, column: str,
                  partitions: list[dict[str, Any]] | None = None) -> Any:
        """The largest non-null value of a column in these partitions (None: no such value)."""
        return self.read(table, partitions=partitions).agg(F.max(column)).first()[0]

    def read_added(self, table: TableSpec, after: int, until: int) -> DataFrame:
        """At least the rows that commits (after, until] added and version `until` still holds.
        Here the whole table at `until`; an engine that reads its log returns only those files."""
        return self.read(table, version=until)

    @abc.abstractmethod
    def version(self, table: TableSpec) -> int: ...

    def read_version(self, table: TableSpec) -> int:
        """The version to declare in a ReadSet: the current one, -1 if the table does not exist."""
        return self.version(table) if self.exists(table) else -1

    def changed_partitions(self, table: TableSpec, run_date: str) -> list[dict[str, str | None]] | None:
        """Partitions (Delta strings) that the commits of this run date changed, from their commit
        info; None when some commit of the date did not record them."""
        changed: dict[tuple, dict] = {}
        for entry in self.history(table):
            if entry["run_date"] != run_date:
                continue
            if entry.get("partitions") is None:
                return None
            for values in entry["partitions"]:
                changed[tuple(sorted(values.items()))] = values
        return list(changed.values())

    @abc.abstractmethod
    def history(self, table: TableSpec, limit: int | None = None) -> list[dict[str, Any]]:
        """Newest first: version, timestamp, operation, job, run_id, run_date, and partitions
        (the partitions the commit changed, when it recorded them). Upkeep commits (compaction,
        vacuum: MAINTENANCE_OPERATIONS) change no row and are left out, so nothing downstream
        takes them for new data."""

    @abc.abstractmethod
    def compact(self, table: TableSpec, target_size: int) -> CompactResult:
        """Rewrite each partition's small files into files of about target_size bytes, in one
        commit that changes no row (ConflictError if a concurrent commit got in first)."""

    @abc.abstractmethod
    def vacuum(self, table: TableSpec, retention_hours: int | None = None,
               orphan_grace_hours: int | None = None, inflight_ttl_hours: int | None = None) -> list[str]:
        """Delete files no longer referenced: removed ones past retention, and orphans of crashed
        writers once orphan_grace_hours old (default: retention_hours), never files a writer
        that is still running may commit. Returns the deleted paths."""

    def storage_usage(self, table: TableSpec) -> tuple[int, int]:
        """(files, bytes) of data under the table's folder, committed or not (not its log)."""
        fs, root = files.Location(self.path(table), self.s3_endpoint, self.s3_region).filesystem()
        count = size = 0
        for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
            relative = info.path[len(root):].lstrip("/")
            if info.type == pafs.FileType.File and not relative.startswith("_delta_log/"):
                count, size = count + 1, size + info.size
        return count, size

    def summary(self, table: TableSpec) -> dict[str, Any]:
        """What the jobs' final JSON line reports per table."""
        return {"path": self.path(table), "version": self.version(table),
                "rows": self.row_count(table)}

    @abc.abstractmethod
    def row_count(self, table: TableSpec) -> int: ...
