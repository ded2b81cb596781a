"""Real feeds onboarded by config: source columns renamed in silver, local times converted to
UTC, a content-hash key for files without an id, and an analysis table partitioned as stated.
The dataset is tests/fixtures/yellow (public NYC taxi files: 18 columns, no id, New York times)."""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import shutil

import boto3
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from strata import catalog
from strata.config import load_config
from strata.jobs import pipeline
from strata.transforms import silver as T

from conftest import REPO, job_context

HEADER = ("VendorID,tpep_pickup_datetime,tpep_dropoff_datetime,passenger_count,trip_distance,RatecodeID,"
          "store_and_fwd_flag,PULocationID,DOLocationID,payment_type,fare_amount,extra,mta_tax,tip_amount,"
          "tolls_amount,improvement_surcharge,total_amount,congestion_surcharge")


def trip(vendor, pickup, minutes=20, zone=132, fare=10.0):
    start = dt.datetime.fromisoformat(pickup)
    end = start + dt.timedelta(minutes=minutes)
    return (f"{vendor},{start:%Y-%m-%d %H:%M:%S},{end:%Y-%m-%d %H:%M:%S},1,2.5,1,N,{zone},{zone + 1},1,"
            f"{fare},0.5,0.5,1.0,0,0.3,{fare + 2.3},0")


@pytest.fixture
def project(tmp_path):
    """conf/ and expectations/ of the repo plus the yellow dataset's files: no code change."""
    root = tmp_path / "project"
    fixtures = REPO / "tests" / "fixtures" / "yellow"
    for part in ("conf", "expectations"):
        shutil.copytree(REPO / part, root / part)
        shutil.copytree(fixtures / part, root / part, dirs_exist_ok=True)
    return root


@pytest.fixture
def yellow(project):
    return load_config("local", project / "conf", environ={}).dataset("yellow")


def bronze_of(spark, lines, key="yellow/2024/01/05/a.csv"):
    """Bronze rows as ingest writes them: the source columns as text under the header's names."""
    names = HEADER.split(",")
    rows = [dict(zip(names, [v if v != "" else None for v in line.split(",")])) for line in lines]
    frame = spark.createDataFrame(rows, ", ".join(f"`{n}` string" for n in names))
    return frame.select(
        *names, F.lit(key).alias("_source_key"), F.lit("etag-1").alias("_source_etag"),
        F.monotonically_increasing_id().alias("_source_row"), F.lit(1).cast("long").alias("_source_version"),
        F.lit(dt.datetime(2024, 1, 6, 12)).alias("_ingested_at"), F.lit(None).cast("string").alias("_corrupt_record"),
        F.lit(None).cast("string").alias("_error"))


def test_silver_renames_the_source_columns_and_converts_new_york_times_to_utc(spark, yellow):
    bronze = bronze_of(spark, [trip(1, "2024-01-05 10:00:00"),        # EST: UTC-5
                               trip(2, "2024-07-05 10:00:00"),        # EDT: UTC-4
                               trip(2, "2024-01-05 23:30:00", 45)])   # the next day in UTC, not in New York
    silver = T.prepare(bronze, yellow, dt.date(2024, 1, 6), "run-1")
    assert "VendorID" not in silver.columns and "tpep_pickup_datetime" not in silver.columns
    got = silver.select("vendor_id", "pickup_at", "dropoff_at", "pickup_zone", "rate_code", "event_date")
    expected = spark.createDataFrame([
        (1, dt.datetime(2024, 1, 5, 15, 0), dt.datetime(2024, 1, 5, 15, 20), 132, 1, dt.date(2024, 1, 5)),
        (2, dt.datetime(2024, 7, 5, 14, 0), dt.datetime(2024, 7, 5, 14, 20), 132, 1, dt.date(2024, 7, 5)),
        (2, dt.datetime(2024, 1, 6, 4, 30), dt.datetime(2024, 1, 6, 5, 15), 132, 1, dt.date(2024, 1, 5)),
    ], "vendor_id int, pickup_at timestamp, dropoff_at timestamp, pickup_zone int, rate_code int, event_date date")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)
    # the raw record keeps the header's names and the text as it came
    raw = silver.where("vendor_id = 1").select(F.to_json(T.RAW).alias("raw")).first().raw
    assert '"tpep_pickup_datetime":"2024-01-05 10:00:00"' in raw
    assert silver.where(F.size(T.ROW_ERRORS) > 0).count() == 0


