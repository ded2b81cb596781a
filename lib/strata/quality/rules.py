"""Great Expectations gates: one ExpectationSuite per layer and table, run on a Spark DataFrame.

Suites are GX 1.x ExpectationSuites serialised as JSON in ``expectations/<layer>/<table>.json``.
Every expectation carries ``meta.severity``: ``"error"`` (the default when absent) blocks
publication, ``"warn"`` is recorded and publication goes on. ``mostly`` is GX's own.

    suite = load_suite("bronze", "trips")
    result = validate(df, suite, "bronze", "trips")   # df cached by the caller
    enforce(result)                                    # QualityGateBlocked on an error failure

GX's own per-expectation ``severity`` field (critical/warning/info) is not used: a suite file that
sets it to anything but the default is rejected, so nobody believes it downgrades a check.

The jobs call one function, which also records every outcome in the lake and builds Data Docs:

    run_gate(lake, df, "silver", "trips", target, run_id, job, docs_dir)  # appends quality.results

Row-level expectations (not_null, between, in_set, regex..., and column-pair and multicolumn ones:
a > b, a = b, sum(a, b) = 10...) are also Spark predicates, so a job can quarantine the failing rows
instead of (or before) blocking (expect-or-drop):

    good, quarantined = split_rows(df, suite)       # quarantined has _failed_rules array<string>

A suite is refused (SuiteError) when an expectation of severity error judges rows one by one but
cannot be a row rule: its failing rows would be published.
"""
from __future__ import annotations

import json
import logging
import operator
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import reduce
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlparse

import great_expectations as gx
from great_expectations import exceptions as gx_exceptions
from great_expectations.core import ExpectationSuite
from great_expectations.core.metric_function_types import (MetricPartialFunctionTypes,
                                                           MetricPartialFunctionTypeSuffixes)
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import (DataContextConfig,
                                                        InMemoryStoreBackendDefaults,
                                                        ProgressBarsConfig)
from great_expectations.data_context.types.resource_identifiers import (
    ExpectationSuiteIdentifier, ValidationResultIdentifier)
from great_expectations.execution_engine import SparkDFExecutionEngine
from great_expectations.expectations.expectation import (ColumnMapExpectation,
                                                         ColumnPairMapExpectation, Expectation,
                                                         MulticolumnMapExpectation)
from great_expectations.expectations.expectation_configuration import ExpectationConfiguration
from great_expectations.expectations.registry import (
    get_expectation_impl, get_metric_kwargs, get_metric_provider,
    list_registered_expectation_implementations)
from pyspark.sql import Column, DataFrame, SparkSession, functions as F
from pyspark.sql import types as T

from strata.config import QualityConfig
from strata.errors import QualityGateBlocked
from strata.catalog import QUALITY_RESULTS, TableSpec
from strata.lake.base import Lake

logger = logging.getLogger(__name__)

LAYERS = ("bronze", "silver", "gold")
SEVERITIES = ("error", "warn")
DEFAULT_SEVERITY = "error"
# <repo>/expectations of the checkout.
EXPECTATIONS_DIR = Path(__file__).resolve().parents[3] / "expectations"
# Counts and percentages, no sample of unexpected values: a sample costs one more Spark job per
# column expectation (a filtered take), a count does not (GX bundles the aggregates).
RESULT_FORMAT: dict[str, Any] = {"result_format": "BASIC", "partial_unexpected_count": 0}

_SUITE_KEYS = {"name", "id", "expectations", "suite_parameters", "meta", "notes"}
_GX_DEFAULT_SEVERITY = "critical"


class SuiteError(ValueError):
    """An expectation suite that cannot be used, with the file (or suite) it came from."""


def default_expectations_dir() -> Path:
    """STRATA_EXPECTATIONS_DIR, else <STRATA_CONF_DIR>/../expectations, else the checkout's."""
    if os.environ.get("STRATA_EXPECTATIONS_DIR"):
        return Path(os.environ["STRATA_EXPECTATIONS_DIR"]).resolve()
    if os.environ.get("STRATA_CONF_DIR"):
        # spark-submit.sh ships expectations/ next to conf/.
        return Path(os.environ["STRATA_CONF_DIR"]).resolve().parent / "expectations"
    return EXPECTATIONS_DIR


def suite_path(layer: str, table: str, expectations_dir: Path | None = None) -> Path:
    if layer not in LAYERS:
        raise SuiteError(f"unknown layer {layer!r} (expected one of {', '.join(LAYERS)})")
    if not table or "/" in table or "\\" in table or table.startswith("."):
        raise SuiteError(f"invalid table name {table!r}")
    return Path(expectations_dir or default_expectations_dir()) / layer / f"{table}.json"


