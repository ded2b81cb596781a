"""Bronze -> silver transforms: pure DataFrame -> DataFrame functions, no I/O."""
from __future__ import annotations

import re

from pyspark.sql import Column, DataFrame, Window, functions as F

# Lineage kept on every silver row.
LINEAGE = ["_source_key", "_source_etag", "_source_row", "_source_version", "_ingested_at"]
# What identifies one raw record: its object, the object's version, its position.
RECORD_ID = ["_source_key", "_source_etag", "_source_row"]
RAW = "_raw"                 # the bronze record as it came (a struct of strings)
ROW_ERRORS = "_row_errors"   # why a row cannot be refined (a value that cannot be typed, a null key)
DUP_RANK = "_dup_rank"        # 1 = the latest version of its key in the batch


def corrupt_records(bronze: DataFrame) -> DataFrame:
    return bronze.where(F.col("_corrupt_record").isNotNull())


def parsed_records(bronze: DataFrame) -> DataFrame:
    return bronze.where(F.col("_corrupt_record").isNull())


# The text of a timestamp ends in a zone: Z, a numeric offset, UTC/GMT[+hh], a short name (EST)
# or a region id ([Europe/Paris]), right after the time. Consulted only when the timestamp format
# can parse a zone at all (ZONE_LETTERS): a value parsed with its own offset is already absolute.
ZONED_TEXT = (r"(?i)(?<=[0-9\s])(z|[+-]\d{2}(:?\d{2}){0,2}|(utc|gmt|ut)([+-]\d{1,2}(:?\d{2})?)?|[a-z]{3,5}"
              r"|\[?[a-z_]+(/[a-z0-9_+-]+)+\]?)$")
# Pattern letters of Spark datetime formats that parse a zone or an offset.
ZONE_LETTERS = frozenset("VzOXxZ")


def format_parses_zone(timestamp_format: str) -> bool:
    """Whether the format has a zone or offset field (outside quoted literals)."""
    return any(c in ZONE_LETTERS for c in re.sub(r"'[^']*'", "", timestamp_format))


def typed_value(column: str, spark_type: str, timestamp_format: str, timezone: str = "UTC") -> Column:
    """try_* casts: an untypeable value becomes null here and a cast error below, never an
    exception (ANSI mode) and never a silent null. A timestamp without an offset is read in
    `timezone` and stored as UTC."""
    raw = F.trim(F.col(column))
    if spark_type == "timestamp":
        parsed = F.try_to_timestamp(raw, F.lit(timestamp_format))
        if timezone == "UTC":
            return parsed
        # Sessions run in UTC (strata.session), so an offset-less value parses to its wall clock
        # read as UTC; to_utc_timestamp reads that wall clock in the source zone instead.
        local = F.to_utc_timestamp(parsed, timezone)
        if not format_parses_zone(timestamp_format):
            return local
        return F.when(raw.rlike(ZONED_TEXT), parsed).otherwise(local)
    if spark_type == "date":
        return F.try_to_timestamp(raw, F.lit(timestamp_format.split(" ")[0])).cast("date")
    return raw.try_cast(spark_type)


def cast_to_schema(records: DataFrame, schema: dict[str, str], timestamp_format: str,
                   rename: dict[str, str] | None = None, timezone: str = "UTC") -> DataFrame:
    """The declared schema's typed columns (under their new names, `rename`: source -> silver), the
    raw record (source names, as it came), lineage, and the cast errors.

    Renaming here, after the cast, rather than when objects are parsed: bronze keeps the record
    with the source's own header (its suites and quarantine records show what arrived), and the
    header is still matched against `schema` as declared; from silver on, every name is the new one.
    """
    rename = rename or {}

    def error(column: str, spark_type: str) -> str:
        name = rename.get(column, column)
        return f"cast {name} to {spark_type}" if name == column else f"cast {name} ({column}) to {spark_type}"

    typed = [typed_value(c, t, timestamp_format, timezone).alias(rename.get(c, c)) for c, t in schema.items()]
    errors = [F.when(F.col(c).isNotNull() & typed_value(c, t, timestamp_format, timezone).isNull(),
                     F.lit(error(c, t))) for c, t in schema.items()]
    return records.select(
        *typed, *LINEAGE,
        F.struct(*[F.col(c) for c in schema]).alias(RAW),
        F.filter(F.array(*errors), lambda e: e.isNotNull()).alias(ROW_ERRORS))


