"""Every stage of strata.stages (ingest -> silver -> gold) for each dataset and a run date, in one
Spark application, in the order their inputs and outputs give, then (with pipeline.models) the
train, predict and monitor jobs for each model of the dataset, and train again when the monitor
asks for it. Stops at the first stage that fails; the
job then exits with that stage's code (2 for a blocking gate, 1 otherwise). With --from/--to it
runs each date of the range in order, in the same application, and stops at the first date that
fails; the same range run again goes on from there, as the dates done are no-ops.
With --stage JOB it runs only that stage (or those) of each dataset and no model: what an
orchestrator runs in each step (orchestration/), with the same skip as below.

A stage that reads the lake is skipped when the stages before it brought no new data and it
already completed this run date after its inputs' last change on that date: a re-run with
nothing new, of the latest date or an earlier one, changes no table. A stage whose last run for
the date failed (ops.failed_runs) is never skipped. A model is trained again only once the
newest version trained with its config is retrain_after_days old (or the config changed);
predict is skipped when it already scored the run date after the features' last change with the
versions the registry names now; monitor when it already ran after the predictions' last change
(its recorded decision stands). A retrain the monitor asked for runs once per run date.

Each stage's counts hold its wall-clock duration_seconds. At the end of every run that got to
start, failed ones included, the pipeline writes its HTML run report (strata.report) to
reports.dir and puts its path in the counts (`report`); a report that cannot be written is
logged and noted (`report_error`) and changes nothing else."""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib
import logging
import time
from typing import Callable

from strata import catalog, stages
from strata.config import DatasetConfig, ModelConfig
from strata.errors import QualityGateBlocked
from strata.lake import Lake, TableSpec
from strata.runner import JobContext, summary_error
from strata.runs import last_failure, record_failure
from strata.tracking import Tracking

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from strata.runner import run_date_arg  # here: --check runs this function alone, without Spark

    parser.add_argument("--dataset", action="append",
                        help="dataset to run (repeatable; default: every configured dataset)")
    parser.add_argument("--from", dest="from_date", type=run_date_arg, default=None, metavar="YYYY-MM-DD",
                        help="backfill: run every date from this one to --to, in order, instead of --run-date; "
                             "stops at the first date that fails (run the same range again to go on from it: "
                             "the dates done are no-ops)")
    parser.add_argument("--to", dest="to_date", type=run_date_arg, default=None, metavar="YYYY-MM-DD",
                        help="backfill: the last date (with --from)")
    parser.add_argument("--stage", action="append", dest="stages", metavar="JOB",
                        help="run only this stage of each dataset (repeatable: ingest, silver, gold, anomalies), "
                             "skipped like any other when it is up to date for the run date; no training or "
                             "scoring (an orchestrator runs one stage per step: orchestration/)")


def run_dates(args: argparse.Namespace, run_date: dt.date) -> list[dt.date]:
    """The run date, or every date of --from..--to. ValueError for half a range, a range
    backwards, or a range with --run-date."""
    start, end = getattr(args, "from_date", None), getattr(args, "to_date", None)
    if start is None and end is None:
        return [run_date]
    if start is None or end is None:
        raise ValueError("--from and --to go together")
    if getattr(args, "run_date", None) is not None:
        raise ValueError("give --run-date or --from/--to, not both")
    if start > end:
        raise ValueError(f"--from {start} is after --to {end}")
    return [start + dt.timedelta(days=d) for d in range((end - start).days + 1)]


