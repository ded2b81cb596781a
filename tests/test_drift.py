"""Drift metrics on small frames against values computed by hand from their definitions (and,
where the binned form is exact, against scipy's own two-sample functions)."""
from __future__ import annotations

import math

import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from strata.ml import drift

REFERENCE = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
CURRENT = [3.0, 4.0, 5.0, 6.0, 7.0, 8.0]  # the reference shifted by 2
EDGES = (2.5, 5.5)  # bins: <= 2.5, (2.5, 5.5], > 5.5


def frame(spark, values, column="x"):
    return spark.createDataFrame([(v,) for v in values], f"{column} double")


def profiles(spark, edges=EDGES, points=6):
    """The reference and the current sample binned at the same edges, 6-point quantile grids."""
    ref = drift.numeric_profiles(frame(spark, REFERENCE + [None, float("nan")]), {"x": edges}, points, 0.0)["x"]
    cur = drift.numeric_profiles(frame(spark, CURRENT), {"x": edges}, points, 0.0)["x"]
    return ref, cur


def test_a_profile_bins_at_the_edges_and_counts_nulls_and_nans_apart(spark):
    ref, cur = profiles(spark)
    assert (ref.rows, ref.nulls, ref.counts) == (6, 2, (2, 3, 1))  # {1, 2}, {3, 4, 5}, {6}
    assert (cur.rows, cur.nulls, cur.counts) == (6, 0, (0, 3, 3))  # {}, {3, 4, 5}, {6, 7, 8}
    # the grid's quantiles at u = 1/12, 3/12, ...: each sample's order statistics
    assert ref.quantiles == tuple(REFERENCE) and cur.quantiles == tuple(CURRENT)


def test_reference_edges_are_its_quantiles_and_repeats_collapse(spark):
    values = [float(v) for v in range(1, 101)]
    df = spark.createDataFrame([(v, 1) for v in values], "x double, c int")
    edges = drift.reference_edges(df, ["x", "c"], bins=4, relative_error=0.0)
    assert edges == {"x": (25.0, 50.0, 75.0), "c": (1.0,)}


def test_numeric_drift_by_hand(spark):
    ref, cur = profiles(spark)
    row = drift.numeric_drift(ref, cur)
    p, q = [2 / 6, 3 / 6, 1 / 6], [0.0, 3 / 6, 3 / 6]
    eps = drift.EMPTY_SHARE
    # PSI: the empty current bin counts as eps; the middle bin adds 0
    assert row["population_stability_index"] == pytest.approx((eps - 2 / 6) * math.log(eps / (2 / 6))
                                                              + (3 / 6 - 1 / 6) * math.log((3 / 6) / (1 / 6)))
    # JS: m = (1/6, 1/2, 1/3); divergence = (KL(p||m) + KL(q||m)) / 2 in bits
    kl_p = (2 / 6) * math.log2((2 / 6) / (1 / 6)) + (1 / 6) * math.log2((1 / 6) / (1 / 3))
    kl_q = (3 / 6) * math.log2((3 / 6) / (1 / 3))
    assert row["js_distance"] == pytest.approx(math.sqrt((kl_p + kl_q) / 2))
    assert row["js_distance"] == pytest.approx(jensenshannon(p, q, base=2))
    # KS: cumulative shares at 2.5: 2/6 vs 0; at 5.5: 5/6 vs 3/6 -> 1/3 (scipy's exact statistic too)
    assert row["ks_test"]["statistic"] == pytest.approx(1 / 3)
    assert row["ks_test"]["statistic"] == pytest.approx(stats.ks_2samp(REFERENCE, CURRENT).statistic)
    assert row["ks_test"]["pvalue"] == pytest.approx(stats.kstwobign.sf(1 / 3 * math.sqrt(6 * 6 / 12)))
    # Wasserstein: a shift by 2 moves every unit of mass by 2
    assert row["wasserstein_distance"] == pytest.approx(2.0)
    assert row["wasserstein_distance"] == pytest.approx(stats.wasserstein_distance(REFERENCE, CURRENT))
    assert row["tv_distance"] == pytest.approx((2 / 6 + 0 + 2 / 6) / 2)
    assert row["l_infinity_distance"] == pytest.approx(2 / 6)
    assert (row["column_name"], row["count_delta"], row["chi_squared_test"]) == ("x", 0, None)
    assert row["null_share_delta"] == pytest.approx(0 - 2 / 8)  # 2 of the reference's 8 were null or NaN


