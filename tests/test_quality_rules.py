"""Row-level rules (expect-or-drop): the Spark predicates agree with GX's own verdict.

GX is the reference: on one tiny frame with planted violations, nulls and a NaN, the number of
rows where a rule's predicate fails equals GX's unexpected_count for the same expectation."""
from __future__ import annotations

import json
import math
from datetime import date
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from strata import quality
from strata.quality import SuiteError, load_suite, row_rules, split_rows, validate

SCHEMA = T.StructType([
    T.StructField("x", T.DoubleType()),
    T.StructField("s", T.StringType()),
    T.StructField("code", T.StringType()),
    T.StructField("d", T.DateType()),
])
ROWS = [
    (-1.0, "abc", "A", date(2023, 12, 31)),
    (0.0, "b", "B", date(2024, 1, 1)),
    (5.0, "xyz", "C", date(2024, 6, 1)),
    (200.0, "", "Z", date(2024, 12, 31)),
    (200.5, "ab12", None, date(2025, 1, 1)),
    (None, None, "A", None),
    (math.nan, "ABC", "a", date(2024, 3, 1)),
    (100.0, "zzzzzz", "B", date(2024, 2, 29)),
    (None, "b1", None, date(2024, 7, 1)),
]

# (expectation type, kwargs, rows the predicate fails: a hand count, GX is checked against it too)
CASES = [
    ("expect_column_values_to_not_be_null", {"column": "x"}, 2),
    ("expect_column_values_to_not_be_null", {"column": "s"}, 1),
    ("expect_column_values_to_be_null", {"column": "code"}, 7),
    # NaN compares greater than any number in Spark: it is out of every upper bound.
    ("expect_column_values_to_be_between", {"column": "x", "min_value": 0, "max_value": 200}, 3),
    ("expect_column_values_to_be_between",
     {"column": "x", "min_value": 0, "max_value": 200, "strict_min": True, "strict_max": True}, 5),
    ("expect_column_values_to_be_between", {"column": "x", "min_value": 0, "strict_min": True}, 2),
    ("expect_column_values_to_be_between", {"column": "x", "max_value": 200, "strict_max": True},
     3),
    ("expect_column_values_to_be_between",
     {"column": "d", "min_value": "2024-01-01", "max_value": "2024-12-31"}, 2),
    ("expect_column_values_to_be_in_set", {"column": "code", "value_set": ["A", "B", "C"]}, 2),
    ("expect_column_values_to_not_be_in_set", {"column": "code", "value_set": ["Z", "a"]}, 2),
    # A search, not a full match: "abc" and "ab12" contain a "b".
    ("expect_column_values_to_match_regex", {"column": "s", "regex": "b"}, 4),
    ("expect_column_values_to_match_regex", {"column": "s", "regex": "^[a-z]+$"}, 4),
    ("expect_column_values_to_not_match_regex", {"column": "s", "regex": "[0-9]"}, 2),
    ("expect_column_value_lengths_to_be_between", {"column": "s", "min_value": 1, "max_value": 3},
     3),
    ("expect_column_value_lengths_to_be_between",
     {"column": "s", "min_value": 1, "max_value": 6, "strict_min": True, "strict_max": True}, 3),
    ("expect_column_value_lengths_to_equal", {"column": "s", "value": 3}, 5),
    ("expect_column_values_to_match_regex_list",
     {"column": "s", "regex_list": ["^a", "c$"], "match_on": "any"}, 6),
    ("expect_column_values_to_match_regex_list",
     {"column": "s", "regex_list": ["^a", "c$"], "match_on": "all"}, 7),
    ("expect_column_values_to_not_match_regex_list", {"column": "s", "regex_list": ["z", "1"]}, 4),
    # A Spark SQL row condition: the rule applies where it holds (rows with code A).
    ("expect_column_values_to_not_be_null",
     {"column": "x", "row_condition": "code = 'A'", "condition_parser": "spark"}, 1),
]