def test_values_with_an_offset_are_not_shifted_again(spark, yellow):
    zoned = dataclasses.replace(yellow, timestamp_format="yyyy-MM-dd HH:mm:ss[XXX]")
    texts = ["2024-01-05 10:00:00", "2024-01-05 10:00:00+01:00", "2024-01-05 10:00:00Z"]
    lines = [trip(1, "2024-01-05 10:00:00", zone=zone).split(",") for zone in (1, 2, 3)]
    for line, text in zip(lines, texts):
        line[1] = text
    got = T.prepare(bronze_of(spark, [",".join(line) for line in lines]), zoned, dt.date(2024, 1, 6), "run-1").select(
        F.col(T.RAW).getField("tpep_pickup_datetime").alias("text"), "pickup_at")
    expected = spark.createDataFrame([("2024-01-05 10:00:00", dt.datetime(2024, 1, 5, 15)),        # New York time
                                      ("2024-01-05 10:00:00+01:00", dt.datetime(2024, 1, 5, 9)),   # its own offset
                                      ("2024-01-05 10:00:00Z", dt.datetime(2024, 1, 5, 10))],
                                     "text string, pickup_at timestamp")
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_the_default_time_zone_stores_times_as_they_are(spark, yellow):
    utc = dataclasses.replace(yellow, source=dataclasses.replace(yellow.source, timezone="UTC"))
    row = T.prepare(bronze_of(spark, [trip(1, "2024-01-05 10:00:00")]), utc, dt.date(2024, 1, 6), "run-1").first()
    assert row.pickup_at == dt.datetime(2024, 1, 5, 10, 0)


# --- the content key ---------------------------------------------------------------------------

def encoded_sha(*values):
    """The documented encoding, computed without Spark: <length>:<text> per value, '-' per null,
    trailing nulls left out."""
    while values and values[-1] is None:
        values = values[:-1]
    text = "".join("-" if v is None else f"{len(v)}:{v}" for v in values)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def hashes(spark, rows, columns="a string, b string"):
    frame = spark.createDataFrame(rows, columns)
    return [r.h for r in frame.select(T.content_hash([F.col(c) for c in frame.columns]).alias("h")).collect()]


def test_the_content_hash_is_unambiguous_and_pinned(spark):
    rows = [("a,b", "c"), ("a", "b,c"), ("a|b", "c"), ("a", "b|c"), (None, "x"), ("", "x"), ("x", None), ("x", ""),
            (None, None), ("", ""), ("1:a", None), ("1", ":a"), ("é", "ß")]
    got = hashes(spark, rows)
    assert len(set(got)) == len(rows)  # delimiters, nulls and empty strings never collide
    # the same value in any run, any Spark version: it is sha2-256 of a fixed encoding
    assert got == [encoded_sha(*row) for row in rows]


def test_the_content_hash_follows_the_declared_column_order_not_the_frame_order(spark):
    frame = spark.createDataFrame([("1", "2024-01-05 10:00:00", "2.5")], "v string, t string, d string")
    declared = T.content_hash([F.col("v"), F.col("t"), F.col("d")])
    same = frame.select(declared.alias("h")).first().h
    reordered_frame = frame.select("d", "t", "v").select(declared.alias("h")).first().h
    reordered_list = frame.select(T.content_hash([F.col("d"), F.col("t"), F.col("v")]).alias("h")).first().h
    assert same == reordered_frame  # where a column sits in the file does not matter
    assert same != reordered_list   # the order of content_key.columns (or of schema, for all) does
    # a column appended later (null in older rows) keeps their keys
    appended = frame.select(T.content_hash([F.col("v"), F.col("t"), F.col("d"), F.lit(None).cast("string")]).alias("h"))
    assert appended.first().h == same


