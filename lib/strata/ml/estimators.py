"""MLlib pipelines of a model config: features, classifier, grid, class weights, cross-validation.

Pure functions: no I/O, no MLflow. Every fitted statistic (imputation medians, category indexes,
scaling) is a pipeline stage, so it is learnt from the rows the pipeline is fitted on (the training
rows, or a fold's training rows inside cross-validation) and replayed unchanged when scoring.

Columns the pipeline adds, per feature f: f__num (f as a double), f__imputed (nulls and NaN ->
median), f__str (f as a string), f__index, f__onehot; then the assembled vector, and the
classifier's rawPrediction, probability and prediction.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import (GBTClassifier, LogisticRegression, LogisticRegressionModel,
                                       RandomForestClassifier)
from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.ml.feature import (Imputer, OneHotEncoder, SQLTransformer, StandardScaler, StringIndexer,
                                StringIndexerModel, VectorAssembler)
from pyspark.ml.functions import vector_to_array
from pyspark.ml.param import Param
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder
from pyspark.sql import DataFrame, functions as F

from strata.config import ModelConfig

# A param map, as ParamGridBuilder builds them (pyspark types it so in a stub only).
ParamMap = dict[Param, Any]

LABEL = "label"
WEIGHT = "weight"
RAW_PREDICTION = "rawPrediction"
PROBABILITY = "probability"
PREDICTION = "prediction"
# The name of the one-hot slot of a category the training rows did not have (or a null).
UNSEEN = "<unseen>"


def _num(c: str) -> str:
    return f"{c}__num"


def _imputed(c: str) -> str:
    return f"{c}__imputed"


def _str(c: str) -> str:
    return f"{c}__str"


def _index(c: str) -> str:
    return f"{c}__index"


def _onehot(c: str) -> str:
    return f"{c}__onehot"


def build_pipeline(model: ModelConfig, features_col: str = "features") -> Pipeline:
    """The unfitted pipeline: cast -> impute numeric -> index + one-hot categorical -> assemble ->
    (scale, logistic regression only) -> classifier. The classifier reads `features_col`, `label`
    and `weight` (see with_class_weights) and writes rawPrediction, probability and prediction.
    Hyperparameters are MLlib's defaults: param_grid / cross_validate set the searched ones."""
    numeric, categorical = list(model.numeric_features), list(model.categorical_features)
    if not numeric and not categorical:
        raise ValueError(f"model {model.name!r} has no feature")
    # One cast stage: numeric features as doubles (an int median would be truncated), categorical
    # ones as strings (StringIndexer takes strings or numbers only; this also covers booleans and
    # dates, and an int category 132 gets the label "132").
    casts = [f"CAST(`{c}` AS DOUBLE) AS `{_num(c)}`" for c in numeric]
    casts += [f"CAST(`{c}` AS STRING) AS `{_str(c)}`" for c in categorical]
    stages: list[Any] = [SQLTransformer(statement=f"SELECT *, {', '.join(casts)} FROM __THIS__")]
    if numeric:
        # Nulls and NaN become the median of the rows the pipeline is fitted on.
        stages.append(Imputer(strategy="median", inputCols=[_num(c) for c in numeric],
                              outputCols=[_imputed(c) for c in numeric]))
    if categorical:
        # keep: a category unseen at fit time (and a null) gets index len(labels); the encoder
        # gives that index its own slot (keep adds one more slot for invalid indexes, which
        # dropLast removes), so scoring never fails on a new category.
        stages.append(StringIndexer(inputCols=[_str(c) for c in categorical],
                                    outputCols=[_index(c) for c in categorical],
                                    handleInvalid="keep", stringOrderType="frequencyDesc"))
        stages.append(OneHotEncoder(inputCols=[_index(c) for c in categorical],
                                    outputCols=[_onehot(c) for c in categorical],
                                    handleInvalid="keep", dropLast=True))
    assembled = [_imputed(c) for c in numeric] + [_onehot(c) for c in categorical]
    if model.algorithm == "logistic_regression":
        # Unit variance makes the coefficients comparable across features (feature_importances)
        # and the regularisation fair to each. withMean=False keeps the one-hot vectors sparse;
        # centring would only move the intercept.
        unscaled = f"{features_col}__unscaled"
        stages.append(VectorAssembler(inputCols=assembled, outputCol=unscaled, handleInvalid="keep"))
        stages.append(StandardScaler(inputCol=unscaled, outputCol=features_col, withMean=False, withStd=True))
    else:
        # Trees do not care about scale.
        stages.append(VectorAssembler(inputCols=assembled, outputCol=features_col, handleInvalid="keep"))
    stages.append(_classifier(model, features_col))
    return Pipeline(stages=stages)


