"""The Dagster definitions (orchestration/): what they declare, how a job's exit code and summary
line become Dagster's outcome (a stand-in script, no Spark), and materialisations in process through
spark-submit.sh on a lake of their own: one partition, a 3-day backfill and its re-run, a gate that
blocks. The monitor asset's runs are the stand-in's (tests/test_monitor.py runs the job itself)."""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
import uuid
from pathlib import Path

import boto3
import dagster as dg
import pytest
from deltalake import DeltaTable

from conftest import REPO
from orchestration import submit
from orchestration.definitions import RETRAIN_TRIGGERED, RUN_DATE_TAG, build_definitions
from orchestration.submit import StrataJobs

DAILY = ["trips_ingest", "trips_silver", "trips_gold", "trips_anomalies", "tips_predict", "tips_monitor"]


def keys(*names: str) -> list[dg.AssetKey]:
    return [dg.AssetKey(name) for name in names]


# --- definitions and the summary line's mapping (no Spark) -----------------------------------------

def test_definitions_load_from_the_config():
    defs = build_definitions()
    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == set(DAILY) | {"tips_train"}
    parents = {k.to_user_string(): sorted(p.to_user_string() for p in graph.get(k).parent_keys)
               for k in graph.get_all_asset_keys()}
    assert parents == {"trips_ingest": [], "trips_silver": ["trips_ingest"], "trips_gold": ["trips_silver"],
                       "trips_anomalies": ["trips_silver"], "tips_train": ["trips_gold"],
                       "tips_predict": ["tips_train", "trips_gold"], "tips_monitor": ["tips_predict"]}
    for name in DAILY:
        partitions = graph.get(dg.AssetKey(name)).partitions_def
        assert isinstance(partitions, dg.DailyPartitionsDefinition) and partitions.start.date() == dt.date(2024, 1, 1)
    assert all(a.op.retry_policy.max_retries == 2 for a in defs.assets)
    assert graph.get(dg.AssetKey("tips_train")).partitions_def is None
    daily = repo.get_job("daily_job").asset_layer.executable_asset_keys
    assert set(daily) == set(keys(*DAILY))
    assert {s.name: s.cron_schedule for s in repo.schedule_defs} == {"daily_schedule": "0 2 * * *",
                                                                     "tips_weekly_train": "0 3 * * 1"}
    assert [s.name for s in repo.sensor_defs] == ["tips_retrain_on_monitor"]
    assert repo.get_job("tips_train_job").asset_layer.executable_asset_keys == {dg.AssetKey("tips_train")}


def test_summary_line_to_metadata():
    line = {"job": "silver", "env": "local", "run_id": "r1", "run_date": "2024-01-01", "status": "ok",
            "tables": {"silver.trips": {"path": "/lake/silver/trips", "version": 3, "rows": 950}},
            "upserted": 950, "quarantined": 12, "reconciled": True, "features": {"rows": 900, "quarantined": 3},
            "seconds": {"read": 1.5}, "deferred_examples": ["a: b"], "listed_after": None}
    assert submit.parse_summary(["log line\n", json.dumps(line) + "\n", "\n"]) == line
    assert submit.parse_summary(["not json\n"]) is None and submit.parse_summary([]) is None
    meta = submit.summary_metadata(line)
    assert meta["status"].value == "ok" and meta["run_date"].value == "2024-01-01"
    assert meta["silver.trips.version"].value == 3 and meta["silver.trips.rows"].value == 950
    assert meta["silver.trips.path"].value == "/lake/silver/trips"
    assert meta["upserted"] == 950 and meta["quarantined"] == 12 and meta["reconciled"] is True
    assert meta["features.rows"] == 900 and meta["features.quarantined"] == 3 and meta["seconds.read"] == 1.5
    assert meta["deferred_examples"].value == ["a: b"] and "listed_after" not in meta and "error" not in meta
    assert meta["summary"].value == line
    pipeline = {**line, "job": "pipeline", "stages": {"trips.silver": {"upserted": 5, "skipped": "up to date"}},
                "report": "/r.html"}
    meta = submit.summary_metadata(pipeline, "trips.silver")
    assert meta["upserted"] == 5 and meta["skipped"] == "up to date" and meta["report"] == "/r.html"
    assert "quarantined" not in meta and meta["silver.trips.rows"].value == 950