def test_the_content_key_is_the_hash_of_the_raw_record_and_dedupes_a_repeated_trip(spark, yellow):
    line = trip(1, "2024-01-05 10:00:00")
    bronze = bronze_of(spark, [line, trip(1, "2024-01-05 10:05:00")]).unionByName(
        bronze_of(spark, [line], key="yellow/2024/01/05/b.csv"))
    silver = T.prepare(bronze, yellow, dt.date(2024, 1, 6), "run-1")
    rows = silver.select("trip_id", T.DUP_RANK, "_source_key").collect()
    assert len({r.trip_id for r in rows}) == 2
    assert sorted(r[T.DUP_RANK] for r in rows) == [1, 1, 2]  # the repeated trip is one key
    values = [v if v != "" else None for v in line.split(",")]
    assert encoded_sha(*values) in {r.trip_id for r in rows}  # text as it came, in schema order
    # the key does not depend on how the config reads the text: no rename, another zone, other types
    plain = dataclasses.replace(
        yellow, source=dataclasses.replace(yellow.source, timezone="UTC", rename={}),
        schema={**yellow.schema, "VendorID": "string", "fare_amount": "decimal(10,2)"},
        content_key=dataclasses.replace(yellow.content_key, columns=list(yellow.schema)), partition_by=[], derive={})
    again = T.prepare(bronze, plain, dt.date(2024, 1, 6), "run-2").select("trip_id").distinct()
    assert sorted(r.trip_id for r in again.collect()) == sorted({r.trip_id for r in rows})


# --- end to end: ingest, silver and gold of the yellow files ----------------------------------

def test_a_real_feed_runs_end_to_end_and_gold_rebuilds_whole_analysis_days(spark, project, tmp_path, s3_endpoint,
                                                                         s3_bucket, monkeypatch):
    monkeypatch.setenv("STRATA_EXPECTATIONS_DIR", str(project / "expectations"))
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    environ = {"STRATA_LAKE__ROOT": str(tmp_path / "lake"), "STRATA_S3__ENDPOINT_URL": s3_endpoint,
               "STRATA_DATASETS__YELLOW__SOURCE__BUCKET": s3_bucket,
               "STRATA_QUALITY__DATA_DOCS_DIR": str(tmp_path / "docs")}

    def put(key, *lines):
        client.put_object(Bucket=s3_bucket, Key=f"yellow/{key}", Body=("\n".join([HEADER, *lines]) + "\n").encode())

    def day(run_date):
        ctx = job_context(spark, "pipeline", None, run_date, environ, project / "conf")
        ctx.args.dataset = ["yellow"]
        return pipeline.run(ctx)["stages"], ctx

    put("2024/01/05/a.csv", trip(1, "2024-01-05 10:00:00", zone=132), trip(1, "2024-01-05 11:00:00", zone=132),
        trip(2, "2024-01-05 23:30:00", zone=132))
    put("2024/01/05/b.csv", trip(1, "2024-01-05 10:00:00", zone=132))  # the same trip, delivered twice
    stages, ctx = day(dt.date(2024, 1, 6))
    assert stages["yellow.silver"]["upserted"] == 3 and stages["yellow.silver"]["duplicates_dropped"] == 1
    dataset = ctx.config.dataset("yellow")
    bronze = ctx.lake.read(catalog.bronze(dataset))
    assert {"VendorID", "tpep_pickup_datetime"} <= set(bronze.columns)  # bronze: the header as it came
    silver = ctx.lake.read(catalog.silver(dataset))
    late = silver.where("vendor_id = 2").first()
    assert late.pickup_at == dt.datetime(2024, 1, 6, 4, 30) and late.event_date == dt.date(2024, 1, 5)
    assert len(late.trip_id) == 64

    # a later delivery touches only vendor 2's silver partition of the day: the analysis table,
    # partitioned by day, is rebuilt from every vendor's rows of that day
    put("2024/01/06/c.csv", trip(2, "2024-01-05 18:00:00", zone=132))
    stages, ctx = day(dt.date(2024, 1, 7))
    assert stages["yellow.gold"]["partitions"] == 1
    daily = {(str(r.event_date), r.pickup_zone): r.trips for r in ctx.lake.read(catalog.analysis(dataset)).collect()}
    assert daily == {("2024-01-05", 132): 4}
    assert ctx.lake.read(catalog.features(dataset)).count() == 4
