"""ingest -> silver -> gold for a run date, in one Spark application. Stops at the first stage
that fails; the job then exits with that stage's code (2 for a blocking gate, 1 otherwise).

When ingest finds no new objects and silver and gold already completed this run date after the
last change to their source, they are skipped: a re-run with nothing new changes no table."""
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


def up_to_date(lake: Lake, last_output: TableSpec, job: str, run_date: str, source: TableSpec) -> bool:
    """Whether `job` finished this run date after the last change to its source: its last
    output has a commit by `job` for the run date at least as new as the source's newest commit.
    The last output, because a stage that failed midway committed only its first tables."""
    if not (lake.exists(last_output) and lake.exists(source)):
        return False
    done = [entry["timestamp"] for entry in lake.history(last_output, limit=100)
            if entry["job"] == job and entry["run_date"] == run_date]
    return bool(done) and max(done) >= lake.history(source, limit=1)[0]["timestamp"]


def run(ctx: JobContext) -> dict:
    datasets = ctx.args.dataset or sorted(ctx.config.datasets)
    stages: dict[str, dict] = {}
    for name in datasets:
        dataset = ctx.config.dataset(name)
        gold_last = gold.analysis_table(dataset) if dataset.gold and dataset.gold.analysis \
            else gold.features_table(dataset)
        # (source, main output, last table written) of the stages that can be skipped
        skippable = {"silver": (ingest.bronze_table(dataset), silver.silver_table(dataset),
                                silver.quarantine_table(dataset.name)),
                     "gold": (silver.silver_table(dataset), gold.features_table(dataset),
                              silver.quarantine_table(gold_last.name))}
        for job, body in STAGES:
            # Each stage commits under its own job name, all under the pipeline's run id.
            stage = dataclasses.replace(ctx, job=job, tables={}, counts={}, _lake=None,
                                        args=argparse.Namespace(**{**vars(ctx.args), "dataset": name}))
            try:
                skip = (job != "ingest" and stages[f"{name}.ingest"]["objects_new"] == 0
                        and up_to_date(stage.lake, skippable[job][2], job, ctx.run_date.isoformat(),
                                       skippable[job][0]))
                if skip:
                    stages[f"{name}.{job}"] = {"skipped": "no new data and already completed for this run date"}
                    stage.record_table(skippable[job][1])
                else:
                    stages[f"{name}.{job}"] = body(stage)
            finally:
                ctx.tables.update(stage.tables)
    return {"datasets": datasets, "stages": stages}
