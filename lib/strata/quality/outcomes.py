"""What a validation found: one ExpectationOutcome per expectation, a GateResult per suite, and
enforce, which blocks publication on an error failure."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from strata.errors import QualityGateBlocked
from strata.quality.common import SEVERITIES


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


def enforce(result: GateResult) -> None:
    """Raise QualityGateBlocked (one line naming every failed expectation) on an error failure."""
    if not result.success:
        raise QualityGateBlocked(result.describe_failures())
