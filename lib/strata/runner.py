"""The contract every job keeps with spark-submit.sh and orchestrators.

Arguments: --env, --run-date, --run-id plus the job's own. Exit codes: 0 ok, 2 a quality gate
blocked, 1 any other error (bad arguments too). Stdout carries one line, the last: a JSON object
with job, env, run_id, run_date, status, tables {name: {path, version, rows}}, and the job's
counts; everything else (logs, stray prints) goes to stderr.

Before Spark starts: arguments, config (strata.config) and the expectation suites the job will use
(strata.preflight). `python -m strata.runner --check JOB [ARGS...]` checks the arguments (with the
job's own add_arguments) and the config alone, without importing Spark or Great Expectations:
silent with exit 0 when the job may start, else the summary line and exit 1 (spark-submit.sh runs
it before the JVM).

Counts survive a failure: a body puts them in ctx.counts as it goes (and may still return a dict,
which is merged over them); the summary has them whatever the outcome. Tables reported with
ctx.record_table are re-read at the end, so the summary shows their versions as the run left them.
"""
from __future__ import annotations

import __future__
import argparse
import ast
import contextlib
import datetime as dt
import importlib
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import time
import typing
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
    """What a job body gets. Counts go in ctx.counts as the body goes (ctx.counts["rows_read"] =
    n): the summary line has them whatever the outcome; a dict the body returns is merged over
    them. Tables reported with record_table are re-read when the run ends."""
    job: str
    env: str
    run_id: str
    run_date: dt.date
    config: Config
    args: argparse.Namespace
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    _spark: Any = None
    _lake: Any = None
    # qualified name -> (lake, TableSpec) of every table recorded, re-read at the end of the run.
    # Shared by the copies dataclasses.replace makes (pipeline stages), so the run sees them all.
    _recorded: dict[str, tuple[Any, Any]] = field(default_factory=dict, repr=False)
    # The job's counts so far: in the summary line whatever the outcome. Fresh in every copy.
    counts: dict[str, Any] = field(default_factory=dict, init=False)

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
        """Report a table this job wrote in the summary line: its version and rows now, and again
        as they are at the end of the run (whatever the outcome)."""
        self._recorded[table.qualified_name] = (self.lake, table)
        self.tables[table.qualified_name] = self.lake.summary(table)

    def refresh_tables(self) -> None:
        """Re-read every recorded table whose version moved since it was recorded. Never raises:
        the summary keeps what was recorded when a table cannot be read."""
        for name, (lake, table) in list(self._recorded.items()):
            try:
                if self.tables.get(name, {}).get("version") != lake.version(table):
                    self.tables[name] = lake.summary(table)
            except Exception:  # noqa: BLE001 - reporting must not change the run's outcome
                log.warning("%s: could not re-read table %s for the summary", self.job, name, exc_info=True)


JobBody = Callable[[JobContext], dict[str, Any]]
# Keys of the summary line that the runner owns; counts cannot replace them.
SUMMARY_KEYS = ("job", "env", "run_id", "run_date", "status", "tables", "error", "data_docs")


class Laps:
    """A job's phases timed in turn: laps("fit") puts the wall-clock seconds since the previous
    lap (or since the Laps was made) into counts["seconds"]["fit"]."""

    def __init__(self, counts: dict[str, Any]) -> None:
        self.seconds = counts.setdefault("seconds", {})
        self.started = time.monotonic()

    def __call__(self, phase: str) -> None:
        now = time.monotonic()
        self.seconds[phase] = round(now - self.started, 1)
        self.started = now


class ArgumentsError(ValueError):
    """Bad command-line arguments: exit 1 with the summary line (argparse would exit 2, which
    means a blocked gate here)."""


class JobArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        raise ArgumentsError(message)


