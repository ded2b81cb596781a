"""anomalies: the rides of a run date whose time or length is unusual, flagged for the operations
team (K-means on silver, tracked and registered in MLflow).

    ./spark-submit.sh anomalies --env ENV --dataset NAME [--run-date D] [--manifest URI_OR_PATH]

1. Rows: silver's partitions of the trailing window (anomalies.window_days of the date column,
   ending at the run date), with the config's features as doubles. A row whose features are not
   all finite numbers cannot be placed: it is not fitted on and, on the run date, goes to
   quarantine/<dataset>_flagged with the reason.
2. Nothing to do is a clean outcome (exit 0, `skipped` with the reason; nothing fitted, logged or
   published): no silver table yet, no ride on the run date, or fewer usable rows in the window
   than anomalies.min_rows.
3. Fit (strata.ml.anomalies): the rows laid out by their values (hash partitions, sorted), then
   signed log (log_scale), standardisation and K-means with the config's seed, k fixed or the k
   of highest silhouette in k_range (chosen on a sample past search_rows); per-cluster
   thresholds from the window's scores. The same silver and config give the same flags.
4. MLflow: params, silhouette per k, the centroids and thresholds (thresholds.json), the fitted
   PipelineModel registered as <dataset>_anomalies; its version and run id go into every row.
5. Publish gold/<dataset>_flagged through strata.publish (gate, quarantine), replacing the run
   date's partition in one commit: a re-run replaces the date's rows. Then `champion` moves to
   the version.
6. With a manifest of planted anomalies (--manifest, else the source's _manifests/<prefix>.json
   when it is there: the demo's), precision and recall of is_outlier among the run date's rides
   (also logged to the MLflow run). An unreadable --manifest fails the run before Spark starts.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from strata import catalog, publish
from strata.config import FLAGGED_COLUMNS, AnomaliesConfig, Config, DatasetConfig
from strata.ml import anomalies as A
from strata.runner import JobContext, Laps
from strata.tracking import CHAMPION, Tracking

log = logging.getLogger(__name__)

USABLE = "anomaly__usable"
UNSCORABLE = "unscorable: a feature is null, NaN or infinite"


class ManifestError(ValueError):
    """The manifest named by --manifest cannot be read or holds no list of anomalies."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="a dataset of conf/datasets/ with an anomalies section")
    parser.add_argument("--manifest", default=None, metavar="URI_OR_PATH",
                        help="a manifest of planted anomalies (JSON with a list 'anomalies' of keys; s3://, file:// "
                             "or a path) to report precision and recall against (default: the dataset source's "
                             "_manifests/<prefix>.json, when it is there)")


def model_name(dataset: DatasetConfig) -> str:
    return f"{dataset.name}_anomalies"


