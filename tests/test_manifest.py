"""The ingested-objects manifest (ops.ingested_objects) and dated listing: the manifest must stay
exactly what bronze holds, also after a crash between the bronze commit and its own commit.
Real parts: the local S3 endpoint, real Delta tables, the real ingest job."""
from __future__ import annotations

import boto3
import pytest
from chispa import assert_df_equality
from deltalake import DeltaTable

from strata.sources.manifest import ObjectManifest

from test_ingest_trust import csv_body, run_ingest, trip_line


@pytest.fixture
def s3(s3_endpoint):
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


def put(s3, bucket, key, trip_id, fare="9.5"):
    s3.put_object(Bucket=bucket, Key=key, Body=csv_body(trip_line(trip_id, fare)))


def assert_manifest_is_bronze(spark, ctx, tmp_path):
    """Every (key, etag, version) of bronze is in the manifest with status ok, and nothing else."""
    bronze = DeltaTable(str(tmp_path / "bronze" / "trips")).to_pyarrow_table(
        columns=["_source_key", "_source_etag", "_source_version"]).to_pylist()
    expected = spark.createDataFrame(sorted({tuple(r.values()) for r in bronze}), "key string, etag string, version int")
    manifest = ObjectManifest(ctx.lake, ctx.config.dataset("trips"))
    actual = manifest.entries().where("status = 'ok'").select("key", "etag", "version").distinct()
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)
    return manifest


def test_manifest_stays_exact_after_a_crash_between_the_bronze_and_manifest_commits(
        spark, tmp_path, s3_endpoint, s3_bucket, s3, monkeypatch):
    put(s3, s3_bucket, "trips/2024/01/01/a.csv", "t-a")
    counts, ctx = run_ingest(spark, tmp_path, s3_endpoint, s3_bucket)
    assert counts["objects_ingested"] == 1
    assert assert_manifest_is_bronze(spark, ctx, tmp_path).complete_through == 0

    put(s3, s3_bucket, "trips/2024/01/01/b.csv", "t-b")

    def crash(*args, **kwargs):
        raise RuntimeError("killed after the bronze commit")

    with monkeypatch.context() as patch:
        patch.setattr(ObjectManifest, "record", crash)
        with pytest.raises(RuntimeError, match="killed"):
            run_ingest(spark, tmp_path, s3_endpoint, s3_bucket)
    assert DeltaTable(str(tmp_path / "bronze" / "trips")).version() == 1  # b is in bronze, not in the manifest
    assert ObjectManifest(ctx.lake, ctx.config.dataset("trips")).complete_through == 0

    # the next run takes b from bronze's log: nothing is ingested twice
    again, _ = run_ingest(spark, tmp_path, s3_endpoint, s3_bucket)
    assert again["objects_new"] == 0 and again["no_new_data"] is True
    assert_manifest_is_bronze(spark, ctx, tmp_path)

    # a re-delivered object (new ETag) is still taken, as the next version; the manifest catches up
    put(s3, s3_bucket, "trips/2024/01/01/a.csv", "t-a", fare="12.5")
    put(s3, s3_bucket, "trips/2024/01/02/c.csv", "t-c")
    counts, _ = run_ingest(spark, tmp_path, s3_endpoint, s3_bucket)
    assert counts["objects_new"] == 2 and counts["objects_ingested"] == 2
    versions = {(r["_source_key"], r["_source_version"]) for r in DeltaTable(str(tmp_path / "bronze" / "trips"))
                .to_pyarrow_table(columns=["_source_key", "_source_version"]).to_pylist()}
    assert versions == {("trips/2024/01/01/a.csv", 1), ("trips/2024/01/01/a.csv", 2),
                        ("trips/2024/01/01/b.csv", 1), ("trips/2024/01/02/c.csv", 1)}
    manifest = assert_manifest_is_bronze(spark, ctx, tmp_path)
    assert manifest.complete_through == 2 and manifest.missing().count() == 0
    assert run_ingest(spark, tmp_path, s3_endpoint, s3_bucket)[0]["objects_new"] == 0


def test_dated_listing_starts_at_the_newest_ingested_folder_less_the_lookback(spark, tmp_path, s3_endpoint,
                                                                             s3_bucket, s3):
    for day in range(1, 11):
        put(s3, s3_bucket, f"trips/2024/01/{day:02d}/part.csv", f"t-{day}")
    counts, _ = run_ingest(spark, tmp_path, s3_endpoint, s3_bucket)
    assert counts["objects_ingested"] == 10 and counts["listed_after"] is None  # nothing ingested yet: all
    put(s3, s3_bucket, "trips/2024/01/02/late.csv", "t-late")     # older than the lookback window
    put(s3, s3_bucket, "trips/2024/01/08/late.csv", "t-recent")   # within it
    counts, _ = run_ingest(spark, tmp_path, s3_endpoint, s3_bucket, STRATA_DATASETS__TRIPS__SOURCE__LOOKBACK_DAYS="3")
    assert counts["listed_after"] == "trips/2024/01/07"
    assert counts["objects_listed"] == 5 and counts["objects_ingested"] == 1  # 07..10 and the recent one
    # a full listing (the switch for layouts without dates, or to sweep old folders) finds the late one
    counts, _ = run_ingest(spark, tmp_path, s3_endpoint, s3_bucket, STRATA_DATASETS__TRIPS__SOURCE__LISTING="full")
    assert counts["objects_listed"] == 12 and counts["objects_ingested"] == 1
    assert run_ingest(spark, tmp_path, s3_endpoint, s3_bucket)[0]["objects_new"] == 0