def up_to_date(lake: Lake, dataset: str, last_output: TableSpec, job: str, run_date, source: TableSpec) -> bool:
    """Whether `job` finished this run date after the source's last commit of the run date and
    after its last failure for the date: its last output has a commit by `job` for the run date
    at least as new as both. The last output, because a stage that failed midway committed only
    its first tables. Only the source's commits of the run date count: every job reads what its
    source changed on the date (silver the date's bronze partition, gold the partitions the
    date's silver commits changed, predict those gold's changed), so a later date's commits do
    not make this date stale."""
    if not (lake.exists(last_output) and lake.exists(source)):
        return False
    done = [dt.datetime.fromisoformat(entry["timestamp"]) for entry in lake.history(last_output, limit=100)
            if entry["job"] == job and entry["run_date"] == run_date.isoformat()]
    if not done:
        return False
    changes = [dt.datetime.fromisoformat(entry["timestamp"]) for entry in lake.history(source)
               if entry["run_date"] == run_date.isoformat()]
    if changes and max(done) < max(changes):
        return False
    failed = last_failure(lake, dataset, job, run_date)
    return failed is None or max(done) > failed


def can_skip(ctx: JobContext, dataset: DatasetConfig, stage: stages.Stage, done: dict[str, dict]) -> bool:
    """A stage that reads the lake is skipped when no stage before it in this run brought new
    data into its inputs and it already completed this run date after their last change on
    the date."""
    inputs = stage.inputs(dataset)
    if not inputs:
        return False
    quiet = all(done[s.job].get("skipped") or done[s.job].get("no_new_data")
                for s in stages.upstream(dataset, stage))
    last_output = stage.outputs(dataset)[-1]
    return quiet and all(up_to_date(ctx.lake, dataset.name, last_output, stage.job, ctx.run_date, source)
                         for source in inputs)


def step_error(exc: BaseException) -> str:
    """A failed step's error in the counts: type and message, bounded."""
    return f"{type(exc).__name__}: {exc}"[:500]


def run_status(exc: BaseException) -> str:
    return "blocked" if isinstance(exc, QualityGateBlocked) else "failed"


def step_context(ctx: JobContext, job: str, **args) -> JobContext:
    """A stage's context: it commits under its own job name, all under the pipeline's run id."""
    return dataclasses.replace(ctx, job=job, tables={}, _lake=None, args=argparse.Namespace(**{**vars(ctx.args), **args}))


def run_step(ctx: JobContext, step_ctx: JobContext, dataset: str, key: str, body: Callable[[], dict]) -> dict:
    """body()'s counts, in the pipeline's results under key whatever the outcome; a failure is
    recorded in ops.failed_runs (so the stage is never skipped for the date) and raised."""
    results = ctx.counts["stages"]
    started = time.monotonic()
    try:
        results[key] = body()
        return results[key]
    except Exception as exc:
        results[key] = {**step_ctx.counts, "error": step_error(exc)}
        record_failure(step_ctx.lake, dataset, step_ctx.job, ctx.run_date, ctx.run_id, run_status(exc), str(exc))
        raise
    finally:
        if isinstance(results.get(key), dict):
            results[key]["duration_seconds"] = round(time.monotonic() - started, 1)
        ctx.tables.update(step_ctx.tables)


def train_unless_done(ctx: JobContext, model: ModelConfig) -> dict:
    """Trains the model unless it has a champion and a version trained with the current config
    was gated less than model.retrain_after_days before the run date (a re-run, or a new day of
    data within that window, trains nothing; without a champion every run tries again)."""
    from strata.jobs import train
    from strata.tracking import CHAMPION

    tracking = Tracking.connect(ctx.config.mlflow)
    if tracking.version_by_alias(model.name, CHAMPION) is None:
        return train.run(ctx)
    current = train.current_version(tracking, model, ctx.run_date)
    if current is not None:
        version, trained_on = current
        return {"model": model.name, "skipped": f"version {version} was trained with this config for {trained_on}, "
                                                f"less than {model.retrain_after_days} day(s) before"}
    return train.run(ctx)