def write_suite(root: Path, layer: str, table: str, expectations: list[dict]) -> None:
    path = root / layer / f"{table}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": f"{layer}.{table}", "expectations": expectations}))


@pytest.fixture(scope="module")
def frame(spark):
    df = spark.createDataFrame(ROWS, SCHEMA).cache()
    yield df
    df.unpersist()


def test_every_supported_type_has_a_case():
    assert {kind for kind, _, _ in CASES} == quality.ROW_RULE_TYPES


def test_predicates_agree_with_gx(frame, tmp_path):
    write_suite(tmp_path, "silver", "rules",
                [{"type": kind, "kwargs": kwargs} for kind, kwargs, _ in CASES])
    suite = load_suite("silver", "rules", tmp_path)
    rules = row_rules(suite)
    assert [r.expectation_type for r in rules] == [kind for kind, _, _ in CASES]

    result = validate(frame, suite, "silver", "rules")
    # GX reports in its own order (grouped by domain), with its kwargs as it coerced them
    # (0 -> 0.0, "2024-01-01" -> date): match them to the suite's expectations by those.
    outcomes = {_key(o.expectation_type, o.kwargs): o for o in result.outcomes}
    failing = frame.select(
        *[F.sum((~r.passes).cast("long")).alias(f"r{i}") for i, r in enumerate(rules)]
    ).first()
    for i, (expectation, rule, (kind, kwargs, expected)) in enumerate(
            zip(suite.expectations, rules, CASES)):
        outcome = outcomes[_key(kind, expectation.configuration.kwargs)]
        assert outcome.exception_message is None, (kind, kwargs, outcome.exception_message)
        assert (outcome.unexpected_count, failing[f"r{i}"]) == (expected, expected), (
            rule.name, kwargs)
        assert not outcome.success


def _key(kind: str, kwargs: dict) -> str:
    kwargs = {k: v for k, v in kwargs.items() if k != "batch_id"}
    return kind + json.dumps(kwargs, sort_keys=True, default=str)


def test_rule_names(tmp_path):
    write_suite(tmp_path, "silver", "names",
                [{"type": kind, "kwargs": kwargs} for kind, kwargs, _ in CASES]
                + [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "x"}},
                   {"type": "expect_column_values_to_be_in_set",
                    "kwargs": {"column": "code", "value_set": [f"v{i}" for i in range(50)]},
                    "meta": {"rule_name": "code is known"}},
                   {"type": "expect_column_values_to_be_in_set",
                    "kwargs": {"column": "code", "value_set": [f"v{i}" for i in range(50)]}}])
    names = [r.name for r in row_rules(load_suite("silver", "names", tmp_path))]
    assert names[:len(CASES)] == [
        "x is not null",
        "s is not null",
        "code is null",
        "x between 0 and 200",
        "x > 0 and < 200",
        "x > 0",
        "x < 200",
        'd between "2024-01-01" and "2024-12-31"',
        'code in ["A", "B", "C"]',
        'code not in ["Z", "a"]',
        "s matches /b/",
        "s matches /^[a-z]+$/",
        "s does not match /[0-9]/",
        "length(s) between 1 and 3",
        "length(s) > 1 and < 6",
        "length(s) = 3",
        "s matches any of /^a/ /c$/",
        "s matches all of /^a/ /c$/",
        "s matches none of /z/ /1/",
        "x is not null where code = 'A'",
    ]
    assert names[len(CASES):len(CASES) + 2] == ["x is not null #2", "code is known"]
    long_name = names[-1]
    assert long_name.startswith('code in ["v0", "v1"') and long_name.endswith("...")
    assert len(long_name) == quality.RULE_NAME_LIMIT


def test_other_types_are_not_row_rules(tmp_path):
    write_suite(tmp_path, "silver", "other", [
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}},
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "x"}},
        {"type": "expect_column_max_to_be_between", "kwargs": {"column": "x", "max_value": 1}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "s"},
         "meta": {"severity": "warn"}},
    ])
    [rule] = row_rules(load_suite("silver", "other", tmp_path))
    assert (rule.name, rule.column, rule.severity) == ("s is not null", "s", "warn")


