"""K-means anomaly flags: pure functions over Spark DataFrames (no I/O, no MLflow).

A row is described by a few numeric features (Spark SQL over silver columns, as doubles),
optionally on a signed log scale, standardised (zero mean, unit variance, learnt on the fit rows)
and clustered by K-means. Its outlier score is its Euclidean distance to its cluster's centroid
in that standardised space (K-means assigns the nearest centroid, so it is the distance to the
nearest one). It is an outlier when the score is above its cluster's threshold, learnt from the
fit rows' scores: median + c * MAD (median absolute deviation, unscaled), which the outliers
themselves barely move, or a high quantile.

Every statistic is computed by Spark over all rows; only the centroids (k x features numbers),
the silhouette per k and the per-cluster thresholds (k rows) reach the driver.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.clustering import KMeans, KMeansModel
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.feature import SQLTransformer, StandardScaler, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame, functions as F

CLUSTER, SCORE, THRESHOLD, OUTLIER, K = "cluster", "outlier_score", "threshold", "is_outlier", "k"
# The registered model's output column: MLflow's Spark flavour (pyfunc) returns `prediction`.
PREDICTION = "prediction"
# Columns the model adds and score() drops again.
_VECTOR, _SCALED = "anomaly__vector", "anomaly__scaled"
# percentile_approx's accuracy: a quantile's rank is off by at most rows / ACCURACY.
ACCURACY = 100_000


def _log(column: str) -> str:
    return f"{column}__log"


def feature_rows(rows: DataFrame, keep: Sequence[str], features: dict[str, str]) -> DataFrame:
    """The `keep` columns and each feature (name -> Spark SQL over rows' columns) as a double."""
    return rows.select(*keep, *[F.expr(expression).cast("double").alias(name) for name, expression in features.items()])


def usable(names: Sequence[str]) -> Column:
    """True where every feature is a finite number: only those rows can be placed in the space."""
    finite = [F.col(c).isNotNull() & ~F.isnan(c) & (F.abs(F.col(c)) != float("inf")) for c in names]
    condition = finite[0]
    for more in finite[1:]:
        condition = condition & more
    return F.coalesce(condition, F.lit(False))


def preparation(names: Sequence[str], log_scale: bool) -> Pipeline:
    """Features -> (signed log: sign(x) * ln(1 + |x|), defined for every real and monotone) ->
    one vector -> standardised. Part of the registered model, so it replays unchanged."""
    stages, columns = [], list(names)
    if log_scale:
        logs = ", ".join(f"signum(`{c}`) * log1p(abs(`{c}`)) AS `{_log(c)}`" for c in names)
        stages.append(SQLTransformer(statement=f"SELECT *, {logs} FROM __THIS__"))
        columns = [_log(c) for c in names]
    stages += [VectorAssembler(inputCols=columns, outputCol=_VECTOR),
               StandardScaler(inputCol=_VECTOR, outputCol=_SCALED, withMean=True, withStd=True)]
    return Pipeline(stages=stages)


@dataclass(frozen=True)
class Fitted:
    model: PipelineModel           # preparation + the chosen KMeansModel
    k: int
    silhouettes: dict[int, float]  # per k tried; empty when k was fixed
    searched_rows: int | None = None  # the sample k was chosen on; None: every row (or k fixed)

    @property
    def centroids(self) -> list[list[float]]:
        return [[float(v) for v in center] for center in self.kmeans.clusterCenters()]

    @property
    def kmeans(self) -> KMeansModel:
        return self.model.stages[-1]


def canonical(rows: DataFrame, partitions: int) -> DataFrame:
    """rows laid out by their values alone: hash-partitioned on every column into `partitions`
    and sorted within each partition. K-means|| draws its initial centres partition by partition,
    row by row, from a generator seeded with the partition's index, so the fitted model (k,
    centroids, flags) depends on which rows sit in which partition and in what order. Read as the
    files come, that follows the master's cores and the file splits (a window of the same silver
    gave k 2 in two partitions, k 3 in three); laid out here, it follows the rows only, on any
    master or cluster. Rows must be distinct (a key among the columns)."""
    columns = rows.columns
    return rows.repartition(partitions, *columns).sortWithinPartitions(*columns)


def fit(rows: DataFrame, names: Sequence[str], log_scale: bool, ks: Sequence[int], seed: int,
        max_iter: int = 20, search_rows: int | None = None) -> Fitted:
    """Standardise, then K-means for each k of ks (same seed); with more than one k, the one of
    highest silhouette (squared Euclidean, in the standardised space; ties: the smaller k).
    With more than search_rows rows, k is chosen on a seeded sample of about search_rows of them
    (a search over n rows costs about sum(ks) / k fits of the chosen k), then the chosen k is
    fitted on all rows; the scaler always learns from all rows.
    rows: only usable ones. Deterministic for the same rows in the same partitions and seed:
    give it canonical(rows, n) for a model that does not depend on where it runs."""
    prepared = preparation(names, log_scale).fit(rows)
    scaled = prepared.transform(rows).select(_SCALED).cache()
    try:
        candidates, models, silhouettes = sorted(set(ks)), {}, {}
        searched, sampled, searched_rows = scaled, False, None
        if len(candidates) > 1 and search_rows:
            total = scaled.count()
            if total > search_rows:
                searched, sampled = scaled.sample(fraction=search_rows / total, seed=seed).cache(), True
                searched_rows = searched.count()
        try:
            evaluator = ClusteringEvaluator(featuresCol=_SCALED, predictionCol=PREDICTION, metricName="silhouette",
                                            distanceMeasure="squaredEuclidean")
            for k in candidates:
                models[k] = _kmeans(k, seed, max_iter).fit(searched)
                if len(candidates) > 1:
                    silhouettes[k] = float(evaluator.evaluate(models[k].transform(searched)))
        finally:
            if sampled:
                searched.unpersist()
        best = max(silhouettes, key=lambda k: (silhouettes[k], -k)) if silhouettes else candidates[0]
        chosen = _kmeans(best, seed, max_iter).fit(scaled) if sampled else models[best]
    finally:
        scaled.unpersist()
    return Fitted(PipelineModel(stages=[*prepared.stages, chosen]), chosen.getK(), silhouettes, searched_rows)


def _kmeans(k: int, seed: int, max_iter: int) -> KMeans:
    return KMeans(featuresCol=_SCALED, predictionCol=PREDICTION, k=k, seed=seed, maxIter=max_iter)


def score(model: PipelineModel, rows: DataFrame) -> DataFrame:
    """rows (usable ones) with their cluster and outlier_score (distance to the cluster's
    centroid in the standardised space). Centroids travel as a literal: no join, no UDF."""
    centers = model.stages[-1].clusterCenters()
    centroids = F.array(*[F.array(*[F.lit(float(v)) for v in center]) for center in centers])
    own = F.element_at(centroids, F.col(PREDICTION) + 1)
    squares = F.zip_with(vector_to_array(F.col(_SCALED)), own, lambda x, c: (x - c) * (x - c))
    distance = F.sqrt(F.aggregate(squares, F.lit(0.0), lambda total, v: total + v))
    return model.transform(rows).select(*rows.columns, F.col(PREDICTION).cast("int").alias(CLUSTER),
                                        distance.alias(SCORE))


def thresholds(scored: DataFrame, rule: str, c: float = 3.0, quantile: float = 0.99,
               min_cluster_share: float = 0.0) -> DataFrame:
    """Per cluster of the scored fit rows: rows, median, mad, small and the threshold, by rule
    'mad' (median + c * MAD) or 'quantile' (the quantile of the cluster's scores). A cluster
    holding less than min_cluster_share of the rows is small: K-means gave a group of rare rows a
    centroid of their own, near which they score low, so the whole cluster is anomalous (its
    threshold is 0)."""
    median = F.percentile_approx(SCORE, 0.5, ACCURACY)
    stats = scored.groupBy(CLUSTER).agg(F.count(F.lit(1)).alias("rows"), median.alias("median"),
                                        F.percentile_approx(SCORE, quantile, ACCURACY).alias("quantile"))
    deviation = scored.join(F.broadcast(stats.select(CLUSTER, "median")), CLUSTER) \
        .groupBy(CLUSTER).agg(F.percentile_approx(F.abs(F.col(SCORE) - F.col("median")), 0.5, ACCURACY).alias("mad"))
    total = stats.agg(F.sum("rows").alias("total"))  # one row: k rows in, no window over all
    out = stats.join(deviation, CLUSTER).crossJoin(total).withColumn(
        "small", F.col("rows") < F.lit(float(min_cluster_share)) * F.col("total"))
    limit = F.col("median") + F.lit(c) * F.col("mad") if rule == "mad" else F.col("quantile")
    return out.select(CLUSTER, "rows", "median", "mad", "small",
                      F.when(F.col("small"), F.lit(0.0)).otherwise(limit).alias(THRESHOLD)).orderBy(CLUSTER)


def flag(scored: DataFrame, limits: dict[int, float], small: Sequence[int], k: int) -> DataFrame:
    """scored with its cluster's threshold, is_outlier (score above it, or in a small cluster)
    and k (the model's number of clusters: the gate checks 0 <= cluster < k row by row)."""
    pairs = [part for cluster, limit in sorted(limits.items()) for part in (F.lit(int(cluster)), F.lit(float(limit)))]
    limit = F.element_at(F.create_map(*pairs), F.col(CLUSTER))
    outlier = (F.col(SCORE) > F.col(THRESHOLD)) | F.col(CLUSTER).isin([int(c) for c in small])
    return (scored.withColumn(THRESHOLD, limit).withColumn(OUTLIER, F.coalesce(outlier, F.lit(False)))
            .withColumn(K, F.lit(int(k))))


def against_planted(flagged: DataFrame, planted: DataFrame, keys: Sequence[str]) -> dict:
    """Precision and recall of is_outlier against planted anomalies (planted: their keys), over
    the rows of flagged (planted keys not among them do not count). One aggregate."""
    marked = planted.select(*keys).distinct().withColumn("planted", F.lit(True))
    rows = flagged.select(*keys, OUTLIER).join(F.broadcast(marked), list(keys), "left")
    is_planted = F.coalesce(F.col("planted"), F.lit(False))
    totals = rows.agg(F.count(F.when(F.col(OUTLIER) & is_planted, 1)).alias("true_positives"),
                      F.count(F.when(F.col(OUTLIER) & ~is_planted, 1)).alias("false_positives"),
                      F.count(F.when(~F.col(OUTLIER) & is_planted, 1)).alias("false_negatives"),
                      F.count(F.lit(1)).alias("rows")).first().asDict()
    tp, fp, fn = totals["true_positives"], totals["false_positives"], totals["false_negatives"]
    return {**totals, "planted": tp + fn, "flagged": tp + fp,
            "precision": tp / (tp + fp) if tp + fp else None, "recall": tp / (tp + fn) if tp + fn else None}