def test_pipeline_stage_argument():
    """What each stage asset runs: `pipeline --stage JOB`; an unknown stage fails before any table
    is touched."""
    import argparse

    from strata.config import load_config
    from strata.jobs import pipeline
    from strata.runner import JobContext, parse_args

    args = parse_args("pipeline", ["--dataset", "trips", "--stage", "silver", "--stage", "gold"], pipeline.add_arguments)
    assert args.stages == ["silver", "gold"] and args.dataset == ["trips"]
    assert parse_args("pipeline", [], pipeline.add_arguments).stages is None
    ctx = JobContext("pipeline", "local", "r1", dt.date(2024, 1, 1), load_config("local"),
                     argparse.Namespace(dataset=["trips"], stages=["silver", "nope"]))
    with pytest.raises(ValueError, match=r"--stage nope: not a stage"):
        pipeline.run_stages(ctx)


STAND_IN = """#!{python}
import json, os, sys
args = sys.argv[2:]
arg = lambda name: args[args.index(name) + 1]
job = arg("--stage") if "--stage" in args else sys.argv[1]  # a pipeline of one stage: that stage
with open(os.environ["STAND_IN_CALLS"], "a") as calls:
    calls.write(json.dumps(sys.argv[1:]) + "\\n")
print(f"{{job}}: some log line", file=sys.stderr)
code = int(os.environ.get("STAND_IN_EXIT_" + job.upper(), "0"))
status = {{0: "ok", 1: "failed", 2: "blocked"}}[code]
summary = {{"job": job, "env": arg("--env"), "run_id": arg("--run-id"), "run_date": arg("--run-date"), "status": status,
           "tables": {{f"{{job}}.t": {{"path": "/nowhere", "version": 1, "rows": 10}}}}}}
if code:
    summary["error"] = os.environ.get("STAND_IN_ERROR", "expect_column_values_to_not_be_null(pickup_at) failed")
if "--stage" in args:
    summary["stages"] = {{f"{{arg('--dataset')}}.{{job}}": {{"rows_written": 10}}}}
if job == "monitor":
    summary["retrain"] = {{"triggered": True, "reasons": ["psi(fare_amount) 0.4 > 0.2"]}}
print(json.dumps(summary))
sys.exit(code)
"""


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """A spark-submit.sh that starts no Spark: it records its arguments and exits with
    STAND_IN_EXIT_<JOB> (default 0) after its summary line. Returns the calls made so far."""
    script = tmp_path / "spark-submit.sh"
    script.write_text(STAND_IN.format(python=sys.executable))
    script.chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("STAND_IN_CALLS", str(calls))
    defs = build_definitions(max_retries=2, retry_delay=0, resource=StrataJobs(script=str(script)))

    def made() -> list[list[str]]:
        return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
    return defs, made


def run(defs: dg.Definitions, names: list[str], instance=None, **kwargs) -> dg.ExecuteInProcessResult:
    """The assets named materialised in this process, with the definitions' resources."""
    return dg.materialize(list(defs.assets), selection=keys(*names), instance=instance, resources=defs.resources,
                          raise_on_error=False, **kwargs)


def events(result: dg.ExecuteInProcessResult, kind: dg.DagsterEventType) -> list[str]:
    return [e.step_key for e in result.all_events if e.event_type == kind]


