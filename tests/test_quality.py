"""Quality gates: GX suites from JSON, validated on tiny Spark frames (the session `spark`)."""
from __future__ import annotations

import argparse
import json
import uuid
from datetime import date, datetime
from pathlib import Path

import pytest
from great_expectations.core import ExpectationSuite
from pyspark.sql import types as T

from strata import quality
from strata.config import load_config
from strata.errors import QualityGateBlocked
from strata.quality import GateResult, SuiteError, enforce, load_suite, validate
from strata.runner import JobContext

REPO = Path(__file__).resolve().parents[1]
SOURCE_COLUMNS = (
    "trip_id", "vendor_id", "pickup_at", "dropoff_at", "passenger_count", "trip_distance",
    "rate_code", "pickup_zone", "dropoff_zone", "payment_type", "fare_amount", "extra",
    "tip_amount", "tolls_amount", "total_amount",
)
BRONZE_SCHEMA = T.StructType(
    [T.StructField(c, T.StringType()) for c in SOURCE_COLUMNS]
    + [
        T.StructField("_source_key", T.StringType()),
        T.StructField("_source_etag", T.StringType()),
        T.StructField("_source_row", T.LongType()),
        T.StructField("_ingested_at", T.TimestampType()),
        T.StructField("_run_id", T.StringType()),
        T.StructField("_ingest_date", T.DateType()),
        T.StructField("_corrupt_record", T.StringType()),
        T.StructField("_error", T.StringType()),
        T.StructField("_source_version", T.IntegerType()),
    ]
)


def bronze_rows(n: int, null_keys: int = 0, corrupt: int = 0) -> list[tuple]:
    """n well-formed bronze rows; the first `null_keys` lack _source_key, the last `corrupt`
    carry a _corrupt_record."""
    rows = []
    for i in range(n):
        source = tuple(f"{c}-{i}" for c in SOURCE_COLUMNS)
        key = None if i < null_keys else "trips/2024-01-01.csv"
        bad = f"broken,line,{i}" if i >= n - corrupt else None
        rows.append(source + (
            key, "etag-1", i, datetime(2024, 1, 2, 3, 4, 5), "run-1", date(2024, 1, 2),
            bad, "malformed" if bad else None, 1,
        ))
    return rows


@pytest.fixture
def bronze_frame(spark):
    """Builds a cached tiny bronze frame; unpersists everything it built afterwards."""
    built = []

    def build(n: int, **kwargs):
        df = spark.createDataFrame(bronze_rows(n, **kwargs), BRONZE_SCHEMA).cache()
        built.append(df)
        return df

    yield build
    for df in built:
        df.unpersist()


@pytest.fixture(scope="module")
def bronze_suite() -> ExpectationSuite:
    return load_suite("bronze", "trips", REPO / "expectations")


def write_suite(root: Path, layer: str, table: str, expectations: list[dict]) -> Path:
    path = root / layer / f"{table}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": f"{layer}.{table}", "expectations": expectations}))
    return path


def outcome(result: GateResult, expectation_type: str, column: str | None = None):
    [found] = [
        o for o in result.outcomes if o.expectation_type == expectation_type and o.column == column
    ]
    return found


# --- loading -------------------------------------------------------------------------------

def test_real_bronze_suite_loads_from_the_repo(monkeypatch):
    monkeypatch.delenv("STRATA_EXPECTATIONS_DIR", raising=False)
    monkeypatch.delenv("STRATA_CONF_DIR", raising=False)
    suite = load_suite("bronze", "trips")
    assert suite.name == "bronze.trips"
    kinds = {(e.expectation_type, getattr(e, "column", None)): e for e in suite.expectations}
    for column in ("_source_key", "_source_etag", "_source_row", "_ingested_at", "_run_id",
                   "_ingest_date"):
        assert kinds[("expect_column_values_to_not_be_null", column)].meta["severity"] == "error"
    assert kinds[("expect_table_row_count_to_be_between", None)].min_value == 1
    columns = kinds[("expect_table_columns_to_match_set", None)]
    assert set(SOURCE_COLUMNS) < set(columns.column_set) and columns.exact_match is False
    assert set(columns.column_set) == set(BRONZE_SCHEMA.fieldNames())
    warn = kinds[("expect_column_values_to_be_null", "_corrupt_record")]
    assert (warn.meta["severity"], warn.mostly) == ("warn", 0.99)


