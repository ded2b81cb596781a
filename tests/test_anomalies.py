"""anomalies: the demo generator's trips (with planted anomalies) as silver on a real Delta lake, the
job run in process on the test session, a real sqlite MLflow store. One module-scoped lake: the
first run, its re-run and the skipped runs share it, so the K-means fit is paid twice, not per test."""
from __future__ import annotations

import datetime as dt
import io
import json
import shutil
import uuid

import boto3
import mlflow
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from chispa import assert_df_equality
from mlflow import MlflowClient
from pyspark.sql import functions as F

from strata import catalog, publish, stages
from strata.config import ConfigError, load_config
from strata.jobs import anomalies
from strata.ml import anomalies as A
from strata.sources.store import manifest_key
from strata_dev.demo_data import DemoDataSpec, generate

from conftest import REPO, job_context

DAY1, DAY2 = dt.date(2024, 1, 1), dt.date(2024, 1, 2)
# Parquet objects only, none unreadable: silver is built from them directly (ingest and silver
# have tests of their own; here they would cost more than the fit).
SPEC = DemoDataSpec(days=2, objects_per_day=2, rows_per_object=1000, seed=11, formats=("parquet",),
                    truncated_gzip_objects=0, empty_objects=0)
# Columns that differ between two runs of the same date by design.
PER_RUN = ("model_version", "mlflow_run_id", "run_id", "flagged_at")
# A trip that takes no time: its implied speed is null (nullif), so it cannot be placed.
STANDSTILL = "standstill-1"


def silver_rows(spark, dataset):
    """The generated trips as silver holds them: one row per trip, the rows silver quarantines
    (nulls, negative distances) left out, the dataset's derived columns; plus STANDSTILL."""
    objects, manifest = generate(SPEC)
    trips = pa.concat_tables([pq.read_table(io.BytesIO(o.data)) for o in objects]).to_pandas()
    standstill = trips.iloc[[0]].assign(trip_id=STANDSTILL, pickup_at=pd.Timestamp("2024-01-02 09:00:00"),
                                        dropoff_at=pd.Timestamp("2024-01-02 09:00:00"), trip_distance=0.5,
                                        fare_amount=3.0)
    frame = (spark.createDataFrame(pd.concat([trips, standstill], ignore_index=True)).dropDuplicates(["trip_id"])
             .dropna(subset=["pickup_at", "dropoff_at", "trip_distance", "fare_amount"]).where("trip_distance >= 0"))
    for name, expression in dataset.derive.items():
        frame = frame.withColumn(name, F.expr(expression))
    return frame, manifest


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory, s3_endpoint):
    """Silver of both days on a real lake; the manifest where the demo leaves it, beside the
    source's prefix in its bucket; a sqlite MLflow store."""
    root = tmp_path_factory.mktemp("anomalies")
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    environ = {"STRATA_LAKE__ROOT": str(root / "lake"), "STRATA_S3__ENDPOINT_URL": s3_endpoint,
               "STRATA_DATASETS__TRIPS__SOURCE__BUCKET": bucket,
               "STRATA_QUALITY__DATA_DOCS_DIR": str(root / "docs"),
               "STRATA_MLFLOW__TRACKING_URI": f"sqlite:///{root}/mlflow.db",
               "STRATA_MLFLOW__ARTIFACT_LOCATION": str(root / "artifacts"),
               # fewer k to try than the shipped [2, 6]: the same code path, less time
               "STRATA_DATASETS__TRIPS__ANOMALIES__K_RANGE": "[2, 3]"}
    ctx = job_context(spark, "silver", "trips", DAY2, environ)
    dataset = ctx.config.dataset("trips")
    frame, manifest = silver_rows(spark, dataset)
    ctx.lake.overwrite(catalog.silver(dataset), frame)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=manifest_key("trips"), Body=manifest.to_json().encode())
    return {"root": root, "environ": environ, "manifest": manifest}


def run_job(spark, lake, run_date, **environ):
    ctx = job_context(spark, "anomalies", "trips", run_date, {**lake["environ"], **environ}, manifest=None)
    return anomalies.run(ctx), ctx


@pytest.fixture(scope="module")
def first(spark, lake):
    counts, ctx = run_job(spark, lake, DAY2)
    table = catalog.flagged(ctx.config.dataset("trips"))
    return counts, ctx, ctx.lake.read(table).toPandas(), ctx.lake.version(table)


@pytest.fixture(scope="module")
def second(spark, lake, first):
    counts, ctx = run_job(spark, lake, DAY2)
    return counts, ctx


