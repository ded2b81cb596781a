"""train: a real gold features table on disk, a real sqlite MLflow store and registry, real MLlib
fits. One module-scoped project: each test adds its own table versions and registry changes in
order, as nights of training would."""
from __future__ import annotations

import argparse
import datetime as dt
import uuid

import mlflow
import pytest
from mlflow import MlflowClient
from pyspark.ml.functions import vector_to_array
from pyspark.sql import functions as F

from strata import catalog
from strata.config import load_config
from strata.jobs import train
from strata.ml import evaluate
from strata.ml.split import stratified_split
from strata.runner import JobContext
from strata.tracking import TrackingError

from conftest import REPO
from ml_data import TINY_MODEL, gold_rows

RUN_DATE = dt.date(2024, 1, 8)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    import shutil
    root = tmp_path_factory.mktemp("train")
    shutil.copytree(REPO / "conf", root / "conf")
    (root / "conf" / "models" / "tiny.yaml").write_text(TINY_MODEL)
    return root


def context(spark, project, *, model="tiny", table_version=None, no_promote=False, tracking=None):
    environ = {"STRATA_LAKE__ROOT": str(project / "lake"),
               "STRATA_MLFLOW__TRACKING_URI": tracking or f"sqlite:///{project}/mlflow.db",
               "STRATA_MLFLOW__ARTIFACT_LOCATION": str(project / "artifacts")}
    config = load_config("local", project / "conf", environ=environ)
    args = argparse.Namespace(model=model, table_version=table_version, no_promote=no_promote)
    return JobContext("train", "local", uuid.uuid4().hex[:12], RUN_DATE, config, args, _spark=spark)


def features_table(ctx):
    return catalog.features(ctx.config.dataset("trips"))


def versions(project, name="tiny"):
    mlflow.set_tracking_uri(f"sqlite:///{project}/mlflow.db")
    return sorted(int(v.version) for v in MlflowClient().search_model_versions(f"name='{name}'"))


def alias(project, name, which):
    mlflow.set_tracking_uri(f"sqlite:///{project}/mlflow.db")
    try:
        return str(MlflowClient().get_model_version_by_alias(name, which).version)
    except mlflow.exceptions.MlflowException:
        return None


@pytest.fixture(scope="module")
def first(spark, project):
    """Version 0 of the table, learnable labels; the first model trained on it."""
    ctx = context(spark, project)
    ctx.lake.overwrite(features_table(ctx), gold_rows(spark, 1500, seed=1))
    counts = train.run(ctx)
    return counts, ctx


def test_the_first_model_that_clears_the_baseline_becomes_champion(first, project, spark):
    counts, ctx = first
    promotion = counts["promotion"]
    assert promotion["promoted"] is True and promotion["champion"] is None
    assert counts["model_version"] == "1" and alias(project, "tiny", "champion") == "1" == alias(project, "tiny", "challenger")
    assert counts["interval"]["low"] > counts["promotion"]["zero_rule"] + 0.02
    # exact split per class: counts are the config's shares of each class, within one row
    labelled = ctx.lake.read(features_table(ctx), version=0)
    per_class = {r.label: r["count"] for r in labelled.groupBy("label").count().collect()}
    for split, share in (("train", 0.6), ("validation", 0.2), ("test", 0.2)):
        for label, n in per_class.items():
            assert abs(counts["split_counts"][split][label] - share * n) <= 1

    run = mlflow.get_run(counts["mlflow_run_id"])
    assert run.data.params["table_version"] == "0" and run.data.params["table_path"].endswith("/gold/trips_features")
    assert run.data.tags["strata.table_version"] == "0"
    assert run.inputs.dataset_inputs[0].dataset.source_type == "delta" or "delta" in run.inputs.dataset_inputs[0].dataset.source
    for metric in ("test_pr_auc", "test_pr_auc_low", "test_pr_auc_high", "test_roc_auc", "test_log_loss",
                   "zero_rule_pr_auc", "baseline_pr_auc", "rows_test_class_1"):
        assert metric in run.data.metrics, metric
    artifacts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id)} | \
        {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "plots")}
    assert {"datasheet.md", "plots/roc.png", "plots/pr.png", "plots/confusion_matrix.png", "plots/calibration.png",
            "plots/feature_importance.png"} <= artifacts


