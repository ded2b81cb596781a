"""strata.ml.estimators on real Spark: tiny synthetic frames with a learnable label, tiny models."""
from __future__ import annotations

import dataclasses
import random

import pytest
from pyspark.ml import PipelineModel
from pyspark.sql import functions as F
from sklearn.metrics import roc_auc_score

from strata.config import ModelConfig
from strata.ml import estimators

ZONE_EFFECT = {132: 1.5, 138: 0.0, 236: -1.5}
SCHEMA = "id int, x1 double, passengers int, zone int, payment string, label int, fold int"
# Small models: the defaults (100 LR iterations, 20 trees) are more than these frames need, and
# the tests only ask for a held-out AUC well above chance (each LR iteration and each boosted
# tree is a few more Spark jobs).
SMALL = {"logistic_regression": {"maxIter": [3]},
         "random_forest": {"numTrees": [8], "maxDepth": [4]},
         "gbt": {"maxIter": [3], "maxDepth": [3]}}


def model_config(algorithm: str, **changes) -> ModelConfig:
    config = ModelConfig(name="toy", dataset="toy", algorithm=algorithm,
                         numeric_features=["x1", "passengers"], categorical_features=["zone", "payment"],
                         grid=SMALL[algorithm], seed=7, folds=3, parallelism=2, class_weights="balanced",
                         primary_metric="roc_auc", baseline_features=["x1"])
    return dataclasses.replace(config, **changes)


def rows(n: int, seed: int) -> list[tuple]:
    """label = x1 + zone effect + noise > 0; x1 is null on 10% of rows (after drawing the label);
    passengers is noise; payment is noise with some nulls; 30% of rows are positive or so."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        x1 = rng.gauss(0, 1)
        zone = rng.choice(list(ZONE_EFFECT))
        label = int(x1 + ZONE_EFFECT[zone] + rng.gauss(0, 0.7) > 0.6)
        payment = rng.choice(["card", "card", "cash", None])
        out.append((i, None if rng.random() < 0.1 else x1, rng.randint(1, 4), zone, payment, label, i % 3))
    return out


@pytest.fixture(scope="module")
def train(spark):
    df = spark.createDataFrame(rows(500, seed=1), SCHEMA).cache()
    yield df
    df.unpersist()


@pytest.fixture(scope="module")
def held_out(spark):
    # rows with a zone and a payment the training rows never had, and a null zone, at the end
    unseen = [(10_000, 0.5, 2, 999, "bitcoin", 1, 0), (10_001, -0.5, 1, None, "voucher", 0, 0),
              (10_002, None, 3, 999, None, 0, 0)]
    df = spark.createDataFrame(rows(300, seed=2) + unseen, SCHEMA).cache()
    yield df
    df.unpersist()


@pytest.fixture(scope="module")
def train_median(train):
    """The training rows' median x1, approximate as Imputer computes it."""
    (median,) = train.approxQuantile("x1", [0.5], 0.001)
    return median


def scored_rows(pipeline_model, held_out):
    """(frame, rows): the held-out rows scored with positive_probability, and its columns the
    tests read, collected in one job."""
    scored = estimators.positive_probability(pipeline_model.transform(held_out))
    columns = ["id", "label", "x1", "x1__imputed", "features", "rawPrediction", "score"]
    return scored, scored.select(*columns).collect()


def auc(rows) -> float:
    """ROC AUC of collected rows' rawPrediction for class 1 (what BinaryClassificationEvaluator
    ranks by), by scikit-learn: no Spark job."""
    return roc_auc_score([r["label"] for r in rows], [r["rawPrediction"][1] for r in rows])


@pytest.fixture(scope="module", params=["logistic_regression", "random_forest", "gbt"])
def fitted(request, train, held_out):
    """(config, fitted pipeline, held-out frame scored, its rows collected) for each algorithm:
    fitted and scored once, shared by the learning, scaling and feature-name tests, which only
    read it."""
    model = model_config(request.param)
    pipeline = estimators.build_pipeline(model)
    weighted, _ = estimators.with_class_weights(train, model)
    (params,) = estimators.param_grid(pipeline, model)
    pipeline_model = pipeline.fit(weighted, params)
    return (model, pipeline_model, *scored_rows(pipeline_model, held_out))


