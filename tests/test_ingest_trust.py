"""Ingest under hostile timing and changing inputs: concurrent runs, re-delivered objects, a
config that changes. Real parts: the local S3 endpoint, real Delta tables, real processes."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time

from urllib.parse import unquote

import boto3
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from strata_dev.demo_data import COLUMNS
from strata.jobs import ingest
from strata.lake import SchemaMismatchError

from conftest import REPO, conf_with, job_context
from faults import Fault, serve

RUN_DATE = dt.date(2024, 1, 5)
HEADER = ",".join(COLUMNS)


def trip_line(trip_id: str, fare: str = "9.5") -> str:
    return f"{trip_id},1,2024-01-01 10:00:00,2024-01-01 10:10:00,1,1.5,1,10,20,1,{fare},0,2,0,11.5"


def csv_body(*lines: str, header: str = HEADER) -> bytes:
    return ("\n".join([header, *lines]) + "\n").encode()


@pytest.fixture
def s3(s3_endpoint):
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


def environ_for(lake_root, endpoint, bucket, **extra):
    return {"STRATA_LAKE__ROOT": str(lake_root), "STRATA_S3__ENDPOINT_URL": endpoint,
            "STRATA_DATASETS__TRIPS__SOURCE__BUCKET": bucket,
            "STRATA_QUALITY__DATA_DOCS_DIR": str(lake_root / "docs"), **extra}


def run_ingest(spark, lake_root, endpoint, bucket, conf_dir=None, **extra):
    ctx = job_context(spark, "ingest", "trips", RUN_DATE, environ_for(lake_root, endpoint, bucket, **extra),
                      conf_dir)
    return ingest.run(ctx), ctx


def bronze_rows(lake_root, columns=("_source_key", "_source_etag", "_source_version", "trip_id")):
    return DeltaTable(str(lake_root / "bronze" / "trips")).to_pyarrow_table(columns=list(columns)).to_pylist()


def test_object_that_changes_a_b_a_is_ingested_again_as_a_new_version(spark, tmp_path, s3_endpoint, s3_bucket, s3):
    key = "trips/2024/01/01/part-0.csv"
    bodies = [csv_body(trip_line("t-1", "9.5")), csv_body(trip_line("t-1", "12.5")), csv_body(trip_line("t-1", "9.5"))]
    seen = []
    for body in bodies:
        s3.put_object(Bucket=s3_bucket, Key=key, Body=body)
        counts, _ = run_ingest(spark, tmp_path, s3_endpoint, s3_bucket)
        assert counts["objects_new"] == 1 and counts["rows_written"] == 1
        seen.append(s3.head_object(Bucket=s3_bucket, Key=key)["ETag"].strip('"'))
    assert seen[0] == seen[2] != seen[1]
    versions = sorted((r["_source_version"], r["_source_etag"]) for r in bronze_rows(tmp_path))
    assert versions == [(1, seen[0]), (2, seen[1]), (3, seen[0])]
    again, _ = run_ingest(spark, tmp_path, s3_endpoint, s3_bucket)
    assert again["objects_new"] == 0 and again["no_new_data"] is True


def test_objects_judged_under_a_wrong_schema_are_read_again_once_it_is_fixed(spark, tmp_path, s3_endpoint,
                                                                               s3_bucket, s3):
    for i in range(3):
        s3.put_object(Bucket=s3_bucket, Key=f"trips/2024/01/01/part-{i}.csv", Body=csv_body(trip_line(f"t-{i}")))
    typo = conf_with(tmp_path, lambda text: text.replace("  vendor_id: int", "  vendr_id: int"))
    with pytest.raises(ingest.ConfigMismatch, match="none of the 3 object"):
        run_ingest(spark, tmp_path, s3_endpoint, s3_bucket, conf_dir=typo)
    # nothing committed, nothing recorded as handled, nothing left staged
    assert not (tmp_path / "bronze").exists() and not (tmp_path / "ops").exists()
    counts, _ = run_ingest(spark, tmp_path, s3_endpoint, s3_bucket)
    assert counts["objects_ingested"] == 3 and counts["rows_written"] == 3


def test_a_permanent_failure_recorded_under_another_config_is_read_again(spark, tmp_path, s3_endpoint, s3_bucket, s3):
    s3.put_object(Bucket=s3_bucket, Key="trips/2024/01/01/good.csv", Body=csv_body(trip_line("t-1")))
    s3.put_object(Bucket=s3_bucket, Key="trips/2024/01/01/export.txt", Body=csv_body(trip_line("t-2")))
    counts, ctx = run_ingest(spark, tmp_path, s3_endpoint, s3_bucket)
    assert counts["objects_ingested"] == 1 and counts["objects_failed"] == 1
    assert run_ingest(spark, tmp_path, s3_endpoint, s3_bucket)[0]["objects_new"] == 0
    # the dataset declares the feed's format: the failure judged without it no longer counts as handled
    as_csv = conf_with(tmp_path, lambda text: text.replace("format: auto", "format: csv"))
    counts, _ = run_ingest(spark, tmp_path, s3_endpoint, s3_bucket, conf_dir=as_csv)
    assert counts["objects_new"] == 1 and counts["objects_ingested"] == 1
    assert sorted(r["trip_id"] for r in bronze_rows(tmp_path)) == ["t-1", "t-2"]


def test_a_declared_new_source_column_is_accepted_with_schema_evolution(spark, tmp_path, s3_endpoint, s3_bucket, s3):
    s3.put_object(Bucket=s3_bucket, Key="trips/2024/01/01/old.csv", Body=csv_body(trip_line("t-1")))
    run_ingest(spark, tmp_path, s3_endpoint, s3_bucket)
    s3.put_object(Bucket=s3_bucket, Key="trips/2024/01/02/new.csv",
                  Body=csv_body(trip_line("t-2") + ",2.5", header=HEADER + ",airport_fee"))

    def add_column(text, evolution):
        text = text.replace("  total_amount: double\n", "  total_amount: double\n  airport_fee: double\n")
        return text + ("schema_evolution: true\n" if evolution else "")

    without = conf_with(tmp_path / "a", lambda text: add_column(text, False))
    with pytest.raises(SchemaMismatchError, match="schema_evolution"):
        run_ingest(spark, tmp_path, s3_endpoint, s3_bucket, conf_dir=without)
    committed = {unquote(a["path"]) for a in pa.table(DeltaTable(str(tmp_path / "bronze" / "trips"))
                                                      .get_add_actions(flatten=True)).to_pylist()}
    on_disk = {str(p.relative_to(tmp_path / "bronze" / "trips")) for p in (tmp_path / "bronze" / "trips").rglob("*.parquet")}
    assert on_disk == committed  # nothing staged

    with_evolution = conf_with(tmp_path / "b", lambda text: add_column(text, True))
    counts, _ = run_ingest(spark, tmp_path, s3_endpoint, s3_bucket, conf_dir=with_evolution)
    assert counts["objects_ingested"] == 1
    fees = {r["trip_id"]: r["airport_fee"] for r in bronze_rows(tmp_path, ("trip_id", "airport_fee"))}
    assert fees == {"t-1": None, "t-2": "2.5"}


@pytest.mark.slow
def test_two_concurrent_ingest_processes_ingest_every_object_exactly_once(spark, tmp_path, s3_endpoint, s3_bucket,
                                                                          s3, proxy):
    """Two ingest processes race over the same new objects, and the race really happens: the raw
    reads of both are held at the proxy until both have their in-flight marker (written once a run
    has looked up the objects it knows, the bronze version its commit is fenced by). So one
    commits and the other must conflict: it says why and commits nothing. Round one races to
    create bronze, round two to append to it (its runs must not take round one's objects again);
    a last run (in this process) finds nothing new to ingest."""
    lake = tmp_path / "lake"
    markers = lake / "_strata_inflight" / "bronze" / "trips"
    env = {**os.environ, **environ_for(lake, proxy.endpoint_url, s3_bucket)}
    expected = 0
    for round_ in range(2):
        day = f"2024/01/0{round_ + 1}"
        for i in range(4):
            lines = [trip_line(f"r{round_}-{i}-{n}") for n in range(50)]
            s3.put_object(Bucket=s3_bucket, Key=f"trips/{day}/part-{i}.csv", Body=csv_body(*lines))
            expected += 50
        # 45 s at most per read (under the client's 60 s read timeout), released once both are fenced
        held = proxy.add(Fault("GET", rf"/{s3_bucket}/trips/{day}/.+\.csv$", kind="delay", delay=45, times=None))
        before = set(markers.glob("*.json"))
        command = [str(REPO / "spark-submit.sh"), "ingest", "--env", "local", "--dataset", "trips",
                   "--run-date", day.replace("/", "-")]
        racers = [subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True) for _ in range(2)]
        try:
            deadline = time.time() + 300
            while time.time() < deadline and all(p.poll() is None for p in racers):
                if len(set(markers.glob("*.json")) - before) == 2:
                    break
                time.sleep(0.1)
            fenced = len(set(markers.glob("*.json")) - before)
        finally:
            proxy.release(held)
        outcomes = [(p.returncode, out, err) for p in racers for out, err in [p.communicate(timeout=600)]]
        assert fenced == 2, ("precondition: both runs staging at once", [err[-2000:] for _, _, err in outcomes])
        assert sorted(code for code, _, _ in outcomes) == [0, 1], [err[-2000:] for _, _, err in outcomes]
        assert proxy.hits(held) == 8  # both read the four objects, through the held rule
        for code, out, err in outcomes:
            summary = json.loads(out.strip().splitlines()[-1])
            assert summary["objects_new"] == 4, (out[-2000:], err[-3000:])  # this round's objects only
            if code != 0:  # the loser says why and committed nothing
                assert code == 1 and summary["status"] == "failed", (out[-2000:], err[-3000:])
                assert "concurrent commit" in summary["error"] and "nothing was committed" in summary["error"]
        rows = bronze_rows(lake, ("_source_key", "_source_etag", "trip_id"))
        assert len({r["trip_id"] for r in rows}) == len(rows) == expected  # every object so far, once
    rerun = job_context(spark, "ingest", "trips", dt.date(2024, 1, 2),
                        environ_for(lake, proxy.endpoint_url, s3_bucket))
    assert ingest.run(rerun)["objects_new"] == 0  # the loser left nothing behind to take again
    rows = bronze_rows(lake, ("_source_key", "_source_etag", "trip_id"))
    assert len(rows) == len({r["trip_id"] for r in rows}) == expected  # every object exactly once


# ---- real S3 faults on loopback: a proxy in front of the local endpoint -----------------------

@pytest.fixture
def proxy(s3_endpoint):
    yield from serve(s3_endpoint)


FAST_RETRIES = {"STRATA_S3__MAX_ATTEMPTS": "1", "STRATA_S3__RETRY_BACKOFF_SECONDS": "0.05"}


def put_day(s3, bucket, n=4, rows=20):
    for i in range(n):
        s3.put_object(Bucket=bucket, Key=f"trips/2024/01/01/part-{i}.csv",
                      Body=csv_body(*[trip_line(f"t-{i}-{r}") for r in range(rows)]))


def test_a_transient_s3_failure_defers_the_object_and_the_next_run_takes_it(spark, tmp_path, s3_bucket, s3, proxy):
    put_day(s3, s3_bucket)
    failing = proxy.add(Fault("GET", rf"/{s3_bucket}/trips/2024/01/01/part-1\.csv$", status=503, times=None))
    counts, ctx = run_ingest(spark, tmp_path, proxy.endpoint_url, s3_bucket, **FAST_RETRIES)
    assert proxy.hits(failing) >= 3  # every read attempt really failed
    assert counts["objects_ingested"] == 3 and counts["objects_deferred"] == 1 and counts["objects_failed"] == 0
    assert "part-1.csv" in counts["deferred_examples"][0] and "ServiceUnavailable" in counts["deferred_examples"][0]
    assert not (tmp_path / "ops" / "ingest_errors").exists()  # not recorded as handled
    proxy.clear()
    counts, _ = run_ingest(spark, tmp_path, proxy.endpoint_url, s3_bucket, **FAST_RETRIES)
    assert counts["objects_new"] == 1 and counts["objects_ingested"] == 1
    assert len({r["trip_id"] for r in bronze_rows(tmp_path)}) == len(bronze_rows(tmp_path)) == 80


def test_a_connection_reset_while_reading_is_retried_within_the_run(spark, tmp_path, s3_bucket, s3, proxy):
    put_day(s3, s3_bucket)
    resets = proxy.add(Fault("GET", rf"/{s3_bucket}/trips/2024/01/01/part-2\.csv$", kind="reset", times=2))
    counts, _ = run_ingest(spark, tmp_path, proxy.endpoint_url, s3_bucket, **FAST_RETRIES)
    assert proxy.hits(resets) == 2
    assert counts["objects_ingested"] == 4 and counts["objects_deferred"] == 0
    assert len(bronze_rows(tmp_path)) == 80


def test_executors_without_access_fail_the_run_and_record_nothing(spark, tmp_path, s3_bucket, s3, proxy):
    put_day(s3, s3_bucket)
    proxy.add(Fault("GET", rf"/{s3_bucket}/trips/.+", kind="deny", times=None))
    with pytest.raises(ingest.EnvironmentFailure, match="AccessDenied.*nothing was committed or recorded"):
        run_ingest(spark, tmp_path, proxy.endpoint_url, s3_bucket, **FAST_RETRIES)
    assert not (tmp_path / "bronze").exists() and not (tmp_path / "ops").exists()
    proxy.clear()
    counts, _ = run_ingest(spark, tmp_path, proxy.endpoint_url, s3_bucket, **FAST_RETRIES)
    assert counts["objects_ingested"] == 4