def registry(project, name="trips_anomalies"):
    mlflow.set_tracking_uri(project["environ"]["STRATA_MLFLOW__TRACKING_URI"])
    client = MlflowClient()
    return client, sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))


def test_the_planted_anomalies_of_the_run_date_are_flagged(first, lake):
    counts, ctx, rows, _ = first
    assert "skipped" not in counts, counts
    planted = {t for t in lake["manifest"].anomalies if t.startswith(DAY2.strftime("%Y%m%d"))}
    # the default manifest: the source's _manifests/trips.json, read from the bucket
    manifest = counts["manifest"]
    assert manifest["available"] and manifest["source"].endswith("/_manifests/trips.json")
    assert manifest["planted"] == len(planted) > 0
    assert manifest["recall"] >= 0.8 and manifest["precision"] >= 0.5, manifest
    # the same figures from the published table itself
    outliers = set(rows.loc[rows.is_outlier, "trip_id"])
    assert len(outliers & planted) == manifest["true_positives"]
    assert len(outliers - planted) == manifest["false_positives"]

    day_rides = ctx.lake.read(catalog.silver(ctx.config.dataset("trips"))).where(F.col("event_date") == DAY2)
    assert len(rows) == day_rides.count() - 1 == counts["flagged"]["rows"]  # all but the standstill trip
    assert set(rows.event_date.astype(str)) == {DAY2.isoformat()}
    assert counts["k"] in (2, 3) and set(counts["silhouettes"]) == {"2", "3"}
    assert rows.cluster.between(0, counts["k"] - 1).all() and (rows.outlier_score >= 0).all()
    assert (rows.k == counts["k"]).all() and rows.is_outlier.sum() == counts["outliers"]
    assert list(rows.columns) == ["trip_id", "event_date", "trip_distance", "trip_duration_min", "speed_mph",
                                  "cluster", "outlier_score", "threshold", "is_outlier", "k", *PER_RUN]


def test_a_ride_that_cannot_be_placed_goes_to_quarantine(first):
    counts, ctx, rows, _ = first
    assert counts["unscorable"] == 1 and counts["flagged"]["quarantined"] == 1
    quarantine = ctx.lake.read(catalog.quarantine_of(catalog.flagged(ctx.config.dataset("trips")))).collect()
    assert [json.loads(r.record)["trip_id"] for r in quarantine] == [STANDSTILL]
    assert quarantine[0].failed_rules == [anomalies.UNSCORABLE]
    assert STANDSTILL not in set(rows.trip_id)


def test_the_model_is_logged_registered_and_champion(first, lake):
    counts, ctx, rows, _ = first
    client, versions = registry(lake)
    model = counts["model"]
    assert versions == [model["version"]] and (rows.model_version == model["version"]).all()
    assert str(client.get_model_version_by_alias("trips_anomalies", "champion").version) == str(model["version"])
    run = client.get_run(model["mlflow_run_id"])
    assert run.data.params["k"] == str(counts["k"]) and run.data.params["window_days"] == "28"
    assert json.loads(run.data.params["features"])["speed_mph"].startswith("trip_distance /")
    assert {"silhouette_k2", "silhouette_k3", "manifest_precision", "manifest_recall"} <= set(run.data.metrics)
    logged = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/thresholds.json")
    assert len(logged["centroids"]) == counts["k"] == len(logged["thresholds"])
    # the registered model replays the clusters of the published rows
    loaded = mlflow.spark.load_model("models:/trips_anomalies@champion")
    sample = ctx.lake.spark.createDataFrame(rows.head(50)[["trip_id", "trip_distance", "trip_duration_min", "speed_mph",
                                                           "cluster"]])
    replayed = loaded.transform(sample.withColumnRenamed("cluster", "published"))
    assert replayed.where("prediction != published").count() == 0


def test_a_rerun_replaces_the_dates_rows_with_the_same_flags_and_a_new_version(first, second, lake):
    counts, ctx, rows, version = first
    again, again_ctx = second
    table = catalog.flagged(ctx.config.dataset("trips"))
    assert again_ctx.lake.version(table) == version + 1  # one commit replaced the date's partition
    assert_df_equality(again_ctx.lake.read(table).drop(*PER_RUN), ctx.lake.read(table, version=version).drop(*PER_RUN),
                       ignore_row_order=True)
    assert again["model"]["version"] == counts["model"]["version"] + 1
    assert again_ctx.lake.read(table).select("model_version").distinct().collect()[0][0] == again["model"]["version"]
    client, versions = registry(lake)
    assert versions == [counts["model"]["version"], again["model"]["version"]]
    champion = client.get_model_version_by_alias("trips_anomalies", "champion")
    assert str(champion.version) == str(again["model"]["version"])


