"""`make demo`: a week of demo taxi trips through the pipeline on the embedded local default, one
night at a time.

Starts the local S3 endpoint when the environment asks for one (s3.embedded). For each day it
puts that day's objects in the bucket, as a night's delivery would, and runs
`pipeline --run-date DAY` as its own spark-submit (ingest, silver, gold, anomaly flags, train
when due, predict), printing one progress line per day with each stage's outcome and the time taken. It
stops at the first failure with that run's exit code. It ends with a summary for a person (rows
per layer, quarantine reasons, gate results, the model, outliers flagged with their precision
and recall against the generator's planted anomalies, where everything is), read back from the
lake with deltalake, and then one JSON line for machines.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from strata.config import ConfigError, load_config
from strata_dev.local_s3 import LocalS3

REPO = Path(__file__).resolve().parents[2]
DEMO_START = "2024-01-01"
DEMO_DAYS = 7
DEMO_DATASET = "trips"


def demo_spec(days: int, shift_from: dt.date | None = None):
    """The generated data: always at least DEMO_DAYS, however many days are played, because
    the generator's draws depend on the number of days. A shorter run plays the first days of the
    same data, so `DAYS=2 make demo` and then `make demo` deliver identical objects for the days
    both play (other ones would be re-deliveries, replacing what the first run ingested)."""
    from strata_dev.demo_data import DemoDataSpec
    return DemoDataSpec(start_date=dt.date.fromisoformat(DEMO_START), days=max(days, DEMO_DAYS), shift_from=shift_from)


def deliver(config, endpoint: str, spec, day: dt.date) -> dict[str, Any]:
    """The day's deterministic demo objects into the dataset's bucket: a re-run puts identical
    objects (same ETags), so the lake finds nothing new. Returns the totals of the whole week."""
    import boto3

    from strata_dev.demo_data import upload

    source = config.dataset(DEMO_DATASET).source
    client = boto3.client("s3", endpoint_url=endpoint, region_name=config.s3.region)
    return upload(spec, client, source.bucket, source.prefix, day=day).totals


@contextlib.contextmanager
def s3_endpoint(embedded: bool, configured: str | None) -> Iterator[str | None]:
    if not embedded:
        yield configured
        return
    with LocalS3() as server:
        yield server.endpoint_url


def run_step(job: str, env: str, args: list[str], environ: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """Run one job; its logs go to stderr; its last stdout line is its summary."""
    command = [str(REPO / "spark-submit.sh"), job, "--env", env, *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=environ, cwd=REPO)
    last = ""
    for line in proc.stdout:
        sys.stderr.write(line)
        if line.strip():
            last = line
    code = proc.wait()
    try:
        return code, json.loads(last)
    except json.JSONDecodeError:
        return code or 1, {"job": job, "status": "failed", "error": "no summary line"}


def stage_outcome(job: str, counts: dict[str, Any]) -> str:
    """A few words on what one stage of a day did (the run report's, shorter on failure and skip:
    the report has the error and the reason)."""
    from strata.report import stage_result

    if counts.get("error"):
        return "FAILED"
    if counts.get("skipped"):
        return "skipped"
    return stage_result(job, counts) or "ok"


def progress_line(day: str, result: dict[str, Any], seconds: float) -> str:
    stages = result.get("stages") or {}
    parts = [f"{key.split('.')[1]} {stage_outcome(key.split('.')[1], counts)}" for key, counts in stages.items()]
    return f"demo: {day}  {' | '.join(parts) or result.get('status')}  ({seconds:.0f} s)"


def trained_models(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per model the pipeline trained and scored with (or skipped): version, metric interval, the
    gate's decision and the predictions written."""
    models: dict[str, dict[str, Any]] = {}
    for key, counts in (result.get("stages") or {}).items():
        parts = key.split(".")
        if len(parts) != 3 or parts[1] not in ("train", "retrain", "predict", "monitor"):
            continue
        model = models.setdefault(parts[2], {})
        if parts[1] == "monitor":
            model["monitor"] = {k: v for k, v in counts.items() if k in (
                "retrain", "drifted_features", "performance", "skipped", "error")}
            continue
        if parts[1] == "predict":
            model["predict"] = {k: v for k, v in counts.items() if k in (
                "champion_version", "shadow_version", "rows_scored", "predictions", "skipped", "error")}
            continue
        if parts[1] == "retrain" and not counts.get("skipped"):
            model.pop("skipped", None)  # the day's training was skipped, the monitor's retrain ran
        promotion = counts.get("promotion") or {}
        model.update({k: v for k, v in {
            "skipped": counts.get("skipped"), "version": counts.get("model_version"),
            "metric": promotion.get("metric"), "interval": counts.get("interval"),
            "zero_rule": promotion.get("zero_rule"), "promoted": promotion.get("promoted"),
            "reason": promotion.get("reason"), "error": counts.get("error")}.items() if v is not None})
    return models