def test_expectations_dir_comes_from_env_then_conf_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("STRATA_EXPECTATIONS_DIR", raising=False)
    monkeypatch.delenv("STRATA_CONF_DIR", raising=False)
    assert quality.default_expectations_dir() == REPO / "expectations" == quality.EXPECTATIONS_DIR
    monkeypatch.setenv("STRATA_CONF_DIR", str(tmp_path / "ship" / "conf"))
    assert quality.default_expectations_dir() == tmp_path / "ship" / "expectations"
    monkeypatch.setenv("STRATA_EXPECTATIONS_DIR", str(tmp_path / "mine"))
    assert quality.default_expectations_dir() == tmp_path / "mine"


def _load_error(tmp_path: Path) -> str:
    with pytest.raises(SuiteError) as info:
        load_suite("silver", "trips", tmp_path)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "\n" not in message
    assert str(tmp_path / "silver" / "trips.json") in message
    return message


def test_load_suite_missing_file(tmp_path):
    assert "no expectation suite for silver.trips" in _load_error(tmp_path)


def test_load_suite_bad_json(tmp_path):
    path = tmp_path / "silver" / "trips.json"
    path.parent.mkdir()
    path.write_text('{"name": "silver.trips", "expectations": [}')
    assert "invalid JSON" in _load_error(tmp_path)


@pytest.mark.parametrize("expectation, expected", [
    ({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a"},
      "meta": {"severity": "fatal"}}, "meta.severity 'fatal' is not one of error, warn"),
    ({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a"},
      "severity": "warning"}, "GX 'severity' 'warning' is not used here"),
    ({"type": "expect_column_values_to_be_nice", "kwargs": {"column": "a"}},
     "expect_column_values_to_be_nice not found"),
    ({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a", "mostyl": 0.9}},
     "mostyl"),
])
def test_load_suite_invalid_expectation(tmp_path, expectation, expected):
    write_suite(tmp_path, "silver", "trips", [expectation])
    message = _load_error(tmp_path)
    assert "expectations[0]" in message and expected in message


def test_load_suite_wrong_name(tmp_path):
    path = write_suite(tmp_path, "silver", "trips", [])
    path.write_text(json.dumps({"name": "bronze.trips", "expectations": [
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}}]}))
    assert "expected 'silver.trips'" in _load_error(tmp_path)


def test_severity_defaults_to_error(tmp_path):
    write_suite(tmp_path, "gold", "t", [
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}}])
    [expectation] = load_suite("gold", "t", tmp_path).expectations
    assert "severity" not in (expectation.meta or {})  # resolved to "error" at validation


# --- validation ----------------------------------------------------------------------------

def test_passing_frame_passes(bronze_frame, bronze_suite):
    result = validate(bronze_frame(4), bronze_suite, "bronze", "trips")
    assert result.success and result.failed() == []
    assert (result.layer, result.table, result.suite_name) == ("bronze", "trips", "bronze.trips")
    assert len(result.outcomes) == len(bronze_suite.expectations)
    assert {o.severity for o in result.outcomes} == {"error", "warn"}
    assert result.describe_failures() == "bronze.trips: all 9 expectation(s) passed"
    enforce(result)


