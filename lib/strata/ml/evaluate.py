"""Binary classification evaluation: pure functions over Spark DataFrames (no I/O, no MLflow).

The input has a 0/1 label column and a score column holding the probability of the positive
class. Every number is computed by Spark over all rows; only small aggregates reach the driver.

Exact ranking metrics. ROC AUC and average precision come from a per-distinct-score aggregate
(groupBy(score): positives and negatives per score) and cumulative counts over it in descending
score order. Tied scores form one group, i.e. one step of the curve, as in scikit-learn. The
cumulative sums are a window without partitionBy over that aggregate: Spark moves the aggregate
(one row per distinct score, not per input row) into one task, which sorts and spills to disk
if it must instead of collecting to the driver. That task's cost grows with the number of
distinct scores, on one core; we accept it for exact numbers.

Bootstrap. Each row gets a Poisson(1) weight per replicate b, a pure function of (seed, row key,
b): the same inputs give the same replicates whatever the partitioning, and two models scored
on the same rows get the same weights (paired). All replicates come from one pass: each row is
exploded into its replicates and one aggregation computes the weighted sums of all of them.
See bootstrap_interval for the ranking metrics and for reproducibility in the last bit.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, Window, functions as F

CLIP = 1e-15
SUM_METRICS = ("accuracy", "precision", "recall", "f1", "f_beta", "log_loss")
RANK_METRICS = ("roc_auc", "pr_auc")
METRICS = SUM_METRICS + RANK_METRICS
# Above this many distinct scores, bootstrap replicates of roc_auc / pr_auc group the scores
# into this many buckets of about equal row counts (see bootstrap_interval).
BOOTSTRAP_MAX_SCORES = 10_000


def _poisson1_cdf() -> tuple[float, ...]:
    """P(X <= k) for X ~ Poisson(1), k = 0..6: 0.367879, 0.735759, ..., 0.999917."""
    cdf, term, total = [], math.exp(-1.0), 0.0
    for k in range(7):
        total += term
        cdf.append(total)
        term /= k + 1
    return tuple(cdf)


POISSON1_CDF = _poisson1_cdf()


# --- metrics on all rows --------------------------------------------------------------------

def _curve(df: DataFrame, label: str, score: str) -> DataFrame:
    """One row per distinct score s: positives, negatives, invalid labels, and the cumulative
    positives / negatives scored at or above s."""
    y = F.col(label).cast("double")
    counts = df.groupBy(F.col(score).cast("double").alias("s")).agg(
        F.count(F.when(y == 1.0, 1)).alias("pos"),
        F.count(F.when(y == 0.0, 1)).alias("neg"),
        F.count(F.when(y.isNull() | ~y.isin(0.0, 1.0), 1)).alias("bad_labels"),
    )
    # No partitionBy on purpose: the aggregate is small next to the input (see module docstring).
    down = Window.orderBy(F.desc("s")).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    return counts.select("*", F.sum("pos").over(down).alias("cum_pos"), F.sum("neg").over(down).alias("cum_neg"))


def _roc_area(pos: Column, neg: Column, cum_pos: Column) -> Column:
    """A score group's trapezoid, times P*N: its negatives times the positives ranked above
    them plus half the positives tied with them. Half-integers, so sums of them are exact."""
    return neg.cast("double") * (cum_pos.cast("double") - pos.cast("double") / 2)


def _ap_step(pos: Column, cum_pos: Column, cum_neg: Column) -> Column:
    """A score group's average-precision term, times P: recall step (pos) times precision."""
    return pos.cast("double") * F.try_divide(cum_pos.cast("double"), (cum_pos + cum_neg).cast("double"))


def _rank_value(metric: str, positives: float, negatives: float, roc_area: float, ap_sum: float) -> float:
    """ROC AUC or average precision from the sums over a curve; NaN when a class is absent."""
    if metric == "roc_auc":
        return roc_area / (positives * negatives) if positives and negatives else math.nan
    return ap_sum / positives if positives else math.nan


def _validity_checks() -> list[Column]:
    """Counts of invalid rows, summed over a _curve (null / NaN scores are their own groups)."""
    rows = F.col("pos") + F.col("neg") + F.col("bad_labels")
    return [F.sum("bad_labels").alias("bad_labels"),
            F.sum(F.when(F.col("s").isNull() | F.isnan("s"), rows).otherwise(0)).alias("bad_scores")]


