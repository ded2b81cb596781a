"""The manifest of ingested objects (ops.ingested_objects): one row per object version that ingest
accounted for, partitioned by dataset and key prefix (the object's folder), so that a run reads
only the folders it listed, not all of bronze.

Bronze stays the source of truth. Every manifest row carries `bronze_version`: once that row is
committed, the manifest holds every object version of bronze up to that version. Ingest writes
its rows after its bronze commit, with the rows of any bronze commits the manifest was missing;
a reader takes the manifest up to the highest such version (from the files' statistics) and adds
the bronze commits after it, read from the log's add actions. A crash between the bronze commit
and the manifest commit therefore costs the next runs a read of that one commit's files, never
an object ingested twice or lost.
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Iterable

from pyspark.sql import DataFrame, functions as F
from pyspark.sql import types as T

from strata import catalog
from strata.catalog import INGESTED_OBJECTS
from strata.config import DatasetConfig
from strata.lake import Lake

STATUS_OK = "ok"  # in bronze; the other statuses are ingest_task's empty and failed
MANIFEST_SCHEMA = T.StructType([
    T.StructField("dataset", T.StringType()), T.StructField("key_prefix", T.StringType()),
    T.StructField("key", T.StringType()), T.StructField("etag", T.StringType()),
    T.StructField("version", T.IntegerType()), T.StructField("status", T.StringType()),
    T.StructField("config_fingerprint", T.StringType()), T.StructField("ingest_date", T.DateType()),
    T.StructField("bronze_version", T.LongType()), T.StructField("run_id", T.StringType()),
    T.StructField("recorded_at", T.TimestampType())])
ENTRY_COLUMNS = ["key", "etag", "version", "status", "config_fingerprint", "ingest_date"]
DATED = re.compile(r"(\d{4})/(\d{2})/(\d{2})(?:/|$)")


def key_prefix(key: str) -> str:
    """The folder of an object key: the manifest's partition."""
    return key.rsplit("/", 1)[0] if "/" in key else ""


