"""Bronze -> silver -> gold with Great Expectations gates, on the demo data with planted problems,
a second dataset onboarded by config alone, and the pipeline's exit codes through spark-submit."""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess

import boto3
import pytest
from chispa import assert_df_equality
from deltalake import DeltaTable
from pyspark.sql import functions as F

from strata import catalog
from strata.catalog import QUALITY_RESULTS
from strata_dev.demo_data import DemoDataSpec, upload
from strata.errors import QualityGateBlocked
from strata.jobs import gold, ingest, pipeline, silver

from conftest import REPO, job_context

RUN_DATE = dt.date(2024, 1, 5)
SPEC = DemoDataSpec(days=2, objects_per_day=3, rows_per_object=400, seed=5)


@pytest.fixture
def demo(s3_endpoint, s3_bucket):
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    return upload(SPEC, client, s3_bucket, "trips")


@pytest.fixture
def environ(tmp_path, s3_endpoint, s3_bucket):
    return {"STRATA_LAKE__ROOT": str(tmp_path / "lake"), "STRATA_S3__ENDPOINT_URL": s3_endpoint,
            "STRATA_DATASETS__TRIPS__SOURCE__BUCKET": s3_bucket,
            "STRATA_QUALITY__DATA_DOCS_DIR": str(tmp_path / "docs")}


def stage(spark, module, environ, dataset="trips", conf_dir=None):
    ctx = job_context(spark, module.__name__.rsplit(".", 1)[-1], dataset, RUN_DATE, environ, conf_dir)
    return module.run(ctx), ctx


def test_silver_reconciles_quarantines_and_gold_publishes(spark, demo, environ, tmp_path):
    stage(spark, ingest, environ)
    counts, ctx = stage(spark, silver, environ)
    totals = demo.totals
    assert counts["reconciled"]
    assert counts["bronze_rows_read"] == totals["data_rows"]
    assert counts["duplicates_dropped"] == totals["duplicates"]
    rejected = totals["nulls"] + totals["negative_distance"] + totals["bad_zones"]
    assert counts["quarantined"] == totals["malformed_lines"] + rejected
    assert counts["upserted"] == totals["trips"] - rejected

    lake = ctx.lake
    table = lake.read(catalog.silver(ctx.config.dataset("trips")))
    assert table.count() == counts["upserted"]
    assert table.where(F.col("trip_id").isin(*demo.negative_distance)).count() == 0
    assert table.where(F.col("trip_id").isin(*demo.anomalies)).count() == len(demo.anomalies)  # kept: for anomaly detection
    assert dict(table.dtypes)["pickup_at"] == "timestamp" and dict(table.dtypes)["trip_distance"] == "double"
    assert DeltaTable(str(tmp_path / "lake" / "silver" / "trips")).metadata().partition_columns == ["event_date"]

    quarantine = lake.read(catalog.quarantine_of(catalog.silver(ctx.config.dataset("trips"))))
    reasons = quarantine.select(F.explode("failed_rules").alias("rule")).groupBy("rule").count().collect()
    by_rule = {r.rule: r["count"] for r in reasons}
    assert sum(n for rule, n in by_rule.items() if rule.startswith("corrupt record")) == totals["malformed_lines"]
    assert sum(n for rule, n in by_rule.items() if "pickup_zone" in rule or "dropoff_zone" in rule) >= totals["bad_zones"]
    assert quarantine.where("record is null or run_id is null or quarantined_at is null").count() == 0
    negative = quarantine.where(F.col("record").contains(demo.negative_distance[0])).first()
    assert any("trip_distance" in rule for rule in negative.failed_rules)
    assert json.loads(negative.record)["trip_id"] == demo.negative_distance[0]  # the record as it came

    results = lake.read(QUALITY_RESULTS).where(F.col("run_id") == ctx.run_id)
    suite = json.loads((REPO / "expectations" / "silver" / "trips.json").read_text())
    assert results.count() == len(suite["expectations"])
    assert results.where("layer = 'silver' and table = 'trips' and job = 'silver'").count() == results.count()
    unique = results.where("expectation_type = 'expect_column_values_to_be_unique'").first()
    assert unique.success and unique.severity == "error" and unique.element_count == counts["upserted"] + rejected

    gold_counts, gold_ctx = stage(spark, gold, environ)
    assert gold_counts["partitions"] == SPEC.days
    features = gold_ctx.lake.read(catalog.features(gold_ctx.config.dataset("trips")))
    assert features.count() == counts["upserted"]
    labelled = features.where("label is not null")
    assert labelled.count() == table.where("payment_type = 1").count()
    assert {"speed_mph", "fare_per_mile", "pickup_hour", "pickup_weekday", "label"} <= set(features.columns)
    daily = gold_ctx.lake.read(catalog.analysis(gold_ctx.config.dataset("trips")))
    assert daily.agg(F.sum("trips")).first()[0] == counts["upserted"]
    assert daily.groupBy("event_date", "pickup_zone").count().where("count > 1").count() == 0