def run(ctx: JobContext) -> dict:
    dataset = ctx.config.dataset(ctx.args.dataset)
    config = dataset.anomalies
    if config is None:
        raise ValueError(f"dataset {dataset.name} has no anomalies section in its config")
    counts = ctx.counts
    counts["dataset"] = dataset.name
    lap = Laps(counts)

    # Before Spark: an unreadable --manifest costs no session and no fit.
    planted, counts["manifest"] = planted_anomalies(ctx.config, dataset, getattr(ctx.args, "manifest", None))
    date, run_date = config.date_column, ctx.run_date
    window = [run_date - dt.timedelta(days=days) for days in range(config.window_days)]
    counts["window"] = {"from": window[-1].isoformat(), "to": run_date.isoformat()}
    silver = catalog.silver(dataset)
    if not ctx.lake.exists(silver):
        return _skip(counts, f"{silver.qualified_name} does not exist yet")
    silver_version = ctx.lake.version(silver)  # pinned: the version MLflow records is the one read
    rows = (A.feature_rows(ctx.lake.read(silver, version=silver_version, partitions=[{date: day} for day in window]),
                           [*dataset.keys, date], config.features)
            .withColumn(USABLE, A.usable(list(config.features))).cache())
    scored = flagged = None
    try:
        on_run_date = F.col(date) == F.lit(run_date)
        sizes = rows.agg(F.count(F.when(F.col(USABLE), 1)).alias("fit_rows"),
                         F.count(F.when(on_run_date, 1)).alias("run_date_rows"),
                         F.count(F.when(on_run_date & ~F.col(USABLE), 1)).alias("unscorable")).first().asDict()
        counts.update(sizes)
        lap("read")
        if sizes["run_date_rows"] == 0:
            return _skip(counts, f"no ride on {run_date} in {silver.qualified_name}")
        if sizes["fit_rows"] < config.min_rows:
            return _skip(counts, f"{sizes['fit_rows']} usable row(s) in the window {window[-1]} to {run_date}, "
                                 f"fewer than anomalies.min_rows ({config.min_rows})")
        # Only now: a run with nothing to fit never touches the tracking store.
        tracking = Tracking.connect(ctx.config.mlflow)
        fitted, scored, limits = fit(rows.where(F.col(USABLE)).drop(USABLE), config, ctx.config.spark.shuffle_partitions)
        counts.update(k=fitted.k, silhouettes={str(k): v for k, v in fitted.silhouettes.items()},
                      searched_rows=fitted.searched_rows, thresholds=limits)
        lap("fit")
        counts["model"] = registered = log_to_mlflow(ctx, tracking, dataset, fitted, limits, silver_version, counts)
        lap("mlflow")
        flagged = flag(ctx, dataset, scored.where(on_run_date), fitted, limits, registered).persist()
        unscorable = rows.where(on_run_date & ~F.col(USABLE)).drop(USABLE)
        counts.update(publish_flags(ctx, dataset, flagged, unscorable))
        # every ride of the run date is in the table or its quarantine, once: else the run fails
        # (recorded, so the pipeline runs it again) rather than report ok
        accounted = counts["flagged"]["rows"] + counts["flagged"]["quarantined"]
        if accounted != sizes["run_date_rows"]:
            raise publish.NotReconciled(
                f"{catalog.flagged(dataset).qualified_name}: {counts['flagged']['rows']} rides written and "
                f"{counts['flagged']['quarantined']} quarantined for {sizes['run_date_rows']} rides of {run_date}")
        # The alias follows the published flags: a blocked gate leaves it where it was.
        tracking.set_alias(registered["name"], CHAMPION, registered["version"])
        lap("publish")
        if planted is not None:
            counts["manifest"].update(
                against_manifest(ctx, dataset, flagged, unscorable, planted, tracking, registered))
            lap("manifest")
    finally:
        for frame in (rows, scored, flagged):
            if frame is not None:
                frame.unpersist()
    return counts


def fit(rows: DataFrame, config: AnomaliesConfig, partitions: int) -> tuple[A.Fitted, DataFrame, list[dict]]:
    """The fitted model, the rows scored by it (cached) and the per-cluster thresholds. The rows
    are first laid out canonically in `partitions` (spark.shuffle_partitions of the config), so
    the same rows give the same model in local mode and on any cluster."""
    # cached: the scaler's fit, the scaled rows and the scoring each read it (one shuffle, not three)
    rows = A.canonical(rows, partitions).cache()
    try:
        ks = [config.k] if config.k is not None else list(range(config.k_range[0], config.k_range[1] + 1))
        fitted = A.fit(rows, list(config.features), config.log_scale, ks, config.seed, config.max_iter,
                       config.search_rows)
        scored = A.score(fitted.model, rows).cache()
        rule = config.threshold
        limits = A.thresholds(scored, rule.rule, rule.c, rule.quantile, rule.min_cluster_share).collect()
    finally:
        rows.unpersist()  # scored is cached whole by now (the thresholds read every row of it)
    return fitted, scored, [r.asDict() for r in limits]


