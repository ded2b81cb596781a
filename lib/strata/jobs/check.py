"""check: a dataset's pre-flight, in seconds, touching no table.

    ./spark-submit.sh check --env ENV --dataset D

Checks in order, each a line of the report (stderr) and an entry of the summary line (stdout):
config (load_config's checks of form and meaning), suites (every suite the dataset's stages
load), source (the raw prefix can be listed: objects counted, a few keys shown) and sample (the
newest objects parsed against the declared schema, their rows typed and checked as silver would:
cast errors, null keys, the silver suite's error row rules; how many rows each would quarantine).
Exit 0 when all pass, 1 on any problem.

Unlike the other jobs it does not go through runner.run: a config error must be one line of its
report, not the end of the run before the body. It keeps the same contract (one JSON line on
stdout, exit 0/1). The sample is typed by strata.transforms.silver.prepare and split by
quality.split_rows themselves, on a local[1] session: the same casts, derived columns and rules
as silver, not a second implementation of them. That session starts only when rows were read.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("strata")

SAMPLE_OBJECTS = 3        # the newest objects under the prefix
SAMPLE_ROWS = 1000        # rows read from each at most
SHOWN_KEYS = 3
LIST_LIMIT = 10_000       # keys counted at most: listing a huge prefix would not take seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="a dataset of conf/datasets/")
    parser.add_argument("--max-quarantined", type=float, default=0.05, metavar="SHARE",
                        help="share of the sample's rows that may be quarantined before it is a problem "
                             "(default 0.05; a wrong type or rule usually rejects most of them)")


@dataclass
class Finding:
    check: str
    ok: bool | None        # None: not run, an earlier check failed
    detail: str
    lines: list[str] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)

    def report(self) -> list[str]:
        mark = {True: "ok  ", False: "FAIL", None: "skip"}[self.ok]
        return [f"  {mark}  {self.check}: {self.detail}"] + [f"          {line}" for line in self.lines]


def main(argv: list[str] | None = None) -> int:
    from strata.runner import ArgumentsError, _readable_args, new_run_id, parse_args

    logging.basicConfig(level=os.environ.get("STRATA_LOG_LEVEL", "WARNING").upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    summary: dict[str, Any] = {"job": "check", "env": None, "run_id": None, "run_date": None,
                               "status": "failed", "tables": {}}
    try:
        args = parse_args("check", argv, add_arguments)
    except ArgumentsError as exc:
        summary.update(_readable_args(argv))
        summary.update(run_id=summary["run_id"] or new_run_id(), error=f"bad arguments: {exc}")
        print(f"check: bad arguments: {exc} (see check --help)", file=sys.stderr)
        print(json.dumps(summary), flush=True)
        return 1
    run_date = args.run_date or dt.datetime.now(dt.timezone.utc).date()
    summary.update(env=args.env, run_id=args.run_id or new_run_id(), run_date=run_date.isoformat(),
                   dataset=args.dataset)
    started = time.monotonic()
    with contextlib.redirect_stdout(sys.stderr):  # stdout: the summary line only
        findings = check(args, run_date, summary["run_id"])
    problems = [f for f in findings if f.ok is False]
    seconds = round(time.monotonic() - started, 1)
    print("\n".join([f"check {args.dataset} (env {args.env}):"]
                    + [line for f in findings for line in f.report()]
                    + [f"check: {len(problems)} problem(s)" if problems else "check: all well"]
                    + [f"({seconds} s)"]), file=sys.stderr, flush=True)
    summary.update(status="failed" if problems else "ok", seconds=seconds, problems=len(problems),
                   checks=[{"check": f.check, "ok": f.ok, "detail": f.detail, "lines": f.lines, **f.counts}
                           for f in findings])
    if problems:
        summary["error"] = "; ".join(f"{f.check}: {f.detail}" for f in problems)
    print(json.dumps(summary, default=str), flush=True)
    return 1 if problems else 0


def check(args: argparse.Namespace, run_date: dt.date, run_id: str) -> list[Finding]:
    """Every check that can run: each needs the ones before it to pass (a suite needs the config,
    the sample needs the listing), except the source, which needs only the config."""
    from strata.config import ConfigError, load_config

    findings: list[Finding] = []
    try:
        config = load_config(args.env)
        dataset = config.dataset(args.dataset)
    except ConfigError as exc:
        return [Finding("config", False, str(exc)),
                *(Finding(name, None, "needs a valid config") for name in ("suites", "source", "sample"))]
    findings.append(Finding("config", True, f"{len(dataset.schema)} columns, keys {dataset.keys}, "
                                            f"partitioned by {dataset.partition_by}"))
    suites = check_suites(config, args)
    findings.append(suites)
    source, objects = check_source(config, dataset)
    findings.append(source)
    if not source.ok:
        findings.append(Finding("sample", None, "needs a readable source"))
    else:
        findings.append(check_sample(config, dataset, objects, suites.ok, args.max_quarantined, run_date, run_id))
    return findings


def check_suites(config, args: argparse.Namespace) -> Finding:
    """Every suite of the dataset's stages, as the pipeline would load them; all problems, not the first."""
    from strata import preflight
    from strata.quality import SuiteError, load_suite

    wanted = preflight.suites("pipeline", config, argparse.Namespace(dataset=args.dataset))
    errors = []
    for layer, table in wanted:
        try:
            load_suite(layer, table)
        except SuiteError as exc:
            errors.append(str(exc))
    names = ", ".join(f"{layer}.{table}" for layer, table in wanted) or "none (quality.gates off)"
    if errors:
        return Finding("suites", False, errors[0], errors[1:])
    return Finding("suites", True, names)


