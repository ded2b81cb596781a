"""The job contract: exit codes and the final JSON line, in process and through spark-submit.sh."""
from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from deltalake import DeltaTable

from strata.errors import QualityGateBlocked
from strata.runner import job_arguments, run

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


def with_dataset(parser):
    parser.add_argument("--dataset", required=True)


@pytest.mark.parametrize("argv, error", [
    (["--run-date", "2024-13-45"], "argument --run-date: not a date YYYY-MM-DD: '2024-13-45'"),
    (["--run-date", "2024-02-03", "--dataset", "trips", "--no-such-option", "x"], "unrecognized arguments: --no-such-option x"),
    (["--run-date", "2024-02-03"], "the following arguments are required: --dataset"),
])
def test_bad_arguments_are_exit_1_with_the_summary_line(capsys, argv, error):
    called = []
    code = run("unit", lambda ctx: called.append(ctx) or {}, ["--env", "local", "--run-id", "r-7", *argv],
               add_arguments=with_dataset)
    captured = capsys.readouterr()
    assert code == 1 and not called  # not 2: 2 means a quality gate blocked
    assert captured.out.count("\n") == 1  # the summary line only
    summary = last_json(captured.out)
    assert summary["status"] == "failed" and summary["job"] == "unit" and summary["env"] == "local"
    assert summary["run_id"] == "r-7" and summary["tables"] == {}
    assert error in summary["error"] and error in captured.err
    assert summary["run_date"] == ("2024-02-03" if "2024-02-03" in argv else None)


