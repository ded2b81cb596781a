"""Row-level rules (expect-or-drop): the Spark predicates agree with GX's own verdict.

GX is the reference: on one tiny frame with planted violations, nulls and a NaN, the number of
rows where a rule's predicate fails equals GX's unexpected_count for the same expectation; for
the column-pair and multicolumn rules, the very rows GX reports (by id) are the failing ones."""
from __future__ import annotations

import json
import math
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import great_expectations as gx
import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from strata import quality
from strata.quality import SuiteError, load_suite, row_rules, split_rows, validate

REPO = Path(__file__).resolve().parents[1]

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


PAIR_SCHEMA = T.StructType([
    T.StructField("id", T.IntegerType()),
    T.StructField("a", T.DoubleType()),
    T.StructField("b", T.DoubleType()),
    T.StructField("i", T.IntegerType()),
    T.StructField("j", T.IntegerType()),
    T.StructField("p", T.DecimalType(10, 2)),
    T.StructField("q", T.DecimalType(10, 2)),
    T.StructField("s", T.StringType()),
    T.StructField("t", T.StringType()),
    T.StructField("u", T.StringType()),
])
_D = Decimal
PAIR_ROWS = [
    (1, 2.0, 1.0, 4, 6, _D("0.10"), _D("0.20"), "x", "y", "z"),
    (2, 1.0, 1.0, 5, 5, _D("0.30"), None, "x", "x", "y"),
    (3, None, 1.0, None, 10, None, None, None, "y", None),
    (4, 1.0, None, None, None, _D("0.15"), _D("0.15"), "x", None, None),
    # i + j overflows an int: GX sums integral columns as DECIMAL(38,0) (Spark 4 is ANSI).
    (5, None, None, 2147483647, 2147483647, _D("0.05"), _D("0.25"), None, None, None),
    (6, math.nan, math.nan, -5, 15, None, _D("0.30"), "y", "x", "x"),
    (7, math.nan, 1.0, 7, 3, _D("1.00"), _D("1.00"), "x", "y", "x"),
    (8, 0.0, 2.0, 0, 0, _D("0.00"), _D("0.00"), "y", "y", "y"),
    (9, -0.0, 0.0, 10, None, _D("0.30"), _D("0.00"), "b", "a", "c"),
    # 0.1 + 0.2 is not 0.3 in doubles, it is in decimals.
    (10, 0.1, 0.2, 1, 9, _D("0.10"), _D("0.20"), "y", None, "y"),
]
_GREATER = "expect_column_pair_values_a_to_be_greater_than_b"
_EQUAL = "expect_column_pair_values_to_be_equal"
_PAIR_IN_SET = "expect_column_pair_values_to_be_in_set"
_UNIQUE_IN_RECORD = "expect_select_column_values_to_be_unique_within_record"
_ALL_EQUAL = "expect_multicolumn_values_to_be_equal"
_SUM = "expect_multicolumn_sum_to_equal"
# (expectation type, kwargs, ids of the rows the predicate fails: by hand, GX is checked too).
# Spark's comparisons are GX's: a null operand makes a comparison null, which GX does not count
# (so a null never fails a > b); NaN equals NaN and is greater than any number; -0.0 = 0.0.
PAIR_CASES = [
    (_GREATER, {"column_A": "a", "column_B": "b"}, {2, 6, 8, 9, 10}),
    (_GREATER, {"column_A": "a", "column_B": "b", "or_equal": True}, {8, 10}),
    (_GREATER, {"column_A": "a", "column_B": "b", "or_equal": False, "ignore_row_if": "neither"},
     {2, 6, 8, 9, 10}),
    (_GREATER, {"column_A": "a", "column_B": "b", "or_equal": True,
                "ignore_row_if": "either_value_is_missing"}, {8, 10}),
    # or_equal: two nulls are equal (row 4), a null and a value are not compared (3, 9).
    (_GREATER, {"column_A": "i", "column_B": "j", "or_equal": True, "ignore_row_if": "neither"},
     {1, 6, 10}),
    (_GREATER, {"column_A": "s", "column_B": "t", "ignore_row_if": "neither"}, {1, 2, 7, 8}),
    (_GREATER, {"column_A": "a", "column_B": "b", "mostly": 0.1, "row_condition": "s = 'x'",
                "condition_parser": "spark"}, {2}),
    # Null-safe: a null and a value differ, two nulls are equal.
    (_EQUAL, {"column_A": "a", "column_B": "b"}, {1, 3, 4, 7, 8, 10}),
    (_EQUAL, {"column_A": "a", "column_B": "b", "ignore_row_if": "either_value_is_missing"},
     {1, 7, 8, 10}),
    (_EQUAL, {"column_A": "s", "column_B": "t", "ignore_row_if": "neither"},
     {1, 3, 4, 6, 7, 9, 10}),
    (_PAIR_IN_SET, {"column_A": "s", "column_B": "t",
                    "value_pairs_set": [["x", "y"], ["x", None], ["y", "y"]]}, {2, 3, 6, 9, 10}),
    (_PAIR_IN_SET, {"column_A": "s", "column_B": "t", "value_pairs_set": [["x", "y"], [None, None]],
                    "ignore_row_if": "neither"}, {2, 3, 4, 6, 8, 9, 10}),
    (_PAIR_IN_SET, {"column_A": "i", "column_B": "j", "value_pairs_set": [[4, 6], [5, 5]],
                    "ignore_row_if": "either_value_is_missing"}, {5, 6, 7, 8, 10}),
    # Two nulls in a record are a repeat.
    (_UNIQUE_IN_RECORD, {"column_list": ["s", "t", "u"]}, {2, 3, 4, 6, 7, 8, 10}),
    (_UNIQUE_IN_RECORD, {"column_list": ["s", "t", "u"], "ignore_row_if": "any_value_is_missing"},
     {2, 6, 7, 8}),
    (_UNIQUE_IN_RECORD, {"column_list": ["s", "t", "u"], "ignore_row_if": "never"},
     {2, 3, 4, 5, 6, 7, 8, 10}),
    (_UNIQUE_IN_RECORD, {"column_list": ["s", "t", "u"], "row_condition": "id > 5",
                         "condition_parser": "spark"}, {6, 7, 8, 10}),
    (_ALL_EQUAL, {"column_list": ["s", "t", "u"]}, {1, 2, 3, 4, 6, 7, 9, 10}),
    (_ALL_EQUAL, {"column_list": ["s", "t", "u"], "ignore_row_if": "any_value_is_missing"},
     {1, 2, 6, 7, 9}),
    (_ALL_EQUAL, {"column_list": ["a", "b"], "ignore_row_if": "never"}, {1, 3, 4, 7, 8, 10}),
    # A null counts as 0 in the sum.
    (_SUM, {"column_list": ["i", "j"], "sum_total": 10}, {5, 8}),
    (_SUM, {"column_list": ["i", "j"], "sum_total": 10, "ignore_row_if": "never"}, {4, 5, 8}),
    (_SUM, {"column_list": ["p", "q"], "sum_total": 0.3}, {7, 8}),
    (_SUM, {"column_list": ["p", "q"], "sum_total": 0.3, "ignore_row_if": "never"}, {3, 7, 8}),
    (_SUM, {"column_list": ["a", "b"], "sum_total": 2, "ignore_row_if": "any_value_is_missing"},
     {1, 6, 7, 9, 10}),
    (_SUM, {"column_list": ["a", "b"], "sum_total": 0.3}, {1, 2, 3, 4, 6, 7, 8, 9, 10}),
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


@pytest.fixture(scope="module")
def pairs(spark):
    df = spark.createDataFrame(PAIR_ROWS, PAIR_SCHEMA).cache()
    yield df
    df.unpersist()


def test_every_supported_type_has_a_case():
    assert {kind for kind, _, _ in CASES + PAIR_CASES} == quality.ROW_RULE_TYPES


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


def _gx_unexpected_ids(frame, suite) -> dict[str, Any]:
    """GX's own validation of suite on frame, with the ids of the rows it found unexpected."""
    context = gx.get_context(mode="ephemeral")
    batch_definition = (context.data_sources.add_spark("rules", persist=False)
                        .add_dataframe_asset("rules").add_batch_definition_whole_dataframe("all"))
    definition = context.validation_definitions.add(gx.ValidationDefinition(
        name="rules", data=batch_definition, suite=context.suites.add(suite)))
    run = definition.run(batch_parameters={"dataframe": frame}, result_format={
        "result_format": "COMPLETE", "unexpected_index_column_names": ["id"]})
    return {_key(r.expectation_config.type, r.expectation_config.kwargs): r for r in run.results}


def test_multicolumn_predicates_agree_with_gx(pairs, tmp_path):
    write_suite(tmp_path, "silver", "pairs",
                [{"type": kind, "kwargs": kwargs} for kind, kwargs, _ in PAIR_CASES])
    suite = load_suite("silver", "pairs", tmp_path)
    rules = row_rules(suite, pairs.schema)
    assert [r.expectation_type for r in rules] == [kind for kind, _, _ in PAIR_CASES]

    results = _gx_unexpected_ids(pairs, load_suite("silver", "pairs", tmp_path))
    failing = pairs.select("id", *[(~r.passes).alias(f"r{i}") for i, r in enumerate(rules)]
                           ).collect()
    for i, (expectation, rule, (kind, kwargs, expected)) in enumerate(
            zip(suite.expectations, rules, PAIR_CASES)):
        result = results[_key(kind, expectation.configuration.kwargs)]
        assert not result.exception_info["raised_exception"], (kind, kwargs, result.exception_info)
        gx_ids = {row["id"] for row in result.result["unexpected_index_list"]}
        ids = {row["id"] for row in failing if row[f"r{i}"]}
        assert (gx_ids, ids) == (expected, expected), (rule.name, kwargs)


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


def test_multicolumn_rule_names(tmp_path):
    write_suite(tmp_path, "silver", "pair_names", [
        {"type": _GREATER, "kwargs": {"column_A": "dropoff_at", "column_B": "pickup_at"}},
        {"type": _GREATER,
         "kwargs": {"column_A": "dropoff_at", "column_B": "pickup_at", "or_equal": True}},
        {"type": _EQUAL, "kwargs": {"column_A": "a", "column_B": "b"}},
        {"type": _PAIR_IN_SET,
         "kwargs": {"column_A": "s", "column_B": "t", "value_pairs_set": [["x", 1], [None, 2.5]]}},
        {"type": _UNIQUE_IN_RECORD, "kwargs": {"column_list": ["a", "b"]}},
        {"type": _ALL_EQUAL, "kwargs": {"column_list": ["a", "b", "c"]}},
        {"type": _SUM, "kwargs": {"column_list": ["a", "b", "c"], "sum_total": 10}},
        {"type": _SUM, "kwargs": {"column_list": ["a", "b"], "sum_total": 0.5},
         "meta": {"severity": "warn"}},
        {"type": _EQUAL, "kwargs": {"column_A": "a", "column_B": "b", "row_condition": "c > 0",
                                    "condition_parser": "spark"}},
    ])
    schema = T.StructType([T.StructField(c, T.LongType()) for c in "abc"])
    rules = row_rules(load_suite("silver", "pair_names", tmp_path), schema)
    assert [r.name for r in rules] == [
        "dropoff_at > pickup_at",
        "dropoff_at >= pickup_at",
        "a = b",
        '(s, t) in [["x", 1], [null, 2.5]]',
        "values of (a, b) unique within record",
        "a = b = c",
        "sum(a, b, c) = 10",
        "sum(a, b) = 0.5",
        "a = b where c > 0",
    ]
    assert [(r.column, r.columns) for r in rules[:2]] == [
        ("dropoff_at,pickup_at", ("dropoff_at", "pickup_at"))] * 2
    assert (rules[6].column, rules[6].columns) == ("a,b,c", ("a", "b", "c"))
    assert [r.severity for r in rules] == ["error"] * 7 + ["warn", "error"]


def test_a_sum_rule_needs_the_frame_schema(tmp_path):
    """GX sums integral columns as DECIMAL(38,0), others in their own type: the predicate
    depends on the column types."""
    write_suite(tmp_path, "silver", "sum", [
        {"type": _SUM, "kwargs": {"column_list": ["i", "j"], "sum_total": 10}}])
    with pytest.raises(ValueError, match=r"expectations\[0\].*schema"):
        row_rules(load_suite("silver", "sum", tmp_path))


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


def test_split_rows_quarantines_multicolumn_rules(pairs, tmp_path):
    write_suite(tmp_path, "silver", "split_pairs", [
        {"type": _GREATER, "kwargs": {"column_A": "a", "column_B": "b", "mostly": 0.5}},
        {"type": _SUM, "kwargs": {"column_list": ["i", "j"], "sum_total": 10}},
        {"type": _EQUAL, "kwargs": {"column_A": "s", "column_B": "t"},
         "meta": {"severity": "warn"}},
        {"type": "expect_compound_columns_to_be_unique", "kwargs": {"column_list": ["s", "t"]}},
    ])
    good, quarantined = split_rows(pairs, load_suite("silver", "split_pairs", tmp_path))
    bad = {r.id: r["_failed_rules"] for r in quarantined.collect()}
    greater, total = "a > b", "sum(i, j) = 10"
    assert bad == {2: [greater], 5: [total], 6: [greater], 8: [greater, total], 9: [greater],
                   10: [greater]}
    assert sorted(r.id for r in good.collect()) == [1, 3, 4, 7]


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


@pytest.mark.parametrize("expectation, message", [
    ({"type": _UNIQUE_IN_RECORD, "kwargs": {"column_list": ["a", "b"], "ignore_row_if": "bogus"}},
     "ignore_row_if 'bogus' is not one of all_values_are_missing, any_value_is_missing, never"),
    ({"type": _PAIR_IN_SET, "kwargs": {"column_A": "a", "column_B": "b", "value_pairs_set": []}},
     "value_pairs_set is empty"),
], ids=["ignore_row_if", "empty-set"])
def test_bad_multicolumn_kwargs_name_the_expectation(tmp_path, expectation, message):
    """GX accepts both in a suite and fails on them when it validates."""
    write_suite(tmp_path, "silver", "bad_kwargs", [expectation])
    with pytest.raises(SuiteError, match=r"expectations\[0\].*" + message):
        row_rules(load_suite("silver", "bad_kwargs", tmp_path))


def test_split_rows_refuses_a_tagged_frame(frame, tmp_path):
    write_suite(tmp_path, "silver", "t", [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "x"}}])
    with pytest.raises(ValueError, match="_failed_rules"):
        split_rows(frame.withColumn("_failed_rules", F.lit(None)),
                   load_suite("silver", "t", tmp_path))