def test_split_rows(frame, tmp_path):
    write_suite(tmp_path, "silver", "split", [
        {"type": "expect_column_values_to_be_between",
         "kwargs": {"column": "x", "min_value": 0, "max_value": 200, "mostly": 0.5}},
        {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "s", "regex": "b"}},
        {"type": "expect_column_values_to_be_in_set",
         "kwargs": {"column": "code", "value_set": ["A", "B", "C"]},
         "meta": {"severity": "warn"}},
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}},
    ])
    good, quarantined = split_rows(frame, load_suite("silver", "split", tmp_path))
    assert good.columns == frame.columns
    assert quarantined.columns == frame.columns + ["_failed_rules"]
    assert quarantined.schema["_failed_rules"].dataType == T.ArrayType(T.StringType())

    good_rows = good.collect()
    bad = {(r.s, r.code): r["_failed_rules"] for r in quarantined.collect()}
    assert len(good_rows) + len(bad) == len(ROWS)
    assert sorted(r.s for r in good_rows if r.s) == ["b", "b1"]
    between, regex = "x between 0 and 200", "s matches /b/"
    assert bad == {
        ("abc", "A"): [between],              # -1.0 (mostly does not spare a row)
        ("xyz", "C"): [regex],
        ("", "Z"): [regex],                   # code Z fails the warn in_set: not listed
        ("ab12", None): [between],
        ("ABC", "a"): [between, regex],       # NaN and no "b": both names, in suite order
        ("zzzzzz", "B"): [regex],
    }
    # (None, None, "A"): nulls pass both; ("b1", None): x null, "b1" has a b.


def test_split_rows_without_error_rules(frame, tmp_path):
    write_suite(tmp_path, "silver", "warn_only", [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "x"},
         "meta": {"severity": "warn"}},
    ])
    good, quarantined = split_rows(frame, load_suite("silver", "warn_only", tmp_path))
    assert (good.count(), quarantined.count()) == (len(ROWS), 0)
    assert quarantined.schema["_failed_rules"].dataType == T.ArrayType(T.StringType())


def _jobs(sc, group: str, action) -> int:
    sc.setJobGroup(group, "test_quality_rules job count")
    try:
        action()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    return len(sc.statusTracker().getJobIdsForGroup(group))


def test_split_rows_is_column_expressions_only(frame, tmp_path):
    """No Spark job to split; one job to read each side, whatever the number of rules."""
    write_suite(tmp_path, "silver", "lazy", [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": column}}
        for column in ("x", "s", "code", "d")
    ])
    suite = load_suite("silver", "lazy", tmp_path)
    sc = frame.sparkSession.sparkContext
    frames = []
    assert _jobs(sc, "split-lazy", lambda: frames.extend(split_rows(frame, suite))) == 0
    good, quarantined = frames
    assert _jobs(sc, "split-good", good.collect) == 1
    assert _jobs(sc, "split-quarantined", quarantined.collect) == 1
    plan = quarantined._jdf.queryExecution().optimizedPlan().toString()
    assert plan.count("Scan ExistingRDD") == 1 and plan.count("CASE WHEN isnull(") >= 4


def test_bad_bounds_name_the_expectation(tmp_path):
    from great_expectations.core import ExpectationSuite
    from great_expectations.expectations import ExpectColumnValuesToBeBetween

    suite = ExpectationSuite(name="silver.bad", expectations=[
        ExpectColumnValuesToBeBetween(column="x", min_value=5, max_value=1)])
    with pytest.raises(SuiteError, match=r"expectations\[0\].*min_value cannot be greater"):
        row_rules(suite)


def test_split_rows_refuses_a_tagged_frame(frame, tmp_path):
    write_suite(tmp_path, "silver", "t", [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "x"}}])
    with pytest.raises(ValueError, match="_failed_rules"):
        split_rows(frame.withColumn("_failed_rules", F.lit(None)),
                   load_suite("silver", "t", tmp_path))
