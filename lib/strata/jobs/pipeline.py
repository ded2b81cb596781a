"""ingest -> silver -> gold for a run date, in one Spark application. Stops at the first stage
that fails; the job then exits with that stage's code (2 for a blocking gate, 1 otherwise).

When ingest finds no new objects and silver and gold already completed this run date after the
last change to their source, they are skipped: a re-run with nothing new changes no table. A stage
whose last run for the date failed (ops.failed_runs) is never skipped."""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt

from strata import catalog
from strata.errors import QualityGateBlocked
from strata.jobs import gold, ingest, silver
from strata.lake import Lake, TableSpec
from strata.runner import JobContext
from strata.runs import last_failure, record_failure

STAGES = (("ingest", ingest.run), ("silver", silver.run), ("gold", gold.run))


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


def run_status(exc: BaseException) -> str:
    return "blocked" if isinstance(exc, QualityGateBlocked) else "failed"


def run(ctx: JobContext) -> dict:
    datasets = ctx.args.dataset or sorted(ctx.config.datasets)
    stages: dict[str, dict] = ctx.counts.setdefault("stages", {})
    ctx.counts["datasets"] = datasets
    for name in datasets:
        dataset = ctx.config.dataset(name)
        gold_last = catalog.gold_tables(dataset)[-1] if dataset.gold else None
        # (source, main output, last table written) of the stages that can be skipped
        skippable = {"silver": (catalog.bronze(dataset), catalog.silver(dataset),
                                catalog.quarantine_of(catalog.silver(dataset))),
                     "gold": (catalog.silver(dataset), catalog.features(dataset),
                              catalog.quarantine_of(gold_last) if gold_last else None)}
        for job, body in STAGES:
            # Each stage commits under its own job name, all under the pipeline's run id.
            stage = dataclasses.replace(ctx, job=job, tables={}, _lake=None,
                                        args=argparse.Namespace(**{**vars(ctx.args), "dataset": name}))
            try:
                skip = (job != "ingest" and stages[f"{name}.ingest"]["objects_new"] == 0
                        and up_to_date(stage.lake, name, skippable[job][2], job, ctx.run_date, skippable[job][0]))
                if skip:
                    stages[f"{name}.{job}"] = {"skipped": "no new data and already completed for this run date"}
                    stage.record_table(skippable[job][1])
                else:
                    try:
                        stages[f"{name}.{job}"] = body(stage)
                    except Exception as exc:
                        stages[f"{name}.{job}"] = {**stage.counts, "error": f"{type(exc).__name__}: {exc}"[:500]}
                        record_failure(stage.lake, name, job, ctx.run_date, ctx.run_id, run_status(exc), str(exc))
                        raise
            finally:
                ctx.tables.update(stage.tables)
    return {"datasets": datasets, "stages": stages}
