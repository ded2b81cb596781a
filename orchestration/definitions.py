"""Dagster definitions over spark-submit.sh, built from the config (conf/datasets/, conf/models/).

Per dataset, daily-partitioned assets in the order of strata.stages: `<dataset>_ingest`,
`<dataset>_silver`, `<dataset>_gold` and `<dataset>_anomalies` (each where the dataset's config has
the stage). Per model of conf/models/: `<model>_predict` (daily; after its dataset's gold and the
model's training: it scores with the champion), `<model>_monitor` (daily, after predict; its
summary says whether to retrain) and `<model>_train` (not partitioned: a model learns from the
whole features table, not from one day, and a backfill must not retrain once per past date).

Each materialisation is one `spark-submit.sh JOB --env ENV --run-date <partition> --run-id <run id>`
(orchestration.submit; a dataset's stage runs as `pipeline --dataset D --stage JOB`, so it is skipped
like the pipeline skips it when the date is already done and its inputs did not change): exit 0 materialises with the summary line as metadata, exit 2 (a blocked
gate) fails the step without retry, exit 1 fails it under the assets' RetryPolicy.

Schedules (stopped until turned on in the UI): `daily_schedule` runs yesterday's partition of every
daily asset at 02:00 UTC (after the night's delivery); `<model>_weekly_train` trains on Mondays at
03:00 UTC. The sensor `<model>_retrain_on_monitor` (running by default) launches train when a
monitored date whose metadata says retrain_triggered (once per date).

Environment: STRATA_ENV (default local) names the configuration; STRATA_DAGSTER_START_DATE the
first partition (default 2024-01-01, the demo data's first day); STRATA_DAGSTER_MAX_RETRIES the
retries of a failed (exit 1) step (default 2, after 10 s, then 20 s).
"""

import datetime as dt
import json
import os

import dagster as dg

from orchestration.submit import StrataJobs
from strata import stages
from strata.config import Config, load_config

START_DATE = "2024-01-01"
RUN_DATE_TAG = "strata/run_date"
RETRAIN_TRIGGERED = "retrain_triggered"


def utc_today() -> str:
    return dt.datetime.now(dt.timezone.utc).date().isoformat()


def stage_asset(dataset: str, stage: stages.Stage, deps: list[str], partitions: dg.PartitionsDefinition,
                retry: dg.RetryPolicy) -> dg.AssetsDefinition:
    """`<dataset>_<job>`: the pipeline job's one stage for the dataset and the partition's date
    (`pipeline --dataset DATASET --stage JOB`): the stage job itself, skipped as the pipeline skips
    it when it already completed the date after its inputs' last change on the date, so a date
    materialised again with nothing new changes no table."""
    @dg.asset(name=f"{dataset}_{stage.job}", deps=deps, partitions_def=partitions, retry_policy=retry,
              group_name=dataset, kinds={"spark"},
              description=f"`spark-submit.sh pipeline --dataset {dataset} --stage {stage.job}` for the partition's "
                          f"date: the {stage.job} job, skipped when it is up to date for the date")
    def _asset(context: dg.AssetExecutionContext, strata: StrataJobs) -> dg.MaterializeResult:
        return strata.run(context, "pipeline", context.partition_key, ["--dataset", dataset, "--stage", stage.job],
                          stage=f"{dataset}.{stage.job}")
    return _asset


def model_assets(model: str, dataset: str, partitions: dg.PartitionsDefinition,
                 retry: dg.RetryPolicy) -> list[dg.AssetsDefinition]:
    gold = f"{dataset}_gold"

    @dg.asset(name=f"{model}_train", deps=[gold], retry_policy=retry, group_name=model, kinds={"spark", "mlflow"},
              description=f"`spark-submit.sh train --model {model}`: trains on the whole features table, registers "
                          f"the version and promotes it when it passes the gate. Run date: the run's "
                          f"{RUN_DATE_TAG} tag (the schedule's or the monitor's date), else today (UTC)")
    def train(context: dg.AssetExecutionContext, strata: StrataJobs) -> dg.MaterializeResult:
        run_date = context.run.tags.get(RUN_DATE_TAG) or utc_today()
        return strata.run(context, "train", run_date, ["--model", model])

    @dg.asset(name=f"{model}_predict", deps=[gold, f"{model}_train"], partitions_def=partitions,
              retry_policy=retry, group_name=model,
              kinds={"spark", "mlflow"},
              description=f"`spark-submit.sh predict --model {model}`: scores the date's features with the "
                          f"champion (fails without retry while the model has none)")
    def predict(context: dg.AssetExecutionContext, strata: StrataJobs) -> dg.MaterializeResult:
        return strata.run(context, "predict", context.partition_key, ["--model", model])

    @dg.asset(name=f"{model}_monitor", deps=[f"{model}_predict"], partitions_def=partitions, retry_policy=retry,
              group_name=model, kinds={"spark"},
              description=f"`spark-submit.sh monitor --model {model}`: drift and quality of the date; metadata "
                          f"{RETRAIN_TRIGGERED} (and retrain_reasons) drives the retrain sensor")
    def monitor(context: dg.AssetExecutionContext, strata: StrataJobs) -> dg.MaterializeResult:
        result = strata.run(context, "monitor", context.partition_key, ["--model", model])
        retrain = (result.metadata or {}).get("summary")
        retrain = (retrain.value if isinstance(retrain, dg.JsonMetadataValue) else {}).get("retrain") or {}
        return dg.MaterializeResult(metadata={**(result.metadata or {}),
                                              RETRAIN_TRIGGERED: bool(retrain.get("triggered")),
                                              "retrain_reasons": dg.MetadataValue.json(retrain.get("reasons") or [])})

    return [train, predict, monitor]


