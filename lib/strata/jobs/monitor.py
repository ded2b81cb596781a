"""monitor: profile, drift and realised performance of a model's scored rows of a run date, and
whether the model should be trained again.

    ./spark-submit.sh monitor --env ENV --model NAME [--run-date D]

The rows: the champion's predictions that predict's commits of the run date changed (the rows
the run date scored), joined to their gold features (and labels, where known). Everything is
computed in Spark on every row (strata.ml.drift: three passes for the profile, one for each
role's metrics) and published through strata.publish, one partition per run date, each table
gated by its suite (expectations/monitoring/<model>_<table>.json):

- monitoring/<model>_profile: per feature, the probability and the decision: rows, nulls, zeros,
  distinct values, moments, quantiles, frequent values, and the bins the drift is computed on.
- monitoring/<model>_drift: per column, against the training profile of the champion that scored
  the rows (drift_type BASELINE; logged by train with the version) and against the previous run
  date's profile of the same version (CONSECUTIVE): population stability index, Jensen-Shannon distance, KS,
  Wasserstein, chi-squared, TV and L-infinity distances, and whether it drifted (BASELINE PSI at
  or above models.<name>.monitoring.feature_psi).
- monitoring/<model>_performance: once labels exist, the realised metrics of the champion and of
  the shadow rows, beside the champion's logged test interval.
- monitoring/<model>_decisions: whether to retrain, the reasons and the evidence (thresholds in
  models.<name>.monitoring, strata.ml.monitoring.decide).

Each table's rows written plus quarantined must equal the rows the job made, else the run fails
(publish.NotReconciled). The job decides; it does not train: the pipeline (and the orchestrator) train on a decision to
retrain, and train's promotion gate decides what to serve. The summary line says
`retrain: {triggered, reasons}`. A re-run of the date replaces its partitions.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from strata import catalog, publish
from strata.config import DatasetConfig, ModelConfig
from strata.runner import JobContext, Laps
from strata.tracking import Tracking

log = logging.getLogger(__name__)

LABEL, CHAMPION_ROLE = "label", "champion"

PROFILE_SCHEMA = (
    "run_date date, model_name string, model_version string, column_name string, column_type string, "
    "rows long, nulls long, null_share double, zero_share double, distinct_count long, mean double, "
    "stddev double, min double, max double, quantiles map<string,double>, "
    "frequent_values array<struct<value:string,count:long>>, bin_edges array<double>, bin_counts array<long>, "
    "quantile_grid array<double>, value_counts map<string,long>, run_id string, profiled_at timestamp")
TEST = "struct<statistic:double,pvalue:double>"
DRIFT_SCHEMA = (
    "run_date date, model_name string, model_version string, column_name string, column_type string, "
    "drift_type string, baseline string, count_delta long, null_share_delta double, "
    f"population_stability_index double, js_distance double, ks_test {TEST}, wasserstein_distance double, "
    f"chi_squared_test {TEST}, tv_distance double, l_infinity_distance double, drifted boolean, run_id string")
PERFORMANCE_SCHEMA = (
    "run_date date, model_name string, role string, model_version string, metric string, value double, "
    "rows long, positives long, threshold double, roc_auc double, pr_auc double, accuracy double, "
    "precision double, recall double, f1 double, champion_version string, champion_test_estimate double, "
    "champion_test_low double, champion_test_high double, below_champion_interval boolean, run_id string")
DECISION_SCHEMA = (
    "run_date date, model_name string, model_version string, retrain boolean, reasons array<string>, "
    "drifted_features array<string>, drifted_share double, evidence string, run_id string, decided_at timestamp")


class NoReference(LookupError):
    """The champion has no training profile to compare with (it was trained before train logged one)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a model of conf/models/")