# --- which expectations must be row rules ---------------------------------------------------

def test_row_level_types():
    """Row-level: GX map expectations that judge each row on its own, on Spark."""
    assert quality.ROW_RULE_TYPES <= quality.ROW_LEVEL_TYPES
    # What GX 1.24 has that judges rows one by one and has no Spark row rule here (yet).
    assert quality.ROW_LEVEL_TYPES - quality.ROW_RULE_TYPES == {
        "expect_column_values_to_be_json_parseable",
        "expect_column_values_to_match_json_schema",
        "expect_column_values_to_match_strftime_format",
    }
    left_to_gx = {
        # map expectations that compare a row with the others
        "expect_column_values_to_be_unique", "expect_compound_columns_to_be_unique",
        "expect_column_values_to_be_increasing", "expect_column_values_to_be_decreasing",
        "expect_column_value_z_scores_to_be_less_than", "expect_column_values_to_not_be_outliers",
        # map expectations GX does not evaluate row by row on Spark (a column type check; no
        # Spark implementation at all)
        "expect_column_values_to_be_of_type", "expect_column_values_to_be_in_type_list",
        "expect_column_values_to_match_like_pattern",
        "expect_column_values_to_be_dateutil_parseable",
        # not map expectations
        "expect_table_row_count_to_be_between", "expect_column_max_to_be_between",
    }
    assert not left_to_gx & quality.ROW_LEVEL_TYPES


