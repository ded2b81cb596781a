"""The benchmarks' data: taxi trips with the demo dataset's columns (strata_dev.demo_data.COLUMNS),
in the three shapes the benchmarks need.

- raw objects (ingest): demo_data.generate itself, with its planted problems switched off.
- bronze rows (gates): Spark expressions, source columns as text plus the ingest metadata, with
  problems planted at fixed positions (id % 1000) so their counts are exact for any size.
- silver rows and a 1% change set (lake_write): the same values typed like silver.trips, keyed by
  a trip_id that starts with the pickup date as the demo's ids do (files of one date hold one
  key range).

Values are pure functions of a row's id (hashes, no random state): any size, any partitioning.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

DATASET = "trips"
PREFIX = "trips"  # conf/datasets/trips.yaml: source.prefix


# ---- trip values as Spark expressions -------------------------------------------------------
def _uniform(src, k: int):
    """[0, 1), a pure function of (src, k)."""
    from pyspark.sql import functions as F
    return F.pmod(F.xxhash64(src, F.lit(k)), F.lit(1_000_003)) / F.lit(1_000_003.0)


def _pick(src, k: int, values: list):
    from pyspark.sql import functions as F
    return F.element_at(F.array(*[F.lit(v) for v in values]),
                        (F.floor(_uniform(src, k) * len(values)) + 1).cast("int"))


def trip_values(src, pickup_s) -> dict[str, Any]:
    """Typed values of the trip drawn from src (a long column), picked up at pickup_s (epoch
    seconds): distances skewed short, fares from distance and time, card trips tipped."""
    from pyspark.sql import functions as F
    miles = F.round(F.lit(0.3) + F.lit(14.0) * _uniform(src, 2) * _uniform(src, 2), 2)
    mph = F.lit(6.0) + F.lit(18.0) * _uniform(src, 3)
    duration_s = (F.lit(60) + miles / mph * 3600).cast("long")
    payment = _pick(src, 4, [1, 1, 1, 1, 1, 1, 1, 2, 2, 3])
    fare = F.round(F.lit(3.0) + F.lit(2.5) * miles + duration_s / 120.0, 2)
    extra = _pick(src, 5, [0.0, 0.0, 1.0, 2.5])
    tip = F.when((payment == 1) & (_uniform(src, 6) < 0.7),
                 F.round(fare * (F.lit(0.1) + F.lit(0.15) * _uniform(src, 7)), 2)).otherwise(F.lit(0.0))
    tolls = F.when((miles >= 10) & (_uniform(src, 8) < 0.5), F.lit(6.94)).otherwise(F.lit(0.0))
    return {
        "vendor_id": _pick(src, 9, [1, 2, 2]),
        "pickup_s": pickup_s,
        "duration_s": duration_s,
        "passenger_count": _pick(src, 10, [1, 1, 1, 1, 1, 2, 2, 3, 5, 6]),
        "trip_distance": miles,
        "rate_code": _pick(src, 11, [1] * 19 + [2]),
        "pickup_zone": (F.floor(_uniform(src, 12) * 265) + 1).cast("int"),
        "dropoff_zone": (F.floor(_uniform(src, 13) * 265) + 1).cast("int"),
        "payment_type": payment,
        "fare_amount": fare,
        "extra": extra,
        "tip_amount": tip,
        "tolls_amount": tolls,
        "total_amount": F.round(fare + extra + tip + tolls, 2),
    }


# ---- bronze with planted problems (gates) ---------------------------------------------------
# Planted problems, by id % 1000 (so their counts are exact for any N).
NULL_FARE, NULL_PICKUP = 1, 2              # not_null rules (a null pickup also nulls event_date)
NEGATIVE_DISTANCE = (3, 4)                 # trip_distance between 0 and 200
BAD_ZONE = (5, 6)                          # pickup_zone 300 / dropoff_zone 0: between 1 and 265
CAST_ERROR = 7                             # fare_amount "12.5O": quarantined with gates off too
CORRUPT = 8                                # a malformed line: quarantined with gates off too
WARN_PASSENGERS = 9                        # passenger_count 9: a warn rule, the row is kept
NEGATIVE_DURATION = 10                     # dropoff before pickup: trip_duration_min >= 0
RULE_FAILURES = (NULL_FARE, NULL_PICKUP, *NEGATIVE_DISTANCE, *BAD_ZONE, NEGATIVE_DURATION)
DUPLICATES = tuple(range(500, 505))        # exact re-deliveries of the row DUPLICATE_OFFSET before
DUPLICATE_OFFSET = 400                     # ... whose id % 1000 is 100..104: a clean row


def planted(rows: int, codes: tuple[int, ...] | int) -> int:
    """How many ids in [0, rows) have id % 1000 in codes."""
    codes = (codes,) if isinstance(codes, int) else codes
    return sum(rows // 1000 + (1 if c < rows % 1000 else 0) for c in codes)


def expected_silver_counts(rows: int, gates: bool) -> dict[str, int]:
    """The silver job's counts for bronze_trips(rows), from the planted problems."""
    duplicates = planted(rows, DUPLICATES)
    always = planted(rows, (CORRUPT, CAST_ERROR))
    rules = planted(rows, RULE_FAILURES) if gates else 0
    return {"bronze_rows_read": rows, "duplicates_dropped": duplicates,
            "quarantined": always + rules, "upserted": rows - duplicates - always - rules}