def test_exit_codes_become_dagster_outcomes(stand_in, monkeypatch):
    defs, made = stand_in
    ok = run(defs, ["trips_ingest", "trips_silver"], partition_key="2024-01-02")
    assert ok.success
    assert made() == [["pipeline", "--env", "local", "--run-date", "2024-01-02", "--run-id", ok.run_id,
                       "--dataset", "trips", "--stage", stage] for stage in ("ingest", "silver")]
    meta = ok.asset_materializations_for_node("trips_silver")[0].metadata
    assert meta["silver.t.rows"].value == 10 and meta["status"].value == "ok"
    assert meta["rows_written"].value == 10  # the stage's counts

    # exit 2: the gate's verdict, once, no retry; downstream not run; the error in the failure's metadata
    monkeypatch.setenv("STAND_IN_EXIT_SILVER", "2")
    blocked = run(defs, ["trips_ingest", "trips_silver", "trips_gold"], partition_key="2024-01-02")
    assert not blocked.success
    assert events(blocked, dg.DagsterEventType.STEP_FAILURE) == ["trips_silver"]
    assert events(blocked, dg.DagsterEventType.STEP_UP_FOR_RETRY) == []
    assert [e.asset_key for e in blocked.get_asset_materialization_events()] == [dg.AssetKey("trips_ingest")]
    assert "trips_gold" not in events(blocked, dg.DagsterEventType.STEP_START)
    failure = blocked.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert failure.metadata["exit_code"].value == 2 and "pickup_at" in failure.metadata["error"].value
    assert "blocked" in failure.description

    # exit 1: retried under the policy (2 retries), then failed
    monkeypatch.setenv("STAND_IN_EXIT_SILVER", "1")
    before = len(made())
    failed = run(defs, ["trips_silver"], partition_key="2024-01-02")
    assert not failed.success and len(made()) - before == 3
    assert events(failed, dg.DagsterEventType.STEP_UP_FOR_RETRY) == ["trips_silver"] * 2

    # exit 1 that a retry cannot mend: once
    monkeypatch.setenv("STAND_IN_EXIT_PREDICT", "1")
    monkeypatch.setenv("STAND_IN_ERROR", "NoChampion: model tips has no champion in the registry")
    before = len(made())
    assert not run(defs, ["tips_predict"], partition_key="2024-01-02").success and len(made()) - before == 1


def test_train_runs_on_the_monitor_trigger_and_on_its_weekly_schedule(stand_in):
    defs, made = stand_in
    repo = defs.get_repository_def()
    with dg.instance_for_test() as instance:
        monitored = run(defs, ["tips_monitor"], instance=instance, partition_key="2024-01-03")
        assert monitored.success
        meta = monitored.asset_materializations_for_node("tips_monitor")[0].metadata
        assert meta[RETRAIN_TRIGGERED].value is True and meta["retrain_reasons"].value == ["psi(fare_amount) 0.4 > 0.2"]
        # a second date monitored before the sensor's next tick, and the first date again
        assert run(defs, ["tips_monitor"], instance=instance, partition_key="2024-01-04").success
        assert run(defs, ["tips_monitor"], instance=instance, partition_key="2024-01-03").success
        sensor = repo.get_sensor_def("tips_retrain_on_monitor")
        context = dg.build_multi_asset_sensor_context(monitored_assets=[dg.AssetKey("tips_monitor")],
                                                      instance=instance, repository_def=repo)
        requests = list(sensor(context))
        # every materialisation since the last tick, oldest first; one run key per date
        assert [(r.tags[RUN_DATE_TAG], r.run_key) for r in requests] == [
            ("2024-01-03", "tips:2024-01-03"), ("2024-01-04", "tips:2024-01-04"), ("2024-01-03", "tips:2024-01-03")]
        assert list(sensor(context)) == []  # the cursor moved past them
    # the run it asks for trains with the monitor's date
    train = run(defs, ["tips_train"], tags={RUN_DATE_TAG: "2024-01-03"})
    assert train.success and made()[-1][:1] == ["train"] and made()[-1][made()[-1].index("--run-date") + 1] == "2024-01-03"
    assert made()[-1][-2:] == ["--model", "tips"]
    schedule = repo.get_schedule_def("tips_weekly_train")
    monday = dt.datetime(2024, 1, 8, 3, tzinfo=dt.timezone.utc)
    request = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=monday)).run_requests[0]
    assert request.tags[RUN_DATE_TAG] == "2024-01-08"


# --- materialisations through spark-submit.sh -------------------------------------------------------