def test_pipeline_learns_and_scores_unseen_categories(fitted, train_median):
    model, pipeline_model, scored, rows = fitted
    assert isinstance(pipeline_model, PipelineModel)
    assert dict(scored.dtypes)["score"] == "double"
    assert len(rows) == 303
    assert auc(rows) > 0.8, model.algorithm
    unseen = {r["id"]: r["score"] for r in rows if r["id"] >= 10_000}
    assert sorted(unseen) == [10_000, 10_001, 10_002]
    assert all(0.0 <= s <= 1.0 for s in unseen.values())
    # a null x1 is scored with the training rows' median (approximate, as Imputer computes it)
    imputed = {r["x1__imputed"] for r in rows if r["x1"] is None}
    assert len(imputed) == 1 and abs(imputed.pop() - train_median) < 0.05


def test_logistic_regression_is_scaled_trees_are_not(fitted):
    model, pipeline_model, _, _ = fitted
    names = [type(stage).__name__ for stage in pipeline_model.stages]
    assert names[-2] == ("StandardScalerModel" if model.algorithm == "logistic_regression" else "VectorAssembler")
    classifier = pipeline_model.stages[-1]
    assert classifier.getWeightCol() == "weight" and classifier.getLabelCol() == "label"
    if model.algorithm != "logistic_regression":
        assert classifier.getSeed() == model.seed


def test_feature_importances_names_every_slot(fitted):
    model, pipeline_model, _, rows = fitted
    importances = estimators.feature_importances(pipeline_model, model)
    names = [name for name, _ in importances]
    assert len(names) == len(set(names)) == rows[0]["features"].size
    # zones and payments are ordered by training frequency; the extra slot is for unseen and null
    assert {"x1", "passengers", "zone=132", "zone=138", "zone=236", "zone=<unseen>",
            "payment=card", "payment=cash", "payment=<unseen>"} == set(names)
    magnitudes = [abs(value) for _, value in importances]
    assert magnitudes == sorted(magnitudes, reverse=True)
    # the label is driven by x1 and the zone, not by passengers or payment
    assert names[0] in {"x1", "zone=132", "zone=236"}


def test_param_grid_is_the_product_with_typed_values(spark):
    model = model_config("gbt", grid={"maxDepth": [2, 3.0, 4], "stepSize": [0.1, 1], "lossType": ["logistic"]})
    grid = estimators.param_grid(estimators.build_pipeline(model), model)
    assert len(grid) == 3 * 2 * 1
    values = [{param.name: value for param, value in param_map.items()} for param_map in grid]
    assert {v["maxDepth"] for v in values} == {2, 3, 4}
    assert all(type(v["maxDepth"]) is int and type(v["stepSize"]) is float for v in values)
    # a bare classifier works too, and an empty grid is one map: the defaults
    classifier = estimators.build_pipeline(model).getStages()[-1]
    assert len(estimators.param_grid(classifier, model)) == 6
    assert estimators.param_grid(classifier, dataclasses.replace(model, grid={})) == [{}]
    with pytest.raises(ValueError, match="maxDepth"):
        estimators.param_grid(classifier, dataclasses.replace(model, grid={"maxDepth": [2.5]}))
    with pytest.raises(ValueError, match="maxDept"):
        estimators.param_grid(classifier, dataclasses.replace(model, grid={"maxDept": [2]}))