def test_the_same_silver_and_config_give_the_same_model(first, second, lake):
    counts, _, _, _ = first
    again, _ = second
    assert again["k"] == counts["k"] and again["silhouettes"] == counts["silhouettes"]
    assert again["thresholds"] == counts["thresholds"] and again["manifest"] == counts["manifest"]
    registry(lake)  # its tracking store
    centroids = [mlflow.artifacts.load_dict(f"runs:/{run}/thresholds.json")["centroids"]
                 for run in (counts["model"]["mlflow_run_id"], again["model"]["mlflow_run_id"])]
    assert centroids[0] == centroids[1]


def test_past_search_rows_k_is_chosen_on_a_sample_and_fitted_on_every_row(first):
    _, ctx, _, _ = first
    dataset = ctx.config.dataset("trips")
    config = dataset.anomalies
    names = list(config.features)
    rows = A.feature_rows(ctx.lake.read(catalog.silver(dataset)), ["trip_id"], config.features).where(A.usable(names))
    fitted = A.fit(rows, names, config.log_scale, [2, 3], config.seed, config.max_iter, search_rows=1500)
    assert set(fitted.silhouettes) == {2, 3} and 1200 < fitted.searched_rows < 1800  # a sample of about 1500
    assert sum(fitted.kmeans.summary.clusterSizes) == rows.count() > 1500  # the chosen k saw every row


def test_a_lost_ride_fails_the_run_instead_of_reporting_ok(spark, lake, second, monkeypatch):
    real_flag = anomalies.flag
    # a defect that loses one ride between scoring and publishing
    monkeypatch.setattr(anomalies, "flag", lambda *args: real_flag(*args).where(F.col("trip_id") != F.lit(
        real_flag(*args).select("trip_id").orderBy("trip_id").first()[0])))
    with pytest.raises(publish.NotReconciled, match="rides written and .* quarantined for .* rides of 2024-01-02"):
        run_job(spark, lake, DAY2)


def test_too_few_rows_or_no_ride_is_skipped_and_publishes_nothing(spark, second, lake):
    _, ctx = second
    table = catalog.flagged(ctx.config.dataset("trips"))
    version, (_, versions) = ctx.lake.version(table), registry(lake)
    counts, _ = run_job(spark, lake, DAY1, STRATA_DATASETS__TRIPS__ANOMALIES__MIN_ROWS="100000")
    assert counts["skipped"].endswith("fewer than anomalies.min_rows (100000)") and counts["fit_rows"] < 100000
    counts, _ = run_job(spark, lake, dt.date(2024, 1, 9))
    assert counts["skipped"] == "no ride on 2024-01-09 in silver.trips"
    assert ctx.lake.version(table) == version and registry(lake)[1] == versions
    assert ctx.lake.read(table).where(F.col("event_date") != DAY2).count() == 0


def test_an_unreadable_manifest_fails_before_spark(tmp_path):
    config = load_config("local", environ={})
    with pytest.raises(anomalies.ManifestError, match=r"--manifest .*missing.json: .*No such file"):
        anomalies.planted_anomalies(config, config.dataset("trips"), str(tmp_path / "missing.json"))
    (tmp_path / "m.json").write_text(json.dumps({"anomalies": ["a", "b"]}))
    planted, about = anomalies.planted_anomalies(config, config.dataset("trips"), f"file://{tmp_path}/m.json")
    assert planted == ["a", "b"] and about["available"]
    (tmp_path / "bad.json").write_text(json.dumps({"nulls": []}))
    with pytest.raises(anomalies.ManifestError, match="no list 'anomalies'"):
        anomalies.planted_anomalies(config, config.dataset("trips"), str(tmp_path / "bad.json"))


# --- config: one line naming file and key, before Spark -------------------------------------------

@pytest.fixture
def conf_dir(tmp_path):
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    return tmp_path / "conf"