SPEC_ROWS = 1_000  # 4 objects a day of 1,000 rows: enough for the anomalies job's min_rows, quick
DAYS = ["2024-01-01", "2024-01-02", "2024-01-03"]


class Lake:
    """A lake, MLflow store and Data Docs under root, raw data in a bucket of its own on the
    local S3 endpoint; deliver(day) puts one night's demo objects there."""

    def __init__(self, root: Path, endpoint: str, extra: dict[str, str] | None = None):
        from strata.config import load_config
        from strata_dev.demo_data import DemoDataSpec

        self.root = root
        self.bucket = f"test-{uuid.uuid4().hex[:12]}"
        self.environ = {"STRATA_LAKE__ROOT": str(root / "lake"), "STRATA_S3__ENDPOINT_URL": endpoint,
                        "STRATA_DATASETS__TRIPS__SOURCE__BUCKET": self.bucket,
                        "STRATA_MLFLOW__TRACKING_URI": f"sqlite:///{root}/mlflow.db",
                        "STRATA_MLFLOW__ARTIFACT_LOCATION": str(root / "artifacts"),
                        "STRATA_QUALITY__DATA_DOCS_DIR": str(root / "docs"),
                        # fewer k to try than the shipped [2, 6]: the same search, less time
                        "STRATA_DATASETS__TRIPS__ANOMALIES__K_RANGE": "[2, 3]", **(extra or {})}
        self.config = load_config("local", environ={**os.environ, **self.environ})
        self.endpoint = endpoint
        self.spec = DemoDataSpec(start_date=dt.date(2024, 1, 1), days=7, rows_per_object=SPEC_ROWS)
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=self.bucket)

    def deliver(self, day: str):
        from strata_dev.demo import deliver
        return deliver(self.config, self.endpoint, self.spec, dt.date.fromisoformat(day))

    def definitions(self) -> dg.Definitions:
        return build_definitions(self.config, max_retries=0, resource=StrataJobs(env="local", extra_env=self.environ))

    def table(self, layer: str, name: str) -> DeltaTable:
        return DeltaTable(str(self.root / "lake" / layer / name))