_JSON = {"type": "expect_column_values_to_be_json_parseable", "kwargs": {"column": "s"}}
_PARAMETER = {"type": "expect_column_values_to_not_be_null",
              "kwargs": {"column": "x", "mostly": {"$PARAMETER": "null_share"}}}
_GX_CONDITION = {"type": _EQUAL, "kwargs": {"column_A": "a", "column_B": "b",
                                            "row_condition": 'col("s")=="x"',
                                            "condition_parser": "great_expectations"}}


@pytest.mark.parametrize("expectation, reason", [
    (_JSON, "no Spark row rule"),
    (_PARAMETER, r"\$PARAMETER"),
    (_GX_CONDITION, "row_condition"),
], ids=["untranslated", "parameter", "gx-condition"])
def test_an_error_rule_that_cannot_quarantine_is_refused(tmp_path, expectation, reason):
    write_suite(tmp_path, "silver", "refused", [
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}},
        expectation])
    with pytest.raises(SuiteError, match=reason) as raised:
        load_suite("silver", "refused", tmp_path)
    message = str(raised.value)
    assert "\n" not in message
    assert f"silver/refused.json: expectations[1] ({expectation['type']})" in message


@pytest.mark.parametrize("expectation", [_JSON, _PARAMETER, _GX_CONDITION],
                         ids=["untranslated", "parameter", "gx-condition"])
