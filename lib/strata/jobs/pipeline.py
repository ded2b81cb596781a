"""Every stage of strata.stages (ingest -> silver -> gold) for each dataset and a run date, in one
Spark application, in the order their inputs and outputs give. Stops at the first stage that
fails; the job then exits with that stage's code (2 for a blocking gate, 1 otherwise).

A stage that reads the lake is skipped when the stages before it brought no new data and it
already completed this run date after the last change to its inputs: a re-run with nothing new
changes no table. A stage whose last run for the date failed (ops.failed_runs) is never
skipped."""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib

from strata import stages
from strata.config import DatasetConfig
from strata.errors import QualityGateBlocked
from strata.lake import Lake, TableSpec
from strata.runner import JobContext
from strata.runs import last_failure, record_failure


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", action="append",
                        help="dataset to run (repeatable; default: every configured dataset)")


def up_to_date(lake: Lake, dataset: str, last_output: TableSpec, job: str, run_date, source: TableSpec) -> bool:
    """Whether `job` finished this run date after the last change to its source and after its
    last failure for the date: its last output has a commit by `job` for the run date at least as
    new as both. The last output, because a stage that failed midway committed only its first
    tables."""
    if not (lake.exists(last_output) and lake.exists(source)):
        return False
    done = [dt.datetime.fromisoformat(entry["timestamp"]) for entry in lake.history(last_output, limit=100)
            if entry["job"] == job and entry["run_date"] == run_date.isoformat()]
    if not done:
        return False
    failed = last_failure(lake, dataset, job, run_date)
    return max(done) >= dt.datetime.fromisoformat(lake.history(source, limit=1)[0]["timestamp"]) and \
        (failed is None or max(done) > failed)


def can_skip(ctx: JobContext, dataset: DatasetConfig, stage: stages.Stage, done: dict[str, dict]) -> bool:
    """A stage that reads the lake is skipped when no stage before it in this run brought new
    data into its inputs and it already completed this run date after their last change."""
    inputs = stage.inputs(dataset)
    if not inputs:
        return False
    quiet = all(done[s.job].get("skipped") or done[s.job].get("no_new_data")
                for s in stages.upstream(dataset, stage))
    last_output = stage.outputs(dataset)[-1]
    return quiet and all(up_to_date(ctx.lake, dataset.name, last_output, stage.job, ctx.run_date, source)
                         for source in inputs)


def run_status(exc: BaseException) -> str:
    return "blocked" if isinstance(exc, QualityGateBlocked) else "failed"


def run(ctx: JobContext) -> dict:
    datasets = ctx.args.dataset or sorted(ctx.config.datasets)
    results: dict[str, dict] = ctx.counts.setdefault("stages", {})
    ctx.counts["datasets"] = datasets
    for name in datasets:
        dataset = ctx.config.dataset(name)
        done: dict[str, dict] = {}
        for stage in stages.in_order(dataset):
            # Each stage commits under its own job name, all under the pipeline's run id.
            stage_ctx = dataclasses.replace(ctx, job=stage.job, tables={}, _lake=None,
                                            args=argparse.Namespace(**{**vars(ctx.args), "dataset": name}))
            try:
                if can_skip(stage_ctx, dataset, stage, done):
                    done[stage.job] = {"skipped": "no new data and already completed for this run date"}
                    stage_ctx.record_table(stage.outputs(dataset)[0])
                else:
                    body = importlib.import_module(f"strata.jobs.{stage.job}").run
                    try:
                        done[stage.job] = body(stage_ctx)
                    except Exception as exc:
                        done[stage.job] = {**stage_ctx.counts, "error": f"{type(exc).__name__}: {exc}"[:500]}
                        record_failure(stage_ctx.lake, name, stage.job, ctx.run_date, ctx.run_id, run_status(exc),
                                       str(exc))
                        raise
            finally:
                results.update({f"{name}.{job}": counts for job, counts in done.items()})
                ctx.tables.update(stage_ctx.tables)
    return {"datasets": datasets, "stages": results}