def content_hash(values: list[Column]) -> Column:
    """sha2-256 (hex) of text values in order. Each value is written as <length>:<text> and a null
    as '-', so the encoding is unambiguous: ("a,b", "c") and ("a", "b,c") differ, and so do null
    and "". Trailing nulls are left out: appending a column to the list keeps the hash of every
    row where it is null (a column added to the schema later)."""
    parts = F.array(*[F.coalesce(F.concat(F.length(v).cast("string"), F.lit(":"), v), F.lit("-")) for v in values])
    last = F.greatest(F.lit(0), *[F.when(v.isNotNull(), F.lit(i)) for i, v in enumerate(values, 1)])
    return F.sha2(F.array_join(F.slice(parts, 1, last), ""), 256)


def with_content_key(df: DataFrame, name: str, source_columns: list[str]) -> DataFrame:
    """The content key over the raw record's text (not the typed values): it stays the same when
    types, the timestamp format or the time zone of the config change, which would otherwise
    re-key every row and leave silver holding both copies."""
    return df.withColumn(name, content_hash([F.col(RAW).getField(c) for c in source_columns]))


def derive(df: DataFrame, expressions: dict[str, str]) -> DataFrame:
    for name, expression in expressions.items():
        df = df.withColumn(name, F.expr(expression))
    return df


def require_keys(df: DataFrame, keys: list[str]) -> DataFrame:
    """A row with a null in a key column cannot be upserted, ranked or found again: it is
    quarantined with the reason "null key: <column>"."""
    missing = [F.when(F.col(k).isNull(), F.lit(f"null key: {k}")) for k in keys]
    return df.withColumn(ROW_ERRORS, F.concat(F.col(ROW_ERRORS),
                                              F.filter(F.array(*missing), lambda e: e.isNotNull())))


def rank_duplicates(df: DataFrame, keys: list[str], version_by: list[str]) -> DataFrame:
    """_dup_rank 1 for the latest version of each key by version_by (then the latest object, the
    last row). Rows without a full key (quarantined) are not duplicates of each other: each ranks 1."""
    latest_first = Window.partitionBy(*keys).orderBy(
        *[F.col(c).desc_nulls_last() for c in version_by], F.col("_source_key").desc(), F.col("_source_row").desc())
    has_key = F.lit(True)
    for key in keys:
        has_key = has_key & F.col(key).isNotNull()
    return df.withColumn(DUP_RANK, F.when(has_key, F.row_number().over(latest_first)).otherwise(1))


def prepare(bronze: DataFrame, dataset, run_date, run_id: str) -> DataFrame:
    """The run date's bronze rows typed, derived, key-checked and ranked: what silver refines
    (rows with ROW_ERRORS are quarantined, DUP_RANK > 1 dropped as older duplicates)."""
    source = dataset.source
    typed = bronze.transform(parsed_records).transform(
        lambda df: cast_to_schema(df, dataset.schema, dataset.timestamp_format, source.rename, source.timezone))
    if dataset.content_key is not None:
        # config names the hashed columns by their silver names; the raw record has the source's
        source_of = {new: old for old, new in source.rename.items()}
        typed = with_content_key(typed, dataset.content_key.name,
                                 [source_of.get(c, c) for c in dataset.content_key.columns])
    return (typed
            .transform(lambda df: derive(df, dataset.derive))
            .transform(lambda df: require_keys(df, dataset.keys))
            .transform(lambda df: rank_duplicates(df, dataset.keys, dataset.version_by))
            .withColumn("_refined_on", F.lit(run_date).cast("date"))
            .withColumn("_refined_run_id", F.lit(run_id)))


def newest_versions(bronze: DataFrame, objects: DataFrame) -> DataFrame:
    """_source_key, _newest_version: the newest version in bronze of each object of `objects`."""
    return (bronze.join(F.broadcast(objects.select("_source_key").distinct()), "_source_key")
            .groupBy("_source_key").agg(F.max("_source_version").alias("_newest_version")))


def superseded_records(bronze: DataFrame, redelivered: DataFrame) -> DataFrame:
    """RECORD_ID of the rows that earlier versions of re-delivered objects contributed
    (redelivered: _source_key, _source_version of the new versions)."""
    newest = redelivered.groupBy("_source_key").agg(F.max("_source_version").alias("_newest_version"))
    return (bronze.join(F.broadcast(newest), "_source_key")
            .where(F.col("_source_version") < F.col("_newest_version"))
            .select(*RECORD_ID))


def quarantine_rows(df: DataFrame, record: Column, reasons: Column, table: str, run_id: str,
                    run_date, quarantined_at) -> DataFrame:
    """The quarantine table's shape: the original record, why, and when."""
    return df.select(
        F.lit(table).alias("table"), record.alias("record"), reasons.alias("failed_rules"),
        F.col("_source_key").alias("source_key"), F.col("_source_row").cast("long").alias("source_row"),
        F.lit(run_id).alias("run_id"), F.lit(quarantined_at).cast("timestamp").alias("quarantined_at"),
        F.lit(run_date).cast("date").alias("quarantined_on"))