def test_null_source_key_blocks_with_counts(bronze_frame, bronze_suite):
    result = validate(bronze_frame(4, null_keys=1), bronze_suite, "bronze", "trips")
    assert not result.success
    [failed] = result.failed("error")
    assert failed == outcome(result, "expect_column_values_to_not_be_null", "_source_key")
    counts = (failed.element_count, failed.unexpected_count, failed.unexpected_percent)
    assert counts == (4, 1, 25.0)
    assert failed.kwargs == {"column": "_source_key"} and failed.observed_value is None
    passed = outcome(result, "expect_column_values_to_not_be_null", "_run_id")
    assert (passed.success, passed.element_count, passed.unexpected_count) == (True, 4, 0)
    assert outcome(result, "expect_table_row_count_to_be_between").observed_value == 4

    with pytest.raises(QualityGateBlocked) as info:
        enforce(result)
    assert str(info.value) == (
        "bronze.trips: 1 error expectation(s) failed: "
        "expect_column_values_to_not_be_null(_source_key) unexpected 1 of 4 (25.0%)"
    )


def test_warn_failure_is_recorded_but_does_not_block(bronze_frame, bronze_suite):
    result = validate(bronze_frame(4, corrupt=1), bronze_suite, "bronze", "trips")
    assert result.success and result.failed("error") == []
    [warned] = result.failed("warn")
    assert warned.expectation_type == "expect_column_values_to_be_null"
    assert warned.column == "_corrupt_record"
    assert (warned.unexpected_count, warned.element_count) == (1, 4)
    assert "1 warn expectation(s) failed" in result.describe_failures()
    enforce(result)  # does not raise


def test_empty_frame_fails_row_count(bronze_frame, bronze_suite):
    result = validate(bronze_frame(0), bronze_suite, "bronze", "trips")
    [failed] = result.failed("error")
    assert failed.expectation_type == "expect_table_row_count_to_be_between"
    assert failed.observed_value == 0
    assert "expect_table_row_count_to_be_between observed 0" in result.describe_failures()
    with pytest.raises(QualityGateBlocked):
        enforce(result)


def test_missing_column_is_named(bronze_frame, bronze_suite):
    result = validate(bronze_frame(2).drop("_run_id"), bronze_suite, "bronze", "trips")
    failures = {(o.expectation_type, o.column): o for o in result.failed("error")}
    assert set(failures) == {
        ("expect_table_columns_to_match_set", None),
        ("expect_column_values_to_not_be_null", "_run_id"),
    }
    raised = failures[("expect_column_values_to_not_be_null", "_run_id")]
    assert "_run_id" in raised.exception_message
    message = result.describe_failures()
    assert "expect_table_columns_to_match_set missing ['_run_id']" in message
    assert "expect_column_values_to_not_be_null(_run_id) raised:" in message


def test_mostly_is_honoured(spark, tmp_path):
    # 1 null in 50 rows: 2% unexpected.
    df = spark.createDataFrame(
        [(None if i == 0 else i,) for i in range(50)], "v long"
    ).cache()
    try:
        for table, mostly, passes in (("m95", 0.95, True), ("m99", 0.99, False)):
            write_suite(tmp_path, "silver", table, [{
                "type": "expect_column_values_to_not_be_null",
                "kwargs": {"column": "v", "mostly": mostly},
            }])
            result = validate(df, load_suite("silver", table, tmp_path), "silver", table)
            [checked] = result.outcomes
            assert (checked.success, result.success) == (passes, passes), mostly
            assert (checked.severity, checked.unexpected_count, checked.unexpected_percent) == (
                "error", 1, 2.0)
        assert result.describe_failures() == (
            "silver.m99: 1 error expectation(s) failed: "
            "expect_column_values_to_not_be_null(v) unexpected 1 of 50 (2.0%, mostly 0.99)"
        )
    finally:
        df.unpersist()