class ObjectManifest:
    """The object versions of one dataset's bronze as of `bronze_version`, and the ones ingest
    recorded as empty or unreadable."""

    def __init__(self, lake: Lake, dataset: DatasetConfig, bronze_version: int | None = None):
        self.lake, self.dataset = lake, dataset
        self.bronze = catalog.bronze(dataset)
        self.bronze_version = lake.read_version(self.bronze) if bronze_version is None else bronze_version
        self.exists = lake.exists(INGESTED_OBJECTS)
        complete = lake.max_value(INGESTED_OBJECTS, "bronze_version", [{"dataset": dataset.name}]) \
            if self.exists else None
        # Up to which bronze version the manifest is complete (-1: nothing of bronze in it yet).
        self.complete_through = -1 if complete is None else min(int(complete), self.bronze_version)
        self._missing: DataFrame | None = None

    def missing(self) -> DataFrame:
        """ENTRY_COLUMNS of the bronze commits after complete_through: normally none; after a crash
        between a bronze commit and its manifest commit, that commit's objects."""
        if self._missing is None:
            spark = self.lake.spark
            if self.bronze_version <= self.complete_through:
                self._missing = spark.createDataFrame([], _entry_schema())
            else:
                added = self.lake.read_added(self.bronze, self.complete_through, self.bronze_version)
                self._missing = (added.select(F.col("_source_key").alias("key"), F.col("_source_etag").alias("etag"),
                                              F.col("_source_version").alias("version"),
                                              F.lit(STATUS_OK).alias("status"),
                                              F.lit(None).cast("string").alias("config_fingerprint"),
                                              F.col("_ingest_date").alias("ingest_date"))
                                 .distinct().persist())
        return self._missing

    def entries(self, keys: Iterable[str] | None = None) -> DataFrame:
        """ENTRY_COLUMNS of every recorded version of these keys (None: of every key), reading
        only the manifest partitions of their folders."""
        keys = None if keys is None else sorted(set(keys))
        missing = self.missing()
        if keys is not None:
            missing = missing.where(F.col("key").isin(keys)) if keys else missing.limit(0)
        if not self.exists:
            return missing
        if keys is None:
            partitions = [{"dataset": self.dataset.name}]
        else:
            partitions = [{"dataset": self.dataset.name, "key_prefix": p} for p in sorted({key_prefix(k) for k in keys})]
        recorded = self.lake.read(INGESTED_OBJECTS, partitions=partitions)
        # a row recorded for a bronze version this reader does not see yet (a concurrent ingest)
        recorded = recorded.where(F.col("bronze_version").isNull() |
                                  (F.col("status") != STATUS_OK) | (F.col("bronze_version") <= self.bronze_version))
        if keys is not None:
            recorded = recorded.join(F.broadcast(self.lake.spark.createDataFrame([(k,) for k in keys], "key string")),
                                     "key", "left_semi")
        return recorded.select(*ENTRY_COLUMNS).unionByName(missing)

    def bronze_versions(self, keys: Iterable[str]) -> DataFrame:
        """_source_key, _source_version, _ingest_date of the versions of these keys in bronze."""
        return (self.entries(keys).where(F.col("status") == STATUS_OK)
                .select(F.col("key").alias("_source_key"), F.col("version").alias("_source_version"),
                        F.col("ingest_date").alias("_ingest_date")).distinct())

    def bronze_rows(self, keys: Iterable[str]) -> DataFrame:
        """The bronze rows of every version of these keys: only the bronze partitions (ingest
        dates) that the manifest says hold one are read."""
        keys = sorted(set(keys))
        dates = [row[0] for row in self.bronze_versions(keys).select("_ingest_date").distinct().collect()]
        rows = self.lake.read(self.bronze, version=self.bronze_version,
                              partitions=[{"_ingest_date": d} for d in dates])
        return rows.where(F.col("_source_key").isin(keys))

    def newest_date_prefix(self) -> dt.date | None:
        """The newest YYYY/MM/DD folder under the dataset's prefix that the manifest holds, from
        its partition values alone."""
        if not self.exists:
            return None
        root = self.dataset.source.key_prefix + "/"
        newest = None
        for values in self.lake.partition_values(INGESTED_OBJECTS):
            prefix = values.get("key_prefix") or ""
            if values.get("dataset") != self.dataset.name or not (prefix + "/").startswith(root):
                continue
            found = DATED.match(prefix[len(root):] + "/")
            if found:
                try:
                    day = dt.date(*(int(g) for g in found.groups()))
                except ValueError:
                    continue
                newest = day if newest is None else max(newest, day)
        return newest

    def record(self, rows: list[tuple], bronze_version: int, run_id: str) -> None:
        """Append these (key, etag, version, status, config_fingerprint, ingest_date) rows and the
        missing ones, as complete through bronze_version (the caller's bronze commit, or the
        version it read when it committed none)."""
        now = dt.datetime.now(dt.timezone.utc)
        spark = self.lake.spark
        own = spark.createDataFrame(rows, _entry_schema())
        frame = own.unionByName(self.missing()) if self.bronze_version > self.complete_through else own
        frame = frame.select(
            F.lit(self.dataset.name).alias("dataset"),
            F.regexp_extract("key", r"^(.*)/[^/]*$", 1).alias("key_prefix"),
            *[F.col(c) for c in ENTRY_COLUMNS[:5]],
            F.col("ingest_date"), F.lit(bronze_version).cast("long").alias("bronze_version"),
            F.lit(run_id).alias("run_id"), F.lit(now).cast("timestamp").alias("recorded_at"))
        self.lake.append(INGESTED_OBJECTS, frame.select(*MANIFEST_SCHEMA.fieldNames()))

    def close(self) -> None:
        if self._missing is not None:
            self._missing.unpersist()


def _entry_schema() -> T.StructType:
    return T.StructType([MANIFEST_SCHEMA[c] for c in ENTRY_COLUMNS])