def test_stdout_carries_the_summary_line_only(capsys):
    def noisy(ctx):
        print("a stray print from a library")
        import logging
        logging.getLogger("strata.test").warning("a log line")
        return {"things": 1}

    assert run("unit", noisy, ["--env", "local"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 1 and last_json(captured.out)["things"] == 1
    assert "a stray print from a library" in captured.err


@pytest.mark.parametrize("error, code, status", [
    (RuntimeError("disk full"), 1, "failed"),
    (QualityGateBlocked("1 expectation failed"), 2, "blocked"),
])
def test_a_failed_run_keeps_the_counts_it_recorded(capsys, error, code, status):
    def body(ctx):
        ctx.counts["rows_read"] = 5
        ctx.counts.update(stage="gate")
        raise error

    assert run("unit", body, ["--env", "local"]) == code
    summary = last_json(capsys.readouterr().out)
    assert summary["status"] == status and summary["rows_read"] == 5 and summary["stage"] == "gate"
    assert str(error) in summary["error"]


def test_returned_counts_win_over_recorded_ones_and_never_the_contract_keys(capsys):
    def body(ctx):
        ctx.counts.update(rows=1, kept=True)
        return {"rows": 2, "status": "nonsense"}

    assert run("unit", body, ["--env", "local"]) == 0
    summary = last_json(capsys.readouterr().out)
    assert summary["rows"] == 2 and summary["kept"] is True and summary["status"] == "ok"


def broken_suites(tmp_path, layer, table):
    """A copy of expectations/ whose <layer>/<table> suite has an unknown expectation type."""
    target = tmp_path / "expectations"
    shutil.copytree(REPO / "expectations", target)
    path = target / layer / f"{table}.json"
    suite = json.loads(path.read_text())
    suite["expectations"].append({"type": "expect_column_values_to_be_dobule", "kwargs": {"column": "x"}})
    path.write_text(json.dumps(suite))
    return target


@pytest.mark.parametrize("job, layer, table", [
    ("ingest", "bronze", "trips"),
    ("silver", "silver", "trips"),
    ("gold", "gold", "trips_features"),
    ("gold", "gold", "trips_daily_zone"),
    ("pipeline", "gold", "trips_daily_zone"),
])
def test_suites_are_loaded_before_spark(capsys, monkeypatch, tmp_path, job, layer, table):
    monkeypatch.setenv("STRATA_EXPECTATIONS_DIR", str(broken_suites(tmp_path, layer, table)))
    called = []
    argv = ["--env", "local", "--run-date", "2024-02-03"] + ([] if job == "pipeline" else ["--dataset", "trips"])
    add_arguments = (lambda p: p.add_argument("--dataset", action="append")) if job == "pipeline" else with_dataset
    assert run(job, lambda ctx: called.append(ctx) or {}, argv, add_arguments=add_arguments) == 1
    captured = capsys.readouterr()
    summary = last_json(captured.out)
    assert not called and summary["status"] == "failed"
    assert f"{layer}/{table}.json" in summary["error"] and "expect_column_values_to_be_dobule" in summary["error"]
    assert "\n" not in summary["error"]


def test_suites_of_layers_without_gates_are_not_required(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("STRATA_EXPECTATIONS_DIR", str(broken_suites(tmp_path, "silver", "trips")))
    monkeypatch.setenv("STRATA_QUALITY__GATES", "false")
    assert run("silver", lambda ctx: {"ran": True}, ["--env", "local", "--dataset", "trips"],
               add_arguments=with_dataset) == 0
    assert last_json(capsys.readouterr().out)["ran"] is True


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


@pytest.mark.parametrize("job, args, error", [
    ("lake_smoke", ["--run-date", "2024-13-45"], "argument --run-date: not a date YYYY-MM-DD"),
    ("lake_smoke", ["--rows", "10", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    ("silver", ["--run-date", "2024-01-01"], "the following arguments are required: --dataset"),
    ("silver", ["--dataset", "trips", "--run-date", "2024-01-01", "--datset", "x"], "unrecognized arguments: --datset x"),
])
def test_spark_submit_refuses_bad_arguments_before_spark(job, args, error):
    # A SPARK_HOME without spark-submit: reaching it would fail differently (no summary line).
    result = submit(job, "--env", "local", *args, env={"SPARK_HOME": "/nonexistent/spark"}, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stdout.count("\n") == 1
    summary = last_json(result.stdout)
    assert summary["job"] == job and summary["status"] == "failed" and error in summary["error"]
    assert error in result.stderr


def describe(add_arguments) -> list[tuple]:
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    return [(a.dest, tuple(a.option_strings), a.required, a.default, a.nargs, a.type, type(a).__name__)
            for a in parser._actions]


@pytest.mark.parametrize("job", ["ingest", "silver", "gold", "anomalies", "pipeline", "lake_smoke"])
def test_check_reads_each_jobs_own_arguments(job):
    module = importlib.import_module(f"strata.jobs.{job}")
    assert describe(job_arguments(job)) == describe(module.add_arguments)


@pytest.mark.parametrize("job", ["ingest", "silver", "gold", "anomalies", "pipeline"])
def test_check_reads_a_jobs_arguments_without_importing_spark(job):
    """spark-submit.sh checks arguments before the JVM: that must not cost a pyspark import."""
    code = (f"import sys; from strata.runner import job_arguments; job_arguments({job!r}); "
            "assert 'pyspark' not in sys.modules, sorted(m for m in sys.modules if m.startswith('pyspark'))[:3]")
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO / "lib")},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]


def test_check_imports_a_job_whose_arguments_need_its_module(tmp_path, monkeypatch):
    package = tmp_path / "fake_jobs"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "needs_module.py").write_text(
        "import argparse\nKINDS = ('a', 'b')\n\n"
        "def add_arguments(parser: argparse.ArgumentParser) -> None:\n"
        "    parser.add_argument('--kind', choices=KINDS, required=True)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    parser = argparse.ArgumentParser()
    job_arguments("needs_module", package="fake_jobs")(parser)
    assert parser.parse_args(["--kind", "b"]).kind == "b"
    with pytest.raises(LookupError, match="unknown job 'nope'"):
        job_arguments("nope", package="fake_jobs")


def test_spark_submit_job_help_needs_no_spark():
    result = submit("silver", "--help", env={"SPARK_HOME": "/nonexistent/spark"}, timeout=120)
    assert result.returncode == 0 and "--dataset" in result.stdout and "--run-date" in result.stdout


@pytest.mark.slow
def test_a_failed_run_reports_tables_as_they_are_at_the_end(tmp_path):
    """A body that records a table, writes to it again, then fails: the summary has its counts and
    the table's version and rows after the second write (a real Spark session, in a subprocess)."""
    script = tmp_path / "job.py"
    script.write_text(
        "import sys\n"
        "import pyarrow as pa\n"
        "from deltalake import write_deltalake\n"
        "from strata.lake import TableSpec\n"
        "from strata.runner import run\n"
        "TABLE = TableSpec('smoke', 'refreshed')\n"
        "def body(ctx):\n"
        "    write_deltalake(ctx.lake.path(TABLE), pa.table({'x': [1, 2]}))\n"
        "    ctx.record_table(TABLE)\n"
        "    ctx.counts['written'] = 2\n"
        "    write_deltalake(ctx.lake.path(TABLE), pa.table({'x': [3]}), mode='append')\n"
        "    raise RuntimeError('failed after the second write')\n"
        "sys.exit(run('refresh', body, sys.argv[1:]))\n")
    env = {**os.environ, "STRATA_LAKE__ROOT": str(tmp_path / "lake"), "PYTHONPATH": str(REPO / "lib"),
           "STRATA_SPARK__MASTER": "local[1]"}
    result = subprocess.run([sys.executable, str(script), "--env", "local"], capture_output=True, text=True,
                            env=env, timeout=300, cwd=REPO)
    assert result.returncode == 1, result.stderr[-2000:]
    summary = last_json(result.stdout)
    assert summary["status"] == "failed" and "failed after the second write" in summary["error"]
    assert summary["written"] == 2
    table = summary["tables"]["smoke.refreshed"]
    assert table["version"] == 1 and table["rows"] == 3


@pytest.mark.slow
def test_spark_submit_stdout_is_the_summary_line_when_the_job_fails(tmp_path):
    """Spark's PythonRunner sends the driver's stderr to spark-submit's stdout: the failure line
    and any log line must still reach stderr only."""
    result = submit("lake_smoke", "--env", "local", "--rows", "0", "--run-date", "2024-03-01",
                    env={"STRATA_LAKE__ROOT": str(tmp_path / "lake")})
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stdout.count("\n") == 1, result.stdout[-2000:]
    summary = last_json(result.stdout)
    assert summary["status"] == "failed" and "read back 0 rows" in summary["error"]
    assert "lake_smoke: failed: RuntimeError: read back 0 rows" in result.stderr


def supervised(script: str, *, wait_for: str | None = None, send=None) -> subprocess.CompletedProcess:
    """python -m strata.runner --submit around a Python child standing in for spark-submit."""
    command = [sys.executable, "-m", "strata.runner", "--submit", "unit", "local", "--",
               sys.executable, "-u", "-c", script]
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib")}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if wait_for:
        for line in process.stderr:
            if wait_for in line:
                break
        process.send_signal(send)
    out, err = process.communicate(timeout=60)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def test_supervisor_keeps_stdout_to_the_summary_line():
    result = supervised(
        "import json, sys\n"
        "print('a log line the driver wrote to stderr')\n"
        "print(json.dumps({'job': 'unit', 'status': 'blocked', 'tables': {}}))\n"
        "sys.exit(2)\n")
    assert result.returncode == 2
    assert result.stdout == '{"job": "unit", "status": "blocked", "tables": {}}\n'
    assert "a log line the driver wrote to stderr" in result.stderr


def test_supervisor_reports_a_run_that_ended_without_a_summary():
    result = supervised("import sys\nprint('killed before the end')\nsys.exit(0)\n")
    assert result.returncode == 1 and result.stdout.count("\n") == 1
    summary = last_json(result.stdout)
    assert summary["status"] == "failed" and "without a summary line" in summary["error"]
    crashed = supervised("import sys\nsys.exit(134)\n")
    assert crashed.returncode == 134 and last_json(crashed.stdout)["status"] == "failed"


def test_supervisor_forwards_termination_to_spark_submit():
    result = supervised(
        "import json, signal, sys, time\n"
        "def stop(*_):\n"
        "    print(json.dumps({'job': 'unit', 'status': 'failed', 'tables': {}, 'error': 'terminated'}))\n"
        "    sys.exit(143)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "print('started', file=sys.stderr)\n"
        "time.sleep(60)\n", wait_for="started", send=signal.SIGTERM)
    assert result.returncode == 143 and last_json(result.stdout)["error"] == "terminated"


def test_delta_spark_engine_without_connector_is_a_clear_error():
    result = submit("lake_smoke", "--env", "local", env={"STRATA_LAKE__ENGINE": "delta-spark"})
    assert result.returncode == 1
    assert "delta-spark" in result.stderr and "delta_spark_packages" in result.stderr
    assert result.stdout.count("\n") == 1 and last_json(result.stdout)["status"] == "failed"


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
        # stdout carries the summary line only: Spark, log4j and our logging write to stderr
        assert result.stdout.count("\n") == 1, result.stdout[-2000:]
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
