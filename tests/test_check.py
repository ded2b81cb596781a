"""The pre-flight check: each onboarding mistake is one line of its report and exit 1, a clean
dataset exits 0, and no table is touched. Real config dirs, real suites, the local S3 endpoint."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess

import boto3
import pytest

from strata.jobs import check
from strata.jobs import ingest
from strata.runner import run

from conftest import REPO, conf_with

HEADER = ("trip_id,vendor_id,pickup_at,dropoff_at,passenger_count,trip_distance,rate_code,pickup_zone,"
          "dropoff_zone,payment_type,fare_amount,extra,tip_amount,tolls_amount,total_amount")


def trip(i: int, vendor="1", distance="2.5") -> str:
    return (f"t-{i},{vendor},2024-01-01 08:{i % 60:02d}:00,2024-01-01 08:{i % 60:02d}:30,1,{distance},1,"
            f"10,20,1,12.5,0.5,2.0,0.0,15.0")


def clean_csv(rows: int = 20) -> str:
    return "\n".join([HEADER] + [trip(i) for i in range(rows)]) + "\n"


@pytest.fixture
def source(s3_endpoint, s3_bucket):
    """Puts objects under the trips prefix of a fresh bucket."""
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")

    def put(name: str, text: str) -> None:
        client.put_object(Bucket=s3_bucket, Key=f"trips/2024/01/01/{name}", Body=text.encode())
    return put


def run_check(monkeypatch, capsys, tmp_path, endpoint, bucket, edit=lambda text: text, *extra):
    """check in process on a copy of conf/ (edited); returns (exit code, report, summary)."""
    conf = conf_with(tmp_path, lambda text: edit(text.replace("bucket: strata-raw", f"bucket: {bucket}")))
    monkeypatch.setenv("STRATA_CONF_DIR", conf)
    if "STRATA_EXPECTATIONS_DIR" not in os.environ:  # else <conf>/../expectations, which the copy lacks
        monkeypatch.setenv("STRATA_EXPECTATIONS_DIR", str(REPO / "expectations"))
    if endpoint is None:
        monkeypatch.delenv("STRATA_S3__ENDPOINT_URL", raising=False)
    else:
        monkeypatch.setenv("STRATA_S3__ENDPOINT_URL", endpoint)
    code = check.main(["--env", "local", "--dataset", "trips", "--run-date", "2024-01-01", *extra])
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 1  # stdout: the summary line only
    summary = json.loads(captured.out)
    assert summary["job"] == "check" and summary["tables"] == {}
    assert summary["status"] == ("ok" if code == 0 else "failed")
    # Touches no table: the lake root (tmp_path/lake) is never created, nor Data Docs.
    assert not (tmp_path / "lake").exists() and not (tmp_path / ".strata").exists()
    return code, captured.err, summary


def failed(summary: dict) -> dict[str, str]:
    return {c["check"]: c["detail"] for c in summary["checks"] if c["ok"] is False}


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("keys: [trip_id]", "keys: [trip_idd]"),
     "key 'datasets.trips.keys' names unknown column 'trip_idd': not in 'schema' or 'derive' (did you mean 'trip_id'?)"),
    (lambda t: t.replace("vendor_id: int", "vendor_id: integr"),
     "key 'datasets.trips.schema.vendor_id' is not a Spark SQL type"),
    (lambda t: t.replace("group_by: [event_date, pickup_zone]", "group_by: [pickup_zone]\n    partition_by: [event_date]"),
     "key 'datasets.trips.gold.analysis.partition_by' names 'event_date', which is not in group_by"),
])
def test_config_mistakes_are_one_line_of_the_report(monkeypatch, capsys, tmp_path, edit, message):
    code, report, summary = run_check(monkeypatch, capsys, tmp_path, "http://127.0.0.1:9", "unused", edit)
    assert code == 1 and summary["problems"] == 1
    assert message in failed(summary)["config"] and "\n" not in failed(summary)["config"]
    assert "  FAIL  config: " in report and message in report
    assert "  skip  sample: needs a valid config" in report


def test_an_unknown_expectation_type_is_named(monkeypatch, capsys, tmp_path, s3_endpoint, s3_bucket, source):
    expectations = tmp_path / "expectations"
    shutil.copytree(REPO / "expectations", expectations)
    suite = expectations / "silver" / "trips.json"
    suite.write_text(suite.read_text().replace('"expect_column_values_to_be_unique"', '"expect_column_values_to_be_purple"'))
    monkeypatch.setenv("STRATA_EXPECTATIONS_DIR", str(expectations))
    source("a.csv", "trip_id\n")  # wrong header: the sample stops before Spark
    code, report, summary = run_check(monkeypatch, capsys, tmp_path, s3_endpoint, s3_bucket)
    assert code == 1
    assert "silver/trips.json: expectations[1] (expect_column_values_to_be_purple)" in failed(summary)["suites"]
    assert "  ok    config: " in report and "  ok    source: " in report


def test_an_unreachable_endpoint_says_what_to_start(monkeypatch, capsys, tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, report, summary = run_check(monkeypatch, capsys, tmp_path, f"http://127.0.0.1:{port}", "strata-raw")
    assert code == 1 and summary["problems"] == 1
    assert failed(summary)["source"] == (f"cannot list s3://strata-raw/trips: no S3 endpoint at "
                                         f"http://127.0.0.1:{port}: start one with `make s3` and export the lines it prints")
    assert "  skip  sample: needs a readable source" in report


def test_local_env_without_an_endpoint_names_make_s3(monkeypatch, capsys, tmp_path):
    code, _, summary = run_check(monkeypatch, capsys, tmp_path, None, "strata-raw")
    assert code == 1
    assert "STRATA_S3__ENDPOINT_URL is not set: start one with `make s3`" in failed(summary)["source"]


def test_a_missing_local_folder_is_one_line(monkeypatch, capsys, tmp_path):
    nowhere = tmp_path / "raw" / "trips"
    code, report, summary = run_check(monkeypatch, capsys, tmp_path, None, "strata-raw",
                                      lambda text: text.replace("source:\n", f"source:\n  path: {nowhere}\n", 1))
    assert code == 1 and summary["problems"] == 1
    assert failed(summary)["source"] == f"cannot list file://{nowhere}/: no such folder"
    assert "  skip  sample: needs a readable source" in report


def test_a_missing_bucket_is_one_line(monkeypatch, capsys, tmp_path, s3_endpoint):
    code, _, summary = run_check(monkeypatch, capsys, tmp_path, s3_endpoint, "no-such-bucket-here")
    assert code == 1
    assert failed(summary)["source"].startswith("cannot list s3://no-such-bucket-here/trips: NoSuchBucket")


def test_a_wrong_header_fails_the_sample(monkeypatch, capsys, tmp_path, s3_endpoint, s3_bucket, source):
    source("a.csv", clean_csv().replace("vendor_id", "vendor", 1))
    code, report, summary = run_check(monkeypatch, capsys, tmp_path, s3_endpoint, s3_bucket)
    assert code == 1
    assert failed(summary) == {"sample": "trips/2024/01/01/a.csv: wrong header: missing ['vendor_id'], "
                                         "unexpected ['vendor']"}


def test_the_sample_counts_quarantined_rows_per_rule(monkeypatch, capsys, tmp_path, s3_endpoint, s3_bucket, source):
    rows = [trip(i) for i in range(16)] + [trip(16, vendor="x"), trip(17, vendor="y"),
                                           trip(18, distance="999"), trip(19, distance="-1")]
    source("a.csv", "\n".join([HEADER, *rows]) + "\n")
    code, report, summary = run_check(monkeypatch, capsys, tmp_path, s3_endpoint, s3_bucket)
    [sample] = [c for c in summary["checks"] if c["check"] == "sample"]
    assert sample["rows"] == 20 and sample["quarantined"] == 4
    assert sample["reasons"] == {"cast vendor_id to int": 2, "trip_distance between 0 and 200": 2}
    assert "2 row(s): cast vendor_id to int" in report
    # 20% of the sample is more than the default 5%: a problem; within a stated share it is not.
    assert code == 1 and "more than --max-quarantined 5%" in sample["detail"]
    code, _, summary = run_check(monkeypatch, capsys, tmp_path / "again", s3_endpoint, s3_bucket,
                                 lambda text: text, "--max-quarantined", "0.25")
    assert code == 0 and summary["problems"] == 0


def test_a_clean_dataset_passes(monkeypatch, capsys, tmp_path, s3_endpoint, s3_bucket, source):
    source("a.csv", clean_csv())
    source("b.csv", clean_csv())
    code, report, summary = run_check(monkeypatch, capsys, tmp_path, s3_endpoint, s3_bucket)
    assert code == 0, report
    assert [c["ok"] for c in summary["checks"]] == [True, True, True, True]
    assert "2 object(s) match" in report and "40 row(s) read: 0 would be quarantined" in report
    assert report.rstrip().splitlines()[-2] == "check: all well"


def test_a_local_job_without_an_endpoint_fails_in_one_line(monkeypatch, capsys, tmp_path):
    """Not AWS's "Unable to locate credentials": the run says what to start."""
    monkeypatch.setenv("STRATA_CONF_DIR", conf_with(tmp_path, lambda text: text))
    monkeypatch.setenv("STRATA_EXPECTATIONS_DIR", str(REPO / "expectations"))
    monkeypatch.delenv("STRATA_S3__ENDPOINT_URL", raising=False)
    code = run("ingest", ingest.run, ["--env", "local", "--dataset", "trips"], ingest.add_arguments)
    captured = capsys.readouterr()
    assert code == 1
    assert json.loads(captured.out)["error"] == (
        "SourceError: env local reads raw data from a local S3 endpoint (s3.embedded) but "
        "STRATA_S3__ENDPOINT_URL is not set: start one with `make s3` and export the lines it prints")
    assert not (tmp_path / "lake").exists()


@pytest.mark.slow
def test_check_through_spark_submit(tmp_path, s3_endpoint, s3_bucket, source):
    source("a.csv", clean_csv())
    lake = tmp_path / "lake"
    environ = {**os.environ, "STRATA_S3__ENDPOINT_URL": s3_endpoint, "STRATA_LAKE__ROOT": str(lake),
               "STRATA_DATASETS__TRIPS__SOURCE__BUCKET": s3_bucket}
    done = subprocess.run([str(REPO / "spark-submit.sh"), "check", "--env", "local", "--dataset", "trips"],
                          env=environ, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "ok" and done.stdout.count("\n") == 1
    assert "check: all well" in done.stderr and not lake.exists()
    # A config mistake is still the check's own report, not the pre-submit check's one line.
    done = subprocess.run([str(REPO / "spark-submit.sh"), "check", "--env", "local", "--dataset", "nope"],
                          env=environ, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 1 and "  FAIL  config: unknown dataset 'nope'" in done.stderr