def test_the_champion_loaded_from_the_registry_reproduces_the_logged_test_metric(first, project, spark):
    counts, ctx = first
    model = mlflow.spark.load_model("models:/tiny@champion")
    rows = ctx.lake.read(features_table(ctx), version=0)
    test = stratified_split(rows, "label", ["trip_id"], {"train": 0.6, "validation": 0.2, "test": 0.2}, 11) \
        .where("split = 'test'")
    scored = model.transform(test).select("trip_id", "label", vector_to_array("probability")[1].alias("score"))
    metrics = evaluate.binary_metrics(scored, "label", "score", counts["threshold"], 1.0)
    assert metrics["pr_auc"] == pytest.approx(mlflow.get_run(counts["mlflow_run_id"]).data.metrics["test_pr_auc"], abs=1e-9)


def test_the_pipeline_finds_the_current_version_by_config_and_age(first, project, spark):
    """What keeps a re-run of the pipeline, or a new day within retrain_after_days, from training
    again, and a changed config or an old model from being taken for current."""
    import dataclasses

    from strata.tracking import Tracking

    counts, ctx = first
    model = ctx.config.model("tiny")
    tracking = Tracking.connect(ctx.config.mlflow)
    version = counts["model_version"]
    assert train.current_version(tracking, model, RUN_DATE) == (version, RUN_DATE.isoformat())
    assert train.current_version(tracking, model, RUN_DATE + dt.timedelta(days=6)) == (version, RUN_DATE.isoformat())
    assert train.current_version(tracking, model, RUN_DATE - dt.timedelta(days=30)) is not None  # a backfill
    assert train.current_version(tracking, model, RUN_DATE + dt.timedelta(days=7)) is None
    assert train.current_version(tracking, dataclasses.replace(model, seed=12), RUN_DATE) is None


def test_retraining_at_a_pinned_version_gives_the_same_splits_and_metrics(first, project, spark):
    counts, ctx = first
    ctx.lake.append(features_table(ctx), gold_rows(spark, 300, seed=2, first_id=10_000))  # version 1
    again = train.run(context(spark, project, table_version=0, no_promote=True))
    assert again["table_version"] == 0 and again["split_counts"] == counts["split_counts"]
    assert again["metrics"]["pr_auc"] == pytest.approx(counts["metrics"]["pr_auc"], abs=1e-12)
    assert again["interval"] == counts["interval"]
    assert again["promotion"] == {"decision": "not considered (--no-promote)"}
    assert alias(project, "tiny", "champion") == "1" and alias(project, "tiny", "challenger") == again["model_version"]


def test_a_worse_challenger_is_compared_on_rows_the_champion_never_learnt_from_and_not_promoted(first, project, spark):
    """Champion (version 1) learnt from table version 0 with seed 11. The challenger learns from
    those keys with labels unrelated to the features plus new rows, split with another seed: it
    must not be promoted (it does not clear the baseline), and the comparison recorded as
    evidence must leave out the test rows the champion trained or tuned on."""
    ctx = context(spark, project)
    rows = gold_rows(spark, 1500, seed=1, learnable=False).unionByName(
        gold_rows(spark, 500, seed=3, first_id=20_000, learnable=False))
    ctx.lake.overwrite(features_table(ctx), rows)
    version = ctx.lake.version(features_table(ctx))
    (project / "conf" / "models" / "tiny.yaml").write_text(TINY_MODEL.replace("seed: 11", "seed: 5"))
    try:
        counts = train.run(context(spark, project))
    finally:
        (project / "conf" / "models" / "tiny.yaml").write_text(TINY_MODEL)
    promotion = counts["promotion"]
    assert promotion["promoted"] is False and promotion["champion"] == "1"
    assert alias(project, "tiny", "champion") == "1" and alias(project, "tiny", "challenger") == counts["model_version"]

    fractions = {"train": 0.6, "validation": 0.2, "test": 0.2}
    learnt = {r.trip_id for r in stratified_split(ctx.lake.read(features_table(ctx), version=0), "label", ["trip_id"],
                                                  fractions, 11).where("split != 'test'").select("trip_id").collect()}
    challenger_test = {r.trip_id for r in stratified_split(ctx.lake.read(features_table(ctx), version=version),
                                                          "label", ["trip_id"], fractions, 5)
                       .where("split = 'test'").select("trip_id").collect()}
    assert challenger_test & learnt  # the case is real: a naive comparison would leak
    comparison = promotion["comparison"]
    assert comparison["rows"] == len(challenger_test - learnt) and comparison["champion_table_version"] == 0