def predict_unless_done(ctx: JobContext, model: ModelConfig) -> dict:
    """Scores the run date's features unless predict already did after their last change with
    the versions the registry names now (a promotion since re-scores)."""
    from strata.jobs import predict

    dataset = ctx.config.dataset(model.dataset)
    features, table = catalog.features(dataset), catalog.predictions(model, dataset)
    versions = {role: str(v.version) for role, v in predict.scoring_versions(Tracking.connect(ctx.config.mlflow), model)}
    if up_to_date(ctx.lake, dataset.name, table, "predict", ctx.run_date, features):
        partitions = predict.partitions_to_score(ctx.lake, features, ctx.run_date)
        scored = {(r.role, r.model_version) for r in ctx.lake.read(table, partitions=partitions)
                  .select("role", "model_version").distinct().collect()} if partitions else set()
        if scored == set(versions.items()):
            ctx.record_table(table)
            return {"model": model.name, **{f"{role}_version": v for role, v in versions.items()},
                    "skipped": "already scored after the features' last change by these versions"}
    return predict.run(ctx)


def monitor_unless_done(ctx: JobContext, model: ModelConfig) -> dict:
    """Monitors the run date's predictions unless monitor already did after their last change on
    the date; then the decision it recorded for the date stands (its `retrain`)."""
    from strata.jobs import monitor

    dataset = ctx.config.dataset(model.dataset)
    predictions, decisions = catalog.predictions(model, dataset), catalog.monitoring(model.name, "decisions")
    if up_to_date(ctx.lake, dataset.name, decisions, "monitor", ctx.run_date, predictions):
        decided = (ctx.lake.read(decisions, partitions=[{"run_date": ctx.run_date.isoformat()}])
                   .select("retrain", "reasons").collect())
        if decided:
            ctx.record_table(decisions)
            return {"model": model.name, "retrain": {"triggered": decided[0].retrain, "reasons": list(decided[0].reasons)},
                    "skipped": "already monitored after the predictions' last change"}
    try:
        return monitor.run(ctx)
    except monitor.NoReference as exc:
        # a champion trained before train logged its profile: a version that has one is due
        return {"model": model.name, "retrain": {"triggered": True, "reasons": [str(exc)]},
                "skipped": "the champion has no training profile to monitor against"}


def retrain_unless_done(ctx: JobContext, model: ModelConfig) -> dict:
    """Trains the model on the monitor's decision, unless a version trained with the current
    config was already gated for this run date (a re-run trains once); train's promotion gate
    decides whether the new version serves."""
    from strata.jobs import train

    trained = train.version_trained_for(Tracking.connect(ctx.config.mlflow), model, ctx.run_date)
    if trained is not None:
        return {"model": model.name, "skipped": f"version {trained} was already trained for {ctx.run_date}"}
    return train.run(ctx)


def run(ctx: JobContext) -> dict:
    """One run date, or each date of a backfill in order (stopping at the first that fails:
    its exception is the run's). The counts of a backfill hold each date's outcome, stages and
    report under `days`."""
    dates = run_dates(ctx.args, ctx.run_date)
    if getattr(ctx.args, "from_date", None) is None:
        return run_one_date(ctx)
    ctx.counts.update({"from": dates[0].isoformat(), "to": dates[-1].isoformat(), "days": {}})
    for day in dates:
        # a run id per date: each date's commits, quality results and report are its own
        day_ctx = dataclasses.replace(ctx, run_id=f"{ctx.run_id}-{day:%Y%m%d}", run_date=day, tables={}, _lake=None)
        outcome = {"status": "ok"}
        try:
            run_one_date(day_ctx)
        except Exception as exc:
            outcome = {"status": run_status(exc), "error": step_error(exc)}
            ctx.counts["failed_date"] = day.isoformat()
            raise
        finally:
            ctx.counts["days"][day.isoformat()] = {**outcome, "run_id": day_ctx.run_id,
                                                   "stages": day_ctx.counts.get("stages", {}),
                                                   "report": day_ctx.counts.get("report")}
            ctx.tables.update(day_ctx.tables)
    return {"days": ctx.counts["days"]}


def run_one_date(ctx: JobContext) -> dict:
    """Every stage of each dataset (then its models) for ctx.run_date, and the run report
    whatever the outcome."""
    try:
        result = run_stages(ctx)
    except Exception as exc:  # an interrupt (not an Exception) writes none
        write_report(ctx, exc)
        raise
    write_report(ctx, None)
    return result


