"""Expectation suites: GX 1.x ExpectationSuites serialised as JSON in
``expectations/<layer>/<table>.json``, loaded and checked (SuiteError names the file)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from great_expectations import exceptions as gx_exceptions
from great_expectations.core import ExpectationSuite
from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

from strata.quality.common import SEVERITIES, SuiteError, _one_line, _severity
from strata.quality.rules import _row_rule_refusal

LAYERS = ("bronze", "silver", "gold", "monitoring")
# <repo>/expectations of the checkout.
EXPECTATIONS_DIR = Path(__file__).resolve().parents[3] / "expectations"

_SUITE_KEYS = {"name", "id", "expectations", "suite_parameters", "meta", "notes"}
_GX_DEFAULT_SEVERITY = "critical"


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