def retrain_sensor(model: str, train_job) -> dg.SensorDefinition:
    """Launches the model's train job once per monitored date whose materialisation says retrain:
    every materialisation since the last tick, oldest first (two between ticks, as in a backfill,
    are both seen), and one run per date (run key), so materialising a date again trains no more."""
    monitor_key = dg.AssetKey(f"{model}_monitor")

    @dg.multi_asset_sensor(monitored_assets=[monitor_key], job=train_job, name=f"{model}_retrain_on_monitor",
                           default_status=dg.DefaultSensorStatus.RUNNING)
    def _sensor(context: dg.MultiAssetSensorEvaluationContext):
        for record in context.materialization_records_for_key(monitor_key):
            materialization = record.asset_materialization
            metadata = materialization.metadata if materialization else {}
            triggered = metadata.get(RETRAIN_TRIGGERED)
            if triggered and triggered.value:
                reasons = metadata.get("retrain_reasons")
                partition = materialization.partition or utc_today()
                yield dg.RunRequest(run_key=f"{model}:{partition}",
                                    tags={RUN_DATE_TAG: partition,
                                          "strata/retrain_reasons": json.dumps(reasons.value if reasons else [])[:200]})
            context.advance_cursor({monitor_key: record})
    return _sensor


def build_definitions(config: Config | None = None, *, env: str | None = None, start_date: str | None = None,
                      max_retries: int | None = None, retry_delay: float = 10.0,
                      resource: StrataJobs | None = None) -> dg.Definitions:
    """The definitions for the datasets and models of config (default: conf/ of this checkout,
    loaded for env). Everything runs in one process per run (each step is a subprocess anyway),
    one step at a time: one Spark driver at a time on the machine that runs Dagster."""
    env = env or os.environ.get("STRATA_ENV", "local")
    config = config or load_config(env)
    partitions = dg.DailyPartitionsDefinition(start_date=start_date or os.environ.get("STRATA_DAGSTER_START_DATE",
                                                                                      START_DATE))
    retries = int(os.environ.get("STRATA_DAGSTER_MAX_RETRIES", "2")) if max_retries is None else max_retries
    retry = dg.RetryPolicy(max_retries=retries, delay=retry_delay, backoff=dg.Backoff.EXPONENTIAL)

    assets: list[dg.AssetsDefinition] = []
    for name in sorted(config.datasets):
        dataset = config.dataset(name)
        for stage in stages.in_order(dataset):
            deps = [f"{name}_{s.job}" for s in stages.upstream(dataset, stage)]
            assets.append(stage_asset(name, stage, deps, partitions, retry))
    jobs, schedules, sensors = [], [], []
    for name in sorted(config.models):
        model_defs = model_assets(name, config.model(name).dataset, partitions, retry)
        assets.extend(model_defs)
        train_job = dg.define_asset_job(f"{name}_train_job", selection=[model_defs[0].key])
        jobs.append(train_job)
        schedules.append(weekly_train(name, train_job))
        sensors.append(retrain_sensor(name, train_job))

    daily = dg.AssetSelection.all() - dg.AssetSelection.assets(*(a.key for a in assets if a.partitions_def is None))
    daily_job = dg.define_asset_job("daily_job", selection=daily,
                                    description="every daily asset of one date, in stage order")
    schedules.append(dg.build_schedule_from_partitioned_job(daily_job, name="daily_schedule", hour_of_day=2,
                                                            minute_of_hour=0))
    return dg.Definitions(assets=assets, jobs=[daily_job, *jobs], schedules=schedules, sensors=sensors,
                          resources={"strata": resource or StrataJobs(env=env)}, executor=dg.in_process_executor)


def weekly_train(model: str, train_job) -> dg.ScheduleDefinition:
    @dg.schedule(name=f"{model}_weekly_train", cron_schedule="0 3 * * 1", job=train_job, execution_timezone="UTC")
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(tags={RUN_DATE_TAG: (context.scheduled_execution_time or dt.datetime.now(dt.timezone.utc)).date().isoformat()})
    return _schedule


defs = build_definitions()