def test_a_first_model_on_random_labels_never_becomes_champion(spark, tmp_path):
    import shutil
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    (tmp_path / "conf" / "models" / "tiny.yaml").write_text(TINY_MODEL)
    ctx = context(spark, tmp_path)
    ctx.lake.overwrite(features_table(ctx), gold_rows(spark, 800, seed=9, learnable=False))
    counts = train.run(ctx)
    assert counts["promotion"]["promoted"] is False and "zero-rule baseline" in counts["promotion"]["reason"]
    assert alias(tmp_path, "tiny", "champion") is None and alias(tmp_path, "tiny", "challenger") == "1"


@pytest.mark.parametrize("rows, message", [
    (lambda spark: gold_rows(spark, 50, seed=4).withColumn("label", F.lit(None).cast("int")), "no labelled rows"),
    (lambda spark: gold_rows(spark, 50, seed=4).withColumn("label", F.lit(1)), "every labelled row is of class 1"),
    (lambda spark: gold_rows(spark, 200, seed=4, learnable=False, label_share=0.0)
     .withColumn("label", F.when(F.col("trip_id") == "t000000", 1).otherwise(0)), "too few for 2 folds"),
])
def test_data_that_cannot_train_is_one_line_and_changes_no_registry(spark, tmp_path, rows, message):
    import shutil
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    (tmp_path / "conf" / "models" / "tiny.yaml").write_text(TINY_MODEL)
    ctx = context(spark, tmp_path)
    ctx.lake.overwrite(features_table(ctx), rows(spark))
    with pytest.raises(train.TrainingDataError, match=message):
        train.run(ctx)
    assert versions(tmp_path) == []


def test_a_missing_table_version_and_an_unreachable_store_are_one_line(first, project, spark):
    before = versions(project)
    with pytest.raises(train.TrainingDataError, match=r"gold.trips_features has no version 99 \(versions 0 to \d+\)"):
        train.run(context(spark, project, table_version=99))
    with pytest.raises(TrackingError, match=r"^cannot use the MLflow tracking store http://127.0.0.1:9: .*Connection refused"):
        train.run(context(spark, project, tracking="http://127.0.0.1:9"))
    assert versions(project) == before


def test_the_gate_still_compares_once_the_champions_table_version_is_vacuumed(first, project, spark):
    """The rows each run learnt from are kept by run id (ml.tiny_learnt_rows): once maintain has
    vacuumed the champion's features version, the gate still leaves exactly those rows out
    (rebuilding the split by time travel would fail, and no challenger could be promoted again)."""
    counts, ctx = first
    table = features_table(ctx)
    fractions = {"train": 0.6, "validation": 0.2, "test": 0.2}
    learnt = {r.trip_id for r in stratified_split(ctx.lake.read(table, version=0), "label", ["trip_id"], fractions, 11)
              .where("split != 'test'").select("trip_id").collect()}
    ctx.lake.overwrite(table, gold_rows(spark, 1500, seed=1).unionByName(gold_rows(spark, 400, seed=6, first_id=30_000)))
    ctx.lake.vacuum(table, retention_hours=0, orphan_grace_hours=0)
    with pytest.raises(Exception):
        ctx.lake.read(table, version=0).count()  # the champion's table version is gone

    (project / "conf" / "models" / "tiny.yaml").write_text(TINY_MODEL.replace("seed: 11", "seed: 5"))
    try:
        later = train.run(context(spark, project))
    finally:
        (project / "conf" / "models" / "tiny.yaml").write_text(TINY_MODEL)
    comparison = later["promotion"]["comparison"]
    assert "error" not in comparison, comparison
    assert comparison["learnt_from"] == "ml.tiny_learnt_rows" and later["promotion"]["champion"] == counts["model_version"]
    challenger_test = {r.trip_id for r in stratified_split(ctx.lake.read(table), "label", ["trip_id"], fractions, 5)
                       .where("split = 'test'").select("trip_id").collect()}
    assert challenger_test & learnt and comparison["rows"] == len(challenger_test - learnt)