def materialised(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    return {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}


def dates(table: DeltaTable, column: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in table.to_pyarrow_table(columns=[column]).column(column).to_pylist():
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts


@pytest.fixture(scope="module")
def first_day(tmp_path_factory, s3_endpoint):
    """A lake after the first date's ingest, silver, gold and anomalies, materialised in process
    (shared by the tests below: each spark-submit costs a JVM start)."""
    lake = Lake(tmp_path_factory.mktemp("orchestrated"), s3_endpoint)
    lake.deliver(DAYS[0])
    result = run(lake.definitions(), ["trips_ingest", "trips_silver", "trips_gold", "trips_anomalies"],
                 partition_key=DAYS[0])
    assert result.success, [e.message for e in result.get_step_failure_events()]
    return lake, result


TABLES = {"bronze.trips": ("bronze", "trips"), "silver.trips": ("silver", "trips"),
          "gold.trips_features": ("gold", "trips_features")}


@pytest.mark.slow
def test_one_partition_in_process(first_day):
    lake, result = first_day
    meta = materialised(result)
    assert set(meta) == {"trips_ingest", "trips_silver", "trips_gold", "trips_anomalies"}
    assert all(m["status"].value == "ok" and m["run_date"].value == DAYS[0] and m["run_id"].value == result.run_id
               for m in meta.values())
    # the metadata are the lake's: each table's version and rows as deltalake reads them
    for asset, table, layer, name in [("trips_ingest", "bronze.trips", "bronze", "trips"),
                                      ("trips_silver", "silver.trips", "silver", "trips"),
                                      ("trips_gold", "gold.trips_features", "gold", "trips_features"),
                                      ("trips_anomalies", "gold.trips_flagged", "gold", "trips_flagged")]:
        delta = lake.table(layer, name)
        assert meta[asset][f"{table}.version"].value == delta.version(), table
        assert meta[asset][f"{table}.rows"].value == delta.count() > 0, table
    # that date's rows: bronze under the run date, silver, features and flags on the trips' date
    assert set(dates(lake.table("bronze", "trips"), "_ingest_date")) == {DAYS[0]}
    for layer, name in [("silver", "trips"), ("gold", "trips_features"), ("gold", "trips_flagged")]:
        assert set(dates(lake.table(layer, name), "event_date")) == {DAYS[0]}, name
    assert meta["trips_silver"]["upserted"].value == lake.table("silver", "trips").count()
    assert meta["trips_silver"]["quarantined"].value > 0  # the generator plants bad rows
    assert meta["trips_gold"]["features.rows"].value == lake.table("gold", "trips_features").count()
    assert meta["trips_anomalies"]["outliers"].value > 0


@pytest.mark.slow
def test_three_day_backfill_then_a_partition_again_changes_nothing(first_day):
    """The backfill's first date is the one materialised above; the next two follow, one run per
    partition in order (what a backfill launched from the UI runs); then the middle date again."""
    lake, first = first_day
    defs = lake.definitions()
    names = ["trips_ingest", "trips_silver", "trips_gold"]
    meta = {k: v for m in materialised(first).values() for k, v in m.items()}
    seen = {DAYS[0]: {name: meta[f"{name}.version"].value for name in TABLES}}
    for day in DAYS[1:]:
        lake.deliver(day)
        result = run(defs, names, partition_key=day)
        assert result.success, (day, [e.message for e in result.get_step_failure_events()])
        meta = {k: v for m in materialised(result).values() for k, v in m.items()}
        seen[day] = {name: meta[f"{name}.version"].value for name in TABLES}
        assert seen[day] == {name: lake.table(*where).version() for name, where in TABLES.items()}
    # each date's partition is in the lake, and each date's run moved every table on
    assert set(dates(lake.table("bronze", "trips"), "_ingest_date")) == set(DAYS)
    assert set(dates(lake.table("silver", "trips"), "event_date")) == set(DAYS)
    assert set(dates(lake.table("gold", "trips_features"), "event_date")) == set(DAYS)
    for name in TABLES:
        assert seen[DAYS[0]][name] < seen[DAYS[1]][name] < seen[DAYS[2]][name], (name, seen)

    rows = {name: lake.table(*where).count() for name, where in TABLES.items()}
    again = run(defs, names, partition_key=DAYS[1])
    assert again.success, [e.message for e in again.get_step_failure_events()]
    assert {name: lake.table(*where).version() for name, where in TABLES.items()} == seen[DAYS[2]]
    assert {name: lake.table(*where).count() for name, where in TABLES.items()} == rows


@pytest.mark.slow
def test_a_blocked_gate_fails_once_and_stops_downstream(tmp_path, s3_endpoint):
    """Bronze's gate with one more rule that the demo data's planted null pickup times break."""
    strict = tmp_path / "expectations"
    shutil.copytree(REPO / "expectations", strict)
    suite_path = strict / "bronze" / "trips.json"
    suite = json.loads(suite_path.read_text())
    suite["expectations"].append({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "pickup_at"},
                                  "meta": {"severity": "error"}})
    suite_path.write_text(json.dumps(suite))
    lake = Lake(tmp_path, s3_endpoint, {"STRATA_EXPECTATIONS_DIR": str(strict)})
    lake.deliver(DAYS[0])
    defs = build_definitions(lake.config, max_retries=2, retry_delay=0,
                             resource=StrataJobs(env="local", extra_env=lake.environ))
    result = run(defs, ["trips_ingest", "trips_silver", "trips_gold"], partition_key=DAYS[0])
    assert not result.success
    assert materialised(result) == {}
    assert events(result, dg.DagsterEventType.STEP_FAILURE) == ["trips_ingest"]
    assert events(result, dg.DagsterEventType.STEP_UP_FOR_RETRY) == []
    assert events(result, dg.DagsterEventType.STEP_START) == ["trips_ingest"]
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert failure.metadata["exit_code"].value == 2 and failure.metadata["status"].value == "blocked"
    assert "pickup_at" in failure.metadata["error"].value
    assert not (tmp_path / "lake" / "bronze" / "trips" / "_delta_log").exists()  # nothing published