def run(ctx: JobContext) -> dict:
    from strata.ml import drift, monitoring

    model = ctx.config.model(ctx.args.model)
    dataset = ctx.config.dataset(model.dataset)
    tracking = Tracking.connect(ctx.config.mlflow)
    counts = ctx.counts
    counts["model"] = model.name
    lap = Laps(counts)
    predictions = catalog.predictions(model, dataset)
    partitions = scored_partitions(ctx, predictions)
    counts.update(partitions=len(partitions), no_new_data=not partitions)
    if not partitions:
        counts["retrain"] = {"triggered": False, "reasons": []}
        return counts
    scored = scored_rows(ctx, dataset, model, predictions, partitions).cache()
    try:
        # the version that scored the rows, which a promotion since may have replaced as champion
        champion = tracking.client.get_model_version(model.name, scoring_version(scored, model))
        counts["champion_version"] = str(champion.version)
        reference = load_reference(model, champion)
        champion_rows = scored.where(F.col("role") == CHAMPION_ROLE)
        current = monitoring.current_profile(champion_rows, reference, model)
        scored_summary = current.summaries[monitoring.PROBABILITY]
        counts["rows"] = scored_summary.rows + scored_summary.nulls
        lap("profile")
        baseline = drift.drift_rows(reference, current)
        previous_date, previous = previous_profile(ctx, model, str(champion.version))
        consecutive = drift.drift_rows(previous, current) if previous is not None else []
        counts["consecutive_baseline"] = previous_date.isoformat() if previous_date else None
        performance = realised_performance(scored, model, tracking, champion)
        lap("drift_and_performance")
    finally:
        scored.unpersist()
    champion_performance = next((p for p in performance if p["role"] == CHAMPION_ROLE), None)
    decision = monitoring.decide(model, baseline, None if champion_performance is None else {
        "metric": champion_performance["metric"], "value": champion_performance["value"],
        "rows": champion_performance["rows"], "low": champion_performance["champion_test_low"]})
    version = str(champion.version)
    evidence = {"baseline_psi": {r["column_name"]: r["population_stability_index"] for r in baseline},
                "performance": champion_performance, "thresholds": dataclasses.asdict(model.monitoring)}
    numeric = set(reference.numeric)
    outputs = [
        _output(ctx, catalog.monitoring(model.name, "profile"), PROFILE_SCHEMA,
                [profile_row(ctx, model, version, current, c) for c in current.summaries]),
        _output(ctx, catalog.monitoring(model.name, "drift"), DRIFT_SCHEMA,
                [drift_row(ctx, model, version, row, monitoring.BASELINE, f"version {version} training rows", numeric)
                 for row in baseline]
                + [drift_row(ctx, model, version, row, monitoring.CONSECUTIVE, str(previous_date), numeric)
                   for row in consecutive]),
        _output(ctx, catalog.monitoring(model.name, "performance"), PERFORMANCE_SCHEMA,
                [{"run_date": ctx.run_date, "model_name": model.name, "run_id": ctx.run_id, **p} for p in performance]),
        _output(ctx, catalog.monitoring(model.name, "decisions"), DECISION_SCHEMA, [{
            "run_date": ctx.run_date, "model_name": model.name, "model_version": version,
            "retrain": decision.retrain, "reasons": list(decision.reasons),
            "drifted_features": list(decision.drifted_features), "drifted_share": decision.drifted_share,
            "evidence": json.dumps(evidence, default=str), "run_id": ctx.run_id,
            "decided_at": dt.datetime.now(dt.timezone.utc)}]),
    ]
    made = {o.table.name: o.frame.count() for o in outputs}
    try:
        published = publish.publish(ctx, outputs)
    finally:
        for output in outputs:
            output.frame.unpersist()
    lap("publish")
    for output, result in zip(outputs, published):
        # every row made is in the table or its quarantine: never ok on a lost decision or drift row
        if result.table.rows_added + result.quarantine.rows_added != made[output.table.name]:
            raise publish.NotReconciled(
                f"{output.table.qualified_name}: {result.table.rows_added} rows written and "
                f"{result.quarantine.rows_added} quarantined for {made[output.table.name]} made")
    counts.update(
        tables_written={o.table.name: p.counts() for o, p in zip(outputs, published)},
        drifted_features=list(decision.drifted_features), drifted_share=round(decision.drifted_share, 4),
        performance={p["role"]: {"metric": p["metric"], "value": p["value"], "rows": p["rows"]} for p in performance},
        retrain={"triggered": decision.retrain, "reasons": list(decision.reasons)})
    return counts


def scoring_version(scored: DataFrame, model: ModelConfig) -> str:
    """The registered version whose rows have the champion role (predict scores a date's
    partitions whole, with one champion)."""
    versions = sorted(r.model_version for r in scored.where(F.col("role") == CHAMPION_ROLE)
                      .select("model_version").distinct().collect())
    if len(versions) != 1:
        raise ValueError(f"{model.name}: the run date's champion rows were scored by versions {versions}: "
                         f"run predict for the date again")
    return versions[0]


def load_reference(model: ModelConfig, version):
    """The version's training profile, logged by train with its run."""
    import mlflow

    from strata.ml import drift, monitoring

    from mlflow.exceptions import MlflowException

    try:
        data = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/{monitoring.REFERENCE_ARTIFACT}")
    except (FileNotFoundError, MlflowException) as exc:  # not there; an unreachable store raises as it is
        if isinstance(exc, MlflowException) and exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            raise
        raise NoReference(f"model {model.name} version {version.version} has no training profile "
                          f"({monitoring.REFERENCE_ARTIFACT} of run {version.run_id}): train the model again to "
                          f"monitor it ({type(exc).__name__})") from None
    return drift.Profile.from_dict(data)


def scored_partitions(ctx: JobContext, predictions) -> list[dict]:
    """The predictions partitions that predict's commits of the run date changed."""
    if not ctx.lake.exists(predictions):
        return []
    changed = ctx.lake.changed_partitions(predictions, ctx.run_date.isoformat())
    return ctx.lake.partition_values(predictions) if changed is None else changed


def scored_rows(ctx: JobContext, dataset: DatasetConfig, model: ModelConfig, predictions, partitions) -> DataFrame:
    """Every role's predictions of those partitions with their rows' features and label."""
    features = catalog.features(dataset)
    feature_rows = ctx.lake.read(features, partitions=partitions).select(
        *dataset.keys, *model.numeric_features, *model.categorical_features, LABEL)
    scored = ctx.lake.read(predictions, partitions=partitions).select(
        *dataset.keys, "role", "model_version", "prediction", "probability", "threshold")
    return scored.join(feature_rows, on=list(dataset.keys), how="inner")