def flag(ctx: JobContext, dataset: DatasetConfig, scored: DataFrame, fitted: A.Fitted, limits: list[dict],
         registered: dict) -> DataFrame:
    """The flagged table's rows: keys, date, features, then FLAGGED_COLUMNS."""
    small = [r[A.CLUSTER] for r in limits if r["small"]]
    flagged = A.flag(scored, {r[A.CLUSTER]: r[A.THRESHOLD] for r in limits}, small, fitted.k)
    return (flagged.withColumn("model_version", F.lit(registered["version"]))
            .withColumn("mlflow_run_id", F.lit(registered["mlflow_run_id"]))
            .withColumn("run_id", F.lit(ctx.run_id))
            .withColumn("flagged_at", F.lit(dt.datetime.now(dt.timezone.utc)).cast("timestamp"))
            .select(*dataset.keys, dataset.anomalies.date_column, *dataset.anomalies.features, *FLAGGED_COLUMNS))


def publish_flags(ctx: JobContext, dataset: DatasetConfig, flagged: DataFrame, unscorable: DataFrame) -> dict:
    """Gate and publish the run date's partition of the flagged table (rides that could not be
    placed to its quarantine); the counts."""
    table = catalog.flagged(dataset)
    rejected = publish.quarantine_rows(unscorable, F.to_json(F.struct(*unscorable.columns)), F.array(F.lit(UNSCORABLE)),
                                       table, ctx.run_id, ctx.run_date, dt.datetime.now(dt.timezone.utc))
    output = publish.Output(table, flagged, publish.ReplacePartitions([{dataset.anomalies.date_column: ctx.run_date}]),
                            rejected_before=rejected)
    (published,) = publish.publish(ctx, [output])
    return {"flagged": published.counts(), "outliers": flagged.where(F.col(A.OUTLIER)).count()}


def _skip(counts: dict, reason: str) -> dict:
    log.info("anomalies: skipped: %s", reason)
    counts["skipped"] = reason
    return counts


# --- the manifest of planted anomalies -----------------------------------------------------------

def planted_anomalies(config: Config, dataset: DatasetConfig, uri: str | None) -> tuple[list[str] | None, dict]:
    """(the planted keys, what the summary says of the manifest). Asked for with --manifest, a
    manifest that cannot be used is a ManifestError; the default one may be absent."""
    from strata.sources import store
    from strata.sources.s3 import SourceError

    if uri:
        manifest, where = read_json(config, uri), uri
    else:
        source = dataset.source
        where = source.object_uri(store.manifest_key(source.key_prefix))
        try:
            manifest = store.read_manifest(config, source)
        except SourceError as exc:
            log.warning("anomalies: no manifest: %s", exc)
            return None, {"source": where, "available": False, "reason": str(exc)}
        if manifest is None:
            return None, {"source": where, "available": False, "reason": "no manifest there"}
    planted = manifest.get("anomalies") if isinstance(manifest, dict) else None
    reason = None
    if not isinstance(planted, list) or not all(isinstance(key, str) for key in planted):
        reason = "it has no list 'anomalies' of keys"
    elif len(dataset.keys) != 1:
        reason = f"dataset {dataset.name} has a composite key {dataset.keys}; a manifest lists single keys"
    if reason and uri:
        raise ManifestError(f"--manifest {uri}: {reason}")
    if reason:
        return None, {"source": where, "available": False, "reason": reason}
    return planted, {"source": where, "available": True}


def read_json(config: Config, uri: str) -> Any:
    """A JSON document at s3://bucket/key (the config's S3 endpoint), file://path or a path."""
    from botocore.exceptions import BotoCoreError, ClientError

    from strata.sources import s3

    try:
        if uri.startswith("s3://"):
            bucket, _, key = uri[len("s3://"):].partition("/")
            text = s3.settings_for(config).client().get_object(Bucket=bucket, Key=key)["Body"].read()
        else:
            text = Path(uri[len("file://"):] if uri.startswith("file://") else uri).read_bytes()
        return json.loads(text)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise ManifestError(f"--manifest {uri}: {error.get('Code')}: {error.get('Message')}") from None
    except (BotoCoreError, OSError, s3.SourceError) as exc:
        raise ManifestError(f"--manifest {uri}: {exc}") from None
    except ValueError as exc:
        raise ManifestError(f"--manifest {uri}: not JSON: {exc}") from None