def test_validate_leaves_the_suite_alone_and_bounds_spark_jobs(spark, bronze_frame, bronze_suite):
    df = bronze_frame(4)
    df.count()  # materialise the cache so only GX's own jobs are counted
    before = bronze_suite.to_json_dict()
    sc = spark.sparkContext
    group = f"quality-{uuid.uuid4().hex}"
    sc.setJobGroup(group, "test_quality job count")
    try:
        validate(df, bronze_suite, "bronze", "trips")
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    # BASIC with partial_unexpected_count 0: GX's bundled aggregates only (4 jobs measured);
    # a sample of unexpected values would add a job per column expectation.
    assert 1 <= len(sc.statusTracker().getJobIdsForGroup(group)) <= 4
    assert bronze_suite.to_json_dict() == before and bronze_suite.id is None


def test_validate_rejects_a_bad_severity_before_running(spark):
    from great_expectations.expectations import ExpectTableRowCountToBeBetween

    suite = ExpectationSuite(name="gold.x", expectations=[
        ExpectTableRowCountToBeBetween(min_value=1, meta={"severity": "blocker"})])
    with pytest.raises(SuiteError, match="meta.severity 'blocker'"):
        validate(spark.range(1), suite, "gold", "x")


# --- results rows --------------------------------------------------------------------------

def test_results_frame(spark, bronze_frame, bronze_suite):
    from strata.quality import results_frame

    result = validate(bronze_frame(4, null_keys=1), bronze_suite, "bronze", "trips")
    at = datetime(2024, 5, 6, 7, 8, 9)
    df = results_frame(spark, result, "run-7", "ingest", 3, at)
    assert [(f.name, f.dataType.simpleString(), f.nullable) for f in df.schema.fields] == [
        ("run_id", "string", True), ("job", "string", True), ("layer", "string", True),
        ("table", "string", True), ("table_version", "bigint", True),
        ("expectation_type", "string", True), ("column", "string", True),
        ("kwargs", "string", True), ("severity", "string", True), ("success", "boolean", True),
        ("element_count", "bigint", True), ("unexpected_count", "bigint", True),
        ("unexpected_percent", "double", True), ("observed_value", "string", True),
        ("validated_at", "timestamp", True),
    ]
    rows = {(r.expectation_type, r.column): r for r in df.collect()}
    assert len(rows) == len(bronze_suite.expectations) == 9
    assert {(r.run_id, r.job, r.layer, r.table, r.table_version, r.validated_at)
            for r in rows.values()} == {("run-7", "ingest", "bronze", "trips", 3, at)}
    failed = rows[("expect_column_values_to_not_be_null", "_source_key")]
    assert json.loads(failed.kwargs) == {"column": "_source_key"}
    assert (failed.severity, failed.success, failed.element_count, failed.unexpected_count,
            failed.unexpected_percent, failed.observed_value) == ("error", False, 4, 1, 25.0, None)
    count = rows[("expect_table_row_count_to_be_between", None)]
    assert (count.success, json.loads(count.observed_value), count.unexpected_count) == (
        True, 4, None)
    assert json.loads(count.kwargs)["min_value"] == 1
    warned = rows[("expect_column_values_to_be_null", "_corrupt_record")]
    assert (warned.severity, warned.success, json.loads(warned.kwargs)["mostly"]) == (
        "warn", True, 0.99)

    unversioned = results_frame(spark, result, "run-8", "ingest", None, at)
    assert {r.table_version for r in unversioned.select("table_version").collect()} == {None}


# --- the jobs' gate ------------------------------------------------------------------------

GATE_SUITE = [
    {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}},
    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "v"}},
    {"type": "expect_column_values_to_be_between", "kwargs": {"column": "v", "max_value": 10},
     "meta": {"severity": "warn"}},
]


