"""The contract every job keeps with spark-submit.sh and orchestrators.

Arguments: --env, --run-date, --run-id plus the job's own. Exit codes: 0 ok, 2 a quality gate
blocked, 1 any other error. The last line on stdout is one JSON object: job, env, run_id,
run_date, status, tables {name: {path, version, rows}}, and the job's own counts.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from strata.config import Config, ConfigError, load_config
from strata.errors import QualityGateBlocked

log = logging.getLogger("strata")

EXIT_OK, EXIT_FAILED, EXIT_BLOCKED = 0, 1, 2


@dataclass
class JobContext:
    job: str
    env: str
    run_id: str
    run_date: dt.date
    config: Config
    args: argparse.Namespace
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The job's counts as they accrue: the summary keeps them when the job fails midway.
    counts: dict[str, Any] = field(default_factory=dict)
    _spark: Any = None
    _lake: Any = None

    @property
    def spark(self):
        if self._spark is None:
            from strata.session import build_spark
            self._spark = build_spark(self.config, app_name=f"strata-{self.job}")
        return self._spark

    @property
    def lake(self):
        if self._lake is None:
            from strata.lake import open_lake
            self._lake = open_lake(self.config, self.spark, self.job, self.run_id, self.run_date.isoformat())
        return self._lake

    def record_table(self, table) -> None:
        """Report a table this job wrote (its current version and rows) in the summary line."""
        self.tables[table.qualified_name] = self.lake.summary(table)


JobBody = Callable[[JobContext], dict[str, Any]]


def parse_args(job: str, argv: list[str] | None,
               add_arguments: Callable[[argparse.ArgumentParser], None] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=job, description=f"Strata job {job}")
    parser.add_argument("--env", default="local", help="configuration environment (conf/<env>.yaml)")
    parser.add_argument("--run-date", type=dt.date.fromisoformat, default=None,
                        help="logical date of the run, YYYY-MM-DD (default: today, UTC)")
    parser.add_argument("--run-id", default=None, help="orchestrator's run id (default: generated)")
    if add_arguments:
        add_arguments(parser)
    return parser.parse_args(argv)


def new_run_id() -> str:
    return f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def run(job: str, body: JobBody, argv: list[str] | None = None,
        add_arguments: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    """Run body with a JobContext; print the summary line; return the exit code."""
    logging.basicConfig(level=os.environ.get("STRATA_LOG_LEVEL", "INFO").upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    for noisy in ("py4j", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = parse_args(job, argv, add_arguments)
    run_date = args.run_date or dt.datetime.now(dt.timezone.utc).date()
    summary: dict[str, Any] = {"job": job, "env": args.env, "run_id": args.run_id or new_run_id(),
                               "run_date": run_date.isoformat(), "status": "failed", "tables": {}}
    code = EXIT_FAILED
    context = None
    try:
        config = load_config(args.env)  # before Spark: a config error costs no JVM start
        context = JobContext(job, args.env, summary["run_id"], run_date, config, args)
        counts = body(context) or {}
        summary.update(context.counts)
        summary.update(counts)
        summary["status"], code = "ok", EXIT_OK
    except QualityGateBlocked as exc:
        summary.update(status="blocked", error=str(exc))
        code = EXIT_BLOCKED
        print(f"{job}: blocked by a quality gate: {exc}", file=sys.stderr)
    except ConfigError as exc:
        summary["error"] = f"config error: {exc}"
        print(f"{job}: config error: {exc}", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - every failure becomes exit 1 plus one line
        summary["error"] = f"{type(exc).__name__}: {_one_line(exc)}"
        log.debug("%s failed", job, exc_info=True)  # the traceback, with STRATA_LOG_LEVEL=DEBUG
        print(f"{job}: failed: {summary['error']}", file=sys.stderr)
    finally:
        if context is not None:
            for name, value in context.counts.items():
                summary.setdefault(name, value)
            summary["tables"] = context.tables
            docs = Path(context.config.quality.data_docs_dir) / "index.html"
            if docs.exists():
                summary["data_docs"] = str(docs)
            if context._spark is not None:
                context._spark.stop()
    print(json.dumps(summary, default=str), flush=True)
    return code


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