def previous_profile(ctx: JobContext, model: ModelConfig, version: str):
    """(run date, profile) of the latest earlier run date profiled against the same champion, or
    (None, None)."""
    from strata.ml import drift

    table = catalog.monitoring(model.name, "profile")
    if not ctx.lake.exists(table):
        return None, None
    earlier = ctx.lake.read(table).where((F.col("run_date") < F.lit(ctx.run_date)) & (F.col("model_version") == version))
    last = earlier.agg(F.max("run_date")).first()[0]
    if last is None:
        return None, None
    numeric, categorical = {}, {}
    for r in earlier.where(F.col("run_date") == F.lit(last)).collect():
        if r.column_type == "numeric":
            numeric[r.column_name] = drift.NumericProfile(r.column_name, r.rows, r.nulls, tuple(r.bin_edges),
                                                          tuple(r.bin_counts), tuple(r.quantile_grid))
        else:
            categorical[r.column_name] = drift.CategoricalProfile(r.column_name, r.rows, r.nulls, dict(r.value_counts))
    return last, drift.Profile(numeric, categorical)


def realised_performance(scored: DataFrame, model: ModelConfig, tracking: Tracking, champion) -> list[dict]:
    """Per role, the metrics of its labelled rows at its version's threshold, beside the
    champion's logged test interval of the primary metric."""
    from strata.ml import evaluate

    metric = model.primary_metric
    logged = tracking.client.get_run(champion.run_id).data.metrics
    estimate, low, high = (logged.get(f"test_{metric}{s}") for s in ("", "_low", "_high"))
    labelled = scored.where(F.col(LABEL).isNotNull())
    rows = []
    for r in labelled.groupBy("role", "model_version").agg(F.first("threshold").alias("threshold")).collect():
        of_role = labelled.where((F.col("role") == r.role) & (F.col("model_version") == r.model_version)).select(
            F.col(LABEL).cast("int").alias(LABEL), "probability")
        m = evaluate.binary_metrics(of_role, LABEL, "probability", r.threshold, model.beta)
        value = _number(m[metric])
        rows.append({"role": r.role, "model_version": r.model_version, "metric": metric, "value": value,
                     "rows": int(m["rows"]), "positives": int(m["positives"]), "threshold": float(r.threshold),
                     **{k: _number(m[k]) for k in ("roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1")},
                     "champion_version": str(champion.version), "champion_test_estimate": estimate,
                     "champion_test_low": low, "champion_test_high": high,
                     "below_champion_interval": None if value is None or low is None else value < low})
    return sorted(rows, key=lambda row: row["role"])


def _number(value) -> float | None:
    """A metric as a float, None when undefined (NaN: a class is absent)."""
    return None if value is None or value != value else float(value)


def profile_row(ctx: JobContext, model: ModelConfig, version: str, current, column: str) -> dict:
    summary = current.summaries[column]
    total = summary.rows + summary.nulls
    binned = current.numeric.get(column)
    counted = current.categorical.get(column)
    return {
        "run_date": ctx.run_date, "model_name": model.name, "model_version": version, "column_name": column,
        "column_type": summary.column_type, "rows": summary.rows, "nulls": summary.nulls,
        "null_share": summary.nulls / total if total else None,
        "zero_share": summary.zeros / summary.rows if summary.zeros is not None and summary.rows else None,
        "distinct_count": summary.distinct, "mean": summary.mean, "stddev": summary.stddev, "min": summary.minimum,
        "max": summary.maximum, "quantiles": summary.quantiles,
        "frequent_values": [{"value": v, "count": n} for v, n in summary.frequent],
        "bin_edges": list(binned.edges) if binned else None, "bin_counts": list(binned.counts) if binned else None,
        "quantile_grid": list(binned.quantiles) if binned else None,
        "value_counts": dict(counted.counts) if counted else None,
        "run_id": ctx.run_id, "profiled_at": dt.datetime.now(dt.timezone.utc)}


def drift_row(ctx: JobContext, model: ModelConfig, version: str, row: dict, drift_type: str, baseline: str,
              numeric: set[str]) -> dict:
    from strata.ml import monitoring

    threshold = (model.monitoring.prediction_psi if row["column_name"] == monitoring.PROBABILITY
                 else model.monitoring.feature_psi)
    return {"run_date": ctx.run_date, "model_name": model.name, "model_version": version,
            "column_type": "numeric" if row["column_name"] in numeric else "categorical",
            "drift_type": drift_type, "baseline": baseline, **row,
            "drifted": monitoring.drifted(row, threshold), "run_id": ctx.run_id}


def _output(ctx: JobContext, table, schema: str, rows: list[dict]) -> publish.Output:
    frame = ctx.spark.createDataFrame(rows, schema) if rows else ctx.spark.createDataFrame([], schema)
    return publish.Output(table, frame.cache(), publish.ReplacePartitions([{"run_date": ctx.run_date}]))