def with_anomalies(conf_dir, change):
    path = conf_dir / "datasets" / "trips.yaml"
    content = yaml.safe_load(path.read_text())
    change(content["anomalies"])
    path.write_text(yaml.safe_dump(content, sort_keys=False))


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update(windw_days=7), r"trips.yaml: unknown key 'datasets.trips.anomalies.windw_days'"),
    (lambda a: a["features"].update(speed_mph="trip_distanse / trip_duration_min"),
     r"trips.yaml: key 'datasets.trips.anomalies.features.speed_mph' names unknown column 'trip_distanse' "
     r"\(did you mean 'trip_distance'\?\)"),
    (lambda a: a["features"].update(fare="fare_amount +"),
     r"key 'datasets.trips.anomalies.features.fare' is not valid Spark SQL"),
    (lambda a: a["features"].update(cluster="trip_distance"),
     r"key 'datasets.trips.anomalies.features' column 'cluster' is already a column"),
    (lambda a: a.update(k=4), r"key 'datasets.trips.anomalies.k' and k_range are both set"),
    (lambda a: a.pop("k_range"), r"key 'datasets.trips.anomalies.k' or k_range must be set"),
    (lambda a: a.update(k_range=[5, 3]),
     r"key 'datasets.trips.anomalies.k_range' must be \[low, high\] with 2 <= low <= high"),
    (lambda a: (a.pop("k_range"), a.update(k=1)), r"key 'datasets.trips.anomalies.k' must be at least 2"),
    (lambda a: a.update(window_days=0), r"key 'datasets.trips.anomalies.window_days' must be at least 1, got 0"),
    (lambda a: a.update(min_rows=3), r"key 'datasets.trips.anomalies.min_rows' must be at least 6 \(the largest k\)"),
    (lambda a: a.update(search_rows=10), r"key 'datasets.trips.anomalies.search_rows' must be at least 1000, got 10"),
    (lambda a: a["threshold"].update(rule="zscore"),
     r"key 'datasets.trips.anomalies.threshold.rule' must be one of \['mad', 'quantile'\]"),
    (lambda a: a["threshold"].update(c=-1), r"key 'datasets.trips.anomalies.threshold.c' must be positive"),
    (lambda a: a["threshold"].update(quantile=1.5),
     r"key 'datasets.trips.anomalies.threshold.quantile' must be between 0 and 1"),
    (lambda a: a.update(date_column="pickup_at"),
     r"key 'datasets.trips.anomalies.date_column' names 'pickup_at', not one of the dataset's partition columns"),
])
def test_config_mistakes_are_one_line(conf_dir, change, message):
    with_anomalies(conf_dir, change)
    with pytest.raises(ConfigError, match=message) as error:
        load_config("local", conf_dir, environ={})
    assert "\n" not in str(error.value)


def test_the_stage_runs_after_silver_only_for_datasets_with_the_section(conf_dir):
    import dataclasses

    trips = load_config("local", conf_dir, environ={}).dataset("trips")
    assert trips.anomalies.date_column == "event_date" and catalog.flagged(trips).partition_by == ("event_date",)
    stage = stages.stage("anomalies")
    assert [s.job for s in stages.upstream(trips, stage)] == ["silver"]
    assert "anomalies" in [s.job for s in stages.in_order(trips)]
    assert "anomalies" not in [s.job for s in stages.in_order(dataclasses.replace(trips, anomalies=None))]
    # its table is the lake's: a model or analysis table cannot take the name
    (conf_dir / "models" / "trips_anomalies.yaml").write_text((conf_dir / "models" / "tips.yaml").read_text())
    with pytest.raises(ConfigError, match=r"trips_anomalies.yaml: key 'models.trips_anomalies.name' is the registered "
                                          r"model of dataset 'trips'"):
        load_config("local", conf_dir, environ={})



def test_the_model_does_not_depend_on_how_the_rows_are_partitioned(spark):
    """K-means|| samples its initial centres partition by partition, row by row: the same rows in
    other partitions (another master's cores, other file splits) still give the same model and
    thresholds, so a cluster run equals a local one (tests/test_cluster.py runs both)."""
    from strata.ml import anomalies as A

    dataset = load_config("local", environ={"STRATA_DATASETS__TRIPS__ANOMALIES__K_RANGE": "[2, 3]"}).dataset("trips")
    config = dataset.anomalies
    frame, _ = silver_rows(spark, dataset)
    rows = A.feature_rows(frame, [*dataset.keys, config.date_column], config.features)
    rows = rows.where(A.usable(list(config.features))).cache()
    models = []
    for layout in (rows.coalesce(1), rows.repartition(3)):
        fitted, scored, limits = anomalies.fit(layout, config, 2)
        scored.unpersist()
        models.append({"k": fitted.k, "centroids": fitted.centroids, "limits": limits})
    rows.unpersist()
    for model in models[1:]:
        assert model["k"] == models[0]["k"]
        assert len(model["centroids"]) == len(models[0]["centroids"])
        for mine, first in zip(model["centroids"], models[0]["centroids"]):
            assert mine == pytest.approx(first, rel=1e-9, abs=1e-12)
        assert len(model["limits"]) == len(models[0]["limits"])
        for mine, first in zip(model["limits"], models[0]["limits"]):
            assert mine.keys() == first.keys()
            assert mine == pytest.approx(first, rel=1e-9, abs=1e-12)