def test_silver_and_gold_are_idempotent_per_run_date(spark, demo, environ):
    stage(spark, ingest, environ)
    first, ctx = stage(spark, silver, environ)
    stage(spark, gold, environ)
    spec = catalog.silver(ctx.config.dataset("trips"))
    snapshot = ctx.lake.read(spec).drop("_refined_run_id")
    features_spec = catalog.features(ctx.config.dataset("trips"))
    features = ctx.lake.read(features_spec)
    version = ctx.lake.version(spec)

    second, ctx2 = stage(spark, silver, environ)
    stage(spark, gold, environ)
    assert ctx2.lake.version(spec) == version + 1
    assert_df_equality(ctx2.lake.read(spec).drop("_refined_run_id"), snapshot, ignore_row_order=True)
    assert_df_equality(ctx2.lake.read(features_spec), features, ignore_row_order=True)
    assert second["quarantined"] == first["quarantined"]
    assert ctx2.lake.read(catalog.quarantine_of(catalog.silver(ctx.config.dataset("trips")))).count() == first["quarantined"]


def strict_expectations(tmp_path, rule):
    """A copy of expectations/ whose silver trips suite carries one more rule."""
    target = tmp_path / "expectations"
    shutil.copytree(REPO / "expectations", target)
    path = target / "silver" / "trips.json"
    suite = json.loads(path.read_text())
    suite["expectations"].append(rule)
    path.write_text(json.dumps(suite))
    return target


def test_error_failure_blocks_and_leaves_silver_unchanged(spark, demo, environ, tmp_path, monkeypatch):
    stage(spark, ingest, environ)
    _, ctx = stage(spark, silver, environ)
    spec = catalog.silver(ctx.config.dataset("trips"))
    version = ctx.lake.version(spec)
    monkeypatch.setenv("STRATA_EXPECTATIONS_DIR", str(strict_expectations(tmp_path, {
        "type": "expect_column_values_to_be_between", "kwargs": {"column": "trip_distance", "min_value": 0, "max_value": 1},
        "meta": {"severity": "error"}})))
    with pytest.raises(QualityGateBlocked, match=r"expect_column_values_to_be_between\(trip_distance\)"):
        stage(spark, silver, environ)
    assert ctx.lake.version(spec) == version
    failed = ctx.lake.read(QUALITY_RESULTS).where("success = false and severity = 'error'").collect()
    assert [r.column for r in failed] == ["trip_distance"] and failed[0].unexpected_count > 0


def test_warn_failure_publishes_and_is_recorded(spark, demo, environ, tmp_path, monkeypatch):
    stage(spark, ingest, environ)
    monkeypatch.setenv("STRATA_EXPECTATIONS_DIR", str(strict_expectations(tmp_path, {
        "type": "expect_column_values_to_be_between", "kwargs": {"column": "fare_amount", "min_value": 0, "max_value": 5},
        "meta": {"severity": "warn"}})))
    counts, ctx = stage(spark, silver, environ)
    assert counts["upserted"] > 0
    warned = ctx.lake.read(QUALITY_RESULTS).where("success = false").collect()
    assert [(r.column, r.severity) for r in warned] == [("fare_amount", "warn")]
    # a warn rule quarantines nothing beyond what the error rules do
    totals = demo.totals
    assert counts["quarantined"] == totals["malformed_lines"] + totals["nulls"] + totals["negative_distance"] + totals["bad_zones"]


SENSOR_LINES = [
    "device_id,reading_at,site,temperature_c,humidity_pct,battery_v",
    "dev-1,2024-01-05T10:00:00,north,21.5,40,3.7",
    "dev-1,2024-01-05T11:00:00,north,22.0,41,3.6",
    "dev-2,2024-01-05T10:00:00,south,19.0,150,3.1",      # humidity out of range: quarantined
    "dev-2,2024-01-05T11:00:00,south,18.5,55,3.1",
    "dev-3,not-a-time,south,18.0,50,3.9",                  # cast failure: quarantined
    "dev-3,2024-01-06T09:30:00,south,17.0,52,3.8",
]


def onboarded_conf(tmp_path):
    """conf/ and expectations/ of the repo plus the sensors dataset's files: no code change."""
    root = tmp_path / "project"
    fixtures = REPO / "tests" / "fixtures" / "sensors"
    for part in ("conf", "expectations"):
        shutil.copytree(REPO / part, root / part)
        shutil.copytree(fixtures / part, root / part, dirs_exist_ok=True)
    return root


