"""Great Expectations gates (strata.quality): the code is in strata/quality/rules.py while the
module is split into a package; the public names are re-exported here."""
from strata.quality.rules import (DEFAULT_SEVERITY, DOCS_INDEX_LIMIT, EXPECTATIONS_DIR, LAYERS,
                                  QUARANTINE_COLUMN, RESULT_FORMAT, RESULTS_SCHEMA, ROW_LEVEL_TYPES,
                                  ROW_RULE_TYPES, RULE_NAME_LIMIT, SEVERITIES, ExpectationOutcome,
                                  GateResult, RowRule, SuiteError, _build_docs,
                                  default_expectations_dir, enforce, gate_and_split, load_suite,
                                  results_frame, row_rules, run_gate, split_rows, suite_path,
                                  validate)

__all__ = [
    "DEFAULT_SEVERITY", "DOCS_INDEX_LIMIT", "EXPECTATIONS_DIR", "LAYERS", "QUARANTINE_COLUMN",
    "RESULT_FORMAT", "RESULTS_SCHEMA", "ROW_LEVEL_TYPES", "ROW_RULE_TYPES", "RULE_NAME_LIMIT",
    "SEVERITIES", "ExpectationOutcome", "GateResult", "RowRule", "SuiteError",
    "default_expectations_dir", "enforce", "gate_and_split", "load_suite", "results_frame",
    "row_rules", "run_gate", "split_rows", "suite_path", "validate",
]