def _raise_if_invalid(row, label: str, score: str) -> None:
    if row["bad_labels"]:
        raise ValueError(f"{row['bad_labels']} rows have a label {label!r} that is not 0 or 1")
    if row["bad_scores"]:
        raise ValueError(f"{row['bad_scores']} rows have a null or NaN score {score!r}")


def _ratio(numerator: float, denominator: float) -> float:
    # scikit-learn's zero_division default: an undefined precision / recall / F counts as 0.
    return numerator / denominator if denominator else 0.0


def _rates(tp: float, fp: float, tn: float, fn: float, beta: float) -> dict[str, float]:
    """Threshold metrics from a (possibly weighted) confusion matrix."""
    rows, b2 = tp + fp + tn + fn, beta * beta
    # F-beta as scikit-learn writes it: (1 + b2) tp / (b2 (tp + fn) + (tp + fp)).
    return {
        "accuracy": (tp + tn) / rows if rows else math.nan,
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2.0 * tp, (tp + fn) + (tp + fp)),
        "f_beta": _ratio((1 + b2) * tp, b2 * (tp + fn) + (tp + fp)),
    }


def _clipped(score: Column) -> Column:
    return F.least(F.greatest(score, F.lit(CLIP)), F.lit(1 - CLIP))


def binary_metrics(df: DataFrame, label: str, score: str, threshold: float = 0.5, beta: float = 1.0) -> dict:
    """All metrics of a scored frame, in one pass over it (prediction: score >= threshold).

    Returns {"rows", "positives", "negatives", "distinct_scores", "threshold", "beta",
    "confusion": {"tp", "fp", "tn", "fn"}, "accuracy", "precision", "recall", "f1", "f_beta",
    "roc_auc", "pr_auc", "log_loss"}. roc_auc and pr_auc are exact, ties as in scikit-learn
    (pr_auc is its average_precision_score); they are NaN when a class is absent. log_loss clips
    probabilities to [1e-15, 1 - 1e-15]. Raises ValueError on labels other than 0/1 or on null /
    NaN scores.
    """
    curve = _curve(df, label, score)
    pos, neg, s = F.col("pos"), F.col("neg"), F.col("s")
    p = _clipped(s)
    at_or_above = s >= F.lit(float(threshold))
    row = curve.agg(
        F.sum(pos).alias("positives"),
        F.sum(neg).alias("negatives"),
        F.count(F.lit(1)).alias("distinct_scores"),
        F.sum(F.when(at_or_above, pos).otherwise(0)).alias("tp"),
        F.sum(F.when(at_or_above, neg).otherwise(0)).alias("fp"),
        F.sum(_roc_area(pos, neg, F.col("cum_pos"))).alias("roc_area"),
        F.sum(_ap_step(pos, F.col("cum_pos"), F.col("cum_neg"))).alias("ap_sum"),
        # The label is constant within a group: one log per distinct score and class.
        F.sum(-pos * F.log(p) - neg * F.log(1 - p)).alias("log_loss_sum"),
        *_validity_checks(),
    ).first()
    _raise_if_invalid(row, label, score)
    positives, negatives = row["positives"] or 0, row["negatives"] or 0
    tp, fp = row["tp"] or 0, row["fp"] or 0
    fn, tn = positives - tp, negatives - fp
    rows = positives + negatives
    return {
        "rows": rows,
        "positives": positives,
        "negatives": negatives,
        "distinct_scores": row["distinct_scores"],
        "threshold": float(threshold),
        "beta": float(beta),
        "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
        **_rates(tp, fp, tn, fn, beta),
        "roc_auc": _rank_value("roc_auc", positives, negatives, row["roc_area"] or 0.0, 0.0),
        "pr_auc": _rank_value("pr_auc", positives, negatives, 0.0, row["ap_sum"] or 0.0),
        "log_loss": row["log_loss_sum"] / rows if rows else math.nan,
    }


