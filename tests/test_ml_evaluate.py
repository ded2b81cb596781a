"""strata.ml.evaluate on a real SparkSession, checked against scikit-learn as an independent
reference (tests only) on a few thousand rows with tied scores.

Cost: the time goes into Spark jobs, not rows. The shared frame is cached once per module
(a frame from createDataFrame ships a Python RDD that every job would unpickle again), the
hand-written frames of a few rows are built in the JVM (small_frame), and the bootstrap tests use
as few replicates as what they check allows."""
from __future__ import annotations

import math

import numpy as np
import pytest
from pyspark.sql import functions as F
from sklearn import metrics as sk

from strata.ml import evaluate
from strata.ml.evaluate import (best_threshold, binary_metrics, bootstrap_interval, calibration,
                                paired_bootstrap_difference, poisson_weight, zero_rule)

TOL = 1e-9


def make_scored(n: int, seed: int, decimals: int | None = 2):
    """Rows (id, y, a, b): a separates the classes well, b weakly; rounding makes ties."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    a = 1 / (1 + np.exp(-(-1.0 + 2.5 * y + rng.normal(0, 1, n))))
    b = 1 / (1 + np.exp(-(-1.0 + 0.8 * y + rng.normal(0, 1, n))))
    if decimals is not None:
        # Keep clear of 0 and 1: scikit-learn clips log loss at 2.2e-16, we at 1e-15.
        a, b = (np.clip(np.round(x, decimals), 0.01, 0.99) for x in (a, b))
    return y, a, b


def to_frame(spark, y, a, b):
    rows = [(i, int(y[i]), float(a[i]), float(b[i])) for i in range(len(y))]
    return spark.createDataFrame(rows, "id long, y int, a double, b double")


def small_frame(spark, values, schema):
    """A frame of a few literal rows (None: null), built in the JVM as an inline table."""
    fields = [field.split() for field in schema.split(",")]
    return spark.range(1).select(F.inline(F.array(*[
        F.struct(*[F.lit(v).cast(t).alias(name) for v, (name, t) in zip(row, fields)]) for row in values])))


@pytest.fixture(scope="module")
def data(spark):
    y, a, b = make_scored(3000, seed=1)
    df = to_frame(spark, y, a, b).cache()
    df.count()
    yield df, y, a, b
    df.unpersist()


@pytest.mark.parametrize("threshold, beta", [(0.5, 1.0), (0.27, 2.0)])
def test_binary_metrics_equal_sklearn_with_tied_scores(data, threshold, beta):
    df, y, a, _ = data
    assert len(np.unique(a)) < 100  # many ties
    got = binary_metrics(df, "y", "a", threshold=threshold, beta=beta)
    pred = (a >= threshold).astype(int)
    tn, fp, fn, tp = sk.confusion_matrix(y, pred).ravel()
    assert got["confusion"] == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    assert (got["rows"], got["positives"], got["negatives"]) == (len(y), y.sum(), len(y) - y.sum())
    assert got["distinct_scores"] == len(np.unique(a))
    expected = {
        "roc_auc": sk.roc_auc_score(y, a),
        "pr_auc": sk.average_precision_score(y, a),
        "accuracy": sk.accuracy_score(y, pred),
        "precision": sk.precision_score(y, pred),
        "recall": sk.recall_score(y, pred),
        "f1": sk.f1_score(y, pred),
        "f_beta": sk.fbeta_score(y, pred, beta=beta),
        "log_loss": sk.log_loss(y, a),
    }
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=TOL, rel=0), name


def test_precision_of_no_predicted_positive_is_zero_like_sklearn(data):
    df, y, a, _ = data
    got = binary_metrics(df, "y", "a", threshold=2.0)
    assert got["confusion"]["tp"] == got["confusion"]["fp"] == 0
    assert got["precision"] == got["f1"] == got["recall"] == 0.0
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(y, np.zeros_like(y)), abs=TOL)


def test_log_loss_clips_certain_scores(spark):
    values = [(1, 0.0), (0, 0.0), (1, 1.0), (0, 1.0), (1, 0.7)]
    got = binary_metrics(small_frame(spark, values, "y int, s double"), "y", "s")

    def loss(y, s):
        p = min(max(s, 1e-15), 1 - 1e-15)
        return -math.log(p) if y else -math.log(1 - p)

    assert got["log_loss"] == pytest.approx(sum(loss(y, s) for y, s in values) / len(values), abs=TOL)
    assert got["log_loss"] > 2 * 34 / len(values)  # two certain mistakes cost -log(1e-15) = 34.5 each


def test_auc_is_nan_when_a_class_is_absent(spark):
    got = binary_metrics(small_frame(spark, [(0, 0.2), (0, 0.6)], "y int, s double"), "y", "s")
    assert math.isnan(got["roc_auc"]) and math.isnan(got["pr_auc"])
    assert got["accuracy"] == 0.5


@pytest.mark.parametrize("values, message", [
    ([(0, 0.2), (2, 0.6)], "not 0 or 1"),
    ([(0, 0.2), (None, 0.6)], "not 0 or 1"),
    ([(0, 0.2), (1, None)], "null or NaN"),
    ([(0, 0.2), (1, float("nan"))], "null or NaN"),
])
def test_invalid_labels_and_scores_raise(spark, values, message):
    with pytest.raises(ValueError, match=message):
        binary_metrics(small_frame(spark, values, "y int, s double"), "y", "s")


def test_best_threshold_and_calibration_check_their_input_too(spark):
    df = small_frame(spark, [(0, 0.2), (2, 0.6)], "y int, s double")
    with pytest.raises(ValueError, match="not 0 or 1"):
        best_threshold(df, "y", "s")
    with pytest.raises(ValueError, match="not 0 or 1"):
        calibration(df, "y", "s")


@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_best_threshold_equals_brute_force_over_distinct_scores(data, beta):
    df, y, a, _ = data
    candidates = []
    for t in np.unique(a):
        pred = (a >= t).astype(int)
        candidates.append((sk.fbeta_score(y, pred, beta=beta, zero_division=0.0), t))
    best_f = max(f for f, _ in candidates)
    expected_t = max(t for f, t in candidates if f >= best_f - 1e-12)
    threshold, f = best_threshold(df, "y", "a", beta=beta)
    assert threshold == expected_t
    assert f == pytest.approx(best_f, abs=TOL)


def test_best_threshold_equal_f_picks_the_higher_threshold(spark):
    # 0.9: tp1 fp0 fn1 -> F1 2/3; 0.7: tp2 fp2 fn0 -> 4/6 = 2/3 too: the higher, 0.9, wins.
    df = small_frame(spark, [(1, 0.9), (0, 0.8), (0, 0.75), (1, 0.7)], "y int, s double")
    threshold, f = best_threshold(df, "y", "s")
    assert (threshold, f) == (0.9, pytest.approx(2 / 3))


def test_calibration_counts_sum_to_rows_and_bins_match_numpy(data):
    df, y, a, _ = data
    table = calibration(df, "y", "a", bins=10)
    assert len(table) == 10 and sum(row[4] for row in table) == len(y)
    index = np.minimum(np.floor(a * 10).astype(int), 9)
    for i, (lower, upper, mean_score, rate, count) in enumerate(table):
        assert (lower, upper) == pytest.approx((i / 10, (i + 1) / 10))
        assert count == int((index == i).sum())
        if count:
            assert mean_score == pytest.approx(a[index == i].mean(), abs=TOL)
            assert rate == pytest.approx(y[index == i].mean(), abs=TOL)
        else:
            assert mean_score is None and rate is None


def test_calibration_keeps_edges_and_empty_bins(spark):
    df = small_frame(spark, [(1, 1.0), (0, 0.0), (1, 0.5)], "y int, s double")
    table = calibration(df, "y", "s", bins=4)
    assert [row[4] for row in table] == [1, 0, 1, 1]
    assert table[1][2:] == (None, None, 0)


def test_zero_rule_predicts_the_majority_class(data):
    df, y, _, _ = data
    rate = y.mean()
    got = zero_rule(df, "y")
    assert got["positive_rate"] == pytest.approx(rate, abs=TOL)
    assert got["roc_auc"] == 0.5
    assert got["pr_auc"] == pytest.approx(rate, abs=TOL)
    assert got["accuracy"] == pytest.approx(max(rate, 1 - rate), abs=TOL)
    assert got["log_loss"] == pytest.approx(-(rate * math.log(rate) + (1 - rate) * math.log(1 - rate)), abs=TOL)
    assert zero_rule(df, "y", positive_rate=0.7)["accuracy"] == pytest.approx(rate, abs=TOL)


def test_poisson_weights_have_mean_and_variance_one(spark):
    # 100k rows x 5 replicates = 500k draws. Poisson(1): sd of the mean 1/sqrt(500k) = 0.0014,
    # of the sample variance sqrt((mu4 - 1) / 500k) = sqrt(3 / 500k) = 0.0025 (mu4 = 4), of a
    # frequency p at most 0.0007, of a correlation between replicates 1/sqrt(100k) = 0.0032.
    # The tolerances are 5 of those sds. The draws are a hash, so the test is deterministic.
    rows = spark.range(100_000)
    weights = rows.select(*[poisson_weight("id", b, seed=11).alias(f"w{b}") for b in range(5)])
    stacked = weights.select(F.explode(F.array(*[F.col(f"w{b}") for b in range(5)])).alias("w"))
    stats = stacked.agg(F.avg("w").alias("mean"), F.var_samp("w").alias("var"),
                        F.min("w").alias("min"), F.max("w").alias("max"),
                        *[F.avg((F.col("w") == k).cast("double")).alias(f"p{k}") for k in range(4)]).first()
    assert stats["mean"] == pytest.approx(1.0, abs=0.007)
    assert stats["var"] == pytest.approx(1.0, abs=0.0125)
    assert stats["min"] == 0 and 5 <= stats["max"] <= 7
    for k in range(4):
        assert stats[f"p{k}"] == pytest.approx(math.exp(-1) / math.factorial(k), abs=0.0035)
    assert weights.stat.corr("w0", "w1") == pytest.approx(0.0, abs=0.016)


def test_poisson_weights_are_deterministic_and_depend_on_seed_key_and_replicate(spark):
    rows = spark.range(2000).withColumn("k", F.col("id") * 3)

    def draw(frame):
        picked = frame.select("id", *[poisson_weight(["id", "k"], replicate, seed).alias(f"w{seed}_{replicate}")
                                      for seed, replicate in ((5, 0), (6, 0), (5, 1))])
        return [tuple(r)[1:] for r in picked.orderBy("id").collect()]

    first = draw(rows)
    assert draw(rows.repartition(7)) == first
    same, other_seed, other_replicate = zip(*first)
    assert same != other_seed and same != other_replicate


def test_weighted_replicate_equals_sklearn_with_sample_weights(data):
    # One replicate: low == high == the metric under replicate 0's weights, which scikit-learn
    # computes independently from the same weights.
    df, y, a, _ = data
    w = np.array([r["w"] for r in df.select("id", poisson_weight("id", 0, seed=3).alias("w"))
                  .orderBy("id").collect()])
    pred = (a >= 0.4).astype(int)
    expected = {
        "roc_auc": sk.roc_auc_score(y, a, sample_weight=w),
        "pr_auc": sk.average_precision_score(y, a, sample_weight=w),
        "f_beta": sk.fbeta_score(y, pred, beta=2.0, sample_weight=w),
        "log_loss": sk.log_loss(y, a, sample_weight=w),
    }
    for metric, value in expected.items():
        got = bootstrap_interval(df, "y", "a", "id", metric, replicates=1, seed=3, threshold=0.4, beta=2.0)
        assert got["low"] == got["high"] == pytest.approx(value, abs=TOL), metric


@pytest.mark.parametrize("metric", ["f1", "roc_auc"])  # the summed and the ranked path
def test_bootstrap_interval_is_reproducible_across_runs_and_partitionings(data, metric):
    df = data[0]
    first = bootstrap_interval(df, "y", "a", "id", metric, replicates=20, seed=42)
    assert first["low"] <= first["estimate"] <= first["high"]
    assert first["replicates"] == 20 and first["low"] < first["high"]
    # A second run, on 7 partitions instead of 2: bitwise the same interval.
    assert bootstrap_interval(df.repartition(7), "y", "a", "id", metric, replicates=20, seed=42) == first


def test_log_loss_bootstrap_is_reproducible_up_to_rounding(data):
    # Sums of doubles in a partitioning-dependent order: equal to ~1e-16, not necessarily bitwise.
    df, y, a, _ = data
    first = bootstrap_interval(df, "y", "a", "id", "log_loss", replicates=20, seed=42)
    again = bootstrap_interval(df.repartition(7), "y", "a", "id", "log_loss", replicates=20, seed=42)
    assert first["estimate"] == pytest.approx(sk.log_loss(y, a), abs=TOL)
    assert first["low"] <= first["estimate"] <= first["high"]
    for name in ("estimate", "low", "high"):
        assert again[name] == pytest.approx(first[name], rel=1e-12)


def test_bootstrap_width_roughly_halves_when_the_data_grows_4x(spark):
    # sd ~ 1/sqrt(n): 4x the rows, half the width. With 200 replicates each percentile
    # endpoint is itself noisy (~10% of the width), so the ratio is checked within 0.35..0.7.
    widths = []
    for n, seed in ((1500, 7), (6000, 8)):
        y, a, b = make_scored(n, seed)
        got = bootstrap_interval(to_frame(spark, y, a, b), "y", "a", "id", "accuracy", replicates=200, seed=1)
        widths.append(got["high"] - got["low"])
    assert 0.35 < widths[1] / widths[0] < 0.7


def test_bucketed_auc_replicates_stay_close_to_exact_ones(spark):
    # Continuous scores (3000 distinct): max_scores=300 groups them into <= 300 buckets of
    # ~10 rows. Pairs sharing a bucket are < 1/300 of all pairs, so each replicate's AUC moves
    # by < 1/600; the estimate stays exact.
    y, a, b = make_scored(3000, seed=4, decimals=None)
    df = to_frame(spark, y, a, b).cache()  # read by both intervals below: five passes
    exact = bootstrap_interval(df, "y", "a", "id", "roc_auc", replicates=20, seed=2)
    bucketed = bootstrap_interval(df, "y", "a", "id", "roc_auc", replicates=20, seed=2, max_scores=300)
    df.unpersist()
    assert bucketed["estimate"] == exact["estimate"] == pytest.approx(sk.roc_auc_score(y, a), abs=TOL)
    assert bucketed["low"] != exact["low"]
    assert bucketed["low"] == pytest.approx(exact["low"], abs=1 / 600)
    assert bucketed["high"] == pytest.approx(exact["high"], abs=1 / 600)


def test_score_buckets_have_about_equal_counts_and_never_split_a_score(data):
    df, y, a, _ = data
    splits = evaluate._score_splits(df, "y", "a", 10)
    assert splits[0] == -math.inf and splits[-1] == math.inf and splits == sorted(set(splits))
    assert set(splits[1:-1]) <= set(a)  # cut at distinct scores: ties stay together
    counts = np.histogram(a, bins=splits)[0]
    assert counts.sum() == len(a) and len(counts) <= 10 and counts.max() < 3 * len(a) / 10


@pytest.mark.parametrize("metric", ["log_loss", "roc_auc"])
def test_paired_difference_of_a_model_with_itself_is_exactly_zero(data, metric):
    df = data[0]
    got = paired_bootstrap_difference(df, "y", "a", "a", "id", metric, replicates=20, seed=9)
    assert got == {"difference": 0.0, "low": 0.0, "high": 0.0, "replicates": 20}


def test_paired_difference_of_a_clearly_better_model_is_above_zero(data):
    df, y, a, b = data
    got = paired_bootstrap_difference(df, "y", "a", "b", "id", "roc_auc", replicates=40, seed=9)
    assert got["difference"] == pytest.approx(sk.roc_auc_score(y, a) - sk.roc_auc_score(y, b), abs=TOL)
    assert 0 < got["low"] <= got["difference"] <= got["high"]
    assert got["replicates"] == 40


def test_bootstrap_rejects_unknown_metric_and_invalid_rows(spark, data):
    with pytest.raises(ValueError, match="unknown metric"):
        bootstrap_interval(data[0], "y", "a", "id", "auc")
    bad = small_frame(spark, [(1, 0, 0.2), (2, 1, float("nan"))], "id long, y int, s double")
    with pytest.raises(ValueError, match="null or NaN"):
        bootstrap_interval(bad, "y", "s", "id", "accuracy", replicates=5)