def test_second_dataset_runs_end_to_end_with_config_only(spark, environ, tmp_path, s3_endpoint, s3_bucket, monkeypatch):
    root = onboarded_conf(tmp_path)
    monkeypatch.setenv("STRATA_EXPECTATIONS_DIR", str(root / "expectations"))
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.put_object(Bucket=s3_bucket, Key="sensors/2024/01/05/readings-1.csv", Body="\n".join(SENSOR_LINES).encode())
    client.put_object(Bucket=s3_bucket, Key="sensors/2024/01/05/readings-2.jsonl", Body=(
        json.dumps({"device_id": "dev-4", "reading_at": "2024-01-05T12:00:00", "site": "north",
                    "temperature_c": 23.0, "humidity_pct": 45, "battery_v": 3.2}) + "\n").encode())

    environ = {**environ, "STRATA_DATASETS__SENSORS__SOURCE__BUCKET": s3_bucket}
    ctx = job_context(spark, "pipeline", None, RUN_DATE, environ, root / "conf")
    ctx.args.dataset = ["sensors"]
    result = pipeline.run(ctx)
    stages = result["stages"]
    assert stages["sensors.ingest"]["rows_written"] == 7
    assert stages["sensors.silver"]["upserted"] == 5 and stages["sensors.silver"]["quarantined"] == 2
    assert stages["sensors.gold"]["features"]["rows"] == 5
    assert set(ctx.tables) >= {"bronze.sensors", "silver.sensors", "gold.sensors_features", "gold.sensors_daily_site"}
    daily = {(str(r.reading_date), r.site): r for r in
             ctx.lake.read(catalog.analysis(ctx.config.dataset("sensors"))).collect()}
    assert daily[("2024-01-05", "north")].readings == 3 and daily[("2024-01-05", "south")].readings == 1
    assert daily[("2024-01-06", "south")].readings == 1
    features = ctx.lake.read(catalog.features(ctx.config.dataset("sensors")))
    assert features.where("device_id = 'dev-4'").first().low_battery == 1

    # nothing new: the pipeline skips silver and gold and changes no table
    versions = {name: table["version"] for name, table in ctx.tables.items()}
    again = job_context(spark, "pipeline", None, RUN_DATE, environ, root / "conf")
    again.args.dataset = ["sensors"]
    stages = pipeline.run(again)["stages"]
    assert stages["sensors.ingest"]["objects_new"] == 0
    assert "skipped" in stages["sensors.silver"] and "skipped" in stages["sensors.gold"]
    assert all(versions[name] == table["version"] for name, table in again.tables.items())

    # an ingest run on its own changed bronze since: the pipeline's ingest finds nothing new, but
    # silver and gold are no longer up to date and refine the run date again, new row included
    client.put_object(Bucket=s3_bucket, Key="sensors/2024/01/05/readings-3.jsonl", Body=(
        json.dumps({"device_id": "dev-5", "reading_at": "2024-01-05T13:00:00", "site": "north",
                    "temperature_c": 21.0, "humidity_pct": 40, "battery_v": 3.6}) + "\n").encode())
    alone = job_context(spark, "ingest", "sensors", RUN_DATE, environ, root / "conf")
    assert ingest.run(alone)["rows_written"] == 1
    later = job_context(spark, "pipeline", None, RUN_DATE, environ, root / "conf")
    later.args.dataset = ["sensors"]
    stages = pipeline.run(later)["stages"]
    assert stages["sensors.ingest"]["objects_new"] == 0
    assert "skipped" not in stages["sensors.silver"] and "features" in stages["sensors.gold"]
    silver_rows = later.lake.read(catalog.silver(later.config.dataset("sensors")))
    assert silver_rows.where("device_id = 'dev-5'").count() == 1


@pytest.mark.slow
def test_pipeline_through_spark_submit_exit_codes(tmp_path, demo, environ):
    """Exit 2 when a gate blocks (bronze published, silver not), then exit 0 on the same lake once
    the rule is gone: the blocked stage runs again and the pipeline publishes every table."""
    env = {**os.environ, **environ, "STRATA_PIPELINE__MODELS": "false"}  # the data stages' codes (train: test_demo)
    args = [str(REPO / "spark-submit.sh"), "pipeline", "--env", "local", "--dataset", "trips",
            "--run-date", RUN_DATE.isoformat()]
    strict = {**env, "STRATA_EXPECTATIONS_DIR": str(strict_expectations(tmp_path, {
        "type": "expect_column_values_to_not_be_null", "kwargs": {"column": "pickup_at"}, "meta": {"severity": "error"}}))}
    blocked = subprocess.run(args, env=strict, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert blocked.returncode == 2, blocked.stderr[-3000:]
    summary = json.loads(blocked.stdout.strip().splitlines()[-1])
    assert summary["status"] == "blocked" and "pickup_at" in summary["error"]
    assert "bronze.trips" in summary["tables"] and "silver.trips" not in summary["tables"]

    ok = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert ok.returncode == 0, ok.stderr[-3000:]
    summary = json.loads(ok.stdout.strip().splitlines()[-1])
    assert summary["status"] == "ok"
    assert {"bronze.trips", "silver.trips", "gold.trips_features", "gold.trips_daily_zone"} <= set(summary["tables"])
    stages = summary["stages"]
    assert stages["trips.ingest"]["objects_new"] == 0 and "skipped" not in stages["trips.silver"]