def _classifier(model: ModelConfig, features_col: str) -> Any:
    common = dict(featuresCol=features_col, labelCol=LABEL, weightCol=WEIGHT, predictionCol=PREDICTION)
    if model.algorithm == "logistic_regression":
        # no seed: the fit is deterministic
        classifier = LogisticRegression(family="binomial", **common)
    elif model.algorithm == "random_forest":
        classifier = RandomForestClassifier(seed=model.seed, **common)
    elif model.algorithm == "gbt":
        classifier = GBTClassifier(seed=model.seed, **common)
    else:
        raise ValueError(f"unknown algorithm {model.algorithm!r}")
    # setters: GBTClassifier's constructor takes neither column
    return classifier.setRawPredictionCol(RAW_PREDICTION).setProbabilityCol(PROBABILITY)


def param_grid(pipeline_or_classifier: Pipeline | Any, model: ModelConfig) -> list[ParamMap]:
    """The param maps of model.grid over the classifier (a pipeline's last stage): the product of
    the value lists, each value converted to the param's type (maxDepth 3.0 -> 3; 3.5 is refused).
    An empty grid is one empty map: the defaults, no search."""
    classifier = (pipeline_or_classifier.getStages()[-1] if isinstance(pipeline_or_classifier, Pipeline)
                  else pipeline_or_classifier)
    builder = ParamGridBuilder()
    for name, values in model.grid.items():
        if not classifier.hasParam(name):
            raise ValueError(f"grid: {name!r} is not a parameter of {type(classifier).__name__}")
        param = classifier.getParam(name)
        try:
            converted = [param.typeConverter(value) for value in values]
        except TypeError as exc:
            raise ValueError(f"grid: {name}: {exc}") from None
        builder.addGrid(param, converted)
    return builder.build()


def with_class_weights(df: DataFrame, model: ModelConfig, label: str = LABEL,
                       weight: str = WEIGHT) -> tuple[DataFrame, dict[int, float]]:
    """`df` with a double `weight` column, and the weight of each class {0: w0, 1: w1}.

    balanced: class c weighs n / (2 n_c), counted on this frame (pass the training rows), so both
    classes carry the same total weight n/2. none: every row weighs 1. A row without a label gets
    a null weight: it must not be trained on."""
    if model.class_weights == "none":
        weights = {0: 1.0, 1: 1.0}
    else:
        counts = df.agg(F.count(label).alias("n"),
                        F.count(F.when(F.col(label) == 1, True)).alias("n1"),
                        F.count(F.when(F.col(label) == 0, True)).alias("n0")).first()
        n, n0, n1 = counts["n"], counts["n0"], counts["n1"]
        if n0 + n1 != n:
            raise ValueError(f"{label} must be 0 or 1: {n - n0 - n1} of {n} labelled rows are neither")
        if n0 == 0 or n1 == 0:
            raise ValueError(f"balanced class weights need both classes, got {n0} rows of 0 and {n1} of 1")
        weights = {0: n / (2 * n0), 1: n / (2 * n1)}
    column = F.when(F.col(label) == 1, F.lit(weights[1])).when(F.col(label) == 0, F.lit(weights[0]))
    return df.withColumn(weight, column.cast("double")), weights


def evaluator(model: ModelConfig) -> BinaryClassificationEvaluator:
    """The primary metric on rawPrediction, unweighted: class weights are a training device, and
    the metric must be the one validation and test report on the rows' own class balance (a
    balanced weighting would turn PR AUC into the PR AUC of a 50/50 population; ROC AUC does not
    change with class weights)."""
    metric = "areaUnderPR" if model.primary_metric == "pr_auc" else "areaUnderROC"
    return BinaryClassificationEvaluator(metricName=metric, labelCol=LABEL, rawPredictionCol=RAW_PREDICTION)


