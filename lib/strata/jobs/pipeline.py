"""ingest -> silver -> gold for a run date, in one Spark application. Stops at the first stage
that fails; the job then exits with that stage's code (2 for a blocking gate, 1 otherwise).

When ingest finds no new objects and silver and gold already completed this run date, they are
skipped: a re-run with nothing new changes no table."""
from __future__ import annotations

import argparse
import dataclasses

from strata.jobs import gold, ingest, silver
from strata.lake import Lake, TableSpec
from strata.runner import JobContext

STAGES = (("ingest", ingest.run), ("silver", silver.run), ("gold", gold.run))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", action="append",
                        help="dataset to run (repeatable; default: every configured dataset)")


def completed(lake: Lake, table: TableSpec, job: str, run_date: str) -> bool:
    """Whether `job` committed to `table` for this run date (from the table's commit history)."""
    return lake.exists(table) and any(entry["job"] == job and entry["run_date"] == run_date
                                      for entry in lake.history(table, limit=100))


def run(ctx: JobContext) -> dict:
    datasets = ctx.args.dataset or sorted(ctx.config.datasets)
    stages: dict[str, dict] = {}
    for name in datasets:
        dataset = ctx.config.dataset(name)
        outputs = {"silver": silver.silver_table(dataset), "gold": gold.features_table(dataset)}
        for job, body in STAGES:
            # Each stage commits under its own job name, all under the pipeline's run id.
            stage = dataclasses.replace(ctx, job=job, tables={}, _lake=None,
                                        args=argparse.Namespace(**{**vars(ctx.args), "dataset": name}))
            nothing_new = job != "ingest" and stages[f"{name}.ingest"]["objects_new"] == 0
            if nothing_new and completed(stage.lake, outputs[job], job, ctx.run_date.isoformat()):
                stages[f"{name}.{job}"] = {"skipped": "no new data and already completed for this run date"}
                stage.record_table(outputs[job])
            else:
                try:
                    stages[f"{name}.{job}"] = body(stage)
                finally:
                    ctx.tables.update(stage.tables)
            ctx.tables.update(stage.tables)
    return {"datasets": datasets, "stages": stages}
