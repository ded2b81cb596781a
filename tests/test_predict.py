"""predict: a real sqlite registry with models trained by the train job, a real gold features
table, predictions published through the gate and read back without Spark (deltalake, duckdb).
One module-scoped project: the tests run in order, as nights would."""
from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import shutil
import uuid

import duckdb
import mlflow
import pytest
from chispa import assert_df_equality
from deltalake import DeltaTable
from pyspark.sql import functions as F

from strata import catalog, runner
from strata.config import load_config
from strata.errors import QualityGateBlocked
from strata.jobs import predict, train
from strata.ml.estimators import positive_probability
from strata.runner import JobContext
from strata.runs import last_failure

from conftest import REPO
from ml_data import TINY_MODEL, gold_rows

RUN_DATE = dt.date(2024, 1, 8)
FIRST_DAYS = [{"event_date": dt.date(2024, 1, d).isoformat()} for d in range(1, 8)]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    shutil.copytree(REPO / "conf", root / "conf")
    (root / "conf" / "models" / "tiny.yaml").write_text(TINY_MODEL)
    # the tiny model's predictions table gets the shipped predictions suite
    shutil.copytree(REPO / "expectations", root / "expectations")
    suite = (root / "expectations" / "gold" / "tips_predictions.json").read_text()
    (root / "expectations" / "gold" / "tiny_predictions.json").write_text(
        suite.replace('"gold.tips_predictions"', '"gold.tiny_predictions"'))
    return root


def context(spark, project, job, run_date=RUN_DATE, **args):
    environ = {"STRATA_LAKE__ROOT": str(project / "lake"),
               "STRATA_MLFLOW__TRACKING_URI": f"sqlite:///{project}/mlflow.db",
               "STRATA_MLFLOW__ARTIFACT_LOCATION": str(project / "artifacts"), **args.pop("environ", {})}
    config = load_config("local", project / "conf", environ=environ)
    defaults = {"model": "tiny", "table_version": None, "no_promote": False}
    return JobContext(job, "local", uuid.uuid4().hex[:12], run_date, config,
                      argparse.Namespace(**{**defaults, **args}), _spark=spark)


@pytest.fixture(scope="module", autouse=True)
def suites(project):
    """Module-scoped (the module's fixtures score too), so set and restored by hand."""
    before = os.environ.get("STRATA_EXPECTATIONS_DIR")
    os.environ["STRATA_EXPECTATIONS_DIR"] = str(project / "expectations")
    yield
    if before is None:
        del os.environ["STRATA_EXPECTATIONS_DIR"]
    else:
        os.environ["STRATA_EXPECTATIONS_DIR"] = before


def features_table(ctx):
    return catalog.features(ctx.config.dataset("trips"))


def predictions_path(project):
    return str(project / "lake" / "gold" / "tiny_predictions")


def test_without_a_champion_predict_is_one_line(spark, tmp_path):
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    (tmp_path / "conf" / "models" / "tiny.yaml").write_text(TINY_MODEL)
    ctx = context(spark, tmp_path, "predict")
    with pytest.raises(predict.NoChampion, match=r"^model tiny has no champion in the registry at sqlite:///.*: "
                                                 r"train one first \(./spark-submit.sh train --model tiny\)$"):
        predict.run(ctx)


@pytest.fixture(scope="module")
def champion(spark, project, suites):
    """Gold features of a week, written by a run of 2024-01-08 (as gold would), and a champion."""
    ctx = context(spark, project, "train")
    ctx.lake.overwrite_partitions(features_table(ctx), gold_rows(spark, 1400, seed=1), FIRST_DAYS)
    counts = train.run(ctx)
    assert counts["promotion"]["promoted"], counts["promotion"]
    return counts


@pytest.fixture(scope="module")
def first_scoring(spark, project, champion):
    counts = predict.run(context(spark, project, "predict"))
    return counts


def test_predictions_reproduce_the_logged_models_probabilities_at_its_threshold(spark, project, champion, first_scoring):
    assert first_scoring["champion_version"] == "1" and "shadow_version" not in first_scoring
    assert first_scoring["rows_scored"] == 1400 and first_scoring["predictions"] == {"rows": 1400, "quarantined": 0}
    ctx = context(spark, project, "predict")
    rows = ctx.lake.read(features_table(ctx))
    model = mlflow.spark.load_model("models:/tiny@champion")
    threshold = champion["threshold"]
    expected = (positive_probability(model.transform(rows), out="probability")
                .select("trip_id", "probability", (F.col("probability") >= threshold).cast("int").alias("prediction")))
    actual = ctx.lake.read(catalog.TableSpec("gold", "tiny_predictions")).where("role = 'champion'") \
        .select("trip_id", "probability", "prediction")
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)

    # the warehouse reads it without Spark: deltalake and duckdb agree with the lake
    predictions = DeltaTable(predictions_path(project)).to_pyarrow_table()
    assert predictions.num_rows == 1400 and set(predictions.column("role").to_pylist()) == {"champion"}
    assert set(predictions.column("model_version").to_pylist()) == {"1"}
    assert set(predictions.column("threshold").to_pylist()) == {threshold}
    per_day = duckdb.sql("select event_date, count(*) as n, avg(probability) as p from predictions "
                         "where role = 'champion' group by event_date order by event_date").fetchall()
    assert [n for _, n, _ in per_day] == [200] * 7 and all(0 < p < 1 for _, _, p in per_day)


