"""Row rules (expect-or-drop): a suite's row-level expectations as Spark predicates, so a job can
quarantine the rows failing them (split_rows), and the check that refuses a suite whose error
expectations judge rows but cannot be row rules."""
from __future__ import annotations

import json
import logging
import operator
from dataclasses import dataclass
from functools import reduce
from typing import Any, Callable

from great_expectations import exceptions as gx_exceptions
from great_expectations.core import ExpectationSuite
from great_expectations.core.metric_function_types import (MetricPartialFunctionTypes,
                                                           MetricPartialFunctionTypeSuffixes)
from great_expectations.execution_engine import SparkDFExecutionEngine
from great_expectations.expectations.expectation import (ColumnMapExpectation,
                                                         ColumnPairMapExpectation, Expectation,
                                                         MulticolumnMapExpectation)
from great_expectations.expectations.registry import (
    get_expectation_impl, get_metric_kwargs, get_metric_provider,
    list_registered_expectation_implementations)
from pyspark.sql import Column, DataFrame, functions as F
from pyspark.sql import types as T

from strata.quality.common import SuiteError, _one_line, _severity

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RowRule:
    """A row-level expectation as a Spark predicate: `passes` is never null, False exactly on
    the rows GX counts as unexpected (so mostly is not part of it: every failing row fails).
    `columns` are the expectation's columns (A then B for a column pair); `column` is the one
    column, or for a column-pair or multicolumn expectation the columns joined with ",", as
    ExpectationOutcome.describe names them."""
    name: str
    expectation_type: str
    column: str
    severity: str
    passes: Column
    columns: tuple[str, ...] = ()


QUARANTINE_COLUMN = "_failed_rules"
# Rule names are cut to this many characters (value sets and regexes can be long).
RULE_NAME_LIMIT = 100