def test_the_gate_records_results_and_docs(spark, tmp_path, caplog, monkeypatch):
    from strata.catalog import QUALITY_RESULTS
    from strata.lake.base import TableSpec
    from strata.lake.delta_rs import DeltaRsLake
    from strata.publish import gate

    write_suite(tmp_path / "exp", "silver", "items", GATE_SUITE)
    monkeypatch.setenv("STRATA_EXPECTATIONS_DIR", str(tmp_path / "exp"))
    lake = DeltaRsLake(spark, str(tmp_path / "lake"), job="t", run_id="r")
    target = TableSpec("silver", "items")
    docs = tmp_path / "docs"

    def run_gate(lake, df, layer, table, target, run_id, job, docs, **_):
        config = load_config("local", environ={"STRATA_QUALITY__DATA_DOCS_DIR": str(docs)})
        ctx = JobContext(job, "local", run_id, date(2024, 1, 1), config, argparse.Namespace(), _lake=lake)
        [result] = gate(ctx, [(target, df)])
        return result
    good = spark.createDataFrame([(1,), (2,), (30,)], "v long").cache()
    bad = spark.createDataFrame([(1,), (None,)], "v long").cache()
    try:
        with caplog.at_level("INFO", logger="strata.quality"):
            result = run_gate(lake, good, "silver", "items", target, "run-1", "silver-job", docs,
                              expectations_dir=tmp_path / "exp")
        assert result.success and [o.column for o in result.failed("warn")] == ["v"]
        first_page = Path(result.docs_path)
        assert first_page.is_file() and first_page.suffix == ".html"
        assert first_page.is_relative_to(docs) and "run-1" in first_page.parts
        assert "<html" in first_page.read_text()[:500].lower()
        assert (docs / "index.html").is_file()
        assert str(first_page) in caplog.text and "Data Docs built in" in caplog.text

        rows = lake.read(QUALITY_RESULTS).collect()
        assert len(rows) == 3
        assert {(r.run_id, r.job, r.layer, r.table, r.table_version) for r in rows} == {
            ("run-1", "silver-job", "silver", "items", None)}  # no target table yet

        lake.append(target, good)
        version = lake.version(target)
        with pytest.raises(QualityGateBlocked, match="expect_column_values_to_not_be_null"):
            run_gate(lake, bad, "silver", "items", target, "run-2", "silver-job", docs,
                     expectations_dir=tmp_path / "exp")
        rows = lake.read(QUALITY_RESULTS).filter("run_id = 'run-2'").collect()
        assert len(rows) == 3 and {r.table_version for r in rows} == {version}
        [blocked] = [r for r in rows if not r.success]
        assert (blocked.column, blocked.unexpected_count, blocked.severity) == ("v", 1, "error")
        assert lake.read(QUALITY_RESULTS).count() == 6

        # The site keeps every validation (GX would delete pages it has no stored result for).
        pages = sorted(docs.glob("validations/silver/items/*/*/*.html"))
        assert [p.parts[-3] for p in pages] == ["run-1", "run-2"] and first_page in pages
        index = (docs / "index.html").read_text()
        assert index.count("validations/silver/items/run-") >= 2
    finally:
        good.unpersist()
        bad.unpersist()


def test_data_docs_add_no_spark_job_and_never_decide_the_gate(spark, tmp_path, caplog):
    write_suite(tmp_path, "silver", "docs", GATE_SUITE)
    suite = load_suite("silver", "docs", tmp_path)
    df = spark.createDataFrame([(1,)], "v long").cache()
    df.count()
    sc = spark.sparkContext
    try:
        group = f"quality-docs-{uuid.uuid4().hex}"
        sc.setJobGroup(group, "test_quality docs job count")
        try:
            result = validate(df, suite, "silver", "docs", docs_dir=tmp_path / "docs",
                              run_id="run-1")
        finally:
            sc.setLocalProperty("spark.jobGroup.id", None)
        assert result.docs_path and Path(result.docs_path).is_file()
        assert result.validated_at is not None and result.validated_at.tzinfo is not None
        assert 1 <= len(sc.statusTracker().getJobIdsForGroup(group)) <= 4

        blocked = tmp_path / "a-file"
        blocked.write_text("not a folder")
        with caplog.at_level("WARNING", logger="strata.quality"):
            result = validate(df, suite, "silver", "docs", docs_dir=blocked)
        assert result.success and result.docs_path is None
        assert "building Data Docs failed" in caplog.text
    finally:
        df.unpersist()