def test_wasserstein_of_reshaped_mass(spark):
    """Not a shift: two of four units move from 0 to 1 -> 0.5."""
    ref = drift.numeric_profiles(frame(spark, [0.0, 0.0, 0.0, 1.0]), {"x": (0.5,)}, 4, 0.0)["x"]
    cur = drift.numeric_profiles(frame(spark, [0.0, 1.0, 1.0, 1.0]), {"x": (0.5,)}, 4, 0.0)["x"]
    row = drift.numeric_drift(ref, cur)
    assert row["wasserstein_distance"] == pytest.approx(0.5)
    assert row["wasserstein_distance"] == pytest.approx(stats.wasserstein_distance([0, 0, 0, 1], [0, 1, 1, 1]))
    assert row["ks_test"]["statistic"] == pytest.approx(0.5)  # 3/4 vs 1/4 at 0.5


def test_the_same_sample_has_no_drift(spark):
    ref, _ = profiles(spark)
    row = drift.numeric_drift(ref, ref)
    assert row["population_stability_index"] == 0 and row["js_distance"] == 0
    assert row["ks_test"] == {"statistic": 0.0, "pvalue": 1.0} and row["wasserstein_distance"] == 0


def test_categorical_drift_by_hand(spark):
    ref = drift.categorical_profiles(spark.createDataFrame([("a",), ("a",), ("b",), (None,)], "c string"), ["c"])["c"]
    cur = drift.categorical_profiles(spark.createDataFrame([("a",), ("b",), ("b",), ("c",)], "c string"), ["c"])["c"]
    assert (ref.counts, ref.nulls, cur.counts) == ({"a": 2, "b": 1}, 1, {"a": 1, "b": 2, "c": 1})
    row = drift.categorical_drift(ref, cur)
    # 2 x 3 table [[2, 1, 0], [1, 2, 1]]: expected counts from the margins (3/7 of each column in row 1)
    observed = [[2, 1, 0], [1, 2, 1]]
    columns, rows, total = [3, 3, 1], [3, 4], 7
    chi2 = sum((observed[i][j] - rows[i] * columns[j] / total) ** 2 / (rows[i] * columns[j] / total)
               for i in range(2) for j in range(3))
    assert row["chi_squared_test"]["statistic"] == pytest.approx(chi2)
    assert row["chi_squared_test"]["pvalue"] == pytest.approx(stats.chi2.sf(chi2, 2))
    assert row["tv_distance"] == pytest.approx((abs(2 / 3 - 1 / 4) + abs(1 / 3 - 2 / 4) + 1 / 4) / 2)
    assert row["count_delta"] == 1 and row["ks_test"] is None and row["wasserstein_distance"] is None


def test_profiles_binned_at_other_edges_are_not_compared(spark):
    ref, _ = profiles(spark)
    cur, _ = profiles(spark, edges=(3.5,))
    with pytest.raises(ValueError, match="other edges"):
        drift.numeric_drift(ref, cur)


def test_a_column_gone_empty_has_no_distances_and_shows_in_the_null_share(spark):
    ref, _ = profiles(spark)
    empty = drift.numeric_profiles(frame(spark, [None, None]), {"x": EDGES}, 6, 0.0)["x"]
    row = drift.numeric_drift(ref, empty)
    assert row["population_stability_index"] is None and row["js_distance"] is None and row["tv_distance"] is None
    assert row["ks_test"] == {"statistic": None, "pvalue": None}
    assert row["count_delta"] == -6 and row["null_share_delta"] == pytest.approx(1 - 2 / 8)


def test_numeric_columns_of_many_values_get_no_frequent_values(spark, monkeypatch):
    monkeypatch.setattr(drift, "FREQUENT_MAX_DISTINCT", 3)
    df = spark.createDataFrame([(float(i % 5), float(i % 2), str(i % 2)) for i in range(20)],
                               "many double, few double, c string")
    found = drift.profile(df, drift.reference_edges(df, ["many", "few"], relative_error=0.0), ["c"])
    assert found.summaries["many"].frequent == () and found.summaries["many"].distinct == 5
    assert found.summaries["few"].frequent == (("0.0", 10), ("1.0", 10))
    assert found.summaries["c"].frequent == (("0", 10), ("1", 10)) and found.categorical["c"].counts == {"0": 10, "1": 10}
