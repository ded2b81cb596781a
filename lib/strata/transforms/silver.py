"""Bronze -> silver transforms: pure DataFrame -> DataFrame functions, no I/O."""
from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window, functions as F

# Lineage kept on every silver row.
LINEAGE = ["_source_key", "_source_etag", "_source_row", "_source_version", "_ingested_at"]
RAW = "_raw"                 # the bronze record as it came (a struct of strings)
CAST_ERRORS = "_cast_errors"  # why a value could not be typed
DUP_RANK = "_dup_rank"        # 1 = the latest ingest of its key


def corrupt_records(bronze: DataFrame) -> DataFrame:
    return bronze.where(F.col("_corrupt_record").isNotNull())


def parsed_records(bronze: DataFrame) -> DataFrame:
    return bronze.where(F.col("_corrupt_record").isNull())


def typed_value(column: str, spark_type: str, timestamp_format: str) -> Column:
    """try_* casts: an untypeable value becomes null here and a cast error below, never an
    exception (ANSI mode) and never a silent null."""
    raw = F.trim(F.col(column))
    if spark_type == "timestamp":
        return F.try_to_timestamp(raw, F.lit(timestamp_format))
    if spark_type == "date":
        return F.try_to_timestamp(raw, F.lit(timestamp_format.split(" ")[0])).cast("date")
    return raw.try_cast(spark_type)


def cast_to_schema(records: DataFrame, schema: dict[str, str], timestamp_format: str) -> DataFrame:
    """The declared schema's typed columns, the raw record, lineage, and the cast errors."""
    typed = [typed_value(c, t, timestamp_format).alias(c) for c, t in schema.items()]
    errors = [F.when(F.col(c).isNotNull() & typed_value(c, t, timestamp_format).isNull(),
                     F.lit(f"cast {c} to {t}")) for c, t in schema.items()]
    return records.select(
        *typed, *LINEAGE,
        F.struct(*[F.col(c) for c in schema]).alias(RAW),
        F.filter(F.array(*errors), lambda e: e.isNotNull()).alias(CAST_ERRORS))


def derive(df: DataFrame, expressions: dict[str, str]) -> DataFrame:
    for name, expression in expressions.items():
        df = df.withColumn(name, F.expr(expression))
    return df


def rank_duplicates(df: DataFrame, keys: list[str]) -> DataFrame:
    """_dup_rank 1 for the latest ingest of each key (then the latest object version, the last
    row). Rows without a full key are not duplicates of each other: each ranks 1."""
    latest_first = Window.partitionBy(*keys).orderBy(
        F.col("_ingested_at").desc(), F.col("_source_version").desc(),
        F.col("_source_key").desc(), F.col("_source_row").desc())
    has_key = F.lit(True)
    for key in keys:
        has_key = has_key & F.col(key).isNotNull()
    return df.withColumn(DUP_RANK, F.when(has_key, F.row_number().over(latest_first)).otherwise(1))


def quarantine_rows(df: DataFrame, record: Column, reasons: Column, table: str, run_id: str,
                    run_date, quarantined_at) -> DataFrame:
    """The quarantine table's shape: the original record, why, and when."""
    return df.select(
        F.lit(table).alias("table"), record.alias("record"), reasons.alias("failed_rules"),
        F.col("_source_key").alias("source_key"), F.col("_source_row").cast("long").alias("source_row"),
        F.lit(run_id).alias("run_id"), F.lit(quarantined_at).cast("timestamp").alias("quarantined_at"),
        F.lit(run_date).cast("date").alias("quarantined_on"))