def check_source(config, dataset) -> tuple[Finding, list]:
    from strata.sources.s3 import S3Settings, SourceError
    from strata.sources.store import list_objects, settings_for

    source = dataset.source
    where = source.uri
    try:
        settings = settings_for(config, source)
        if isinstance(settings, S3Settings):
            # One attempt per call: an unreachable endpoint is reported now, not after boto3's backoff.
            settings = dataclasses.replace(settings, max_attempts=1)
        objects = list_objects(settings, source, limit=LIST_LIMIT)
    except SourceError as exc:
        return Finding("source", False, str(exc)), []
    if not objects:
        return Finding("source", False, f"{where}: no object matches pattern {source.pattern!r}"), []
    count = f"{len(objects)}{'+' if len(objects) >= LIST_LIMIT else ''}"
    shown = [o.key for o in objects[:SHOWN_KEYS]] + (["..."] if len(objects) > SHOWN_KEYS else [])
    return Finding("source", True, f"{where}: {count} object(s) match {source.pattern!r}", shown,
                   {"objects": len(objects)}), objects


def check_sample(config, dataset, objects: list, suites_ok: bool, max_quarantined: float,
                 run_date: dt.date, run_id: str) -> Finding:
    from strata.sources.store import settings_for

    newest = sorted(objects, key=lambda o: (o.last_modified, o.key), reverse=True)[:SAMPLE_OBJECTS]
    client = settings_for(config, dataset.source).client()
    tables, problems = [], []
    for obj in newest:
        try:
            tables.append(sample_object(client, dataset, obj))
        except Exception as exc:  # noqa: BLE001 - each object's reason is a line of the report
            problems.append(f"{obj.key}: {_reason(exc)}")
    rows = sum(t.num_rows for t in tables)
    where = f"{len(newest)} newest object(s)"
    if not rows:
        detail = problems[0] if problems else f"{where}: no records"
        return Finding("sample", False, detail, problems[1:])
    reasons = Counter(_corrupt_reasons(tables))
    try:
        reasons.update(_quarantine_reasons(config, dataset, tables, suites_ok, run_date, run_id))
    except Exception as exc:  # noqa: BLE001 - e.g. a silver rule naming a column silver lacks: one line
        return Finding("sample", False, f"{rows} row(s) read, but typing them as silver failed: {_reason(exc)}")
    quarantined = reasons.pop("_rows", 0) + sum(v for k, v in reasons.items() if k.startswith("corrupt record"))
    lines = [f"{count} row(s): {reason}" for reason, count in reasons.most_common()]
    if not suites_ok:
        lines.append("the silver suite's row rules were not applied: a suite failed to load")
    detail = f"{where}, {rows} row(s) read: {quarantined} would be quarantined"
    share = quarantined / rows
    ok = not problems and share <= max_quarantined
    if share > max_quarantined:
        detail += f" ({share:.0%}, more than --max-quarantined {max_quarantined:.0%}: a wrong type or rule?)"
    if problems:
        detail = f"{problems[0]} ({detail})"
        lines = problems[1:] + lines
    return Finding("sample", ok, detail, lines, {"rows": rows, "quarantined": quarantined,
                                                  "reasons": dict(reasons)})