def against_manifest(ctx: JobContext, dataset: DatasetConfig, flagged: DataFrame, unscorable: DataFrame,
                     planted: list[str], tracking: Tracking, registered: dict) -> dict:
    """Precision and recall of is_outlier among every ride of the run date (an unscorable one
    counts as not flagged), also as metrics of the model's MLflow run."""
    (key,) = dataset.keys
    rides = flagged.select(key, A.OUTLIER).unionByName(unscorable.select(key, F.lit(False).alias(A.OUTLIER)))
    keys = ctx.lake.spark.createDataFrame([(k,) for k in planted], f"`{key}` string") \
        .select(F.col(key).cast(flagged.schema[key].dataType).alias(key))
    figures = A.against_planted(rides, keys, [key])
    for name in ("precision", "recall"):
        if figures[name] is not None:
            tracking.client.log_metric(registered["mlflow_run_id"], f"manifest_{name}", figures[name])
    log.info("anomalies: against the manifest: precision %s, recall %s (%d planted among the run date's rides)",
             figures["precision"], figures["recall"], figures["planted"])
    return figures


# --- MLflow -------------------------------------------------------------------------------------

def log_to_mlflow(ctx: JobContext, tracking: Tracking, dataset: DatasetConfig, fitted: A.Fitted,
                  limits: list[dict], silver_version: int, counts: dict) -> dict:
    """One MLflow run: params, silhouettes, thresholds.json and the model, registered as
    <dataset>_anomalies. Returns its name, version (int) and run id."""
    import mlflow
    import mlflow.spark
    import pyspark
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    config, name = dataset.anomalies, model_name(dataset)
    silver = catalog.silver(dataset)
    with mlflow.start_run(run_name=f"{name}-{ctx.run_id}") as run:
        mlflow.set_tags({"strata.model": name, "strata.dataset": dataset.name, "strata.job": "anomalies",
                         "strata.table": silver.qualified_name, "strata.table_version": str(silver_version),
                         "strata.run_id": ctx.run_id, "strata.run_date": ctx.run_date.isoformat()})
        mlflow.log_params({
            "features": json.dumps(config.features), "log_scale": config.log_scale, "k": fitted.k,
            "k_range": json.dumps(config.k_range) if config.k_range else "", "window_days": config.window_days,
            "window_from": counts["window"]["from"], "window_to": counts["window"]["to"],
            "date_column": config.date_column, "threshold_rule": config.threshold.rule,
            "threshold_c": config.threshold.c, "threshold_quantile": config.threshold.quantile,
            "min_cluster_share": config.threshold.min_cluster_share, "seed": config.seed,
            "max_iter": config.max_iter, "min_rows": config.min_rows, "search_rows": config.search_rows,
            "table_path": ctx.lake.path(silver), "table_version": silver_version})
        mlflow.log_metrics({"fit_rows": float(counts["fit_rows"]), "run_date_rows": float(counts["run_date_rows"]),
                            **{f"silhouette_k{k}": v for k, v in fitted.silhouettes.items()}})
        mlflow.log_dict({"k": fitted.k, "features": list(config.features), "log_scale": config.log_scale,
                         "centroids": fitted.centroids, "thresholds": limits,
                         "rule": dataclasses.asdict(config.threshold)}, "thresholds.json")
        # Stated, not inferred from example rows (which would cost Spark jobs): doubles in, the
        # cluster out. No input example: MLflow would load the saved model back to check it.
        signature = ModelSignature(inputs=Schema([ColSpec("double", c) for c in config.features]),
                                   outputs=Schema([ColSpec("integer", A.PREDICTION)]))
        info = mlflow.spark.log_model(
            fitted.model, "model", signature=signature,
            pip_requirements=[f"pyspark=={pyspark.__version__}", f"mlflow=={mlflow.__version__}"],
            registered_model_name=name)
        version = int(info.registered_model_version)
        for tag, value in (("run_date", ctx.run_date.isoformat()), ("table_version", str(silver_version)),
                           ("k", str(fitted.k))):
            tracking.client.set_model_version_tag(name, str(version), tag, value)
    return {"name": name, "version": version, "mlflow_run_id": run.info.run_id}