def merge_models(into: dict[str, dict[str, Any]], models: dict[str, dict[str, Any]], day: str) -> None:
    """A skipped training keeps the last day's trained figures; predictions add up over the days;
    the monitor's last outcome, and the days it asked for a retrain."""
    for name, model in models.items():
        seen = into.setdefault(name, {"predictions_written": 0})
        if "skipped" not in model:
            seen.update({k: v for k, v in model.items() if k not in ("predict", "monitor")})
        seen["predictions_written"] += ((model.get("predict") or {}).get("predictions") or {}).get("rows", 0)
        watched = model.get("monitor") or {}
        if (watched.get("retrain") or {}).get("triggered"):
            seen.setdefault("retrain_triggered", []).append(day)
        if watched:
            seen["monitor"] = watched


def add_flags(into: dict[str, Any], result: dict[str, Any]) -> None:
    """Adds up the outliers flagged and, where the run had the generator's manifest, the
    confusion against the planted anomalies; precision and recall over all days so far."""
    for key, counts in (result.get("stages") or {}).items():
        if key.split(".")[1] != "anomalies" or counts.get("skipped") or counts.get("error"):
            continue
        into["outliers"] = into.get("outliers", 0) + counts.get("outliers", 0)
        published = counts.get("flagged") or {}
        into["rides"] = into.get("rides", 0) + published.get("rows", 0) + published.get("quarantined", 0)
        manifest = counts.get("manifest") or {}
        for name in ("true_positives", "false_positives", "false_negatives"):
            if name in manifest:
                into[name] = into.get(name, 0) + manifest[name]
    if "true_positives" in into:
        tp, fp, fn = into["true_positives"], into["false_positives"], into["false_negatives"]
        into["precision"] = tp / (tp + fp) if tp + fp else None
        into["recall"] = tp / (tp + fn) if tp + fn else None


def report(config, summary: dict[str, Any]) -> str:
    """The readable summary: rows per table, quarantine reasons, gates, models, locations (the
    last day's run report among them)."""
    from deltalake import DeltaTable

    lines = ["", f"Strata demo, {summary['days'][0]} to {summary['days'][-1]}: {summary['status'].upper()}", "",
             f"{'table':<34}{'version':>8}{'rows':>10}"]
    for name, table in sorted(summary["tables"].items()):
        lines.append(f"{name:<34}{table['version']:>8}{table['rows']:>10,}")
    root = Path(config.lake.root)
    reasons: dict[str, int] = {}
    for layer_table in sorted((root / "quarantine").glob("*")):
        if (layer_table / "_delta_log").exists():
            rows = DeltaTable(str(layer_table)).to_pyarrow_table(columns=["failed_rules"]).column("failed_rules")
            for rules in rows.to_pylist():
                for rule in rules or ["(no rule: unreadable record)"]:
                    key = f"{layer_table.name}: {rule}"
                    reasons[key] = reasons.get(key, 0) + 1
    lines += ["", "Quarantined rows by reason:"]
    lines += [f"  {count:>6,}  {reason}" for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1])] or ["  none"]
    results = root / "quality" / "results"
    if (results / "_delta_log").exists():
        gates = DeltaTable(str(results)).to_pyarrow_table(columns=["table", "severity", "success"]).to_pylist()
        failed = sorted({f"{g['table']} ({g['severity']})" for g in gates if not g["success"]})
        lines += ["", f"Quality gates: {len(gates):,} expectation results, {len(gates) - sum(not g['success'] for g in gates):,} "
                      f"passed; failed: {', '.join(failed) or 'none'}"]
    for name, model in summary["models"].items():
        interval = model.get("interval") or {}
        trained = (f"version {model['version']} {'promoted' if model.get('promoted') else 'not promoted'} "
                   f"({model.get('reason', '')})" if "version" in model else "not trained in this run")
        lines += ["", f"Model {name}: champion version {model.get('champion') or 'none'}; {trained}"]
        if interval:
            lines.append(f"  test {model.get('metric')} {interval['estimate']:.3f} "
                         f"(95% interval {interval['low']:.3f} to {interval['high']:.3f}); "
                         f"majority-class rule {model.get('zero_rule', float('nan')):.3f}")
        lines.append(f"  predictions written: {model['predictions_written']:,}")
        watched = model.get("monitor") or {}
        if watched:
            drifted = watched.get("drifted_features") or []
            lines.append(f"  monitor: retrain asked on {', '.join(model['retrain_triggered'])}"
                         if model.get("retrain_triggered") else
                         f"  monitor: no retrain asked; last day {len(drifted)} feature(s) drifted"
                         f"{' (' + ', '.join(drifted) + ')' if drifted else ''}")
    flags = summary["flags"]
    if "outliers" in flags:
        lines += ["", f"Anomaly flags: {flags['outliers']:,} outliers among {flags['rides']:,} rides"]
        if flags.get("precision") is not None or flags.get("recall") is not None:
            figure = lambda value: "n/a" if value is None else f"{value:.3f}"
            lines.append(f"  against the planted anomalies: precision {figure(flags.get('precision'))}, "
                         f"recall {figure(flags.get('recall'))} ({flags['true_positives']:,} found, "
                         f"{flags['false_positives']:,} false alarms, {flags['false_negatives']:,} missed)")
    last = (summary.get("steps") or [{}])[-1]
    lines += ["", f"Lake:        {config.lake.root}", f"Data Docs:   {config.quality.data_docs_dir}/index.html",
              f"MLflow:      {config.mlflow.tracking_uri} (open it with: make mlflow-ui)",
              f"Run report:  {last['report']} ({last['run_date']}; one per run in {config.reports.dir})"
              if last.get("report") else f"Run report:  none written (see {config.reports.dir})", ""]
    return "\n".join(lines)


