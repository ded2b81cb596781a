"""Raw S3 -> bronze: incremental, exactly once, every record accounted for.
Against the local S3 endpoint, a real SparkSession and Delta tables on disk."""
from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import os
import signal
import subprocess
import time

import boto3
import pandas as pd
import pyarrow.parquet as pq
import pytest
from chispa import assert_df_equality
from deltalake import DeltaTable
from pyspark.sql import functions as F

from strata import catalog
from strata_dev.demo_data import COLUMNS, DemoDataSpec, upload
from strata.jobs import ingest
from strata.sources.s3 import SourceError

from conftest import REPO, job_context

RUN_DATE = dt.date(2024, 1, 5)
SMALL = DemoDataSpec(days=2, objects_per_day=4, rows_per_object=300, seed=11)


def environ_for(lake_root, endpoint, bucket, **extra):
    return {"STRATA_LAKE__ROOT": str(lake_root), "STRATA_S3__ENDPOINT_URL": endpoint,
            "STRATA_DATASETS__TRIPS__SOURCE__BUCKET": bucket, **extra}


def run_ingest(spark, lake_root, endpoint, bucket, run_date=RUN_DATE, **extra):
    ctx = job_context(spark, "ingest", "trips", run_date, environ_for(lake_root, endpoint, bucket, **extra))
    return ingest.run(ctx), ctx


def bronze(lake_root):
    return DeltaTable(str(lake_root / "bronze" / "trips"))


@pytest.fixture
def s3(s3_endpoint):
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


@pytest.fixture
def demo(s3, s3_bucket):
    return upload(SMALL, s3, s3_bucket, "trips")


def test_ingest_accounts_for_every_record(spark, tmp_path, s3_endpoint, s3_bucket, demo):
    counts, ctx = run_ingest(spark, tmp_path, s3_endpoint, s3_bucket)
    totals = demo.totals
    unreadable = {o["key"]: o for o in demo.to_dict()["unreadable_objects"]}
    assert counts["objects_listed"] == totals["objects"]
    assert counts["objects_new"] == totals["objects"]
    assert counts["objects_failed"] == 1 and counts["objects_empty"] == 1
    assert counts["objects_ingested"] == totals["objects"] - 2
    # rows written + corrupt = records in the objects read
    assert counts["rows_read"] == totals["data_rows"]
    assert counts["corrupt_rows"] == totals["malformed_lines"]
    assert counts["rows_written"] + counts["corrupt_rows"] == counts["rows_read"]

    table = ctx.lake.read(catalog.bronze(ctx.config.dataset("trips")))
    assert table.count() == counts["rows_read"]
    assert bronze(tmp_path).to_pyarrow_table().num_rows == counts["rows_read"]  # independent reader
    assert bronze(tmp_path).metadata().partition_columns == ["_ingest_date"]

    # malformed lines: in bronze, raw text kept, with a reason, at their line number
    corrupt = table.where("_corrupt_record is not null").select("_source_key", "_source_row", "_error").collect()
    planted = {(m["key"], m["line"]) for m in demo.to_dict()["malformed_lines"]}
    assert {(r._source_key, r._source_row) for r in corrupt} == planted
    assert all(r._error.startswith("malformed CSV line") for r in corrupt)
    # planted row problems arrive as they came (silver judges them): duplicates, negatives, bad zones
    trips = table.where("_corrupt_record is null")
    dupes = trips.groupBy("trip_id").count().where("count > 1").agg(F.sum(F.col("count") - 1)).first()[0]
    assert dupes == totals["duplicates"]
    assert trips.where(F.col("trip_id").isin(*demo.negative_distance)).where("trip_distance like '-%'").count() \
        == totals["negative_distance"]
    assert trips.where(F.col("trip_id").isin(*demo.bad_zones)).count() == totals["bad_zones"]
    # unreadable and empty objects: recorded with key, ETag and reason
    errors = {r.key: r for r in ctx.lake.read(catalog.INGEST_ERRORS).collect()}
    assert set(errors) == set(unreadable)
    statuses = {r.status for r in errors.values()}
    assert statuses == {"failed", "empty"}
    failed = next(r for r in errors.values() if r.status == "failed")
    assert "truncated" in failed.reason and failed.etag
    # run metadata
    meta = table.select("_run_id", "_ingest_date").distinct().collect()
    assert [(r._run_id, r._ingest_date) for r in meta] == [(ctx.run_id, RUN_DATE)]
    assert table.where("_source_version != 1").count() == 0