def cross_validate(train_df: DataFrame, model: ModelConfig,
                   fold_col: str = "fold") -> tuple[PipelineModel, dict[str, Any]]:
    """Grid search by k-fold cross-validation on the training rows, the folds given by `fold_col`
    (integers in [0, model.folds); a row outside, e.g. null, fails the search), then the best
    params refitted on all of `train_df`.

    Class weights are computed here, once, from all of `train_df` (any `weight` column is
    replaced). Returns the best PipelineModel and a summary:
      {"metric": "areaUnderPR" | "areaUnderROC", "folds": k, "fold_col": ...,
       "results": [{"params": {name: value}, "mean": float, "std": float}, ...] (one per param map,
                   in grid order),
       "best_params": {name: value}, "best_metric": float, "class_weights": {0: w0, 1: w1}}
    Each fold's frames are cached by CrossValidator; cache `train_df` if it is costly to compute."""
    weighted, weights = with_class_weights(train_df, model)
    pipeline = build_pipeline(model)
    grid = param_grid(pipeline, model)
    metric = evaluator(model)
    search = CrossValidator(estimator=pipeline, estimatorParamMaps=grid, evaluator=metric,
                            numFolds=model.folds, foldCol=fold_col, parallelism=model.parallelism,
                            seed=model.seed)
    fitted = search.fit(weighted)
    results = [{"params": {param.name: value for param, value in param_map.items()},
                "mean": float(mean), "std": float(std)}
               for param_map, mean, std in zip(grid, fitted.avgMetrics, fitted.stdMetrics)]
    # both metrics are larger-is-better; the first of equal means, as CrossValidator picks
    best = max(range(len(results)), key=lambda i: results[i]["mean"])
    summary = {"metric": metric.getMetricName(), "folds": model.folds, "fold_col": fold_col,
               "results": results, "best_params": results[best]["params"],
               "best_metric": results[best]["mean"], "class_weights": weights}
    return fitted.bestModel, summary


def positive_probability(df: DataFrame, probability_col: str = PROBABILITY, out: str = "score") -> DataFrame:
    """`df` with `out`: the probability of class 1 (a double)."""
    return df.withColumn(out, vector_to_array(F.col(probability_col))[1].cast("double"))


def feature_names(pipeline_model: PipelineModel, model: ModelConfig) -> list[str]:
    """The name of each slot of the assembled vector, in order: numeric features by name, then per
    categorical feature `<feature>=<category>` in the fitted index order and `<feature>=<unseen>`."""
    names = list(model.numeric_features)
    if model.categorical_features:
        indexers = [s for s in pipeline_model.stages if isinstance(s, StringIndexerModel)]
        if len(indexers) != 1:
            raise ValueError(f"expected one StringIndexerModel in the pipeline, found {len(indexers)}")
        (indexer,) = indexers
        if indexer.getInputCols() != [_str(c) for c in model.categorical_features]:
            raise ValueError(f"the pipeline indexes {indexer.getInputCols()}, not the categorical features "
                             f"{model.categorical_features} of model {model.name!r}")
        for feature, labels in zip(model.categorical_features, indexer.labelsArray):
            names += [f"{feature}={label}" for label in labels] + [f"{feature}={UNSEEN}"]
    return names


def feature_importances(pipeline_model: PipelineModel, model: ModelConfig) -> list[tuple[str, float]]:
    """(name, value) per slot of the assembled vector (names as feature_names), largest |value|
    first. Trees: featureImportances (non-negative, summing to 1). Logistic regression: the
    coefficients on the scaled features (signed: log-odds per standard deviation of the feature).
    For the baseline, pass baseline_config(model)."""
    classifier = pipeline_model.stages[-1]
    if isinstance(classifier, LogisticRegressionModel):
        values = classifier.coefficients
    else:
        values = classifier.featureImportances
    values = [float(v) for v in values.toArray()]
    names = feature_names(pipeline_model, model)
    if len(names) != len(values):
        raise ValueError(f"{len(names)} feature names for {len(values)} values: "
                         f"is this pipeline model one of model {model.name!r}?")
    # stable sort: equal magnitudes stay in vector order
    return sorted(zip(names, values), key=lambda pair: -abs(pair[1]))


def baseline_config(model: ModelConfig) -> ModelConfig:
    """The baseline's config: logistic regression on model.baseline_features, no grid search."""
    if not model.baseline_features:
        raise ValueError(f"model {model.name!r} has no baseline_features")
    return dataclasses.replace(model, algorithm="logistic_regression", numeric_features=list(model.baseline_features),
                               categorical_features=[], grid={})


def baseline_pipeline(model: ModelConfig) -> Pipeline:
    """The simple baseline model: logistic regression (MLlib defaults) on the baseline features,
    imputed and scaled as in build_pipeline, weighted by the `weight` column."""
    return build_pipeline(baseline_config(model))
