"""A real Spark standalone cluster on loopback (master + two one-core workers from the pip install),
and jobs submitted to it through spark-submit.sh: executors are separate JVMs and Python workers.
The whole pipeline on it writes the same tables as a local-mode run of the same raw data."""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import socket
import subprocess
import time
from pathlib import Path

import boto3
import pyspark
import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from deltalake import DeltaTable
from mlflow import MlflowClient

from conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
SPARK_HOME = Path(pyspark.__file__).parent
# As many cores as the local-mode master of conf/local.yaml (local[2]): the same default
# parallelism, so the same file splits and partitions.
WORKERS = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


def stop(procs: list[subprocess.Popen]) -> None:
    """Terminate the processes this module started (workers first, each by its pid), then kill
    any that has not exited within 30 s."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory):
    logs = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_WORKER_DIR": str(logs / "work")}
    port, ui = free_port(), free_port()
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    started: list[subprocess.Popen] = []
    try:
        started.append(subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
             "--port", str(port), "--webui-port", str(ui)], env=env,
            stdout=open(logs / "master.log", "w"), stderr=subprocess.STDOUT))
        wait_for_port(port)
        url = f"spark://127.0.0.1:{port}"
        worker_logs = [logs / f"worker-{n}.log" for n in range(WORKERS)]
        for log in worker_logs:
            started.insert(0, subprocess.Popen(
                [spark_class, "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1",
                 "--cores", "1", "--memory", "1g", "--webui-port", str(free_port())], env=env,
                stdout=open(log, "w"), stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        for log in worker_logs:
            while "Successfully registered with master" not in log.read_text():
                assert time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(0.3)
        yield url
    finally:
        stop(started)


def test_job_runs_on_standalone_cluster(standalone_cluster, tmp_path):
    env = {**os.environ, "STRATA_LAKE__ROOT": str(tmp_path / "lake")}
    result = subprocess.run([str(REPO / "spark-submit.sh"), "lake_smoke", "--env", "local", "--master", standalone_cluster,
                             "--run-date", "2024-04-01", "--rows", "2000"],
                            capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["status"] == "ok" and summary["rows_read"] == 2001
    assert summary["master"] == standalone_cluster
    assert DeltaTable(summary["tables"]["smoke.events"]["path"]).to_pyarrow_table().num_rows == 2001


# --- the whole pipeline, cluster against local mode ------------------------------------------------

RUN_DATE = "2024-01-01"
# One day of demo data, 4 objects (every format) of 1,000 rows: enough usable rows for the
# anomalies job (min_rows 1000) and for tips to train and be promoted, little enough to be quick.
ROWS_PER_OBJECT = 1_000
# Per run, not per data: run ids (the pipeline's and MLflow's) and instants.
PER_RUN = {"run_id", "_run_id", "_refined_run_id", "mlflow_run_id", "_ingested_at", "scored_at", "flagged_at",
           "quarantined_at"}


def start_pipeline(root: Path, endpoint: str, master: str | None) -> subprocess.Popen:
    """`pipeline` for the run date through spark-submit.sh, on a lake, MLflow store and Data Docs
    of its own under root; stdout to root/stdout.log, stderr to root/stderr.log."""
    root.mkdir(parents=True)
    env = {**os.environ, "STRATA_LAKE__ROOT": str(root / "lake"), "STRATA_S3__ENDPOINT_URL": endpoint,
           "STRATA_MLFLOW__TRACKING_URI": f"sqlite:///{root}/mlflow.db",
           "STRATA_MLFLOW__ARTIFACT_LOCATION": str(root / "artifacts"),
           "STRATA_QUALITY__DATA_DOCS_DIR": str(root / "docs"),
           # fewer k to try than the shipped [2, 6]: the same code path (a search), less time
           "STRATA_DATASETS__TRIPS__ANOMALIES__K_RANGE": "[2, 3]"}
    command = [str(REPO / "spark-submit.sh"), "pipeline", "--env", "local", "--dataset", "trips",
               "--run-date", RUN_DATE] + (["--master", master] if master else [])
    return subprocess.Popen(command, env=env, cwd=REPO, stdout=open(root / "stdout.log", "w"),
                            stderr=open(root / "stderr.log", "w"))


def finished(proc: subprocess.Popen, root: Path) -> dict:
    code = proc.wait(timeout=1200)
    assert code == 0, (root / "stderr.log").read_text()[-4000:]
    summary = json.loads((root / "stdout.log").read_text().strip().splitlines()[-1])
    assert summary["status"] == "ok", summary
    return summary


def lake_tables(lake: Path) -> set[str]:
    return {str(log.parent.relative_to(lake)) for layer in ("bronze", "silver", "gold", "quarantine", "ml")
            for log in (lake / layer).glob("*/_delta_log")}


def read(spark, path: Path):
    table = DeltaTable(str(path)).to_pyarrow_table()
    return spark.createDataFrame(table.select([c for c in table.column_names if c not in PER_RUN]))


def assert_same_tables(spark, lake_a: Path, lake_b: Path) -> set[str]:
    """Every bronze, silver, gold, quarantine and ml table of lake_a is in lake_b with the same
    rows (per-run columns left out; floats to 1e-9), and lake_b has no other."""
    names = lake_tables(lake_a)
    assert names == lake_tables(lake_b)
    for name in sorted(names):
        rows_a, rows_b = DeltaTable(str(lake_a / name)).count(), DeltaTable(str(lake_b / name)).count()
        assert rows_a == rows_b, (name, rows_a, rows_b)
        if rows_a == 0:  # Spark cannot take an Arrow table without chunks; nothing else to compare
            continue
        expected, actual = read(spark, lake_a / name), read(spark, lake_b / name)
        floats = [f.name for f in expected.schema.fields if f.dataType.typeName() in ("double", "float")]
        try:
            if floats:
                assert_approx_df_equality(actual, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)
            else:
                assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)
        except AssertionError as exc:
            raise AssertionError(f"{name} differs between the cluster and local mode:\n{exc}") from None
    return names


def registry(root: Path) -> dict[str, dict]:
    """Per registered model: the champion's version, its tags and its run's params, metrics and
    tags, less what names the run's own lake, run or instant."""
    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    found = {}
    for name in ("tips", "trips_anomalies"):
        version = client.get_model_version_by_alias(name, "champion")
        run = client.get_run(version.run_id).data
        found[name] = {"version": version.version, "version_tags": version.tags,
                       "params": {k: v for k, v in run.params.items() if k != "table_path"},
                       "tags": {k: v for k, v in run.tags.items() if not k.startswith("mlflow.") and k != "strata.run_id"},
                       "metrics": run.metrics}
    return found