def test_rerun_ingests_nothing_and_commits_nothing(spark, tmp_path, s3_endpoint, s3_bucket, demo):
    run_ingest(spark, tmp_path, s3_endpoint, s3_bucket)
    versions = (bronze(tmp_path).version(), DeltaTable(str(tmp_path / "ops" / "ingest_errors")).version())
    counts, _ = run_ingest(spark, tmp_path, s3_endpoint, s3_bucket, run_date=RUN_DATE + dt.timedelta(days=1))
    assert counts["objects_listed"] == demo.totals["objects"] and counts["objects_new"] == 0
    assert counts["rows_written"] == 0
    assert (bronze(tmp_path).version(), DeltaTable(str(tmp_path / "ops" / "ingest_errors")).version()) == versions


def test_changed_object_is_ingested_again_once_as_a_new_version(spark, tmp_path, s3_endpoint, s3_bucket, s3, demo):
    run_ingest(spark, tmp_path, s3_endpoint, s3_bucket)
    key = next(o["key"] for o in demo.to_dict()["objects"] if o["format"] == "csv" and not o["unreadable"])
    new_body = ",".join(COLUMNS) + "\n" + "x-1,1,2024-01-01 10:00:00,2024-01-01 10:10:00,1,1.5,1,10,20,1,9.5,0,2,0,11.5\n"
    s3.put_object(Bucket=s3_bucket, Key=key, Body=new_body.encode())
    counts, ctx = run_ingest(spark, tmp_path, s3_endpoint, s3_bucket)
    assert counts["objects_new"] == 1 and counts["rows_written"] == 1
    rows = ctx.lake.read(catalog.bronze(ctx.config.dataset("trips"))).where(F.col("_source_key") == key)
    assert {(r._source_version, r._source_etag != "") for r in rows.select("_source_version", "_source_etag").distinct().collect()} \
        == {(1, True), (2, True)}
    assert rows.where("_source_version = 2").select("trip_id").collect()[0].trip_id == "x-1"
    again, _ = run_ingest(spark, tmp_path, s3_endpoint, s3_bucket)
    assert again["objects_new"] == 0


def test_each_format_lands_as_it_came(spark, tmp_path, s3_endpoint, s3_bucket, s3, demo):
    _, ctx = run_ingest(spark, tmp_path, s3_endpoint, s3_bucket)
    table = ctx.lake.read(catalog.bronze(ctx.config.dataset("trips")))
    objects = [o for o in demo.to_dict()["objects"] if not o["unreadable"]]
    for fmt in ("csv", "csv.gz", "jsonl", "parquet"):
        obj = next(o for o in objects if o["format"] == fmt and o["malformed_lines"] == 0)
        data = s3.get_object(Bucket=s3_bucket, Key=obj["key"])["Body"].read()
        expected = independent_parse(fmt, data)
        actual = (table.where(F.col("_source_key") == obj["key"]).orderBy("_source_row")
                  .select(*COLUMNS).toPandas().reset_index(drop=True))
        assert len(actual) == obj["rows"]
        pd.testing.assert_frame_equal(as_values(actual), as_values(expected), check_dtype=False)


def as_values(frame: pd.DataFrame) -> pd.DataFrame:
    """Text to values: Parquet's 1.0 may be rendered "1", the same number."""
    numeric = [c for c in COLUMNS if c not in ("trip_id", "pickup_at", "dropoff_at")]
    return frame.assign(**{c: pd.to_numeric(frame[c]) for c in numeric})