def planted_summary(rows: int) -> str:
    return (f"planted: {planted(rows, RULE_FAILURES):,} rule failures, "
            f"{planted(rows, (CAST_ERROR, CORRUPT)):,} cast errors + corrupt, "
            f"{planted(rows, DUPLICATES):,} duplicates, {planted(rows, WARN_PASSENGERS):,} warn-only")


def bronze_trips(spark, rows: int, run_date: dt.date, days: int, rows_per_object: int, partitions: int,
                 ingested_at: dt.datetime):
    """The bronze table's rows (the ingest job's schema and column order) ingested on run_date,
    picked up in the `days` days before it, with the planted problems above."""
    from pyspark.sql import functions as F
    from strata_dev.demo_data import COLUMNS

    ident = F.col("id")
    code = ident % 1000
    src = F.when(code.isin(*DUPLICATES), ident - DUPLICATE_OFFSET).otherwise(ident)  # a duplicate's values
    start = dt.datetime.combine(run_date - dt.timedelta(days=days), dt.time(), dt.timezone.utc)
    v = trip_values(src, F.lit(int(start.timestamp())) + (_uniform(src, 1) * (days * 86_400)).cast("long"))
    pickup_s, duration_s = v["pickup_s"], v["duration_s"]
    dropoff_s = F.when(code == NEGATIVE_DURATION, pickup_s - duration_s).otherwise(pickup_s + duration_s)

    def money(value):
        return value.cast("decimal(12,2)").cast("string")

    def timestamp_text(seconds):
        return F.date_format(F.timestamp_seconds(seconds), "yyyy-MM-dd HH:mm:ss")

    miles, fare = v["trip_distance"], v["fare_amount"]
    values = {
        "trip_id": F.concat(F.lit("T"), F.lpad(src.cast("string"), 10, "0")),
        "vendor_id": v["vendor_id"].cast("string"),
        "pickup_at": F.when(code == NULL_PICKUP, F.lit(None)).otherwise(timestamp_text(pickup_s)),
        "dropoff_at": timestamp_text(dropoff_s),
        "passenger_count": F.when(code == WARN_PASSENGERS, F.lit("9")).otherwise(v["passenger_count"].cast("string")),
        "trip_distance": money(F.when(code.isin(*NEGATIVE_DISTANCE), -miles).otherwise(miles)),
        "rate_code": v["rate_code"].cast("string"),
        "pickup_zone": F.when(code == BAD_ZONE[0], F.lit("300")).otherwise(v["pickup_zone"].cast("string")),
        "dropoff_zone": F.when(code == BAD_ZONE[1], F.lit("0")).otherwise(v["dropoff_zone"].cast("string")),
        "payment_type": v["payment_type"].cast("string"),
        "fare_amount": F.when(code == NULL_FARE, F.lit(None))
                        .when(code == CAST_ERROR, F.concat(money(fare), F.lit("O")))
                        .otherwise(money(fare)),
        "extra": money(v["extra"]),
        "tip_amount": money(v["tip_amount"]),
        "tolls_amount": money(v["tolls_amount"]),
        "total_amount": money(fare + v["extra"] + v["tip_amount"] + v["tolls_amount"]),
    }
    assert list(values) == list(COLUMNS)
    corrupt = code == CORRUPT
    obj = F.floor(ident / F.lit(rows_per_object)).cast("long")
    key = F.format_string(f"{PREFIX}/{run_date:%Y/%m/%d}/trips-%05d.csv", obj)
    return spark.range(0, rows, numPartitions=partitions).select(
        *[F.when(corrupt, F.lit(None).cast("string")).otherwise(val).alias(c) for c, val in values.items()],
        key.alias("_source_key"),
        F.md5(key).alias("_source_etag"),
        F.lit(1).cast("int").alias("_source_version"),
        (ident % rows_per_object + 2).cast("long").alias("_source_row"),  # data lines after the header
        F.when(corrupt, F.concat(F.lit("T"), F.lpad(ident.cast("string"), 10, "0"), F.lit(',2,"2024-01-28 10:00:00')))
         .alias("_corrupt_record"),
        F.when(corrupt, F.lit("unterminated quote")).alias("_error"),
        F.lit(ingested_at).cast("timestamp").alias("_ingested_at"),
        F.lit("bench-bronze").alias("_run_id"),
        F.lit(run_date).cast("date").alias("_ingest_date"),
    )


# ---- silver rows and a change set (lake_write) ----------------------------------------------
SILVER_START = dt.date(2024, 1, 1)