def load_suite(layer: str, table: str, expectations_dir: Path | None = None) -> ExpectationSuite:
    """The suite in <expectations_dir>/<layer>/<table>.json, checked; SuiteError names the file."""
    path = suite_path(layer, table, expectations_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SuiteError(f"{path}: no expectation suite for {layer}.{table}") from None
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SuiteError(
            f"{path}: invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    return _parse_suite(raw, where=str(path), expected_name=f"{layer}.{table}")


def _parse_suite(raw: Any, where: str, expected_name: str) -> ExpectationSuite:
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: a suite must be a JSON object, not {type(raw).__name__}")
    unknown = sorted(set(raw) - _SUITE_KEYS)
    if unknown:
        raise SuiteError(f"{where}: unknown top-level key(s) {', '.join(unknown)}")
    if raw.get("name") != expected_name:
        raise SuiteError(f"{where}: suite name is {raw.get('name')!r}, expected {expected_name!r}")
    items = raw.get("expectations")
    if not isinstance(items, list) or not items:
        raise SuiteError(f"{where}: 'expectations' must be a non-empty list")
    expectations = []
    for index, item in enumerate(items):
        label = f"{where}: expectations[{index}]"
        if not isinstance(item, dict):
            raise SuiteError(f"{label}: must be a JSON object")
        label += f" ({item.get('type', '?')})"
        gx_severity = item.get("severity", _GX_DEFAULT_SEVERITY)
        if gx_severity != _GX_DEFAULT_SEVERITY:
            raise SuiteError(
                f"{label}: GX 'severity' {gx_severity!r} is not used here; set meta.severity to "
                f"one of {', '.join(SEVERITIES)}"
            )
        try:
            expectation = ExpectationConfiguration(**item).to_domain_obj()
        except (gx_exceptions.GreatExpectationsError, ValueError, TypeError) as exc:
            # ValueError covers pydantic's ValidationError (bad or misspelt kwargs).
            raise SuiteError(f"{label}: {_one_line(exc)}") from None
        _severity(expectation.meta, label)
        refusal = _row_rule_refusal(expectation, label)
        if refusal:
            raise SuiteError(f"{label}: {refusal}")
        expectations.append(expectation)
    try:
        return ExpectationSuite(
            name=raw["name"],
            expectations=expectations,
            suite_parameters=raw.get("suite_parameters"),
            meta=raw.get("meta"),
            notes=raw.get("notes"),
        )
    except (gx_exceptions.GreatExpectationsError, ValueError, TypeError) as exc:
        raise SuiteError(f"{where}: {_one_line(exc)}") from None


def _severity(meta: dict | None, label: str) -> str:
    severity = (meta or {}).get("severity", DEFAULT_SEVERITY)
    if severity not in SEVERITIES:
        raise SuiteError(
            f"{label}: meta.severity {severity!r} is not one of {', '.join(SEVERITIES)}"
        )
    return severity


def _one_line(error: BaseException | str) -> str:
    if isinstance(error, BaseException):
        error = getattr(error, "message", None) or str(error) or type(error).__name__
    return " ".join(str(error).split())


@dataclass(frozen=True)
class ExpectationOutcome:
    expectation_type: str
    column: str | None
    kwargs: dict
    severity: str
    success: bool
    element_count: int | None
    unexpected_count: int | None
    unexpected_percent: float | None
    observed_value: Any
    # Set when GX could not evaluate the expectation (e.g. the column is absent): success False.
    exception_message: str | None = None

    def describe(self) -> str:
        label = self.expectation_type
        subject = self.column or _columns_label(self.kwargs)
        if subject:
            label += f"({subject})"
        if self.exception_message:
            return f"{label} raised: {self.exception_message}"
        if self.unexpected_count is not None and self.element_count is not None:
            text = f"{label} unexpected {self.unexpected_count} of {self.element_count}"
            if self.unexpected_percent is not None:
                text += f" ({round(self.unexpected_percent, 3)}%"
                text += f", mostly {self.kwargs['mostly']})" if "mostly" in self.kwargs else ")"
            return text
        if "column_set" in self.kwargs and isinstance(self.observed_value, list):
            missing = [c for c in self.kwargs["column_set"] if c not in self.observed_value]
            text = f"{label} missing {missing}"
            if self.kwargs.get("exact_match", True):
                extra = sorted(set(self.observed_value) - set(self.kwargs["column_set"]))
                text += f" unexpected {extra}"
            return text
        if self.observed_value is not None:
            return f"{label} observed {_short(self.observed_value)}"
        return label


def _columns_label(kwargs: dict) -> str | None:
    if "column_list" in kwargs:
        return ",".join(map(str, kwargs["column_list"]))
    if "column_A" in kwargs and "column_B" in kwargs:
        return f"{kwargs['column_A']},{kwargs['column_B']}"
    return None


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value) if not isinstance(value, (int, float)) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class GateResult:
    layer: str
    table: str
    suite_name: str
    outcomes: list[ExpectationOutcome]
    # When GX ran the suite (UTC); also the run time of the Data Docs page.
    validated_at: datetime | None = None
    # This validation's Data Docs page (validate(..., docs_dir=...)); the site's index.html is
    # in docs_dir. None without docs_dir, or when building the docs failed (logged).
    docs_path: str | None = None

    @property
    def success(self) -> bool:
        """No expectation of severity error failed (warn failures do not count)."""
        return not self.failed("error")

    def failed(self, severity: str | None = None) -> list[ExpectationOutcome]:
        if severity is not None and severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)} or None")
        return [
            o for o in self.outcomes
            if not o.success and (severity is None or o.severity == severity)
        ]

    def describe_failures(self) -> str:
        """One line: the failed expectations, errors first, then warnings after ' | '."""
        parts = []
        for severity in SEVERITIES:
            failed = self.failed(severity)
            if failed:
                parts.append(
                    f"{len(failed)} {severity} expectation(s) failed: "
                    + "; ".join(o.describe() for o in failed)
                )
        body = " | ".join(parts) or f"all {len(self.outcomes)} expectation(s) passed"
        return f"{self.layer}.{self.table}: {body}"


