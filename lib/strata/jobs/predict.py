"""predict: batch scores of a model's champion for the gold features rows the run date changed,
and of its challenger in shadow, published to gold/<model>_predictions for the warehouse.

    ./spark-submit.sh predict --env ENV --model NAME [--run-date D]

- Loads `models:/NAME@champion` with mlflow.spark.load_model and scores with transform (a
  spark_udf would start a JVM per Python worker). No champion: one line, exit 1.
- The rows: the gold features partitions that gold's commits of the run date changed, read at
  one Delta version (written with each row). Each partition is scored whole, so a re-run, or a
  later run that re-scores a partition a late record changed, replaces it atomically.
- The decision: class 1 when the probability of class 1 >= the version's `threshold` tag (the
  threshold train chose on validation rows, the same rule as its evaluation).
- Shadow (silent deployment): when `challenger` is another version than `champion` and the
  model's `shadow` is on, the challenger scores the same rows with role 'shadow'. Consumers
  select role = 'champion'.
- Published through strata.publish, gated by expectations/gold/<model>_predictions.json
  (probabilities in [0, 1] and not NaN, no nulls, one row per key and role); then the rows
  written and quarantined (quarantine/<model>_predictions, counted in the summary) must add up
  to the input rows times the roles scored, else the run fails (never ok on a lost prediction).
"""
from __future__ import annotations

import argparse
import datetime as dt

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from strata import catalog, publish
from strata.config import DatasetConfig, ModelConfig
from strata.lake import Lake, TableSpec
from strata.runner import JobContext
from strata.tracking import CHALLENGER, CHAMPION, Tracking

CHAMPION_ROLE, SHADOW_ROLE = "champion", "shadow"


class NoChampion(LookupError):
    """The registry has no champion of the model to score with."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a model of conf/models/")


def scoring_versions(tracking: Tracking, model: ModelConfig) -> list[tuple[str, object]]:
    """(role, registered model version) to score with: the champion, and the challenger in
    shadow when it is another version and shadow scoring is on."""
    champion = tracking.version_by_alias(model.name, CHAMPION)
    if champion is None:
        raise NoChampion(f"model {model.name} has no champion in the registry at {tracking.tracking_uri}: "
                         f"train one first (./spark-submit.sh train --model {model.name})")
    versions = [(CHAMPION_ROLE, champion)]
    challenger = tracking.version_by_alias(model.name, CHALLENGER)
    if model.shadow and challenger is not None and str(challenger.version) != str(champion.version):
        versions.append((SHADOW_ROLE, challenger))
    return versions


def scored(rows: DataFrame, dataset: DatasetConfig, model: ModelConfig, role: str, version,
           features_version: int, scored_at: dt.datetime, run_id: str) -> DataFrame:
    """The rows scored by one registered version: keys, partition columns and the prediction."""
    import mlflow.spark

    from strata.ml.estimators import positive_probability

    if "threshold" not in (version.tags or {}):
        raise ValueError(f"model {model.name} version {version.version} has no threshold tag: it was not registered "
                         f"by train; set its alias to a version train registered")
    threshold = float(version.tags["threshold"])
    fitted = mlflow.spark.load_model(f"models:/{model.name}/{version.version}")
    probability = positive_probability(fitted.transform(rows), out="_p1")
    return probability.select(
        *dataset.keys, *dataset.partition_by, F.lit(role).alias("role"),
        (F.col("_p1") >= F.lit(threshold)).cast("int").alias("prediction"),
        F.col("_p1").alias("probability"), F.lit(threshold).alias("threshold"),
        F.lit(model.name).alias("model_name"), F.lit(str(version.version)).alias("model_version"),
        F.lit(version.run_id).alias("mlflow_run_id"), F.lit(features_version).cast("long").alias("features_version"),
        F.lit(scored_at).alias("scored_at"), F.lit(run_id).alias("run_id"))


def partitions_to_score(lake: Lake, features: TableSpec, run_date: dt.date) -> list[dict]:
    """The features partitions gold's commits of the run date changed (they record them); every
    partition when one of them did not (commits written before partitions were recorded)."""
    partitions = lake.changed_partitions(features, run_date.isoformat())
    return lake.partition_values(features) if partitions is None else partitions


def run(ctx: JobContext) -> dict:
    model = ctx.config.model(ctx.args.model)
    dataset = ctx.config.dataset(model.dataset)
    tracking = Tracking.connect(ctx.config.mlflow)
    versions = scoring_versions(tracking, model)
    features, table = catalog.features(dataset), catalog.predictions(model, dataset)
    counts = ctx.counts
    counts.update(model=model.name, **{f"{role}_version": str(v.version) for role, v in versions})
    if not ctx.lake.exists(features):
        raise FileNotFoundError(f"{features.qualified_name} does not exist: run gold for {dataset.name} first")
    partitions = partitions_to_score(ctx.lake, features, ctx.run_date)
    counts.update(partitions=len(partitions), no_new_data=not partitions)
    if not partitions:
        return counts
    features_version = ctx.lake.version(features)
    rows = ctx.lake.read(features, version=features_version, partitions=partitions).cache()
    scored_at = dt.datetime.now(dt.timezone.utc)  # aware: Spark stores the instant, whatever the driver's zone
    try:
        counts.update(features_version=features_version, rows_scored=rows.count())
        frames = [scored(rows, dataset, model, role, version, features_version, scored_at, ctx.run_id)
                  for role, version in versions]
        predictions = frames[0]
        for frame in frames[1:]:
            predictions = predictions.unionByName(frame)
        output = publish.Output(table, predictions.persist(), publish.ReplacePartitions(
            [{c: p[c] for c in table.partition_by} for p in partitions]))
        try:
            (published,) = publish.publish(ctx, [output])
        finally:
            output.frame.unpersist()
    finally:
        rows.unpersist()
    counts["predictions"] = published.counts()
    expected = counts["rows_scored"] * len(versions)
    if published.table.rows_added + published.quarantine.rows_added != expected:
        raise publish.NotReconciled(
            f"{table.qualified_name}: {published.table.rows_added} rows written and {published.quarantine.rows_added} "
            f"quarantined for {counts['rows_scored']} rows x {len(versions)} roles ({expected})")
    return counts