def best_threshold(df: DataFrame, label: str, score: str, beta: float = 1.0) -> tuple[float, float]:
    """(threshold, f_beta): the distinct score that, as threshold (score >= threshold), gives
    the highest F-beta; among equal F-beta the highest such threshold. Raises on an empty frame."""
    b2 = float(beta) ** 2
    curve = _curve(df, label, score)
    everything = Window.orderBy(F.desc("s")).rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    positives = F.sum("pos").over(everything)
    # At threshold s: tp = cum_pos, predicted positives = cum_pos + cum_neg (same formula as _rates).
    tp, predicted = F.col("cum_pos").cast("double"), (F.col("cum_pos") + F.col("cum_neg")).cast("double")
    f = F.coalesce(F.try_divide((1 + b2) * tp, b2 * positives + predicted), F.lit(0.0))
    # max of struct(f, s) orders by f, then by s: the highest threshold among ties.
    row = curve.select("*", f.alias("f")).agg(F.max(F.struct("f", "s")).alias("best"), *_validity_checks()).first()
    _raise_if_invalid(row, label, score)
    if row["best"] is None:
        raise ValueError("best_threshold needs at least one row")
    return row["best"]["s"], row["best"]["f"]


def calibration(df: DataFrame, label: str, score: str, bins: int = 10) -> list[tuple]:
    """Reliability table over uniform bins of [0, 1]: one (lower, upper, mean predicted,
    observed positive rate, count) per bin, empty bins included (means None, count 0).
    Bin i holds the scores with floor(score * bins) == i; a score of 1 (or above) falls in the
    last bin, a score below 0 in the first."""
    s, y = F.col(score).cast("double"), F.col(label).cast("double")
    index = F.least(F.greatest(F.floor(s * bins), F.lit(0)), F.lit(bins - 1))
    groups = df.groupBy(index.alias("bin")).agg(
        F.count(F.lit(1)).alias("n"), F.avg(s).alias("mean_score"), F.avg(y).alias("rate"),
        F.count(F.when(y.isNull() | ~y.isin(0.0, 1.0), 1)).alias("bad_labels"),
        F.count(F.when(s.isNull() | F.isnan(s), 1)).alias("bad_scores"),
    ).collect()
    _raise_if_invalid({"bad_labels": sum(g["bad_labels"] for g in groups),
                       "bad_scores": sum(g["bad_scores"] for g in groups)}, label, score)
    found = {g["bin"]: g for g in groups}
    table = []
    for i in range(bins):
        g = found.get(i)
        table.append((i / bins, (i + 1) / bins, g["mean_score"] if g else None, g["rate"] if g else None,
                      g["n"] if g else 0))
    return table


def zero_rule(df: DataFrame, label: str, positive_rate: float | None = None,
              threshold: float = 0.5, beta: float = 1.0) -> dict:
    """binary_metrics of the majority-class baseline: every row scored with the positive rate
    (of the training data if given, else of df), so it predicts the majority class at 0.5.

    All scores are tied, so the ROC curve is the single step (0,0)-(1,1): roc_auc is 0.5;
    pr_auc is the positive rate of df; log_loss is the binary entropy of the rate when the rate
    is df's own. The result also holds "positive_rate".
    """
    if positive_rate is None:
        positive_rate = df.agg(F.avg(F.col(label).cast("double"))).first()[0]
    column = "__zero_rule_score"
    metrics = binary_metrics(df.withColumn(column, F.lit(float(positive_rate))), label, column, threshold, beta)
    return {**metrics, "positive_rate": float(positive_rate)}


# --- bootstrap ------------------------------------------------------------------------------

def _row_hash(key_cols: str | Sequence[str], seed: int) -> Column:
    keys = [key_cols] if isinstance(key_cols, str) else list(key_cols)
    return F.xxhash64(F.lit(int(seed)).cast("long"), *[F.col(k) for k in keys])


def _poisson_from_hash(row_hash: Column, replicate: Column) -> Column:
    # Hashing the row's hash with b gives every replicate its own, independent uniform draw.
    h = F.xxhash64(row_hash, replicate.cast("int"))
    # The top 53 bits: uniform on [0, 1) at a double's full precision.
    u = F.shiftrightunsigned(h, 11).cast("double") / float(2 ** 53)
    # Inverse CDF: the weight is how many of P(X <= 0..6) lie at or below u, 0..7. The tail
    # P(X >= 8) ~ 1e-5 is folded into 7, lowering the mean by ~1e-5.
    weight = F.lit(0)
    for cdf in POISSON1_CDF:
        weight = weight + (u >= F.lit(cdf)).cast("int")
    return weight


