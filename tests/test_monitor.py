"""monitor: three days of the demo generator's trips as gold features on a real Delta lake, the
third shifted (longer trips, the tipping habit turned around); a model trained by the train job
on the first day in a real sqlite MLflow store, predictions by the predict job, then the monitor
of each day, all in process on the test session. One module-scoped project: days run in order,
as nights would."""
from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import shutil
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F
from sklearn.metrics import average_precision_score, roc_auc_score

from strata import catalog
from strata.config import ConfigError, load_config
from strata.jobs import monitor, pipeline, predict, train
from strata.ml import drift
from strata.runner import JobContext
from strata.tracking import Tracking
from strata.transforms import gold as G
from strata_dev.demo_data import DemoDataSpec, generate

from conftest import REPO

DAY1, DAY2, DAY3 = (dt.date(2024, 1, d) for d in (1, 2, 3))
# Parquet objects only, none unreadable: gold is built from them directly (ingest, silver and gold
# have tests of their own). The third day is shifted.
SPEC = DemoDataSpec(days=3, objects_per_day=2, rows_per_object=2500, seed=5, formats=("parquet",),
                    truncated_gzip_objects=0, empty_objects=0, shift_from=DAY3)
MODEL = "watch"
WATCH_MODEL = """dataset: trips
algorithm: logistic_regression
numeric_features: [trip_duration_min, trip_distance, speed_mph, fare_amount, fare_per_mile]
categorical_features: [pickup_hour, pickup_zone]
grid: {regParam: [0.01], maxIter: [20]}
split: {train: 0.7, validation: 0.15, test: 0.15}
seed: 3
folds: 2
parallelism: 2
bootstrap_replicates: 60
baseline_features: [fare_amount]
promotion: {tolerance: 0.02, baseline_margin: 0.0}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("monitor")
    shutil.copytree(REPO / "conf", root / "conf")
    (root / "conf" / "models" / f"{MODEL}.yaml").write_text(WATCH_MODEL)
    shutil.copytree(REPO / "expectations", root / "expectations")
    # the model's tables get the shipped tips model's suites
    for layer, kind in [("gold", "predictions")] + [("monitoring", k) for k in catalog.MONITORING_TABLES]:
        suite = (root / "expectations" / layer / f"tips_{kind}.json").read_text()
        (root / "expectations" / layer / f"{MODEL}_{kind}.json").write_text(
            suite.replace(f'"{layer}.tips_{kind}"', f'"{layer}.{MODEL}_{kind}"'))
    before = os.environ.get("STRATA_EXPECTATIONS_DIR")
    os.environ["STRATA_EXPECTATIONS_DIR"] = str(root / "expectations")
    yield root
    if before is None:
        del os.environ["STRATA_EXPECTATIONS_DIR"]
    else:
        os.environ["STRATA_EXPECTATIONS_DIR"] = before


def context(spark, project, job, run_date, **args):
    environ = {"STRATA_LAKE__ROOT": str(project / "lake"), "STRATA_MLFLOW__TRACKING_URI": f"sqlite:///{project}/mlflow.db",
               "STRATA_MLFLOW__ARTIFACT_LOCATION": str(project / "artifacts"),
               "STRATA_QUALITY__DATA_DOCS_DIR": str(project / "docs")}
    config = load_config("local", project / "conf", environ=environ)
    defaults = {"model": MODEL, "dataset": "trips", "table_version": None, "no_promote": False}
    return JobContext(job, "local", uuid.uuid4().hex[:12], run_date, config,
                      argparse.Namespace(**{**defaults, **args}), _spark=spark)


def gold_of_day(spark, dataset, day):
    """The generated trips of the day as gold features (the rows silver would keep, de-duplicated)."""
    objects, _ = generate(SPEC)
    trips = pa.concat_tables([pq.read_table(io.BytesIO(o.data)) for o in objects
                              if o.key.startswith(f"{day:%Y/%m/%d}/")]).to_pandas()
    silver = (spark.createDataFrame(trips).dropDuplicates(["trip_id"])
              .dropna(subset=["pickup_at", "dropoff_at", "trip_distance", "fare_amount"]).where("trip_distance >= 0"))
    for name, expression in dataset.derive.items():
        silver = silver.withColumn(name, F.expr(expression))
    features = G.features(silver, dataset.keys, list(dataset.partition_by), dataset.gold.features, dataset.gold.label)
    return features.where(F.col("event_date") == F.lit(day))  # not the re-delivered copies of earlier trips


@pytest.fixture(scope="module")
def nights(spark, project):
    """Each day's gold, written under its run date as gold would; the model trained on the first;
    each day scored and monitored. Returns each day's monitor counts."""
    results = {}
    for day in (DAY1, DAY2, DAY3):
        ctx = context(spark, project, "gold", day)
        dataset = ctx.config.dataset("trips")
        ctx.lake.overwrite_partitions(catalog.features(dataset), gold_of_day(spark, dataset, day),
                                      [{"event_date": day.isoformat()}])
        if day == DAY1:
            trained = train.run(context(spark, project, "train", day))
            assert trained["promotion"]["promoted"], trained["promotion"]
        predict.run(context(spark, project, "predict", day))
        results[day] = monitor.run(context(spark, project, "monitor", day))

    return results