def test_balanced_class_weights_give_each_class_the_same_total(spark):
    # 30 rows of 1, 170 of 0, one without a label (built in the JVM, no Python list to ship)
    df = spark.range(201).select(F.col("id").cast("int").alias("id"),
                                 F.when(F.col("id") < 30, 1).when(F.col("id") < 200, 0).cast("int").alias("label"))
    weighted, weights = estimators.with_class_weights(df, model_config("gbt"))
    assert weights == pytest.approx({0: 200 / 340, 1: 200 / 60})
    totals = {r["label"]: r["total"] for r in weighted.groupBy("label").agg(F.sum("weight").alias("total")).collect()}
    assert totals[0] == pytest.approx(100.0) and totals[1] == pytest.approx(100.0)
    assert totals[None] is None  # an unlabelled row is not trained on
    assert dict(weighted.dtypes)["weight"] == "double"

    plain, weights = estimators.with_class_weights(df, model_config("gbt", class_weights="none"))
    assert weights == {0: 1.0, 1: 1.0}
    assert {r["weight"] for r in plain.where("label IS NOT NULL").collect()} == {1.0}

    with pytest.raises(ValueError, match="0 or 1"):
        estimators.with_class_weights(df.withColumn("label", F.lit(2)), model_config("gbt"))
    with pytest.raises(ValueError, match="both classes"):
        estimators.with_class_weights(df.where("label = 0"), model_config("gbt"))


def test_cross_validate_searches_the_grid_on_the_given_folds(spark, train):
    # two folds of consecutive ids, not the frame's own fold column: the search must use this one
    train = train.withColumn("block", (F.col("id") >= 250).cast("int"))
    model = model_config("logistic_regression", grid={"regParam": [0.0, 0.5], "maxIter": [2]},
                         folds=2, parallelism=2, primary_metric="pr_auc")
    best, summary = estimators.cross_validate(train, model, fold_col="block")
    assert isinstance(best, PipelineModel)
    assert summary["metric"] == "areaUnderPR" and summary["folds"] == 2 and summary["fold_col"] == "block"
    assert [r["params"] for r in summary["results"]] == [{"regParam": 0.0, "maxIter": 2},
                                                         {"regParam": 0.5, "maxIter": 2}]
    best_result = max(summary["results"], key=lambda r: r["mean"])
    assert summary["best_params"] == best_result["params"] and summary["best_metric"] == best_result["mean"]
    assert best.stages[-1].getRegParam() == summary["best_params"]["regParam"]
    assert 0.5 < summary["best_metric"] <= 1.0

    # the first map's mean is the mean over the given folds, fitted and evaluated by hand
    weighted, weights = estimators.with_class_weights(train, model)
    assert summary["class_weights"] == weights
    pipeline = estimators.build_pipeline(model)
    params = estimators.param_grid(pipeline, model)[0]
    evaluator = estimators.evaluator(model)
    by_hand = [evaluator.evaluate(pipeline.fit(weighted.where(f"block != {i}"), params)
                                  .transform(weighted.where(f"block = {i}"))) for i in range(2)]
    assert summary["results"][0]["mean"] == pytest.approx(sum(by_hand) / 2, abs=1e-9)

    # a training row outside [0, folds) is refused
    outside = train.where("id < 40").withColumn("block", F.when(F.col("id") == 0, 2).otherwise(F.col("id") % 2))
    with pytest.raises(Exception, match="Fold number must be in range"):
        estimators.cross_validate(outside, dataclasses.replace(model, grid={"maxIter": [2]}), fold_col="block")


def test_baseline_is_logistic_regression_on_the_baseline_features(train, held_out):
    model = model_config("gbt", baseline_features=["x1", "passengers"])
    pipeline = estimators.baseline_pipeline(model)
    weighted, _ = estimators.with_class_weights(train, model)
    fitted = pipeline.fit(weighted, {pipeline.getStages()[-1].maxIter: 3})
    assert type(fitted.stages[-1]).__name__ == "LogisticRegressionModel"
    assert fitted.stages[-1].getWeightCol() == "weight"
    assert auc(scored_rows(fitted, held_out)[1]) > 0.65
    importances = estimators.feature_importances(fitted, estimators.baseline_config(model))
    assert [name for name, _ in importances] == ["x1", "passengers"]
    with pytest.raises(ValueError, match="baseline_features"):
        estimators.baseline_pipeline(dataclasses.replace(model, baseline_features=[]))