def poisson_weight(key_cols: str | Sequence[str], replicate: int | Column, seed: int) -> Column:
    """A row's Poisson(1) bootstrap weight (int 0..7) in replicate b: a pure function of
    (seed, the row key's values and types, b). Rows sharing a key share their weights (a
    cluster bootstrap); a null key part is skipped by the hash."""
    b = replicate if isinstance(replicate, Column) else F.lit(int(replicate))
    return _poisson_from_hash(_row_hash(key_cols, seed), b)


def _replicated(df: DataFrame, key: str | Sequence[str], seed: int, replicates: int,
                columns: dict[str, Column], with_all_rows: bool = False) -> DataFrame:
    """The chosen columns once per (row, replicate) with weight _w > 0, replicate in _b.
    with_all_rows adds replicate -1 where every row weighs 1: the estimate, in the same pass."""
    names = list(columns)
    hashed = df.select(*[c.alias(n) for n, c in columns.items()], _row_hash(key, seed).alias("_h"))
    first = -1 if with_all_rows else 0
    exploded = hashed.select(*names, "_h", F.explode(F.sequence(F.lit(first), F.lit(replicates - 1))).alias("_b"))
    b = F.col("_b")
    weight = F.when(b < 0, F.lit(1)).otherwise(_poisson_from_hash(F.col("_h"), b))
    weighted = exploded.select(*names, "_b", weight.alias("_w"))
    # A weight of 0 (37% of the pairs) adds nothing to any sum; dropping it lightens the aggregation.
    return weighted.where(F.col("_w") > 0)


def _sum_replicates(df, label, key, models, metric, replicates, seed, beta):
    """Per model (score, threshold): (metric on all rows, [metric in each replicate]), from one
    groupBy(replicate) over the weighted rows, replicate -1 being all rows with weight 1."""
    y = F.col(label).cast("double")
    columns = {"_y": y.cast("int"), "_bad_label": (y.isNull() | ~y.isin(0.0, 1.0)).cast("int")}
    bad_score = F.lit(False)
    for i, (score, _threshold) in enumerate(models):
        s = F.col(score).cast("double")
        columns[f"_s{i}"] = s
        bad_score = bad_score | s.isNull() | F.isnan(s)
    columns["_bad_score"] = bad_score.cast("int")
    rows = _replicated(df, key, seed, replicates, columns, with_all_rows=True)
    w, y = F.col("_w"), F.col("_y")
    # Weights and labels are integers, so these sums are exact (log loss excepted).
    sums = [F.sum(w).alias("n"), F.sum(w * y).alias("pos"),
            F.sum("_bad_label").alias("bad_labels"), F.sum("_bad_score").alias("bad_scores")]
    for i, (_score, threshold) in enumerate(models):
        s = F.col(f"_s{i}")
        if metric == "log_loss":
            p = _clipped(s)
            sums.append(F.sum(w * F.when(y == 1, -F.log(p)).otherwise(-F.log(1 - p))).alias(f"ll{i}"))
        else:
            predicted = (s >= F.lit(float(threshold))).cast("int")
            sums += [F.sum(w * y * predicted).alias(f"tp{i}"), F.sum(w * (1 - y) * predicted).alias(f"fp{i}")]
    by_replicate = {r["_b"]: r for r in rows.groupBy("_b").agg(*sums).collect()}
    everything = by_replicate.get(-1)
    if everything is not None:  # replicate -1 has every row once
        _raise_if_invalid(everything, label, ", ".join(score for score, _ in models))

    def value(r, i):
        if r is None:  # no rows at all, or every weight 0
            return math.nan
        if metric == "log_loss":
            return r[f"ll{i}"] / r["n"]
        tp, fp = r[f"tp{i}"], r[f"fp{i}"]
        return _rates(tp, fp, r["n"] - r["pos"] - fp, r["pos"] - tp, beta)[metric]

    return [(value(everything, i), [value(by_replicate.get(b), i) for b in range(replicates)])
            for i in range(len(models))]