def sample_object(client, dataset, obj):
    """Up to SAMPLE_ROWS records of the object as ingest reads them (the CSV fast path, then the
    line parser when it cannot vouch for the object), as one Arrow table of text columns."""
    import pyarrow as pa

    from strata.sources.parse import NeedsLineParser, object_format, read_object, record_schema

    columns = list(dataset.schema)
    fmt = object_format(obj.key, dataset.source.format)
    for fast in (True, False):
        batches, rows = [], 0
        try:
            reader = read_object(client, dataset.source.container, obj.key, obj.etag, fmt, columns, fast=fast)
            try:
                for batch in reader:
                    batches.append(batch.slice(0, SAMPLE_ROWS - rows))
                    rows += batches[-1].num_rows
                    if rows >= SAMPLE_ROWS:
                        break
            finally:
                close = getattr(reader, "close", None)
                if close:
                    close()  # the generator's finally closes the S3 body
        except NeedsLineParser:
            continue
        return pa.Table.from_batches(batches, schema=record_schema(columns))
    raise AssertionError("unreachable: the line parser never raises NeedsLineParser")


def _reason(exc: Exception) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"cannot read: {error.get('Code')}: {error.get('Message')}"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _corrupt_reasons(tables) -> list[str]:
    return [f"corrupt record: {error.split(':')[0]}" for t in tables
            for error in t.column("_error").to_pylist() if error is not None]


def _quarantine_reasons(config, dataset, tables, suites_ok: bool, run_date: dt.date, run_id: str) -> Counter:
    """Rows that silver would quarantine, by reason (a row may have several); "_rows" counts the
    rows. Typed by transforms.silver.prepare and split by the silver suite's row rules."""
    import pyarrow as pa
    from pyspark.sql import functions as F

    from strata import catalog
    from strata.quality import QUARANTINE_COLUMN, load_suite, split_rows
    from strata.session import build_spark
    from strata.transforms import silver as T

    table = pa.concat_tables(tables)
    table = table.filter(pa.compute.is_null(table.column("_corrupt_record")))
    if not table.num_rows:
        return Counter()
    small = dataclasses.replace(config.spark, master="local[1]", shuffle_partitions=1,
                                conf={**config.spark.conf, "spark.ui.enabled": "false"})
    spark = build_spark(dataclasses.replace(config, spark=small), app_name="strata-check")
    bronze = (spark.createDataFrame(table)
              .withColumn("_source_key", F.lit("sample")).withColumn("_source_etag", F.lit("sample"))
              .withColumn("_source_version", F.lit(1)).withColumn("_ingested_at", F.current_timestamp()))
    typed = T.prepare(bronze, dataset, run_date, run_id).drop(T.DUP_RANK)
    errors = typed.select(F.col(T.ROW_ERRORS).alias("reasons")).where(F.size("reasons") > 0)
    if suites_ok and config.quality.gates:
        candidate = typed.where(F.size(T.ROW_ERRORS) == 0).drop(T.ROW_ERRORS, T.RAW)
        _, quarantined = split_rows(candidate, load_suite(*catalog.suite_name(catalog.silver(dataset))))
        errors = errors.unionByName(quarantined.select(F.col(QUARANTINE_COLUMN).alias("reasons")))
    reasons = Counter()
    for row in errors.collect():  # a sample: a few thousand rows at most
        reasons["_rows"] += 1
        reasons.update(row.reasons)
    return reasons