def read(spark, project, kind, day=None):
    ctx = context(spark, project, "monitor", DAY3)
    frame = ctx.lake.read(catalog.monitoring(MODEL, kind))
    return frame if day is None else frame.where(F.col("run_date") == F.lit(day))


def test_unshifted_days_do_not_trigger_a_retrain_and_the_shifted_day_does(nights):
    for day in (DAY1, DAY2):
        assert nights[day]["retrain"] == {"triggered": False, "reasons": []}, nights[day]
    shifted = nights[DAY3]
    assert shifted["retrain"]["triggered"], shifted
    reasons = " | ".join(shifted["retrain"]["reasons"])
    # longer trips: distance, duration and fare move; the tipping habit: the realised metric falls
    assert {"trip_distance", "trip_duration_min", "fare_amount"} <= set(shifted["drifted_features"]), shifted
    assert "features drifted" in reasons and "below the champion's test interval" in reasons, reasons
    assert shifted["drifted_share"] >= 0.3 > nights[DAY2]["drifted_share"]


def test_the_decision_is_recorded_with_its_evidence(spark, project, nights):
    decisions = {r.run_date: r for r in read(spark, project, "decisions").collect()}
    assert sorted(decisions) == [DAY1, DAY2, DAY3]
    assert [decisions[d].retrain for d in (DAY1, DAY2, DAY3)] == [False, False, True]
    shifted = decisions[DAY3]
    assert list(shifted.reasons) == nights[DAY3]["retrain"]["reasons"]
    evidence = json.loads(shifted.evidence)
    assert evidence["thresholds"]["feature_psi"] == 0.2
    assert evidence["baseline_psi"]["trip_distance"] >= 0.2 and evidence["performance"]["role"] == "champion"


def test_drift_rows_against_the_training_profile_and_the_previous_day(spark, project, nights):
    rows = read(spark, project, "drift", DAY3).toPandas()
    columns = {"trip_duration_min", "trip_distance", "speed_mph", "fare_amount", "fare_per_mile", "pickup_hour",
               "pickup_zone", "probability", "prediction"}
    for drift_type, baseline in (("BASELINE", "version 1 training rows"), ("CONSECUTIVE", "2024-01-02")):
        of_type = rows[rows.drift_type == drift_type]
        assert set(of_type.column_name) == columns and set(of_type.baseline) == {baseline}
    # the first day has no earlier profile: BASELINE only
    assert set(read(spark, project, "drift", DAY1).toPandas().drift_type) == {"BASELINE"}
    distance = rows[(rows.column_name == "trip_distance") & (rows.drift_type == "BASELINE")].iloc[0]
    assert distance.column_type == "numeric" and distance.drifted
    assert distance.ks_test["statistic"] > 0.2 and distance.ks_test["pvalue"] < 1e-6
    assert distance.chi_squared_test is None and distance.wasserstein_distance > 0.5
    zone = rows[(rows.column_name == "pickup_zone") & (rows.drift_type == "BASELINE")].iloc[0]
    assert zone.column_type == "categorical" and zone.ks_test is None and zone.chi_squared_test["statistic"] > 0

    # the CONSECUTIVE row is the drift between the two days' stored profiles
    profiles = {d: read(spark, project, "profile", d).where("column_name = 'trip_distance'").first() for d in (DAY2, DAY3)}
    before, after = (drift.NumericProfile("trip_distance", p.rows, p.nulls, tuple(p.bin_edges), tuple(p.bin_counts),
                                          tuple(p.quantile_grid)) for p in (profiles[DAY2], profiles[DAY3]))
    expected = drift.numeric_drift(before, after)
    consecutive = rows[(rows.column_name == "trip_distance") & (rows.drift_type == "CONSECUTIVE")].iloc[0]
    assert consecutive.population_stability_index == pytest.approx(expected["population_stability_index"])
    assert consecutive.js_distance == pytest.approx(expected["js_distance"])


