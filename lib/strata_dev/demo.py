"""`make demo`: the pipeline on the embedded local default, through spark-submit.sh.

Starts the local S3 endpoint when the environment asks for one (s3.embedded), runs each step as
its own spark-submit, stops at the first failure with that step's exit code, and ends with one
JSON line covering every table the steps wrote and every model the pipeline trained.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

from strata.config import ConfigError, load_config
from strata_dev.local_s3 import LocalS3

REPO = Path(__file__).resolve().parents[2]
DEMO_RUN_DATE = "2024-01-01"


DEMO_DATASET = "trips"


def steps(run_date: str) -> list[tuple[str, list[str]]]:
    return [("pipeline", ["--run-date", run_date, "--dataset", DEMO_DATASET])]


def generate_raw_data(config, endpoint: str) -> dict[str, Any]:
    """Deterministic demo trips into the dataset's bucket: a re-run uploads identical objects
    (same ETags), so the lake finds nothing new."""
    import boto3

    from strata_dev.demo_data import DemoDataSpec, upload

    source = config.dataset(DEMO_DATASET).source
    client = boto3.client("s3", endpoint_url=endpoint, region_name=config.s3.region)
    manifest = upload(DemoDataSpec(), client, source.bucket, source.prefix)
    return manifest.totals


@contextlib.contextmanager
def s3_endpoint(embedded: bool, configured: str | None) -> Iterator[str | None]:
    if not embedded:
        yield configured
        return
    with LocalS3() as server:
        yield server.endpoint_url


def run_step(job: str, env: str, args: list[str], environ: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """Run one job; its output streams through; its last stdout line is its summary."""
    command = [str(REPO / "spark-submit.sh"), job, "--env", env, *args]
    print(f"demo: {' '.join(command[1:])}", file=sys.stderr, flush=True)
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


def trained_models(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per model the pipeline trained and scored with (or skipped): version, metric interval, the
    gate's decision and the predictions written."""
    models: dict[str, dict[str, Any]] = {}
    for key, counts in (result.get("stages") or {}).items():
        parts = key.split(".")
        if len(parts) != 3 or parts[1] not in ("train", "predict"):
            continue
        model = models.setdefault(parts[2], {})
        if parts[1] == "predict":
            model["predict"] = {k: v for k, v in counts.items() if k in (
                "champion_version", "shadow_version", "rows_scored", "predictions", "skipped", "error")}
            continue
        promotion = counts.get("promotion") or {}
        model.update({k: v for k, v in {
            "skipped": counts.get("skipped"), "version": counts.get("model_version"),
            "metric": promotion.get("metric"), "interval": counts.get("interval"),
            "zero_rule": promotion.get("zero_rule"), "promoted": promotion.get("promoted"),
            "reason": promotion.get("reason"), "error": counts.get("error")}.items() if v is not None})
    return models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the Strata demo pipeline.")
    parser.add_argument("--env", default="local")
    parser.add_argument("--run-date", default=DEMO_RUN_DATE)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.env)
    except ConfigError as exc:
        print(f"demo: config error: {exc}", file=sys.stderr)
        return 1

    summary: dict[str, Any] = {"job": "demo", "env": args.env, "run_date": args.run_date,
                               "status": "ok", "steps": [], "tables": {}, "models": {}}
    code = 0
    with s3_endpoint(config.s3.embedded, config.s3.endpoint_url) as endpoint:
        environ = dict(os.environ)
        if endpoint:
            environ["STRATA_S3__ENDPOINT_URL"] = endpoint
        if config.s3.embedded:
            summary["generated"] = generate_raw_data(config, endpoint)
        for job, job_args in steps(args.run_date):
            code, result = run_step(job, args.env, job_args, environ)
            summary["steps"].append({"job": job, "status": result.get("status"), "run_id": result.get("run_id")})
            summary["tables"].update(result.get("tables", {}))
            summary["models"].update(trained_models(result))
            if code != 0:
                summary.update(status=result.get("status", "failed"), error=result.get("error"))
                break
    print(json.dumps(summary), flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