def _silver_rows(ids, days: int, value_salt: int = 0):
    """Typed trip columns for ids (a long column): trip on day id % days after SILVER_START,
    trip_id '<yyyymmdd>-<id // days, 10 digits>' (like the demo's '<yyyymmdd>-<object>-<row>')."""
    from pyspark.sql import functions as F
    from strata_dev.demo_data import COLUMNS
    day = (ids % days).cast("int")
    event_date = F.date_add(F.lit(SILVER_START), day)
    start_s = F.unix_timestamp(F.to_timestamp(event_date))
    src = ids + F.lit(value_salt)  # another salt: other values for the same trip
    v = trip_values(src, start_s + (_uniform(src, 1) * 86_399).cast("long"))
    typed = {
        "trip_id": F.concat(F.date_format(event_date, "yyyyMMdd"), F.lit("-"),
                            F.lpad(F.floor(ids / days).cast("string"), 10, "0")),
        "pickup_at": F.timestamp_seconds(v["pickup_s"]),
        "dropoff_at": F.timestamp_seconds(v["pickup_s"] + v["duration_s"]),
        **{c: v[c] for c in COLUMNS if c not in ("trip_id", "pickup_at", "dropoff_at")},
    }
    return [typed[c].alias(c) for c in COLUMNS] + [
        event_date.alias("event_date"),
        F.round((v["duration_s"] / 60.0), 2).alias("trip_duration_min"),
    ]


def silver_trips(spark, rows: int, days: int, partitions: int | None = None):
    """`rows` trips over `days` event dates, typed like silver.trips (the demo columns, then
    event_date and trip_duration_min); id i is trip i."""
    from pyspark.sql import functions as F
    partitions = partitions or spark.sparkContext.defaultParallelism
    return spark.range(0, rows, numPartitions=partitions).select(*_silver_rows(F.col("id"), days))


def touched_days(days: int, count: int) -> list[int]:
    """Day offsets of `count` partitions spread over `days`."""
    return [i * days // count + days // (2 * count) for i in range(count)]


def silver_changes(spark, rows: int, days: int, touched: list[int], share: float = 0.01):
    """`share` of rows as upserts into silver_trips(rows, days), all on the `touched` days: half
    existing trips with new values, half new trips (ids >= rows). (frame, updates, new)."""
    from pyspark.sql import functions as F
    n_changes = max(2, int(rows * share))
    n_updates, n_new = n_changes // 2, n_changes - n_changes // 2
    if (n_updates // len(touched) + 1) * days >= rows:
        raise ValueError("too few rows for the change set")
    chosen = F.array(*[F.lit(d) for d in touched])
    k = F.col("id")
    day = F.element_at(chosen, (k % len(touched) + 1).cast("int")).cast("long")
    # Existing id = j * days + day is on that day; new ids continue after the last one.
    updated = spark.range(0, n_updates, numPartitions=1).select(
        ((k / len(touched)).cast("long") * days + day).alias("id"))
    new = spark.range(0, n_new, numPartitions=1).select(
        (((F.lit(rows) + days - 1) / days).cast("long") * days + (k / len(touched)).cast("long") * days + day)
        .alias("id"))
    changes = updated.unionByName(new).select(*_silver_rows(F.col("id"), days, value_salt=7_777_777))
    return changes, n_updates, n_new


# ---- raw objects (ingest) -------------------------------------------------------------------
def object_layout(objects: int) -> tuple[int, int]:
    """(days, objects_per_day) with days * objects_per_day == objects: as many daily folders as
    possible up to a month."""
    days = max(d for d in range(1, min(objects, 31) + 1) if objects % d == 0)
    return days, objects // days


def clean_objects(objects: int, rows_per_object: int, seed: int = 7):
    """The demo generator's CSV objects with no planted problems (every rate and count 0), so
    any CSV reader parses them alike: (objects, manifest, spec)."""
    from strata_dev.demo_data import DemoDataSpec, generate
    days, per_day = object_layout(objects)
    spec = DemoDataSpec(days=days, objects_per_day=per_day, rows_per_object=rows_per_object, seed=seed,
                        formats=("csv",), anomaly_rate=0.0, null_rate=0.0, negative_distance_rate=0.0,
                        bad_zone_rate=0.0, duplicate_rate=0.0, malformed_line_rate=0.0,
                        truncated_gzip_objects=0, empty_objects=0)
    generated, manifest = generate(spec)
    return generated, manifest, spec


def put_objects(s3, bucket: str, objects, local_dir: Path | None) -> int:
    """Upload under PREFIX/ (and write the same bytes flat into local_dir); returns bytes."""
    from strata_dev.demo_data import _ensure_bucket  # the generator's own bucket helper
    _ensure_bucket(s3, bucket)
    if local_dir is not None:
        local_dir.mkdir(parents=True, exist_ok=True)
    total = 0
    for obj in objects:
        s3.put_object(Bucket=bucket, Key=f"{PREFIX}/{obj.key}", Body=obj.data)
        if local_dir is not None:
            (local_dir / obj.key.replace("/", "_")).write_bytes(obj.data)
        total += len(obj.data)
    return total