def independent_parse(fmt: str, data: bytes) -> pd.DataFrame:
    """The object read by pandas/pyarrow, as text (what bronze keeps)."""
    if fmt == "parquet":
        table = pq.read_table(io.BytesIO(data)).to_pandas()
        for column in ("pickup_at", "dropoff_at"):
            table[column] = table[column].dt.strftime("%Y-%m-%d %H:%M:%S")
        frame = table.astype(object).where(table.notna(), None)
        return frame.map(lambda v: None if v is None else str(v))[list(COLUMNS)]
    if fmt == "csv.gz":
        data = gzip.decompress(data)
    if fmt.startswith("csv"):
        frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
        return frame.replace("", None)[list(COLUMNS)]
    records = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
    return pd.DataFrame([{c: (None if r.get(c) is None else str(r[c])) for c in COLUMNS} for r in records])


def test_listing_paginates_beyond_1000_keys(spark, tmp_path, s3_endpoint, s3_bucket, s3):
    header = ",".join(COLUMNS)
    for i in range(1010):
        body = f"{header}\nt-{i},1,2024-01-01 10:00:00,2024-01-01 10:10:00,1,1.5,1,10,20,1,9.5,0,2,0,11.5\n"
        s3.put_object(Bucket=s3_bucket, Key=f"trips/2024/01/01/part-{i:05d}.csv", Body=body.encode())
    counts, ctx = run_ingest(spark, tmp_path, s3_endpoint, s3_bucket)
    assert counts["objects_listed"] == 1010 and counts["objects_ingested"] == 1010
    assert counts["rows_written"] == 1010
    assert bronze(tmp_path).to_pyarrow_table(columns=["trip_id"]).num_rows == 1010


def test_too_many_bad_objects_fails_and_commits_nothing(spark, tmp_path, s3_endpoint, s3_bucket, s3, demo):
    for i in range(3):
        s3.put_object(Bucket=s3_bucket, Key=f"trips/2024/01/09/garbage-{i}.csv.gz", Body=os.urandom(500))
    with pytest.raises(ingest.TooManyBadObjects, match="4 unreadable objects"):
        run_ingest(spark, tmp_path, s3_endpoint, s3_bucket, STRATA_DATASETS__TRIPS__MAX_BAD_OBJECTS="2")
    assert not (tmp_path / "bronze" / "trips" / "_delta_log").exists()
    assert not list((tmp_path / "bronze" / "trips").rglob("*.parquet"))  # staged files deleted


def test_unreachable_endpoint_and_missing_bucket_fail_fast(spark, tmp_path, s3_endpoint):
    started = time.monotonic()
    with pytest.raises(SourceError, match="cannot list s3://strata-raw/trips"):
        run_ingest(spark, tmp_path, "http://127.0.0.1:9", "strata-raw", STRATA_S3__MAX_ATTEMPTS="1")
    assert time.monotonic() - started < 30
    with pytest.raises(SourceError, match="NoSuchBucket"):
        run_ingest(spark, tmp_path, s3_endpoint, "no-such-bucket")


@pytest.mark.slow
def test_killed_ingest_then_rerun_equals_an_uninterrupted_run(spark, tmp_path, s3_endpoint, s3_bucket, demo):
    """kill -9 the spark-submit'ed job mid-way; the re-run must give exactly the rows of a clean run."""
    interrupted = tmp_path / "interrupted"
    env = {**os.environ, **environ_for(interrupted, s3_endpoint, s3_bucket)}
    proc = subprocess.Popen([str(REPO / "spark-submit.sh"), "ingest", "--env", "local", "--dataset", "trips",
                             "--run-date", RUN_DATE.isoformat()], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    for line in proc.stderr:  # kill once it is parsing objects, before it can commit
        if "objects listed" in line:
            time.sleep(2)
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    run_ingest(spark, interrupted, s3_endpoint, s3_bucket)
    clean = tmp_path / "clean"
    run_ingest(spark, clean, s3_endpoint, s3_bucket)

    def content(root):
        columns = [*COLUMNS, "_source_key", "_source_etag", "_source_row", "_corrupt_record", "_source_version"]
        return spark.createDataFrame(bronze(root).to_pyarrow_table(columns=columns).to_pandas())

    assert_df_equality(content(interrupted), content(clean), ignore_row_order=True)
