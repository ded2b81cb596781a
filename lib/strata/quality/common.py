"""What every quality module shares: the severities (and an expectation's, read from its meta),
SuiteError, and errors cut to one line."""
from __future__ import annotations

SEVERITIES = ("error", "warn")
DEFAULT_SEVERITY = "error"


class SuiteError(ValueError):
    """An expectation suite that cannot be used, with the file (or suite) it came from."""


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