def run_date_arg(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None


def parse_args(job: str, argv: list[str] | None,
               add_arguments: Callable[[argparse.ArgumentParser], None] | None) -> argparse.Namespace:
    """The job's arguments; ArgumentsError if they are wrong (--help still prints and exits 0)."""
    parser = JobArgumentParser(prog=job, description=f"Strata job {job}")
    parser.add_argument("--env", default="local", help="configuration environment (conf/<env>.yaml)")
    parser.add_argument("--run-date", type=run_date_arg, default=None,
                        help="logical date of the run, YYYY-MM-DD (default: today, UTC)")
    parser.add_argument("--run-id", default=None, help="orchestrator's run id (default: generated)")
    if add_arguments:
        add_arguments(parser)
    return parser.parse_args(argv)


def _readable_args(argv: list[str]) -> dict[str, Any]:
    """env, run_id and run_date as far as they can be read from arguments that failed to parse."""
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    parser.add_argument("--env", default="local")
    parser.add_argument("--run-id", default=None)
    parser.add_argument("--run-date", default=None)
    try:
        known, _ = parser.parse_known_args(argv)
    except (argparse.ArgumentError, SystemExit):
        return {"env": None, "run_id": None, "run_date": None}
    try:
        run_date = dt.date.fromisoformat(known.run_date).isoformat() if known.run_date else None
    except ValueError:
        run_date = None
    return {"env": known.env, "run_id": known.run_id, "run_date": run_date}


def new_run_id() -> str:
    return f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def run(job: str, body: JobBody, argv: list[str] | None = None,
        add_arguments: Callable[[argparse.ArgumentParser], None] | None = None, *,
        check_only: bool = False) -> int:
    """Run body with a JobContext; print the summary line; return the exit code.

    check_only: stop after the arguments and the config (what spark-submit.sh checks before the
    JVM); print nothing and return 0 if they pass, else the summary line and 1."""
    logging.basicConfig(level=os.environ.get("STRATA_LOG_LEVEL", "INFO").upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    for noisy in ("py4j", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    argv = sys.argv[1:] if argv is None else list(argv)
    summary: dict[str, Any] = {"job": job, "env": None, "run_id": None, "run_date": None,
                               "status": "failed", "tables": {}}
    outcome: dict[str, Any] = {}
    code = EXIT_FAILED
    context = None
    returned: dict[str, Any] = {}
    try:
        # Outside the stdout guard: --help prints to stdout and exits 0.
        args = parse_args(job, argv, add_arguments)
    except ArgumentsError as exc:
        summary.update(_readable_args(argv))
        summary["run_id"] = summary["run_id"] or new_run_id()
        summary["error"] = f"bad arguments: {exc}"
        print(f"{job}: bad arguments: {exc} (see {job} --help)", file=sys.stderr)
        print(json.dumps(summary, default=str), flush=True)
        return EXIT_FAILED
    # a backfill (--from/--to) is reported under its last date
    run_date = args.run_date or getattr(args, "to_date", None) or dt.datetime.now(dt.timezone.utc).date()
    summary.update(env=args.env, run_id=args.run_id or new_run_id(), run_date=run_date.isoformat())
    # Stdout carries the summary line only: a stray print of the body or a library goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            config = load_config(args.env)  # before Spark: a config error costs no JVM start
            if check_only:
                return EXIT_OK
            from strata import preflight
            preflight.check(job, config, args)  # the suites it will use, still before Spark
            context = JobContext(job, args.env, summary["run_id"], run_date, config, args)
            returned = body(context) or {}
            outcome["status"], code = "ok", EXIT_OK
        except QualityGateBlocked as exc:
            outcome.update(status="blocked", error=summary_error(exc))
            code = EXIT_BLOCKED
            print(f"{job}: blocked by a quality gate: {exc}", file=sys.stderr)
        except ConfigError as exc:
            outcome["error"] = f"config error: {exc}"
            print(f"{job}: config error: {exc}", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - every failure becomes exit 1 plus one line
            outcome["error"] = summary_error(exc)
            log.debug("%s failed", job, exc_info=True)  # the traceback, with STRATA_LOG_LEVEL=DEBUG
            print(f"{job}: failed: {outcome['error']}", file=sys.stderr)
        finally:
            if context is not None:
                if code != EXIT_OK:
                    _record_failure(context, outcome)
                counts = {**context.counts, **returned}
                clashing = sorted(set(counts) & set(SUMMARY_KEYS))
                if clashing:
                    log.warning("%s: counts %s left out of the summary: the runner owns those keys", job, clashing)
                summary.update({k: v for k, v in counts.items() if k not in SUMMARY_KEYS})
                context.refresh_tables()
                summary["tables"] = context.tables
                docs = Path(context.config.quality.data_docs_dir) / "index.html"
                if docs.exists():
                    outcome["data_docs"] = str(docs)
                if context._spark is not None:
                    context._spark.stop()
    summary.update(outcome)
    print(json.dumps(summary, default=str), flush=True)
    return code


def job_arguments(job: str, package: str = "strata.jobs") -> Callable[[argparse.ArgumentParser], None] | None:
    """add_arguments of <package>.<job> (the function jobs/<job>.py hands to run), for --check.

    Read from the module's source and run on its own when it needs nothing but argparse: importing
    a gating job's module imports Great Expectations, seconds before every submit. Imported with
    the module otherwise. LookupError if there is no such job module."""
    spec = importlib.util.find_spec(f"{package}.{job}") if job.isidentifier() else None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise LookupError(f"unknown job {job!r}: no module {package}.{job}")
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"), spec.origin)
    definitions = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "add_arguments"]
    if not definitions:
        return None
    alone = ast.Module(body=definitions[-1:], type_ignores=[])
    namespace: dict[str, Any] = {"argparse": argparse, "__name__": f"{package}.{job}"}
    try:
        exec(compile(alone, spec.origin, "exec", flags=__future__.annotations.compiler_flag, dont_inherit=True),
             namespace)
        add_arguments = namespace["add_arguments"]
        add_arguments(argparse.ArgumentParser(prog=job, add_help=False))  # needs only argparse?
        return add_arguments
    except NameError:
        return getattr(importlib.import_module(f"{package}.{job}"), "add_arguments", None)


def is_summary_line(line: bytes) -> bool:
    """Whether a line of output is a job's summary line (what run prints last)."""
    if not line.startswith(b'{"job": '):
        return False
    try:
        summary = json.loads(line)
    except ValueError:
        return False
    return isinstance(summary, dict) and "status" in summary and "tables" in summary


def supervise(job: str, env: str, command: list[str]) -> int:
    """Run spark-submit `command` and keep the contract on its output: every line it writes to
    stdout goes to stderr as it comes, except the job's summary line, which alone goes to stdout
    at the end. Spark's PythonRunner hands the driver's stderr (our logs and failure lines) to the
    JVM's stdout, so without this they would all land on stdout. TERM, INT and HUP sent to this
    process go to spark-submit. Returns spark-submit's exit code; without a summary line, prints
    a failed one and returns 1 (unless spark-submit already failed with another code)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE)

    def forward(signum, _frame) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    errors = sys.stderr.buffer
    summary: bytes | None = None
    assert process.stdout is not None
    for line in process.stdout:
        if is_summary_line(line):
            if summary is not None:  # only the last one is the job's
                errors.write(summary)
            summary = line
        else:
            errors.write(line)
            errors.flush()
    code = process.wait()
    if summary is None:
        error = f"spark-submit exited with {code} without a summary line"
        print(f"{job}: failed: {error}", file=sys.stderr, flush=True)
        summary = (json.dumps({"job": job, "env": env, "run_id": None, "run_date": None, "status": "failed",
                               "tables": {}, "error": error}) + "\n").encode()
        code = code if code not in (EXIT_OK, EXIT_BLOCKED) else EXIT_FAILED
    sys.stdout.buffer.write(summary if summary.endswith(b"\n") else summary + b"\n")
    sys.stdout.buffer.flush()
    return code


USAGE = """usage: python -m strata.runner --check JOB [job arguments...]
       python -m strata.runner --submit JOB ENV -- SPARK_SUBMIT_COMMAND..."""


def main(argv: list[str] | None = None) -> int:
    """`python -m strata.runner --check JOB [ARGS...]`: what jobs/JOB.py checks before Spark that
    is cheap (its arguments, with its own add_arguments; the config), in about a tenth of a
    second. Silent and 0 when the job may start; else the job's summary line on stdout, one line
    on stderr, and 1. (The job checks its suites itself, before its Spark session: loading them
    imports Great Expectations.)

    `python -m strata.runner --submit JOB ENV -- COMMAND...`: run spark-submit (see supervise)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) >= 5 and argv[0] == "--submit" and argv[3] == "--":
        return supervise(argv[1], argv[2], argv[4:])
    if len(argv) < 2 or argv[0] != "--check":
        print(USAGE, file=sys.stderr)
        return EXIT_FAILED
    job = argv[1]
    try:
        add_arguments = job_arguments(job)
    except LookupError as exc:
        print(f"strata.runner: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return run(job, _not_run, argv[2:], add_arguments, check_only=True)


def _not_run(ctx: JobContext) -> dict[str, Any]:
    raise AssertionError("a --check never runs the job's body")


def _record_failure(context: JobContext, outcome: dict[str, Any]) -> None:
    """A failed or blocked run of one dataset's job (or of a model's, under the model's dataset)
    goes to ops.failed_runs, so the pipeline does not take the run date for done (the pipeline
    records its own stages)."""
    dataset = getattr(context.args, "dataset", None)
    model = getattr(context.args, "model", None)
    if not isinstance(dataset, str) and isinstance(model, str) and model in context.config.models:
        dataset = context.config.model(model).dataset
    if context._lake is None or not isinstance(dataset, str):
        return
    from strata.runs import record_failure
    record_failure(context.lake, dataset, context.job, context.run_date, context.run_id,
                   outcome.get("status", "failed"), outcome.get("error", ""))


def summary_error(exc: BaseException) -> str:
    """The summary line's error: a blocking gate's message whole, else the type and first line."""
    return str(exc) if isinstance(exc, QualityGateBlocked) else f"{type(exc).__name__}: {_one_line(exc)}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


if __name__ == "__main__":
    raise SystemExit(main())