_DATASOURCE_NAME = "strata"
_BATCH_DEFINITION_NAME = "whole"
_DOCS_SITE_NAME = "strata"
# Under docs_dir: the JSON stores the site is built from (see _context).
_DOCS_STORE_DIR = "_gx"
# Validation pages listed on the index (newest first). GX reads each listed result's JSON back
# on every build, so this bounds the cost of building the index as history grows.
DOCS_INDEX_LIMIT = 200


def _context(docs_dir: Path | str | None = None) -> Any:
    """A fresh ephemeral context per validation: with its registrations it costs 40-120 ms
    (measured), against seconds for the validation, and without docs_dir no state (stored
    results) outlives it.
    get_context() also makes it GX's process-wide current context; every object used here is
    bound to it explicitly, so that does not matter to us.

    With docs_dir, the suites and validation results are kept as JSON under
    docs_dir/_gx and the Data Docs site is docs_dir itself. They have to persist: on every build
    GX's index builder deletes each page whose source (suite or result) is not in the context's
    stores, so with in-memory stores a site shared by the jobs would only ever hold the last
    validation."""
    if docs_dir is None:
        context = gx.get_context(mode="ephemeral")
    else:
        docs_dir = Path(docs_dir).resolve()
        defaults = InMemoryStoreBackendDefaults()
        for store_name, folder in ((defaults.expectations_store_name, "expectations"),
                                   (defaults.validation_results_store_name, "validations")):
            defaults.stores[store_name]["store_backend"] = {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir / _DOCS_STORE_DIR / folder),
            }
        defaults.data_docs_sites = {_DOCS_SITE_NAME: {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder",
                                   "validation_results_limit": DOCS_INDEX_LIMIT},
        }}
        context = gx.get_context(
            project_config=DataContextConfig(store_backend_defaults=defaults), mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _copy_suite(suite: ExpectationSuite) -> ExpectationSuite:
    """A copy to register in the context, leaving the caller's suite unbound and unchanged."""
    expectations = []
    for expectation in suite.expectations:
        configuration = expectation.configuration  # a new object on every access
        configuration.id = None
        expectations.append(configuration.to_domain_obj())
    return ExpectationSuite(
        name=suite.name,
        expectations=expectations,
        suite_parameters=dict(suite.suite_parameters or {}),
        meta=json.loads(json.dumps(suite.meta or {}, default=str)),
    )


def validate(df: DataFrame, suite: ExpectationSuite, layer: str, table: str,
             docs_dir: Path | str | None = None, *, run_id: str | None = None) -> GateResult:
    """Run the suite on df; GX launches its own Spark jobs, nothing else. GX reads df once per
    metric batch: the caller caches it when it is expensive to compute (cheap to re-read, like
    freshly written Parquet files, it need not be).

    docs_dir: also build GX Data Docs for this validation into that local folder (a filesystem
    site: docs_dir/index.html lists the validations, newest first) and set
    GateResult.docs_path to this validation's page. No Spark job; 0.25-0.5 s measured (the
    index re-reads up to DOCS_INDEX_LIMIT stored results), ~70 KB kept per validation (page +
    result JSON under docs_dir/_gx; nothing prunes them) plus 4 MB of static assets once.
    A failure to build them is logged and leaves docs_path None: docs never decide a gate.
    run_id: the run name on the Data Docs page (GX's default is none)."""
    for index, expectation in enumerate(suite.expectations):
        _severity(expectation.meta,
                  f"suite {suite.name}: expectations[{index}] ({expectation.expectation_type})")
    name = f"{layer}.{table}"
    context = None
    if docs_dir is not None:
        try:
            context = _context(docs_dir)  # creates docs_dir/_gx: fails on an unusable folder
        except Exception as exc:  # noqa: BLE001 - the docs are a report, never the gate
            logger.warning("%s: building Data Docs failed: %s", name, _one_line(exc))
            docs_dir = None
    if context is None:
        context = _context()
    # persist=False: callers cache the frame; GX would cache a second copy and never release it.
    batch_definition = (
        context.data_sources.add_spark(_DATASOURCE_NAME, persist=False)
        .add_dataframe_asset(name)
        .add_batch_definition_whole_dataframe(_BATCH_DEFINITION_NAME)
    )
    # add_or_update: with docs_dir the suite store is on disk and holds the previous run's copy.
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(
            name=name, data=batch_definition,
            suite=context.suites.add_or_update(_copy_suite(suite)),
        )
    )
    validated_at = datetime.now(timezone.utc)
    run_identifier = RunIdentifier(run_name=run_id, run_time=validated_at)
    run = definition.run(batch_parameters={"dataframe": df}, result_format=RESULT_FORMAT,
                         run_id=run_identifier)
    outcomes = [_outcome(r) for r in run.results]
    docs_path = None
    if docs_dir is not None:
        docs_path = _build_docs(context, suite.name, run_identifier, run.batch_id, name)
    return GateResult(layer=layer, table=table, suite_name=suite.name, outcomes=outcomes,
                      validated_at=validated_at, docs_path=docs_path)