def _score_splits(df: DataFrame, label: str, score: str, buckets: int) -> list[float]:
    """Bucketizer splits cutting the scores into at most `buckets` groups of about equal row
    counts, never splitting a distinct score: the groups' lowest scores are the cut points."""
    curve = _curve(df, label, score)
    everything = Window.orderBy(F.desc("s")).rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    rows = F.sum(F.col("pos") + F.col("neg")).over(everything)
    below = rows - F.col("cum_pos") - F.col("cum_neg")  # rows scored below s
    bucketed = curve.select("s", F.floor(below * buckets / rows).alias("bucket"))
    lows = sorted(r["low"] for r in bucketed.groupBy("bucket").agg(F.min("s").alias("low")).collect())
    return [-math.inf, *lows[1:], math.inf]


def _rank_replicates(df, label, key, models, metric, replicates, seed) -> list[list[float]]:
    """Per model (score, splits or None), roc_auc / pr_auc in each replicate: one aggregation
    of weighted positives / negatives per (model, replicate, score), then each replicate's curve
    by a window partitioned by (model, replicate), so replicates run in parallel."""
    from pyspark.ml.feature import Bucketizer  # JVM binary search, no Python UDF

    keys = [key] if isinstance(key, str) else list(key)
    prepared = df.select(F.col(label).cast("int").alias("_y"), *keys,
                         *[F.col(score).cast("double").alias(f"_s{i}") for i, (score, _) in enumerate(models)])
    for i, (_score, splits) in enumerate(models):
        if splits is not None:
            prepared = Bucketizer(splits=splits, inputCol=f"_s{i}", outputCol=f"_k{i}").transform(prepared)
        else:
            prepared = prepared.withColumn(f"_k{i}", F.col(f"_s{i}"))
    columns = {"_y": F.col("_y"), **{f"_k{i}": F.col(f"_k{i}") for i in range(len(models))}}
    rows = _replicated(prepared, keys, seed, replicates, columns)
    # Both models' rows carry the same weight: this is what makes the paired bootstrap paired.
    stacked = rows.select("_y", "_b", "_w", F.inline(F.array(*[
        F.struct(F.lit(i).alias("_m"), F.col(f"_k{i}").alias("_k")) for i in range(len(models))])))
    w, y = F.col("_w"), F.col("_y")
    grouped = stacked.groupBy("_m", "_b", "_k").agg(F.sum(w * y).alias("pos"), F.sum(w * (1 - y)).alias("neg"))
    down = Window.partitionBy("_m", "_b").orderBy(F.desc("_k")).rowsBetween(Window.unboundedPreceding,
                                                                             Window.currentRow)
    curves = grouped.select("*", F.sum("pos").over(down).alias("cum_pos"), F.sum("neg").over(down).alias("cum_neg"))
    sums = curves.groupBy("_m", "_b").agg(
        F.sum("pos").alias("positives"), F.sum("neg").alias("negatives"),
        F.sum(_roc_area(F.col("pos"), F.col("neg"), F.col("cum_pos"))).alias("roc_area"),
        F.sum(_ap_step(F.col("pos"), F.col("cum_pos"), F.col("cum_neg"))).alias("ap_sum"),
    ).collect()
    found = {(r["_m"], r["_b"]): r for r in sums}
    values = []
    for i in range(len(models)):
        per_model = []
        for b in range(replicates):
            r = found.get((i, b))
            per_model.append(math.nan if r is None else
                             _rank_value(metric, r["positives"], r["negatives"], r["roc_area"], r["ap_sum"] or 0.0))
        values.append(per_model)
    return values