def test_the_profile_holds_the_days_rows_summarised(spark, project, nights):
    ctx = context(spark, project, "monitor", DAY2)
    rows = (ctx.lake.read(catalog.features(ctx.config.dataset("trips")), partitions=[{"event_date": "2024-01-02"}])
            .toPandas())
    profile = {r.column_name: r for r in read(spark, project, "profile", DAY2).collect()}
    distance = profile["trip_distance"]
    assert distance.rows == rows.trip_distance.notna().sum() == nights[DAY2]["rows"]
    assert distance.mean == pytest.approx(rows.trip_distance.mean())
    assert distance.min == rows.trip_distance.min() and distance.max == rows.trip_distance.max()
    assert distance.zero_share == pytest.approx((rows.trip_distance == 0).mean())
    assert abs(distance.quantiles["p50"] - rows.trip_distance.median()) <= 0.05
    assert sum(distance.bin_counts) == distance.rows and len(distance.bin_counts) == len(distance.bin_edges) + 1
    hour = profile["pickup_hour"]
    top = rows.pickup_hour.value_counts()
    assert hour.column_type == "categorical" and hour.frequent_values[0]["count"] == top.iloc[0]
    assert sum(hour.value_counts.values()) == hour.rows == len(rows)
    assert abs(hour.distinct_count - rows.pickup_hour.nunique()) <= 0.05 * rows.pickup_hour.nunique()  # approximate
    assert set(profile) >= {"probability", "prediction"}


def test_performance_equals_the_metrics_computed_directly(spark, project, nights):
    ctx = context(spark, project, "monitor", DAY2)
    features = ctx.lake.read(catalog.features(ctx.config.dataset("trips")), partitions=[{"event_date": "2024-01-02"}])
    scored = (ctx.lake.read(catalog.TableSpec("gold", f"{MODEL}_predictions")).where("role = 'champion'")
              .join(features.select("trip_id", "label"), "trip_id").where("label is not null").toPandas())
    row = read(spark, project, "performance", DAY2).where("role = 'champion'").first()
    assert row.rows == len(scored) and row.positives == scored.label.sum()
    assert row.pr_auc == pytest.approx(average_precision_score(scored.label, scored.probability))
    assert row.roc_auc == pytest.approx(roc_auc_score(scored.label, scored.probability))
    predicted = (scored.probability >= row.threshold).astype(int)
    assert row.precision == pytest.approx((predicted & scored.label).sum() / predicted.sum())
    assert row.metric == "pr_auc" and row.value == row.pr_auc
    # beside the champion's logged test interval
    assert row.champion_test_low <= row.champion_test_estimate <= row.champion_test_high
    assert row.below_champion_interval is False
    assert read(spark, project, "performance", DAY3).where("role = 'champion'").first().below_champion_interval


def test_the_monitoring_tables_read_without_spark(project, nights):
    drift_table = DeltaTable(str(project / "lake" / "monitoring" / f"{MODEL}_drift")).to_pandas()
    assert set(drift_table.drift_type) == {"BASELINE", "CONSECUTIVE"}
    assert {"population_stability_index", "js_distance", "ks_test", "wasserstein_distance", "chi_squared_test",
            "tv_distance", "l_infinity_distance", "count_delta"} <= set(drift_table.columns)
    decisions = DeltaTable(str(project / "lake" / "monitoring" / f"{MODEL}_decisions")).to_pandas()
    assert len(decisions) == 3


def test_the_pipeline_trains_on_the_decision_once_and_a_rerun_keeps_the_version_that_scored(spark, project, nights):
    """The pipeline's monitor step finds the date monitored, takes its recorded decision, and
    trains; a re-run trains nothing more."""
    ctx = context(spark, project, "pipeline", DAY3)
    model = ctx.config.model(MODEL)
    watched = pipeline.monitor_unless_done(context(spark, project, "monitor", DAY3), model)
    assert "skipped" in watched and watched["retrain"] == nights[DAY3]["retrain"]
    trained = pipeline.retrain_unless_done(context(spark, project, "train", DAY3), model)
    # a new version on the shifted day's table; its promotion gate decided, whatever it decided
    assert trained["model_version"] == "2" and trained["promotion"]["reason"], trained
    assert trained["table_version"] == context(spark, project, "train", DAY3).lake.version(
        catalog.features(ctx.config.dataset("trips")))
    again = pipeline.retrain_unless_done(context(spark, project, "train", DAY3), model)
    assert again["skipped"] == "version 2 was already trained for 2024-01-03"
    # an earlier date run again after a later date trained: its own version counts, not the newest
    earlier = pipeline.retrain_unless_done(context(spark, project, "train", DAY1), model)
    assert earlier["skipped"] == "version 1 was already trained for 2024-01-01"

    # the date monitored again with version 2 as champion, whatever the gate decided: the rows were
    # scored by version 1, so version 1's training profile stays their reference; the date's
    # partitions are replaced
    monitor_ctx = context(spark, project, "monitor", DAY3)
    Tracking.connect(monitor_ctx.config.mlflow).set_alias(MODEL, "champion", "2")
    before = {kind: read(spark, project, kind).count() for kind in catalog.MONITORING_TABLES}
    rerun = monitor.run(monitor_ctx)
    assert rerun["retrain"] == nights[DAY3]["retrain"] and rerun["champion_version"] == "1"
    assert {kind: read(spark, project, kind).count() for kind in catalog.MONITORING_TABLES} == before


