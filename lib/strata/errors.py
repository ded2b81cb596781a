"""Errors that decide a job's exit code."""


class QualityGateBlocked(RuntimeError):
    """A quality gate failed an `error` expectation: nothing was published (exit 2)."""