def _quantile(ordered: list[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default)."""
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def _percentile_interval(values: list[float], level: float) -> tuple[float, float, int]:
    """(low, high, replicates used): quantiles level/2... of the replicates whose metric is
    defined (e.g. not a replicate without positives for roc_auc)."""
    defined = sorted(v for v in values if not math.isnan(v))
    if not defined:
        return math.nan, math.nan, 0
    alpha = (1 - level) / 2
    return _quantile(defined, alpha), _quantile(defined, 1 - alpha), len(defined)


def _check_arguments(metric: str, replicates: int, level: float) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    if replicates < 1:
        raise ValueError("replicates must be at least 1")
    if not 0 < level < 1:
        raise ValueError("level must be between 0 and 1")


def _estimates_and_replicates(df, label, key, models, metric, replicates, seed, beta, max_scores):
    """models: (score, threshold) per model. Per model: (metric on all rows, [per replicate])."""
    if metric in SUM_METRICS:
        return _sum_replicates(df, label, key, models, metric, replicates, seed, beta)
    if max_scores < 2:
        raise ValueError("max_scores must be at least 2")
    estimates, ranked = [], []
    for score, threshold in models:
        # The exact estimate, and whether the replicates need score buckets.
        full = binary_metrics(df, label, score, threshold, beta)
        estimates.append(full[metric])
        many = full["distinct_scores"] > max_scores
        ranked.append((score, _score_splits(df, label, score, max_scores) if many else None))
    return list(zip(estimates, _rank_replicates(df, label, key, ranked, metric, replicates, seed)))


def bootstrap_interval(df: DataFrame, label: str, score: str, key: str | Sequence[str], metric: str,
                       replicates: int = 200, seed: int = 0, threshold: float | None = None,
                       beta: float = 1.0, level: float = 0.95,
                       max_scores: int = BOOTSTRAP_MAX_SCORES) -> dict:
    """Percentile bootstrap interval of one metric: {"estimate", "low", "high", "replicates"}.

    estimate is binary_metrics(...)[metric] on all rows (threshold None means 0.5); low / high
    are the level/2 and 1 - level/2 quantiles of the metric over `replicates` Poisson-bootstrap
    replicates (weights: poisson_weight(key, b, seed)); "replicates" counts those where the
    metric is defined (all of them unless a replicate lacks a class, for roc_auc / pr_auc).

    Passes over df. accuracy ... log_loss: one; the estimate is replicate -1, where every row
    weighs 1, in the same aggregation as the replicates. roc_auc / pr_auc: one for the exact
    estimate (binary_metrics), one for all replicates, one more to cut score buckets (below).

    Reproducibility. Threshold metrics sum integer weights, and the ranking metrics sum
    integers and then each replicate's curve inside one task in score order, so they are
    bitwise identical whatever the partitioning. log_loss sums doubles in an order that depends
    on the partitioning: identical up to ~1e-16 relative (so is its estimate to binary_metrics').

    roc_auc / pr_auc replicates are exact when the scores have at most `max_scores` distinct
    values. Above that, replicates group the scores into at most `max_scores` buckets of about
    equal row counts (a distinct score is never split) and treat a bucket as one tied score:
    the per-replicate work stays bounded (exact replicates with 200k distinct scores and
    B = 200 sort ~25M weighted groups, minutes on 2 cores). A positive-negative pair sharing a
    bucket then counts 1/2; such pairs are at most ~1/max_scores of all pairs, so a replicate's
    ROC AUC moves by at most ~1/(2 max_scores). The estimate stays exact.
    """
    _check_arguments(metric, replicates, level)
    threshold = 0.5 if threshold is None else float(threshold)
    [(estimate, values)] = _estimates_and_replicates(df, label, key, [(score, threshold)], metric, replicates,
                                                     seed, beta, max_scores)
    low, high, used = _percentile_interval(values, level)
    return {"estimate": estimate, "low": low, "high": high, "replicates": used}


def paired_bootstrap_difference(df: DataFrame, label: str, score_a: str, score_b: str,
                                key: str | Sequence[str], metric: str, replicates: int = 200, seed: int = 0,
                                threshold_a: float | None = None, threshold_b: float | None = None,
                                beta: float = 1.0, level: float = 0.95,
                                max_scores: int = BOOTSTRAP_MAX_SCORES) -> dict:
    """Paired bootstrap of metric(a) - metric(b) on the same rows:
    {"difference", "low", "high", "replicates"}.

    Both models are evaluated in each replicate with the same row weights, so the interval
    reflects the difference's own variability, not each metric's. Thresholds None mean 0.5.
    Passes (both models in the same replicate pass), exactness and score buckets as in
    bootstrap_interval.
    """
    _check_arguments(metric, replicates, level)
    threshold_a = 0.5 if threshold_a is None else float(threshold_a)
    threshold_b = 0.5 if threshold_b is None else float(threshold_b)
    (estimate_a, values_a), (estimate_b, values_b) = _estimates_and_replicates(
        df, label, key, [(score_a, threshold_a), (score_b, threshold_b)], metric, replicates, seed, beta,
        max_scores)
    low, high, used = _percentile_interval([a - b for a, b in zip(values_a, values_b)], level)
    return {"difference": estimate_a - estimate_b, "low": low, "high": high, "replicates": used}