def _build_docs(context: Any, suite_name: str, run_identifier: RunIdentifier, batch_id: str,
                label: str) -> str | None:
    """Render this validation's page (and its suite's) and the index; the page's local path.

    ValidationDefinition.run (GX 1.x) stores its result in the context's results store, which is
    what a Checkpoint's UpdateDataDocsAction builds from; here build_data_docs is called directly
    with the same identifiers, without a Checkpoint."""
    started = time.perf_counter()
    suite_id = ExpectationSuiteIdentifier(name=suite_name)
    result_id = ValidationResultIdentifier(expectation_suite_identifier=suite_id,
                                           run_id=run_identifier, batch_identifier=batch_id)
    try:
        context.build_data_docs(site_names=[_DOCS_SITE_NAME],
                                resource_identifiers=[result_id, suite_id])
        [site] = context.get_docs_sites_urls(resource_identifier=result_id,
                                             site_names=[_DOCS_SITE_NAME])
        path = _url_to_path(site["site_url"])
    except Exception as exc:  # noqa: BLE001 - the docs are a report, never the gate
        logger.warning("%s: building Data Docs failed: %s", label, _one_line(exc))
        return None
    logger.info("%s: Data Docs built in %.2f s: %s", label, time.perf_counter() - started, path)
    return path


def _url_to_path(url: str | None) -> str:
    if not url:
        raise FileNotFoundError("GX returned no URL for the validation page")
    parsed = urlparse(url)
    path = unquote(parsed.path) if parsed.scheme == "file" else url
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: not written")
    return path


def _outcome(validation_result: Any) -> ExpectationOutcome:
    configuration = validation_result.expectation_config
    kwargs = {k: v for k, v in configuration.kwargs.items() if k != "batch_id"}
    result = validation_result.result or {}
    return ExpectationOutcome(
        expectation_type=configuration.type,
        column=kwargs.get("column"),
        kwargs=kwargs,
        severity=_severity(configuration.meta, configuration.type),
        success=bool(validation_result.success),
        element_count=result.get("element_count"),
        unexpected_count=result.get("unexpected_count"),
        unexpected_percent=result.get("unexpected_percent"),
        observed_value=result.get("observed_value"),
        exception_message=_exception_message(validation_result.exception_info or {}),
    )


