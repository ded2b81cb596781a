"""ingest -> silver -> gold for a run date, in one Spark application. Stops at the first stage
that fails; the job then exits with that stage's code (2 for a blocking gate, 1 otherwise)."""
from __future__ import annotations

import argparse
import dataclasses

from strata.jobs import gold, ingest, silver
from strata.runner import JobContext

STAGES = (("ingest", ingest.run), ("silver", silver.run), ("gold", gold.run))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", action="append",
                        help="dataset to run (repeatable; default: every configured dataset)")


def run(ctx: JobContext) -> dict:
    datasets = ctx.args.dataset or sorted(ctx.config.datasets)
    stages: dict[str, dict] = {}
    for dataset in datasets:
        for name, body in STAGES:
            # Each stage commits under its own job name, all under the pipeline's run id.
            stage = dataclasses.replace(ctx, job=name, tables={}, _lake=None,
                                        args=argparse.Namespace(**{**vars(ctx.args), "dataset": dataset}))
            try:
                stages[f"{dataset}.{name}"] = body(stage)
            finally:
                ctx.tables.update(stage.tables)
    return {"datasets": datasets, "stages": stages}