def test_a_rerun_replaces_the_dates_rows(spark, project, first_scoring):
    before = DeltaTable(predictions_path(project))
    version, rows = before.version(), before.to_pyarrow_table()
    again = predict.run(context(spark, project, "predict"))
    after = DeltaTable(predictions_path(project))
    assert after.version() == version + 1 and again["predictions"]["rows"] == 1400
    # the same predictions, only the run's own columns differ
    same = ["trip_id", "event_date", "role", "prediction", "probability", "threshold", "model_version", "features_version"]
    assert_df_equality(spark.createDataFrame(after.to_pyarrow_table().select(same).to_pandas()),
                       spark.createDataFrame(rows.select(same).to_pandas()), ignore_row_order=True)


def test_a_distinct_challenger_scores_the_same_rows_in_shadow(spark, project, first_scoring):
    ctx = context(spark, project, "train", no_promote=True, environ={"STRATA_MODELS__TINY__SEED": "12"})
    challenger = train.run(ctx)
    assert challenger["model_version"] == "2"
    counts = predict.run(context(spark, project, "predict"))
    assert counts["shadow_version"] == "2" and counts["predictions"]["rows"] == 2 * 1400
    predictions = DeltaTable(predictions_path(project)).to_pyarrow_table()  # noqa: F841 - duckdb reads it by name
    by_role = duckdb.sql("select role, model_version, count(*), count(distinct trip_id) from predictions "
                         "group by role, model_version order by role").fetchall()
    assert by_role == [("champion", "1", 1400, 1400), ("shadow", "2", 1400, 1400)]
    # shadow scoring switched off: the champion only
    off = predict.run(context(spark, project, "predict", environ={"STRATA_MODELS__TINY__SHADOW": "false"}))
    assert "shadow_version" not in off and off["predictions"]["rows"] == 1400


def test_the_pipeline_scores_again_only_when_the_registry_names_other_versions(spark, project, first_scoring):
    """The last scoring had shadow off; the registry names champion 1 and challenger 2: the
    pipeline scores again, with both, then finds the date done."""
    from strata.jobs import pipeline

    model = context(spark, project, "predict").config.model("tiny")
    again = pipeline.predict_unless_done(context(spark, project, "predict"), model)
    assert "skipped" not in again and again["shadow_version"] == "2" and again["predictions"]["rows"] == 2 * 1400
    done = pipeline.predict_unless_done(context(spark, project, "predict"), model)
    assert done["skipped"].startswith("already scored") and done["shadow_version"] == "2"
    # gold's run of a later date changes other partitions: this date stays done
    later = context(spark, project, "predict", run_date=dt.date(2024, 1, 10))
    later.lake.overwrite_partitions(features_table(later), gold_rows(spark, 50, seed=8, first_id=80_000)
                                    .withColumn("event_date", F.lit(dt.date(2024, 1, 10))), [{"event_date": "2024-01-10"}])
    still = pipeline.predict_unless_done(context(spark, project, "predict"), model)
    assert still["skipped"].startswith("already scored")


def test_the_predictions_gate_blocks_nan_probabilities(spark, project, first_scoring):
    """A new day with a hostile row: +inf and -inf in two features weighed with the same sign
    make the champion's margin inf - inf, a NaN probability. The gate blocks and the table keeps
    its last version."""
    ctx = context(spark, project, "predict", run_date=dt.date(2024, 1, 9))
    champion_model = mlflow.spark.load_model("models:/tiny@champion")
    coefficients = champion_model.stages[-1].coefficients  # numeric features first: fare_per_mile, trip_distance
    inf = float("inf")
    hostile = (gold_rows(spark, 5, seed=7, first_id=90_000)
               .withColumn("event_date", F.lit(dt.date(2024, 1, 9)))
               .withColumn("fare_per_mile", F.when(F.col("trip_id") == "t090000", inf * math.copysign(1, coefficients[0]))
                           .otherwise(F.col("fare_per_mile")))
               .withColumn("trip_distance", F.when(F.col("trip_id") == "t090000", -inf * math.copysign(1, coefficients[1]))
                           .otherwise(F.col("trip_distance"))))
    ctx.lake.overwrite_partitions(features_table(ctx), hostile, [{"event_date": "2024-01-09"}])
    version = DeltaTable(predictions_path(project)).version()
    with pytest.raises(QualityGateBlocked, match="probability"):
        predict.run(ctx)
    assert DeltaTable(predictions_path(project)).version() == version

    # The runner records the blocked run under the model's dataset (predict takes no --dataset),
    # so the pipeline never takes the date's predictions for done.
    runner._record_failure(ctx, {"status": "blocked", "error": "probability out of range"})
    assert last_failure(ctx.lake, "trips", "predict", ctx.run_date) is not None
