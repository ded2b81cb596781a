"""What the monitor compares and how it decides to retrain, apart from any I/O.

The reference of a model version is the profile (strata.ml.drift) of its training rows' features
and of its scores on its held-out test rows (the probability and the decision; scores of rows it
learnt from would look better than any new day's). train logs it with the version as
REFERENCE_ARTIFACT, so the reference outlives the vacuum of the features table's old versions.
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, functions as F

from strata.config import ModelConfig
from strata.ml import drift

REFERENCE_ARTIFACT = "monitoring/reference_profile.json"
PROBABILITY, PREDICTION = "probability", "prediction"
BASELINE, CONSECUTIVE = "BASELINE", "CONSECUTIVE"


def reference_profile(training: DataFrame, test_scored: DataFrame, score: str, threshold: float,
                      model: ModelConfig) -> drift.Profile:
    """The training rows' features, and the test rows' probability and decision, profiled."""
    watch = model.monitoring
    features = drift.profile(training, drift.reference_edges(training, model.numeric_features),
                             model.categorical_features, max_categories=watch.max_categories,
                             frequent=watch.frequent_values)
    scores = test_scored.select(F.col(score).alias(PROBABILITY),
                                (F.col(score) >= F.lit(float(threshold))).cast("int").alias(PREDICTION))
    outputs = drift.profile(scores, drift.reference_edges(scores, [PROBABILITY]), [PREDICTION],
                            max_categories=watch.max_categories, frequent=watch.frequent_values)
    return drift.Profile({**features.numeric, **outputs.numeric}, {**features.categorical, **outputs.categorical},
                         {**features.summaries, **outputs.summaries})


def current_profile(rows: DataFrame, reference: drift.Profile, model: ModelConfig) -> drift.Profile:
    """The run date's rows (features, probability, prediction) profiled at the reference's bins
    and values, so every drift row compares like with like."""
    watch = model.monitoring
    return drift.profile(rows, reference.edges(), list(reference.categorical), values=reference.values(),
                         max_categories=watch.max_categories, frequent=watch.frequent_values)


@dataclass(frozen=True)
class Decision:
    retrain: bool
    reasons: tuple[str, ...]
    drifted_features: tuple[str, ...]
    drifted_share: float


def drifted(row: dict, threshold: float) -> bool:
    psi = row.get("population_stability_index")
    return psi is not None and psi >= threshold


def decide(model: ModelConfig, baseline: list[dict], performance: dict | None) -> Decision:
    """Whether to retrain, and why, from the drift rows against the training profile and the
    champion's realised performance ({"metric", "value", "rows", "low"} or None without labels)."""
    watch = model.monitoring
    features = set(model.numeric_features) | set(model.categorical_features)
    by_column = {row["column_name"]: row for row in baseline}
    moved = tuple(sorted(c for c in features if c in by_column and drifted(by_column[c], watch.feature_psi)))
    share = len(moved) / len(features) if features else 0.0
    reasons = []
    if share >= watch.drifted_share:
        reasons.append(f"{len(moved)} of {len(features)} features drifted (population stability index >= "
                       f"{watch.feature_psi}): {', '.join(moved)}; share {share:.2f} >= {watch.drifted_share}")
    output = by_column.get(PROBABILITY)
    if output is not None and drifted(output, watch.prediction_psi):
        reasons.append(f"the predicted probability drifted: population stability index "
                       f"{output['population_stability_index']:.3f} >= {watch.prediction_psi}")
    if performance is not None and performance["rows"] >= watch.min_labelled_rows and performance["low"] is not None \
            and performance["value"] is not None and performance["value"] < performance["low"]:
        reasons.append(f"realised {performance['metric']} {performance['value']:.4f} on {performance['rows']} labelled "
                       f"rows is below the champion's test interval (low {performance['low']:.4f})")
    return Decision(bool(reasons), tuple(reasons), moved, share)
