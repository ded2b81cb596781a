"""Great Expectations gates: one ExpectationSuite per layer and table, run on a Spark DataFrame.

Suites are GX 1.x ExpectationSuites serialised as JSON in ``expectations/<layer>/<table>.json``.
Every expectation carries ``meta.severity``: ``"error"`` (the default when absent) blocks
publication, ``"warn"`` is recorded and publication goes on. ``mostly`` is GX's own.

    suite = load_suite("bronze", "trips")
    result = validate(df, suite, "bronze", "trips")   # df cached by the caller
    enforce(result)                                    # QualityGateBlocked on an error failure

GX's own per-expectation ``severity`` field (critical/warning/info) is not used: a suite file that
sets it to anything but the default is rejected, so nobody believes it downgrades a check.

validate also builds Data Docs. The jobs gate through strata.publish, which writes every
outcome to quality.results (also when the gate blocks) before it enforces.

Row-level expectations (not_null, between, in_set, regex..., and column-pair and multicolumn ones:
a > b, a = b, sum(a, b) = 10...) are also Spark predicates, so a job can quarantine the failing rows
instead of (or before) blocking (expect-or-drop):

    good, quarantined = split_rows(df, suite)       # quarantined has _failed_rules array<string>

A suite is refused (SuiteError) when an expectation of severity error judges rows one by one but
cannot be a row rule: its failing rows would be published.

The modules, each depending only on those above it:

    common      severities, SuiteError
    outcomes    ExpectationOutcome, GateResult, enforce
    rules       row rules as Spark predicates (row_rules, split_rows), the row-level check
    suites      loading and checking suite files (load_suite, suite_path)
    validation  the GX context, validate, Data Docs
    results     the results rows (RESULTS_SCHEMA, results_frame)
"""
from strata.quality.common import DEFAULT_SEVERITY, SEVERITIES, SuiteError
from strata.quality.outcomes import ExpectationOutcome, GateResult, enforce
from strata.quality.rules import (QUARANTINE_COLUMN, ROW_LEVEL_TYPES, ROW_RULE_TYPES,
                                  RULE_NAME_LIMIT, RowRule, row_rules, split_rows)
from strata.quality.suites import (EXPECTATIONS_DIR, LAYERS, default_expectations_dir,
                                   load_suite, suite_path)
from strata.quality.validation import DOCS_INDEX_LIMIT, RESULT_FORMAT, validate
from strata.quality.results import RESULTS_SCHEMA, results_frame

__all__ = [
    # suites and severities
    "SuiteError", "LAYERS", "SEVERITIES", "DEFAULT_SEVERITY", "EXPECTATIONS_DIR",
    "default_expectations_dir", "suite_path", "load_suite",
    # outcomes
    "ExpectationOutcome", "GateResult", "enforce",
    # validation
    "RESULT_FORMAT", "DOCS_INDEX_LIMIT", "validate",
    # row rules
    "RowRule", "QUARANTINE_COLUMN", "RULE_NAME_LIMIT", "ROW_RULE_TYPES", "ROW_LEVEL_TYPES",
    "row_rules", "split_rows",
    # results rows
    "RESULTS_SCHEMA", "results_frame",
]