def _fmt(value: Any) -> str:
    """JSON, with GX's float coercion of whole numbers undone (min_value 0 arrives as 0.0)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return json.dumps(value, default=str, ensure_ascii=False)


def _bounds(subject: str, kw: dict) -> str:
    low, high = kw.get("min_value"), kw.get("max_value")
    strict_min, strict_max = bool(kw.get("strict_min")), bool(kw.get("strict_max"))
    if low is not None and high is not None and not strict_min and not strict_max:
        return f"{subject} between {_fmt(low)} and {_fmt(high)}"
    parts = []
    if low is not None:
        parts.append(f"{'>' if strict_min else '>='} {_fmt(low)}")
    if high is not None:
        parts.append(f"{'<' if strict_max else '<='} {_fmt(high)}")
    return f"{subject} " + " and ".join(parts)


def _between(value: Column, kw: dict) -> Column:
    low, high = kw.get("min_value"), kw.get("max_value")
    conditions = []
    if low is not None:
        conditions.append(value > F.lit(low) if kw.get("strict_min") else value >= F.lit(low))
    if high is not None:
        conditions.append(value < F.lit(high) if kw.get("strict_max") else value <= F.lit(high))
    result = conditions[0]
    for condition in conditions[1:]:
        result = result & condition
    return result


def _check_bounds(kw: dict) -> None:
    low, high = kw.get("min_value"), kw.get("max_value")
    if low is None and high is None:
        raise ValueError("min_value and max_value cannot both be None")
    if low is not None and high is not None and low > high:
        raise ValueError("min_value cannot be greater than max_value")


def _any_regex(column: Column, regexes: list[str]) -> Column:
    return column.rlike("|".join(regexes))


def _all_regexes(column: Column, regexes: list[str]) -> Column:
    result = column.rlike(regexes[0])
    for regex in regexes[1:]:
        result = result & column.rlike(regex)
    return result


def _match_regex_list(column: Column, kw: dict) -> Column:
    regexes, match_on = list(kw["regex_list"]), kw.get("match_on", "any")
    if not regexes:
        raise ValueError("regex_list is empty")
    if match_on not in ("any", "all"):
        raise ValueError("match_on must be either 'any' or 'all'")
    return _any_regex(column, regexes) if match_on == "any" else _all_regexes(column, regexes)


def _not_match_regex_list(column: Column, kw: dict) -> Column:
    if not kw["regex_list"]:
        raise ValueError("regex_list is empty")
    return ~_any_regex(column, list(kw["regex_list"]))


def _regex_list_name(column: str, kw: dict, negate: bool) -> str:
    regexes = " ".join(f"/{r}/" for r in kw["regex_list"])
    if negate:
        return f"{column} matches none of {regexes}"
    return f"{column} matches {kw.get('match_on', 'any')} of {regexes}"


# Single column: expectation type -> (GX ignores null values?, expected condition, name).
# The conditions are GX's own Spark conditions (great_expectations/expectations/metrics/
# column_map_metrics); GX counts a row unexpected where `column IS NOT NULL AND NOT expected`
# (only `NOT expected` for the two null expectations), a null condition counting as expected.
_ROW_RULES: dict[str, tuple[bool, Callable[[Column, dict], Column], Callable[[str, dict], str]]] = {
    "expect_column_values_to_not_be_null": (
        False, lambda c, kw: c.isNotNull(), lambda n, kw: f"{n} is not null"),
    "expect_column_values_to_be_null": (
        False, lambda c, kw: c.isNull(), lambda n, kw: f"{n} is null"),
    "expect_column_values_to_be_between": (
        True, _between, _bounds),
    "expect_column_values_to_be_in_set": (
        True,
        lambda c, kw: F.lit(True) if kw["value_set"] is None else c.isin(list(kw["value_set"])),
        lambda n, kw: f"{n} in {_fmt(kw['value_set'])}"),
    "expect_column_values_to_not_be_in_set": (
        True, lambda c, kw: ~c.isin(list(kw["value_set"])),
        lambda n, kw: f"{n} not in {_fmt(kw['value_set'])}"),
    "expect_column_values_to_match_regex": (
        True, lambda c, kw: c.rlike(kw["regex"]), lambda n, kw: f"{n} matches /{kw['regex']}/"),
    "expect_column_values_to_not_match_regex": (
        True, lambda c, kw: ~c.rlike(kw["regex"]),
        lambda n, kw: f"{n} does not match /{kw['regex']}/"),
    "expect_column_values_to_match_regex_list": (
        True, _match_regex_list, lambda n, kw: _regex_list_name(n, kw, negate=False)),
    "expect_column_values_to_not_match_regex_list": (
        True, _not_match_regex_list, lambda n, kw: _regex_list_name(n, kw, negate=True)),
    "expect_column_value_lengths_to_be_between": (
        True, lambda c, kw: _between(F.length(c), kw), lambda n, kw: _bounds(f"length({n})", kw)),
    "expect_column_value_lengths_to_equal": (
        True, lambda c, kw: F.length(c) == F.lit(kw["value"]),
        lambda n, kw: f"length({n}) = {_fmt(kw['value'])}"),
}


def _greater(a: Column, b: Column, kw: dict) -> Column:
    # GX: `or_equal` adds a null-safe equality, so two nulls pass (a null and a value do not
    # compare: null, which GX does not count).
    if kw.get("or_equal"):
        return (a >= b) | a.eqNullSafe(b)
    return a > b


def _pair_in_set(a: Column, b: Column, kw: dict) -> Column:
    pairs = kw["value_pairs_set"]
    if not pairs:
        raise ValueError("value_pairs_set is empty")
    # Null-safe: a pair with None matches a null.
    return reduce(operator.or_, [a.eqNullSafe(F.lit(x)) & b.eqNullSafe(F.lit(y)) for x, y in pairs])


def _unique_within_record(names: list[str], kw: dict, schema: T.StructType | None) -> Column:
    columns = [F.col(name) for name in names]
    repeats = [columns[i].eqNullSafe(columns[j])
               for i in range(len(columns)) for j in range(i + 1, len(columns))]
    if not repeats:
        raise ValueError("column_list must contain at least two columns")
    return ~reduce(operator.or_, repeats)  # null-safe: two nulls are a repeat


def _all_equal(names: list[str], kw: dict, schema: T.StructType | None) -> Column:
    first, *others = [F.col(name) for name in names]
    return reduce(operator.and_, [first.eqNullSafe(other) for other in others], F.lit(True))


_INTEGRAL_TYPES = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)


def _sum_equal(names: list[str], kw: dict, schema: T.StructType | None) -> Column:
    """GX's Spark 4 condition, term for term: a null counts as 0; an integral column is summed as
    DECIMAL(38,0), so the sum cannot overflow (Spark 4 is ANSI: an int overflow raises); decimal
    and floating columns keep their type (0.1 + 0.2 = 0.3 holds for decimals, not doubles).
    GX quotes each name, so a dotted name is a column, not a struct field."""
    assert schema is not None  # row_rules refuses to build a sum without one
    total = None
    for name in names:
        term = F.coalesce(F.col("`" + name.replace("`", "``") + "`"), F.lit(0))
        if name in schema.fieldNames() and isinstance(schema[name].dataType, _INTEGRAL_TYPES):
            term = term.cast(T.DecimalType(38, 0))
        total = term if total is None else total + term
    return total == F.lit(kw["sum_total"])


def _names(names: list[str]) -> str:
    return ", ".join(names)


# Column pair: expectation type -> (expected condition on (A, B), name). GX's Spark conditions
# (great_expectations/expectations/metrics/column_pair_map_metrics).
_PAIR_RULES: dict[str, tuple[Callable[[Column, Column, dict], Column],
                             Callable[[str, str, dict], str]]] = {
    "expect_column_pair_values_a_to_be_greater_than_b": (
        _greater, lambda a, b, kw: f"{a} {'>=' if kw.get('or_equal') else '>'} {b}"),
    "expect_column_pair_values_to_be_equal": (
        lambda a, b, kw: a.eqNullSafe(b), lambda a, b, kw: f"{a} = {b}"),
    "expect_column_pair_values_to_be_in_set": (
        _pair_in_set, lambda a, b, kw: f"({a}, {b}) in {_fmt(kw['value_pairs_set'])}"),
}
# Multicolumn: expectation type -> (expected condition on the columns, name). GX's Spark
# conditions (great_expectations/expectations/metrics/multicolumn_map_metrics); the sum's depends
# on the column types, hence the schema.
_MULTICOLUMN_RULES: dict[str, tuple[Callable[[list[str], dict, T.StructType | None], Column],
                                    Callable[[list[str], dict], str]]] = {
    "expect_select_column_values_to_be_unique_within_record": (
        _unique_within_record, lambda n, kw: f"values of ({_names(n)}) unique within record"),
    "expect_multicolumn_values_to_be_equal": (_all_equal, lambda n, kw: " = ".join(n)),
    "expect_multicolumn_sum_to_equal": (
        _sum_equal, lambda n, kw: f"sum({_names(n)}) = {_fmt(kw['sum_total'])}"),
}
_NEEDS_SCHEMA = frozenset({"expect_multicolumn_sum_to_equal"})

# ignore_row_if -> the rows GX leaves out before it checks the others (its Spark engine's
# get_domain_records): only null is missing, NaN is a value.
_PAIR_IGNORED: dict[str, Callable[[Column, Column], Column]] = {
    "both_values_are_missing": lambda a, b: a.isNull() & b.isNull(),
    "either_value_is_missing": lambda a, b: a.isNull() | b.isNull(),
    "neither": lambda a, b: F.lit(False),
}
_MULTICOLUMN_IGNORED: dict[str, Callable[[list[Column]], Column]] = {
    "all_values_are_missing": lambda cs: reduce(operator.and_, [c.isNull() for c in cs]),
    "any_value_is_missing": lambda cs: reduce(operator.or_, [c.isNull() for c in cs]),
    "never": lambda cs: F.lit(False),
}

ROW_RULE_TYPES = frozenset(_ROW_RULES) | frozenset(_PAIR_RULES) | frozenset(_MULTICOLUMN_RULES)

# Map expectations whose verdict on a row depends on the other rows although GX gives them a
# plain (not window) Spark condition, so _judges_rows_one_by_one cannot tell: GX keeps them,
# there is no predicate on a row alone to quarantine by.
_COMPARES_ROWS = frozenset({
    "expect_compound_columns_to_be_unique",          # a count over a window on the columns
    "expect_column_value_z_scores_to_be_less_than",  # from the column's mean and stdev
    "expect_column_values_to_not_be_outliers",       # from the column's outlier statistics
})
# get_metric_provider looks the provider up by the engine's type only; no Spark is started.
_SPARK_ENGINE = SparkDFExecutionEngine.__new__(SparkDFExecutionEngine)
_MAP_EXPECTATIONS = (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation)


def _map_condition(kind: str) -> str | None:
    """The condition metric of a GX map expectation type, None for any other type."""
    implementation = get_expectation_impl(kind)
    if not issubclass(implementation, _MAP_EXPECTATIONS) or not implementation.map_metric:
        return None
    return f"{implementation.map_metric}.{MetricPartialFunctionTypeSuffixes.CONDITION.value}"


def _judges_rows_one_by_one(kind: str) -> bool:
    """A GX map expectation whose Spark condition looks at one row at a time."""
    metric = _map_condition(kind)
    if metric is None or kind in _COMPARES_ROWS:
        return False
    try:
        _, condition = get_metric_provider(metric, _SPARK_ENGINE)
    except gx_exceptions.MetricProviderError:
        # No Spark condition: on Spark GX checks the column's type (of_type, in_type_list) or
        # cannot evaluate the type at all (like patterns, dateutil): no row to quarantine.
        return False
    # A window condition compares rows (unique, increasing, decreasing).
    return getattr(condition, "metric_fn_type", None) == MetricPartialFunctionTypes.MAP_CONDITION_FN


# The GX expectation types that judge each row on its own on Spark (ColumnMapExpectation,
# ColumnPairMapExpectation and MulticolumnMapExpectation subclasses in GX's registry, less those
# above): with severity error, each must be a row rule, or its failing rows would be published.
ROW_LEVEL_TYPES = frozenset(
    kind for kind in list_registered_expectation_implementations()
    if _judges_rows_one_by_one(kind))


def _has_parameter(value: Any) -> bool:
    if isinstance(value, dict):
        return "$PARAMETER" in value or any(_has_parameter(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_parameter(v) for v in value)
    return False


def _spark_row_condition(kw: dict) -> str | None | bool:
    """The Spark SQL filter of a row_condition, None without one, False if not Spark SQL.

    GX 1.x turns a string row_condition with condition_parser "spark" into a
    PassThroughCondition, serialised as {"type": "pass_through", "pass_through_filter": ...},
    which its Spark engine applies as data.filter(<string>)."""
    condition = kw.get("row_condition")
    if not condition:
        return None
    if isinstance(condition, dict) and condition.get("type") == "pass_through":
        return condition["pass_through_filter"]
    if isinstance(condition, str) and kw.get("condition_parser") == "spark":
        return condition
    return False


def _rule_kwargs(expectation: Expectation) -> dict:
    """The kwargs, with GX's default ignore_row_if when the suite leaves it out (it differs by
    type: both_values_are_missing for pairs, all_values_are_missing for multicolumn)."""
    kw = {k: v for k, v in expectation.configuration.kwargs.items() if k != "batch_id"}
    if "ignore_row_if" in type(expectation).__fields__:
        kw.setdefault("ignore_row_if", expectation.ignore_row_if)
    return kw


def _gx_ignores_row_condition(kind: str) -> bool:
    """GX 1.24's pair in-set metric has no row_condition domain key: its unexpected count covers
    every row while its element count covers the matching ones, so GX cannot validate it."""
    metric = _map_condition(kind)
    return metric is not None and "row_condition" not in get_metric_kwargs(metric)[
        "metric_domain_keys"]


def _row_rule_refusal(expectation: Expectation, label: str) -> str | None:
    """Why the expectation cannot be used, as a row rule must be, or None.

    An expectation of severity error that judges rows one by one (ROW_LEVEL_TYPES) must quarantine
    its failing rows, so it must be a row rule with literal kwargs and a Spark SQL row_condition.
    Of severity warn, GX alone validates it. A row_condition GX ignores is refused at any
    severity."""
    kind = expectation.expectation_type
    kw = _rule_kwargs(expectation)
    if kind in ROW_RULE_TYPES and kw.get("row_condition") and _gx_ignores_row_condition(kind):
        return ("GX ignores row_condition for this type (its unexpected count covers every row): "
                "remove it")
    # _judges_rows_one_by_one, not ROW_LEVEL_TYPES: also sees types registered after import.
    if _severity(expectation.meta, label) != "error" or not _judges_rows_one_by_one(kind):
        return None
    if kind not in ROW_RULE_TYPES:
        return ("judges each row, and there is no Spark row rule for this type to quarantine the "
                "rows failing it with severity error; set meta.severity to warn (GX alone "
                "validates it) or use a type in strata.quality.ROW_RULE_TYPES")
    if _has_parameter(kw):
        return ("uses $PARAMETER: a row rule needs literal kwargs to quarantine the rows failing "
                "it with severity error; write the value, or set meta.severity to warn")
    if _spark_row_condition(kw) is False:
        return ("its row_condition is not a Spark SQL string (condition_parser \"spark\"), so no "
                "row rule can quarantine the rows failing it with severity error; write it in "
                "Spark SQL, or set meta.severity to warn")
    return None


def row_rules(suite: ExpectationSuite, schema: T.StructType | None = None) -> list[RowRule]:
    """The suite's row-level expectations as Spark predicates, in suite order.

    Supported: the types in ROW_RULE_TYPES. Not row rules (GX still validates them): every other
    type; of severity warn, expectations whose kwargs use $PARAMETER or whose row_condition is not
    a Spark SQL string (condition_parser "spark"; such a rule applies where the condition holds).
    SuiteError when an expectation of severity error judges rows but cannot be a row rule (see
    _row_rule_refusal), or has kwargs GX would fail on.
    schema: the frame's, needed by expect_multicolumn_sum_to_equal (GX's sum depends on the
    column types); ValueError without it.

    Names, stable and readable (cut to RULE_NAME_LIMIT characters, " #2"... on a repeat):
    "trip_id is not null", "trip_distance between 0 and 200", "fare_amount > 0 and <= 500",
    "payment_type in [1, 2]", "vendor not in [\\"X\\"]", "zone matches /^[A-Z]/",
    "zone does not match /test/", "length(code) between 2 and 3", "length(code) = 3",
    "dropoff_at > pickup_at", "dropoff_at >= pickup_at" (or_equal), "a = b",
    "(a, b) in [[1, 2], [3, null]]", "values of (a, b) unique within record", "a = b = c",
    "sum(a, b, c) = 10"; a row condition adds " where <condition>". meta.rule_name overrides
    the name. ignore_row_if decides which rows are checked, it is not in the name.
    mostly is ignored: a row that fails the predicate fails, whatever share of rows do."""
    rules: list[RowRule] = []
    seen: dict[str, int] = {}
    for index, expectation in enumerate(suite.expectations):
        configuration = expectation.configuration
        kind = configuration.type
        label = f"suite {suite.name}: expectations[{index}] ({kind})"
        refusal = _row_rule_refusal(expectation, label)
        if refusal:
            raise SuiteError(f"{label}: {refusal}")
        if kind not in ROW_RULE_TYPES:
            continue
        kw = _rule_kwargs(expectation)
        if _has_parameter(kw):
            logger.warning("%s: uses $PARAMETER, not a row rule", label)
            continue
        row_condition = _spark_row_condition(kw)
        if row_condition is False:
            logger.warning("%s: row_condition is not a Spark SQL string, not a row rule", label)
            continue
        if kind in _NEEDS_SCHEMA and schema is None:
            raise ValueError(f"{label}: GX's predicate depends on the column types: pass the "
                             "frame's schema, row_rules(suite, df.schema)")
        try:
            columns, unexpected, name = _translate(kind, kw, schema)
            name = (configuration.meta or {}).get("rule_name") or name
        except (KeyError, ValueError, TypeError) as exc:
            raise SuiteError(f"{label}: {_one_line(exc)}") from None
        if row_condition:
            unexpected = F.expr(row_condition) & unexpected
            name += f" where {row_condition}"
        name = _unique(_cut(str(name)), seen)
        rules.append(RowRule(
            name=name, expectation_type=kind, column=",".join(columns),
            severity=_severity(configuration.meta, label),
            # GX counts `when(unexpected, 1)`: a null condition is not unexpected.
            passes=~F.coalesce(unexpected, F.lit(False)), columns=tuple(columns),
        ))
    return rules


def _translate(kind: str, kw: dict, schema: T.StructType | None) -> tuple[list[str], Column, str]:
    """(columns, the rows GX counts as unexpected, name) of a type in ROW_RULE_TYPES."""
    if kind in _PAIR_RULES:
        return _pair_rule(kind, kw)
    if kind in _MULTICOLUMN_RULES:
        return _multicolumn_rule(kind, kw, schema)
    return _column_rule(kind, kw)


def _column_rule(kind: str, kw: dict) -> tuple[list[str], Column, str]:
    ignores_nulls, expected, describe = _ROW_RULES[kind]
    name = kw["column"]
    column = F.col(name)  # as GX does (a dotted name is a struct field)
    if "min_value" in kw or "max_value" in kw:
        _check_bounds(kw)
    unexpected = ~expected(column, kw)
    if ignores_nulls:
        unexpected = column.isNotNull() & unexpected
    return [name], unexpected, describe(name, kw)


def _ignored(modes: dict[str, Callable[..., Column]], mode: Any) -> Callable[..., Column]:
    if mode not in modes:
        raise ValueError(f"ignore_row_if {mode!r} is not one of {', '.join(modes)}")
    return modes[mode]


def _pair_rule(kind: str, kw: dict) -> tuple[list[str], Column, str]:
    expected, describe = _PAIR_RULES[kind]
    name_a, name_b = kw["column_A"], kw["column_B"]
    a, b = F.col(name_a), F.col(name_b)
    ignored = _ignored(_PAIR_IGNORED, kw["ignore_row_if"])(a, b)
    return [name_a, name_b], ~ignored & ~expected(a, b, kw), describe(name_a, name_b, kw)


def _multicolumn_rule(kind: str, kw: dict,
                      schema: T.StructType | None) -> tuple[list[str], Column, str]:
    expected, describe = _MULTICOLUMN_RULES[kind]
    names = list(kw["column_list"])
    ignored = _ignored(_MULTICOLUMN_IGNORED, kw["ignore_row_if"])([F.col(n) for n in names])
    return names, ~ignored & ~expected(names, kw, schema), describe(names, kw)


def _cut(name: str) -> str:
    return name if len(name) <= RULE_NAME_LIMIT else name[: RULE_NAME_LIMIT - 3] + "..."


def _unique(name: str, seen: dict[str, int]) -> str:
    seen[name] = seen.get(name, 0) + 1
    return name if seen[name] == 1 else f"{name} #{seen[name]}"


def split_rows(df: DataFrame, suite: ExpectationSuite) -> tuple[DataFrame, DataFrame]:
    """(good, quarantined): rows failing any row rule of severity error go to quarantined, with
    every original column plus _failed_rules (array<string>: the names of the error rules the
    row failed, in suite order). warn rules quarantine nothing. Lazy, no Spark job; cache df
    when both are used.

    The good side is a plain conjunction of the predicates (code-generated, as cheap as any
    filter); the rule-name array, an interpreted higher-order function, is built only for the
    few rows that fail (bench/gates.py, 5M rows: counting the good side took 4.8 s with the
    array on every row, 1.1 s as a conjunction)."""
    if QUARANTINE_COLUMN in df.columns:
        raise ValueError(f"the frame already has a {QUARANTINE_COLUMN} column")
    rules = [rule for rule in row_rules(suite, df.schema) if rule.severity == "error"]
    every_rule_passes = F.lit(True)
    for rule in rules:
        every_rule_passes = every_rule_passes & rule.passes  # never null: ~ is the exact complement
    failed = F.array(*[F.when(~rule.passes, F.lit(rule.name)) for rule in rules])
    failed = F.filter(failed, lambda name: name.isNotNull()).cast(T.ArrayType(T.StringType()))
    good = df.filter(every_rule_passes)
    quarantined = df.filter(~every_rule_passes).withColumn(QUARANTINE_COLUMN, failed)
    return good, quarantined