def write_report(ctx: JobContext, failure: Exception | None) -> None:
    """The run report (strata.report) with the numbers of the run's summary line; its path in
    counts["report"]. Never raises: a report error is logged and in counts["report_error"], the
    run's outcome and error stay as they are."""
    from strata import report

    try:
        ctx.refresh_tables()  # the versions and rows the summary line will show
        summary = {"job": ctx.job, "env": ctx.env, "run_id": ctx.run_id, "run_date": ctx.run_date.isoformat(),
                   "status": "ok" if failure is None else run_status(failure),
                   "datasets": ctx.counts.get("datasets") or [], "stages": ctx.counts.get("stages") or {},
                   "tables": ctx.tables}
        if failure is not None:
            summary["error"] = summary_error(failure)
        ctx.counts["report"] = str(report.write_run_report(ctx, summary))
        log.info("pipeline: run report %s", ctx.counts["report"])
    except Exception as exc:  # noqa: BLE001 - a report never changes the run's outcome
        log.warning("pipeline: the run report could not be written", exc_info=True)
        ctx.counts["report_error"] = step_error(exc)


def run_stages(ctx: JobContext) -> dict:
    datasets = ctx.args.dataset or sorted(ctx.config.datasets)
    ctx.counts.setdefault("stages", {})
    ctx.counts["datasets"] = datasets
    only = getattr(ctx.args, "stages", None)
    unknown = sorted(set(only or ()) - {s.job for s in stages.STAGES})
    if unknown:
        raise ValueError(f"--stage {', '.join(unknown)}: not a stage; stages: {[s.job for s in stages.STAGES]}")
    for name in datasets:
        dataset = ctx.config.dataset(name)
        done: dict[str, dict] = {}
        for stage in stages.in_order(dataset):
            if only and stage.job not in only:
                # not run here: whether the stage's inputs changed on the run date is read from
                # the lake's history (up_to_date), as for a stage run in another application
                done[stage.job] = {"skipped": "not selected (--stage)"}
                continue
            stage_ctx = step_context(ctx, stage.job, dataset=name)

            def body(stage=stage, stage_ctx=stage_ctx) -> dict:
                if can_skip(stage_ctx, dataset, stage, done):
                    stage_ctx.record_table(stage.outputs(dataset)[0])
                    return {"skipped": "no new data and already completed for this run date"}
                return importlib.import_module(f"strata.jobs.{stage.job}").run(stage_ctx)

            done[stage.job] = run_step(ctx, stage_ctx, name, f"{name}.{stage.job}", body)
        if ctx.config.pipeline.models and not only:
            for model in ctx.config.models_of(name):
                train_ctx = step_context(ctx, "train", dataset=name, model=model.name, table_version=None,
                                         no_promote=False)
                run_step(ctx, train_ctx, name, f"{name}.train.{model.name}",
                         lambda model=model, train_ctx=train_ctx: train_unless_done(train_ctx, model))
                predict_ctx = step_context(ctx, "predict", dataset=name, model=model.name)
                run_step(ctx, predict_ctx, name, f"{name}.predict.{model.name}",
                         lambda model=model, predict_ctx=predict_ctx: predict_unless_done(predict_ctx, model))
                monitor_ctx = step_context(ctx, "monitor", dataset=name, model=model.name)
                watched = run_step(ctx, monitor_ctx, name, f"{name}.monitor.{model.name}",
                                   lambda model=model, monitor_ctx=monitor_ctx: monitor_unless_done(monitor_ctx, model))
                if watched.get("retrain", {}).get("triggered"):
                    retrain_ctx = step_context(ctx, "train", dataset=name, model=model.name, table_version=None,
                                               no_promote=False)
                    run_step(ctx, retrain_ctx, name, f"{name}.retrain.{model.name}",
                             lambda model=model, retrain_ctx=retrain_ctx: retrain_unless_done(retrain_ctx, model))
    return {"datasets": datasets, "stages": ctx.counts["stages"]}
