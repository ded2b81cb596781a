"""One helper: run a Strata job through spark-submit.sh and turn its outcome into Dagster's.

The job contract (spark-submit.sh --help, strata.runner): exit 0 ok, 2 a quality gate blocked
publication, 1 any other error; stdout's last line is the job's JSON summary (job, env, run_id,
run_date, status, tables {name: {path, version, rows}}, the job's counts, error); logs go to
stderr.

- exit 0: a MaterializeResult whose metadata is the summary (see summary_metadata);
- exit 2: dagster.Failure(allow_retries=False) with the same metadata: the gate's verdict does
  not change on a retry; the step fails, so nothing downstream of it runs in that run;
- exit 1 (or anything else): dagster.Failure that the asset's RetryPolicy may retry, unless the
  error is one a retry cannot mend (bad arguments, a config error, a model without champion).

This module imports no Spark and nothing of lib/strata: it only starts processes.
"""
from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any, Mapping

import dagster as dg

REPO = Path(__file__).resolve().parents[1]
EXIT_OK, EXIT_FAILED, EXIT_BLOCKED = 0, 1, 2
# Errors of the summary line that the same run would meet again: retrying them costs a JVM start
# and changes nothing. "bad arguments:" and "config error:" are the runner's own prefixes;
# NoChampion is predict's (train the model first), NoReference monitor's (train it again).
NOT_RETRYABLE = ("bad arguments:", "config error:", "NoChampion:", "NoReference:")
# Keys of the summary line that are not the job's counts.
SUMMARY_KEYS = ("job", "env", "run_id", "run_date", "status", "tables", "error", "data_docs")
STDERR_TAIL_LINES = 40


class StrataJobs(dg.ConfigurableResource):
    """How assets submit jobs: the configuration environment (conf/<env>.yaml), extra
    environment variables for the job (STRATA_* overrides such as STRATA_LAKE__ROOT, an S3
    endpoint, ...; they go over this process's environment), an optional --master and the script
    (this checkout's spark-submit.sh)."""

    env: str = "local"
    extra_env: dict[str, str] = {}
    master: str | None = None
    script: str = str(REPO / "spark-submit.sh")

    def run(self, context: dg.OpExecutionContext, job: str, run_date: str, args: list[str],
            stage: str | None = None) -> dg.MaterializeResult:
        """`spark-submit.sh JOB --env ENV --run-date DATE --run-id <dagster run id> ARGS...`;
        stage: the key of the summary's `stages` whose counts are this step's (a pipeline run)."""
        command = [self.script, job, "--env", self.env, "--run-date", run_date, "--run-id", context.run_id, *args]
        if self.master:
            command += ["--master", self.master]
        context.log.info("running %s" % " ".join(command))
        code, summary, tail = run_command(command, {**os.environ, **self.extra_env}, context.log.info)
        return outcome(job, code, summary, tail, stage)


def run_command(command: list[str], environ: Mapping[str, str], log) -> tuple[int, dict[str, Any] | None, list[str]]:
    """Run command in the checkout; every stderr line goes to log as it comes. Returns the exit
    code, the last stdout line parsed as JSON (None if there is none or it is not a JSON object)
    and the last lines of stderr. The process is terminated if this is interrupted (a run
    cancelled from the UI): spark-submit.sh forwards TERM to spark-submit."""
    process = subprocess.Popen(command, cwd=REPO, env=dict(environ), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, errors="replace")
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(process.stdout), daemon=True)
    reader.start()
    tail: list[str] = []
    try:
        for line in process.stderr:
            line = line.rstrip("\n")
            log(line)
            tail = (tail + [line])[-STDERR_TAIL_LINES:]
        code = process.wait()
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    reader.join(timeout=10)
    return code, parse_summary(out), tail


def parse_summary(stdout_lines: list[str]) -> dict[str, Any] | None:
    """The job's summary: the last non-empty stdout line, if it is a JSON object."""
    lines = [line for line in stdout_lines if line.strip()]
    if not lines:
        return None
    try:
        summary = json.loads(lines[-1])
    except ValueError:
        return None
    return summary if isinstance(summary, dict) else None


def _scalar(value: Any) -> bool:
    return isinstance(value, (bool, int, float, str))


def summary_metadata(summary: Mapping[str, Any], stage: str | None = None) -> dict[str, Any]:
    """Asset metadata from a summary line: status, run id and date, error; per table its
    version, rows and path (`<table>.version`, `<table>.rows`, `<table>.path`); every count of
    the job: a number or text as it is, a mapping of plain values one level down
    (`features.rows`, `features.quarantined`), anything else as JSON; and the whole line as
    JSON (`summary`). With stage (a pipeline's summary), the counts are those of
    summary["stages"][stage] (a stage skipped as up to date has `skipped`)."""
    meta: dict[str, Any] = {"status": dg.MetadataValue.text(str(summary.get("status")))}
    for key in ("run_id", "run_date", "error"):
        if summary.get(key) is not None:
            meta[key] = dg.MetadataValue.text(str(summary[key]))
    if summary.get("data_docs"):
        meta["data_docs"] = dg.MetadataValue.path(str(summary["data_docs"]))
    for name, table in sorted((summary.get("tables") or {}).items()):
        for field in ("version", "rows"):
            if isinstance(table.get(field), int):
                meta[f"{name}.{field}"] = dg.MetadataValue.int(table[field])
        if table.get("path"):
            meta[f"{name}.path"] = dg.MetadataValue.path(str(table["path"]))
    counts = summary.items()
    if stage is not None:
        counts = [*(((summary.get("stages") or {}).get(stage) or {}).items()),
                  *((k, v) for k, v in summary.items() if k in ("report", "report_error"))]
    for key, value in counts:
        if key in SUMMARY_KEYS or value is None:
            continue
        if _scalar(value):
            meta[key] = value
        elif isinstance(value, dict) and value and all(_scalar(v) or v is None for v in value.values()):
            meta.update({f"{key}.{sub}": v for sub, v in value.items() if v is not None})
        else:
            meta[key] = dg.MetadataValue.json(value)
    meta["summary"] = dg.MetadataValue.json(dict(summary))
    return meta


def outcome(job: str, code: int, summary: dict[str, Any] | None, stderr_tail: list[str],
            stage: str | None = None) -> dg.MaterializeResult:
    """The MaterializeResult of exit 0; else raises dagster.Failure (see the module's doc)."""
    if summary is None:
        summary = {"job": job, "status": "failed", "tables": {},
                   "error": f"exit code {code} and no summary line on stdout"}
    meta = summary_metadata(summary, stage)
    if code == EXIT_OK:
        return dg.MaterializeResult(metadata=meta)
    meta["exit_code"] = code
    meta["stderr_tail"] = dg.MetadataValue.md("```\n" + "\n".join(stderr_tail) + "\n```")
    error = str(summary.get("error") or "")
    if code == EXIT_BLOCKED:
        raise dg.Failure(description=f"{job}: a quality gate blocked publication (exit 2): {error}",
                         metadata=meta, allow_retries=False)
    retryable = not error.startswith(NOT_RETRYABLE)
    raise dg.Failure(description=f"{job} failed (exit {code}): {error}", metadata=meta, allow_retries=retryable)