def same(a, b) -> bool:
    """a equals b, numbers (also in strings and JSON strings) to 1e-9 relative: the logistic
    regression's sums are merged in the order tasks finish, which moves its last bits between
    any two runs (two local ones too)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, str) and isinstance(b, str) and a != b:
        for parse in (json.loads, float):
            try:
                return same(parse(a), parse(b))
            except ValueError:
                pass
        return False
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def test_pipeline_on_the_cluster_writes_what_local_mode_writes(standalone_cluster, spark, tmp_path):
    """One day of demo data (every format, planted problems) through the whole pipeline twice,
    at once: in local mode (local[2]) and on the two-core standalone cluster, each on a lake and
    MLflow store of its own. Every table and model is the same."""
    from strata.config import load_config
    from strata_dev.demo_data import DemoDataSpec, upload
    from strata_dev.local_s3 import LocalS3

    source = load_config("local").dataset("trips").source
    local_root, cluster_root = tmp_path / "local", tmp_path / "cluster"
    with LocalS3() as s3:
        client = boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-east-1")
        upload(DemoDataSpec(start_date=dt.date.fromisoformat(RUN_DATE), days=1, rows_per_object=ROWS_PER_OBJECT),
               client, source.bucket, source.prefix)
        runs = []
        try:
            runs.append(start_pipeline(local_root, s3.endpoint_url, None))
            runs.append(start_pipeline(cluster_root, s3.endpoint_url, standalone_cluster))
            local, cluster = finished(runs[0], local_root), finished(runs[1], cluster_root)
        finally:
            stop(runs)

    # every stage ran, none skipped, in both
    for summary in (local, cluster):
        stages = summary["stages"]
        assert set(stages) == {"trips.ingest", "trips.silver", "trips.gold", "trips.anomalies", "trips.train.tips",
                               "trips.predict.tips", "trips.monitor.tips"}, stages
        assert not any(counts.get("skipped") for counts in stages.values()), stages
        assert stages["trips.train.tips"]["promotion"]["promoted"] is True, stages["trips.train.tips"]

    # the monitor decided the same; its tables hold the probabilities' quantiles and bins, which
    # move in their last bits with the logistic regression's sums (see `same`): compared there
    assert local["stages"]["trips.monitor.tips"]["retrain"] == cluster["stages"]["trips.monitor.tips"]["retrain"]
    assert local["stages"]["trips.monitor.tips"]["drifted_features"] == \
        cluster["stages"]["trips.monitor.tips"]["drifted_features"]
    names = assert_same_tables(spark, local_root / "lake", cluster_root / "lake")
    assert {"bronze/trips", "silver/trips", "quarantine/trips", "gold/trips_features", "gold/trips_daily_zone",
            "gold/tips_predictions", "gold/trips_flagged", "quarantine/trips_flagged"} <= names, names

    # the same models: chosen hyperparameters, threshold, k, metrics and registered versions
    expected, actual = registry(local_root), registry(cluster_root)
    assert same(actual, expected), (actual, expected)
