"""The job contract: exit codes and the final JSON line, in process and through spark-submit.sh."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
from deltalake import DeltaTable

from strata.errors import QualityGateBlocked
from strata.runner import run

from conftest import REPO


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


@pytest.mark.parametrize("body, code, status", [
    (lambda ctx: {"things": 3}, 0, "ok"),
    (lambda ctx: (_ for _ in ()).throw(QualityGateBlocked("2 expectations failed")), 2, "blocked"),
    (lambda ctx: 1 / 0, 1, "failed"),
])
def test_runner_exit_codes_and_summary(capsys, body, code, status):
    assert run("unit", body, ["--env", "local", "--run-date", "2024-02-03", "--run-id", "r-1"]) == code
    summary = last_json(capsys.readouterr().out)
    assert summary["job"] == "unit" and summary["run_id"] == "r-1" and summary["run_date"] == "2024-02-03"
    assert summary["env"] == "local" and summary["status"] == status and summary["tables"] == {}
    if status == "ok":
        assert summary["things"] == 3
    else:
        assert summary["error"]


def test_runner_config_error_is_exit_1(capsys):
    assert run("unit", lambda ctx: {}, ["--env", "staging"]) == 1
    captured = capsys.readouterr()
    assert last_json(captured.out)["status"] == "failed"
    assert "unknown environment 'staging'" in captured.err


def submit(job, *args, env=None, timeout=300):
    environ = {**os.environ, **(env or {})}
    return subprocess.run([str(REPO / "spark-submit.sh"), job, *args], capture_output=True, text=True,
                          env=environ, timeout=timeout, cwd=REPO)


def test_spark_submit_help():
    result = submit("--help")
    assert result.returncode == 0
    assert "Usage: ./spark-submit.sh JOB" in result.stdout and "Exit codes" in result.stdout


def test_spark_submit_unknown_job_and_bad_env():
    unknown = submit("no_such_job")
    assert unknown.returncode == 1 and "unknown job 'no_such_job'" in unknown.stderr
    bad_env = submit("lake_smoke", "--env", "staging")
    assert bad_env.returncode == 1
    assert last_json(bad_env.stdout)["status"] == "failed"
    assert "unknown environment 'staging'" in bad_env.stderr


def test_delta_spark_engine_without_connector_is_a_clear_error():
    result = submit("lake_smoke", "--env", "local", env={"STRATA_LAKE__ENGINE": "delta-spark"})
    assert result.returncode == 1
    assert "delta-spark" in result.stderr and "delta_spark_packages" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("where", ["local", "s3"])
def test_lake_smoke_through_spark_submit_is_idempotent(tmp_path, where, request):
    env = {"STRATA_LAKE__ROOT": str(tmp_path / "lake")}
    options = None
    if where == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = request.getfixturevalue("s3_bucket")
        env = {"STRATA_LAKE__ROOT": f"s3://{bucket}/lake", "STRATA_S3__ENDPOINT_URL": endpoint}
        options = {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
    args = ["--env", "local", "--master", "local[2]", "--run-date", "2024-03-01", "--rows", "500"]
    summaries = []
    for _ in range(2):
        result = submit("lake_smoke", *args, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        summaries.append(last_json(result.stdout))
    first, second = summaries
    assert first["status"] == "ok" and first["rows_read"] == 501
    table = first["tables"]["smoke.events"]
    assert table["rows"] == 501 and table["path"].endswith("/smoke/events")
    # the re-run replaced the date's rows: same contents, newer versions
    assert second["tables"]["smoke.events"]["rows"] == 501
    assert second["tables"]["smoke.events"]["version"] == table["version"] + 2
    delta = DeltaTable(second["tables"]["smoke.events"]["path"], storage_options=options)
    assert delta.to_pyarrow_table().num_rows == 501
    assert {h.get("strata.run_id") for h in delta.history()} >= {first["run_id"], second["run_id"]}
