"""Shared fixtures: one SparkSession for the whole run, one local S3 endpoint."""
from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import boto3
import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Before Spark starts, so its Python workers inherit them too.
from strata_dev.local_s3 import use_local_credentials  # noqa: E402

use_local_credentials()


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("strata-tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def s3_endpoint():
    from strata_dev.local_s3 import LocalS3

    with LocalS3() as server:
        yield server.endpoint_url


@pytest.fixture
def s3_bucket(s3_endpoint):
    """A fresh bucket on the local endpoint."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "s3"])
def lake_root(request, tmp_path):
    """Each lake contract test runs on local disk and on the local S3 endpoint."""
    if request.param == "local":
        return str(tmp_path / "lake"), None
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/lake", endpoint


def conf_with(tmp_path, edit):
    """A copy of conf/ whose trips dataset was changed by edit(text) -> text."""
    import shutil
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    path = conf / "datasets" / "trips.yaml"
    path.write_text(edit(path.read_text()))
    return str(conf)


def job_context(spark, job, dataset, run_date, environ, conf_dir=None, **args):
    """A JobContext on the test session (no spark-submit), configured by env-style overrides."""
    import argparse
    from strata.config import load_config
    from strata.runner import JobContext

    config = load_config("local", conf_dir, environ=environ)
    namespace = argparse.Namespace(dataset=dataset, **args)
    return JobContext(job, "local", uuid.uuid4().hex[:12], run_date, config, namespace, _spark=spark)