def test_the_same_rule_with_severity_warn_is_left_to_gx(tmp_path, expectation):
    write_suite(tmp_path, "silver", "warned", [{**expectation, "meta": {"severity": "warn"}}])
    assert row_rules(load_suite("silver", "warned", tmp_path)) == []


def test_a_suite_built_in_code_is_refused_too():
    from great_expectations.core import ExpectationSuite
    from great_expectations.expectations import ExpectColumnValuesToBeJsonParseable

    suite = ExpectationSuite(name="silver.code", expectations=[
        ExpectColumnValuesToBeJsonParseable(column="s")])
    with pytest.raises(SuiteError, match=r"suite silver\.code: expectations\[0\] "
                                         r"\(expect_column_values_to_be_json_parseable\)"):
        row_rules(suite)


def test_a_row_condition_gx_ignores_is_refused(tmp_path):
    """GX 1.24's pair in-set metric drops row_condition (its unexpected count covers every row,
    its element count only the matching ones): neither GX nor a row rule can honour it."""
    write_suite(tmp_path, "silver", "in_set_where", [
        {"type": _PAIR_IN_SET, "kwargs": {"column_A": "s", "column_B": "t",
                                          "value_pairs_set": [["x", "y"]],
                                          "row_condition": "id > 1", "condition_parser": "spark"},
         "meta": {"severity": "warn"}}])
    with pytest.raises(SuiteError, match=r"expectations\[0\].*ignores row_condition"):
        load_suite("silver", "in_set_where", tmp_path)


@pytest.mark.parametrize("root", ["expectations", "tests/fixtures/sensors/expectations"])
def test_the_repo_suites_load(root):
    paths = sorted((REPO / root).glob("*/*.json"))
    assert paths
    for path in paths:
        suite = load_suite(path.parent.name, path.stem, REPO / root)
        rules = row_rules(suite)
        for expectation in suite.expectations:
            kind = expectation.expectation_type
            assert kind in quality.ROW_RULE_TYPES or kind not in quality.ROW_LEVEL_TYPES, path
        assert len(rules) == sum(
            e.expectation_type in quality.ROW_RULE_TYPES for e in suite.expectations), path