def test_a_lost_decision_fails_the_run_instead_of_reporting_ok(spark, project, nights, monkeypatch):
    from strata import publish

    original = publish.publish

    def losing(ctx, outputs):  # the decision row is lost on its way to the table
        outputs[-1].frame = outputs[-1].frame.limit(0)
        return original(ctx, outputs)

    monkeypatch.setattr(publish, "publish", losing)
    with pytest.raises(publish.NotReconciled, match=r"monitoring.watch_decisions: 0 rows written and 0 quarantined "
                                                    r"for 1 made"):
        monitor.run(context(spark, project, "monitor", DAY2))


def test_a_champion_without_a_training_profile_is_one_line_and_the_pipeline_retrains(spark, project, nights):
    """Version 1's profile deleted from the artifact store, as for a champion trained before train
    logged one. The pipeline's step asks for a retrain instead of failing every night (on DAY2,
    whose decision the test above lost, so the step does not take the date for monitored)."""
    import mlflow
    from mlflow import MlflowClient

    ctx = context(spark, project, "monitor", DAY2)
    mlflow.set_tracking_uri(ctx.config.mlflow.tracking_uri)
    run_id = MlflowClient().get_model_version(MODEL, "1").run_id
    (found,) = (project / "artifacts").rglob(f"{run_id}/artifacts/monitoring/reference_profile.json")
    found.unlink()
    with pytest.raises(monitor.NoReference, match=r"^model watch version 1 has no training profile .*train the "
                                                  r"model again to monitor it \(MlflowException\)$"):
        monitor.run(ctx)
    step = pipeline.monitor_unless_done(context(spark, project, "monitor", DAY2), ctx.config.model(MODEL))
    assert step["retrain"]["triggered"] and "has no training profile" in step["retrain"]["reasons"][0]


@pytest.mark.parametrize("key, value, message", [
    ("feature_psi", 0, "must be positive"),
    ("drifted_share", 1.5, r"must be in \(0, 1\]"),
    ("min_labelled_rows", 0, "must be at least 1"),
])
def test_monitoring_thresholds_are_checked_before_spark(tmp_path, key, value, message):
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    (tmp_path / "conf" / "models" / "tips.yaml").write_text(
        (REPO / "conf" / "models" / "tips.yaml").read_text() + f"monitoring: {{{key}: {value}}}\n")
    with pytest.raises(ConfigError, match=rf"key 'models.tips.monitoring.{key}' {message}"):
        load_config("local", tmp_path / "conf")


def test_the_shift_changes_only_the_days_from_its_start():
    plain, _ = generate(DemoDataSpec(days=3, objects_per_day=1, rows_per_object=400, formats=("parquet",)))
    shifted, _ = generate(DemoDataSpec(days=3, objects_per_day=1, rows_per_object=400, formats=("parquet",),
                                       shift_from=DAY3))
    same = [a.data == b.data for a, b in zip(plain, shifted)]
    assert [o.key[:10] for o in plain] == [o.key[:10] for o in shifted]
    assert all(s for o, s in zip(plain, same) if o.key < "2024/01/03") and not any(
        s for o, s in zip(plain, same) if o.key.startswith("2024/01/03"))

    def trips(objects):
        return pd.concat([pq.read_table(io.BytesIO(o.data)).to_pandas() for o in objects if o.key.startswith("2024/01/03")])
    before, after = trips(plain), trips(shifted)
    assert np.nanmedian(after.trip_distance) == pytest.approx(1.8 * np.nanmedian(before.trip_distance), rel=0.1)
