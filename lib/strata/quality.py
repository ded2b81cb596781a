"""Great Expectations gates: one ExpectationSuite per layer and table, run on a Spark DataFrame.

Suites are GX 1.x ExpectationSuites serialised as JSON in ``expectations/<layer>/<table>.json``.
Every expectation carries ``meta.severity``: ``"error"`` (the default when absent) blocks
publication, ``"warn"`` is recorded and publication goes on. ``mostly`` is GX's own.

    suite = load_suite("bronze", "trips")
    result = validate(df, suite, "bronze", "trips")   # df cached by the caller
    enforce(result)                                    # QualityGateBlocked on an error failure

GX's own per-expectation ``severity`` field (critical/warning/info) is not used: a suite file that
sets it to anything but the default is rejected, so nobody believes it downgrades a check.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import great_expectations as gx
from great_expectations import exceptions as gx_exceptions
from great_expectations.core import ExpectationSuite
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.expectations.expectation_configuration import ExpectationConfiguration
from pyspark.sql import DataFrame

from strata.errors import QualityGateBlocked

logger = logging.getLogger(__name__)

LAYERS = ("bronze", "silver", "gold")
SEVERITIES = ("error", "warn")
DEFAULT_SEVERITY = "error"
# <repo>/expectations of the checkout.
EXPECTATIONS_DIR = Path(__file__).resolve().parents[2] / "expectations"
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


def _context() -> Any:
    """A fresh ephemeral context per validation: with its registrations it costs 40-120 ms
    (measured), against seconds for the validation, and no state (stored results) outlives it.
    get_context() also makes it GX's process-wide current context; every object used here is
    bound to it explicitly, so that does not matter to us."""
    context = gx.get_context(mode="ephemeral")
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


def validate(df: DataFrame, suite: ExpectationSuite, layer: str, table: str) -> GateResult:
    """Run the suite on df (cached by the caller); GX launches its own Spark jobs, nothing else."""
    for index, expectation in enumerate(suite.expectations):
        _severity(expectation.meta,
                  f"suite {suite.name}: expectations[{index}] ({expectation.expectation_type})")
    if not df.is_cached:
        logger.warning("%s.%s: validating a DataFrame that is not cached: GX reads it once per "
                       "metric batch", layer, table)
    name = f"{layer}.{table}"
    context = _context()
    batch_definition = (
        context.data_sources.add_spark(_DATASOURCE_NAME)
        .add_dataframe_asset(name)
        .add_batch_definition_whole_dataframe(_BATCH_DEFINITION_NAME)
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(
            name=name, data=batch_definition, suite=context.suites.add(_copy_suite(suite))
        )
    )
    run = definition.run(batch_parameters={"dataframe": df}, result_format=RESULT_FORMAT)
    outcomes = [_outcome(r) for r in run.results]
    return GateResult(layer=layer, table=table, suite_name=suite.name, outcomes=outcomes)


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