def _exception_message(info: dict) -> str | None:
    """GX reports an expectation's own exception flat, a failed metric's keyed by metric id."""
    if "raised_exception" in info:
        infos = [info]
    else:
        infos = [value for value in info.values() if isinstance(value, dict)]
    messages = [
        _one_line(i.get("exception_message") or "exception")
        for i in infos if i.get("raised_exception")
    ]
    return "; ".join(dict.fromkeys(messages)) or None


def enforce(result: GateResult) -> None:
    """Raise QualityGateBlocked (one line naming every failed expectation) on an error failure."""
    if not result.success:
        raise QualityGateBlocked(result.describe_failures())


# --- row-level rules (expect-or-drop) ------------------------------------------------------

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


# --- results rows --------------------------------------------------------------------------

RESULTS_SCHEMA = T.StructType([
    T.StructField("run_id", T.StringType()),
    T.StructField("job", T.StringType()),
    T.StructField("layer", T.StringType()),
    T.StructField("table", T.StringType()),
    T.StructField("table_version", T.LongType()),
    T.StructField("expectation_type", T.StringType()),
    T.StructField("column", T.StringType()),
    T.StructField("kwargs", T.StringType()),
    T.StructField("severity", T.StringType()),
    T.StructField("success", T.BooleanType()),
    T.StructField("element_count", T.LongType()),
    T.StructField("unexpected_count", T.LongType()),
    T.StructField("unexpected_percent", T.DoubleType()),
    T.StructField("observed_value", T.StringType()),
    T.StructField("validated_at", T.TimestampType()),
])


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str, sort_keys=True)


def results_frame(spark: SparkSession, result: GateResult, run_id: str, job: str,
                  table_version: int | None, validated_at: datetime) -> DataFrame:
    """One row per expectation (RESULTS_SCHEMA). table_version: the target table's version the
    batch was validated against (None before its first commit). kwargs and observed_value are
    JSON strings (observed_value null when GX observed nothing, e.g. column map expectations)."""
    rows = [
        (run_id, job, result.layer, result.table, _int(table_version), o.expectation_type,
         o.column, json.dumps(o.kwargs, default=str, sort_keys=True), o.severity,
         bool(o.success), _int(o.element_count), _int(o.unexpected_count),
         None if o.unexpected_percent is None else float(o.unexpected_percent),
         _json_or_none(o.observed_value), validated_at)
        for o in result.outcomes
    ]
    return spark.createDataFrame(rows, RESULTS_SCHEMA)


# --- the jobs' gate ------------------------------------------------------------------------

def run_gate(lake: Lake, df: DataFrame, layer: str, table: str, target: TableSpec, run_id: str,
             job: str, docs_dir: Path | str | None, *,
             expectations_dir: Path | None = None) -> GateResult:
    """Validate df (cached by the caller) with expectations/<layer>/<table>.json, append the
    results rows to quality.results (always, also when the gate blocks), log the docs path, then
    enforce() (raises QualityGateBlocked on an error failure)."""
    suite = load_suite(layer, table, expectations_dir)
    table_version = lake.version(target) if lake.exists(target) else None
    result = validate(df, suite, layer, table, docs_dir=docs_dir, run_id=run_id)
    lake.append(QUALITY_RESULTS, results_frame(lake.spark, result, run_id, job, table_version,
                                               result.validated_at or datetime.now(timezone.utc)))
    failed = {s: len(result.failed(s)) for s in SEVERITIES}
    logger.info("%s.%s: %d expectation(s), %d error and %d warn failure(s); results in %s; "
                "Data Docs: %s", layer, table, len(result.outcomes), failed["error"],
                failed["warn"], QUALITY_RESULTS.qualified_name, result.docs_path or "not built")
    enforce(result)
    return result


def gate_and_split(lake: Lake, df: DataFrame, layer: str, table: str, target: TableSpec, run_id: str,
                   job: str, quality: QualityConfig) -> tuple[DataFrame, DataFrame]:
    """A layer's gate: run_gate, then split_rows by the same suite -> (good, quarantined).
    With quality.gates off, every row is good and nothing is validated."""
    if not quality.gates:
        return df, df.limit(0).withColumn(QUARANTINE_COLUMN, F.array().cast(T.ArrayType(T.StringType())))
    run_gate(lake, df, layer, table, target, run_id, job, quality.data_docs_dir)
    return split_rows(df, load_suite(layer, table))