def champion_versions(config, names) -> dict[str, str | None]:
    from strata.tracking import CHAMPION, Tracking

    tracking = Tracking.connect(config.mlflow)
    found = {name: tracking.version_by_alias(name, CHAMPION) for name in names}
    return {name: (str(v.version) if v is not None else None) for name, v in found.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the Strata demo: a week of trips, one night at a time.")
    parser.add_argument("--env", default="local")
    parser.add_argument("--days", type=int, default=DEMO_DAYS, help=f"days of demo data (default {DEMO_DAYS})")
    parser.add_argument("--shift-from", type=dt.date.fromisoformat, default=None, metavar="YYYY-MM-DD",
                        help="from this day on the trips change (longer trips, another tipping habit): the monitor "
                             "should ask for a retrain")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.env)
    except ConfigError as exc:
        print(f"demo: config error: {exc}", file=sys.stderr)
        return 1

    spec = demo_spec(args.days, args.shift_from)
    days = [(spec.start_date + dt.timedelta(days=d)).isoformat() for d in range(args.days)]
    summary: dict[str, Any] = {"job": "demo", "env": args.env, "days": days, "status": "ok", "steps": [],
                               "tables": {}, "models": {}, "flags": {}}
    code = 0
    with s3_endpoint(config.s3.embedded, config.s3.endpoint_url) as endpoint:
        environ = dict(os.environ)
        if endpoint:
            environ["STRATA_S3__ENDPOINT_URL"] = endpoint
        for day in days:
            if config.s3.embedded:
                summary["generated"] = deliver(config, endpoint, spec, dt.date.fromisoformat(day))
            started = time.monotonic()
            code, result = run_step("pipeline", args.env, ["--run-date", day, "--dataset", DEMO_DATASET], environ)
            print(progress_line(day, result, time.monotonic() - started), file=sys.stderr, flush=True)
            summary["steps"].append({"job": "pipeline", "run_date": day, "status": result.get("status"),
                                     "run_id": result.get("run_id"), "report": result.get("report")})
            summary["tables"].update(result.get("tables", {}))
            merge_models(summary["models"], trained_models(result), day)
            add_flags(summary["flags"], result)
            if code != 0:
                summary.update(status=result.get("status", "failed"), error=result.get("error"))
                break
    for name, champion in champion_versions(config, summary["models"]).items():
        summary["models"][name]["champion"] = champion
    print(report(config, summary), flush=True)
    print(json.dumps(summary), flush=True)
    return code


if __name__ == "__main__":
    exit_code = main()
    # Everything is written and closed by now. Once, after a week of runs, interpreter teardown
    # of this process (local S3 server threads, pyarrow and delta-rs loaded) aborted with
    # SIGABRT ("terminate called without an active exception") after the JSON line: skip it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
