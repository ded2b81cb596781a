"""The delta-spark engine: the same interface over the Delta connector (format("delta"),
delta.tables.DeltaTable), for clusters that carry the connector jars. Without them it refuses to
start: configuring it is a promise that the connector is there."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from strata.lake.base import (MAINTENANCE_OPERATIONS, CommitResult, CompactResult, ConflictError, Lake, LakeError,
                              ReadSet, TableNotFoundError, TableSpec, partition_matcher)
from strata.lake.schema import conform


def delta_connector_available(spark: SparkSession) -> bool:
    try:
        spark._jvm.java.lang.Class.forName("io.delta.tables.DeltaTable")  # noqa: SLF001
        return True
    except Exception:  # noqa: BLE001 - py4j wraps ClassNotFoundException
        return False


class DeltaSparkLake(Lake):
    def __init__(self, spark: SparkSession, root: str, job: str, run_id: str, run_date: str | None = None,
                 s3_endpoint: str | None = None, s3_region: str = "us-east-1"):
        if not delta_connector_available(spark):
            raise LakeError(
                "lake.engine is delta-spark but the Delta connector (io.delta:delta-spark jars) is not on "
                "the Spark classpath; pass it with spark-submit.sh (lake.delta_spark_packages or "
                "lake.delta_spark_jars) or configure lake.engine: delta-rs")
        super().__init__(spark, root, job, run_id, run_date, s3_endpoint, s3_region)
        from delta.tables import DeltaTable

        self._delta_table = DeltaTable

    def _writer(self, table: TableSpec, df: DataFrame, mode: str):
        writer = (df.write.format("delta").mode(mode)
                  .option("userMetadata", json.dumps(self.commit_metadata)))
        if table.partition_by:
            writer = writer.partitionBy(*table.partition_by)
        if table.schema_evolution:
            writer = writer.option("mergeSchema", "true")
        return writer

    def _conformed(self, table: TableSpec, df: DataFrame) -> DataFrame:
        if not self.exists(table):
            return df
        conformed, _ = conform(df, self.read(table).schema, table.qualified_name, table.schema_evolution)
        return conformed

    def _result(self, table: TableSpec, operation: str, replaced: list | None = None) -> CommitResult:
        last = self._delta_table.forPath(self.spark, self.path(table)).history(1).first()
        metrics = last["operationMetrics"] or {}
        return CommitResult(
            table=table.qualified_name, path=self.path(table), version=last["version"], operation=operation,
            files_added=int(metrics.get("numFiles", metrics.get("numAddedFiles", 0))),
            files_removed=int(metrics.get("numRemovedFiles", 0)),
            rows_added=int(metrics.get("numOutputRows", 0)), partitions_replaced=replaced or [])

    def exists(self, table: TableSpec) -> bool:
        return self._delta_table.isDeltaTable(self.spark, self.path(table))

    def create(self, table: TableSpec, schema: T.StructType) -> CommitResult:
        if self.exists(table):
            raise LakeError(f"{table.qualified_name} already exists")
        self._writer(table, self.spark.createDataFrame([], schema), "errorifexists").save(self.path(table))
        return self._result(table, "CREATE")

    def append(self, table: TableSpec, df: DataFrame, read: ReadSet | None = None) -> CommitResult:
        if read is not None:
            self._check_read(table, read)
        self._writer(table, self._conformed(table, df), "append").save(self.path(table))
        return self._result(table, "APPEND")

    def _check_read(self, table: TableSpec, read: ReadSet) -> None:
        """Delta's own conflict checker does not fence a blind append by what the writer read, so
        the history since read.version is checked here, for the whole table (the partition detail
        is not in it). A window remains between this check and the write: with this engine two
        concurrent fenced appends can still both land; the delta-rs engine closes it."""
        if not self.exists(table):
            return
        for entry in self._delta_table.forPath(self.spark, self.path(table)).history().collect():
            metrics = entry["operationMetrics"] or {}
            changed = int(metrics.get("numFiles", 0) or 0) + int(metrics.get("numAddedFiles", 0) or 0) \
                + int(metrics.get("numRemovedFiles", 0) or 0)
            if entry["version"] > read.version and changed and entry["operation"] not in ("OPTIMIZE", "VACUUM END"):
                raise ConflictError(f"{table.qualified_name}: conflicted with a concurrent commit (version "
                                    f"{entry['version']}) after version {read.version}, which this write read; "
                                    "nothing was committed, re-run")

    def overwrite(self, table: TableSpec, df: DataFrame) -> CommitResult:
        self._writer(table, self._conformed(table, df), "overwrite").save(self.path(table))
        return self._result(table, "OVERWRITE")

    def overwrite_partitions(self, table: TableSpec, df: DataFrame,
                             partitions: list[dict[str, Any]] | None = None) -> CommitResult:
        df = self._conformed(table, df)
        if partitions is None:
            partitions = [row.asDict() for row in df.select(*table.partition_by).distinct().collect()]
        # replaceWhere makes Delta reject rows outside the predicate and commit nothing.
        predicate = " OR ".join(
            "(" + " AND ".join(f"`{c}` <=> {_literal(v)}" for c, v in p.items()) + ")" for p in partitions) or "false"
        self._writer(table, df, "overwrite").option("replaceWhere", predicate).save(self.path(table))
        return self._result(table, "OVERWRITE PARTITIONS",
                            [{c: None if v is None else str(v) for c, v in p.items()} for p in partitions])

    def upsert(self, table: TableSpec, df: DataFrame, keys: list[str], newer_by: list[str] | None = None,
               retract: DataFrame | None = None) -> CommitResult:
        if retract is not None:
            # MERGE can delete only target rows that some source row matches; a retraction in the
            # same commit needs the delta-rs engine.
            raise LakeError(f"{table.qualified_name}: retracting rows in an upsert needs lake.engine delta-rs")
        if not self.exists(table):
            return self.append(table, df)
        if df.groupBy(*keys).count().where("count > 1").limit(1).count():
            raise LakeError(f"{table.qualified_name}: upsert frame has duplicate keys; de-duplicate first")
        df = self._conformed(table, df)
        condition = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
        self.spark.conf.set("spark.databricks.delta.commitInfo.userMetadata", json.dumps(self.commit_metadata))
        try:
            (self._delta_table.forPath(self.spark, self.path(table)).alias("t")
             .merge(df.alias("s"), condition).whenMatchedUpdateAll(_not_older(newer_by or []))
             .whenNotMatchedInsertAll().execute())
        finally:
            self.spark.conf.unset("spark.databricks.delta.commitInfo.userMetadata")
        return self._result(table, "UPSERT")

    def read(self, table: TableSpec, version: int | None = None, timestamp: datetime | None = None,
             partitions: list[dict[str, Any]] | None = None) -> DataFrame:
        if not self.exists(table):
            raise TableNotFoundError(f"{table.qualified_name}: no Delta table at {self.path(table)}")
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        if timestamp is not None:
            reader = reader.option("timestampAsOf", timestamp.isoformat())
        df = reader.load(self.path(table))
        if partitions is None:
            return df
        # A filter on partition columns only: Delta prunes the files by their partition values.
        partition_matcher(table.qualified_name, tuple(table.partition_by), partitions)  # checks the columns
        predicate = F.lit(False)
        for p in partitions:
            match = F.lit(True)
            for column, value in p.items():
                literal = F.lit(None if value is None else str(value)).cast(df.schema[column].dataType)
                match = match & F.col(column).eqNullSafe(literal)
            predicate = predicate | match
        return df.where(predicate)

    def version(self, table: TableSpec) -> int:
        return self._delta_table.forPath(self.spark, self.path(table)).history(1).first()["version"]

    def row_count(self, table: TableSpec) -> int:
        return self.read(table).count()

    def history(self, table: TableSpec, limit: int | None = None) -> list[dict[str, Any]]:
        rows = self._delta_table.forPath(self.spark, self.path(table)).history(limit).collect()
        result = []
        for row in rows:
            if row["operation"] in MAINTENANCE_OPERATIONS:
                continue
            meta = json.loads(row["userMetadata"]) if row["userMetadata"] else {}
            result.append({"version": row["version"], "timestamp": row["timestamp"].isoformat(),
                           "operation": row["operation"], "job": meta.get("strata.job"),
                           "run_id": meta.get("strata.run_id"), "run_date": meta.get("strata.run_date"),
                           "parameters": row["operationParameters"]})
        return result

    def compact(self, table: TableSpec, target_size: int) -> CompactResult:
        # OPTIMIZE would need the connector's own file-size settings and commit info: not wired.
        raise LakeError(f"{table.qualified_name}: compaction is not supported with lake.engine delta-spark")

    def vacuum(self, table: TableSpec, retention_hours: int | None = None,
               orphan_grace_hours: int | None = None, inflight_ttl_hours: int | None = None) -> list[str]:
        # Delta's own vacuum: unreferenced files older than the retention (it has no in-flight markers).
        self.spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
        self._delta_table.forPath(self.spark, self.path(table)).vacuum(retention_hours)
        return []  # delta-spark does not return the deleted paths


def _not_older(newer_by: list[str]) -> str | None:
    """MERGE condition: the source row is not older than the target's by newer_by (in order)."""
    if not newer_by:
        return None
    first, rest = newer_by[0], newer_by[1:]
    same = _not_older(rest)
    return (f"(s.`{first}` > t.`{first}` OR t.`{first}` IS NULL OR (s.`{first}` <=> t.`{first}`"
            + (f" AND {same}))" if same else "))"))


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    return "'" + str(value).replace("'", "\\'") + "'"

