"""Drift of a column between a reference sample and a current one, from Spark aggregates.

No drift library runs on Spark 4 with this stack, and collecting rows to the driver does not
scale, so each column is first summarised in Spark into a small profile; the metrics are then
plain arithmetic on two profiles. A profile is what a reference must keep to outlive the rows
(the training rows' profile is stored with the model version; time travel may be vacuumed).

Numeric column: inner bin edges (the reference's quantiles, so each reference bin holds about
the same share), the rows per bin, and a grid of quantiles. A value v falls in bin i = the number
of edges below it (v <= edges[0]: bin 0). The current sample is binned at the reference's edges.
- population_stability_index: sum over bins of (q - p) ln(q / p), p and q the reference and
  current shares; an empty bin's share counts as EMPTY_SHARE (else an empty bin is infinite).
- js_distance: the square root of the Jensen-Shannon divergence of p and q, base 2 (0 to 1).
- ks_test: statistic = the largest gap between the two cumulative shares at the edges (the
  two-sample Kolmogorov-Smirnov statistic seen through the bins: a lower bound of the exact one,
  short of it by at most the larger share either sample has in one bin), pvalue from the asymptotic Kolmogorov distribution
  with n m / (n + m) rows.
- wasserstein_distance: the mean over the quantile grid u_j = (j + 1/2) / G of
  |F^-1(u_j) - G^-1(u_j)|, the earth mover's distance in the column's units (exact for two
  samples of G rows each).
- tv_distance (half the sum of |p - q|) and l_infinity_distance (the largest |p - q|).
- count_delta (values, current minus reference) and null_share_delta (the change in the share of
  nulls). The share-based distances are None when either side has no value.
Categorical column: rows per value; the same share-based distances plus chi_squared_test, the
2 x k contingency test of reference against current counts (values absent from both dropped).

Column names follow Databricks lakehouse monitoring's drift table (column_name, count_delta,
js_distance, ks_test, wasserstein_distance, population_stability_index, chi_squared_test,
tv_distance, l_infinity_distance), so its users find their way around.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import Column, DataFrame, Window, functions as F

EMPTY_SHARE = 1e-4
BINS = 10
GRID = 100
# approxQuantile's relative error: a quantile's rank is off by at most this share of the rows.
QUANTILE_ERROR = 0.001
# The values of a categorical column a profile does not keep, counted together.
OTHER = "__other__"
# Numeric columns with more (approximately) distinct values than this get no frequent values.
FREQUENT_MAX_DISTINCT = 10_000
# The quantiles a column's summary lists.
SUMMARY_POINTS = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass(frozen=True)
class NumericProfile:
    column: str
    rows: int                  # non-null, non-NaN values
    nulls: int                 # null or NaN
    edges: tuple[float, ...]   # inner bin edges, increasing
    counts: tuple[int, ...]    # rows per bin: len(edges) + 1
    quantiles: tuple[float, ...]  # at u_j = (j + 1/2) / len(quantiles)


@dataclass(frozen=True)
class CategoricalProfile:
    column: str
    rows: int
    nulls: int
    counts: dict[str, int]     # rows per value, as text


@dataclass(frozen=True)
class ColumnSummary:
    """What the daily profile table says of a column: rows with a value and nulls, the share of
    zeros (numeric), an approximate distinct count, moments and quantiles (numeric), and the most
    frequent values with their rows."""
    column: str
    column_type: str  # numeric | categorical
    rows: int
    nulls: int
    zeros: int | None = None
    distinct: int | None = None
    mean: float | None = None
    stddev: float | None = None
    minimum: float | None = None
    maximum: float | None = None
    quantiles: dict[str, float] = field(default_factory=dict)  # p05, p25, ... -> value
    frequent: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Profile:
    """A sample summarised for drift (binned numeric, counted categorical) and for people
    (summaries), column by column."""
    numeric: dict[str, NumericProfile]
    categorical: dict[str, CategoricalProfile]
    summaries: dict[str, ColumnSummary] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The binned part, as JSON-able data (what a model version keeps as its reference)."""
        return {"numeric": {c: dataclasses.asdict(p) for c, p in self.numeric.items()},
                "categorical": {c: dataclasses.asdict(p) for c, p in self.categorical.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        numeric = {c: NumericProfile(p["column"], int(p["rows"]), int(p["nulls"]), tuple(p["edges"]),
                                     tuple(int(n) for n in p["counts"]), tuple(p["quantiles"]))
                   for c, p in data.get("numeric", {}).items()}
        categorical = {c: CategoricalProfile(p["column"], int(p["rows"]), int(p["nulls"]),
                                             {str(k): int(v) for k, v in p["counts"].items()})
                       for c, p in data.get("categorical", {}).items()}
        return cls(numeric, categorical)

    def edges(self) -> dict[str, tuple[float, ...]]:
        return {c: p.edges for c, p in self.numeric.items()}

    def values(self) -> dict[str, set[str]]:
        """The categorical values kept apart (every other value counts as OTHER)."""
        return {c: set(p.counts) - {OTHER} for c, p in self.categorical.items()}


def grid(points: int) -> list[float]:
    return [(j + 0.5) / points for j in range(points)]


def _number(column: str) -> Column:
    """The column as a double, NaN as null: approxQuantile skips nulls but would sort NaN above
    every number."""
    return F.nanvl(F.col(column).cast("double"), F.lit(None).cast("double")).alias(column)


def reference_edges(df: DataFrame, columns: Sequence[str], bins: int = BINS,
                    relative_error: float = QUANTILE_ERROR) -> dict[str, tuple[float, ...]]:
    """Per column, the reference's quantiles at 1/bins, 2/bins, ... as inner edges (repeated
    values collapse: a column with few distinct values gets fewer bins)."""
    cuts = [i / bins for i in range(1, bins)]
    found = df.select(*[_number(c) for c in columns]).approxQuantile(list(columns), cuts, relative_error)
    return {c: tuple(sorted(set(q))) for c, q in zip(columns, found)}


def _bin(column: str, edges: Sequence[float]) -> Column:
    """The number of edges below the value."""
    index = F.lit(0)
    for edge in edges:
        index = index + (F.col(column) > F.lit(float(edge))).cast("int")
    return index


def numeric_profiles(df: DataFrame, edges: dict[str, tuple[float, ...]], points: int = GRID,
                     relative_error: float = QUANTILE_ERROR) -> dict[str, NumericProfile]:
    """Each column of edges, binned at its edges (profile's numeric part)."""
    return profile(df, edges, [], points=points, relative_error=relative_error).numeric


def categorical_profiles(df: DataFrame, columns: Sequence[str],
                         max_categories: int = 100) -> dict[str, CategoricalProfile]:
    """Rows per value of each column, as text (profile's categorical part)."""
    return profile(df, {}, columns, max_categories=max_categories).categorical


def _point_name(u: float) -> str:
    return f"p{round(u * 100):02d}"


def profile(df: DataFrame, edges: dict[str, tuple[float, ...]], categorical: Sequence[str],
            values: Mapping[str, Collection[str]] | None = None, max_categories: int = 100, frequent: int = 10,
            points: int = GRID, relative_error: float = QUANTILE_ERROR) -> Profile:
    """The sample's profile in three passes over df, whatever its number of columns: one
    aggregate (nulls, bins, zeros, distinct counts, moments), one approxQuantile (every numeric
    column's grid and summary quantiles), one count of rows per (column, value).

    Numeric columns are binned at `edges`; their frequent values are listed only for columns of at
    most FREQUENT_MAX_DISTINCT distinct values. A categorical column keeps apart the values of
    `values` (a reference's, so two profiles compare value by value), else its max_categories
    most frequent; the rest count as OTHER."""
    numeric = list(edges)
    columns = numeric + list(categorical)
    typed = df.select(*[_number(c) for c in numeric], *[F.col(c).cast("string").alias(c) for c in categorical])
    aggregates = [F.count(F.lit(1)).alias("__rows")]
    for c in columns:
        aggregates += [F.count(F.when(F.col(c).isNull(), 1)).alias(f"{c}__nulls"),
                       F.approx_count_distinct(c).alias(f"{c}__distinct")]
    for c in numeric:
        binned = _bin(c, edges[c])
        aggregates += [F.count(F.when(F.col(c).isNotNull() & (binned == i), 1)).alias(f"{c}__{i}")
                       for i in range(len(edges[c]) + 1)]
        aggregates += [F.count(F.when(F.col(c) == 0, 1)).alias(f"{c}__zeros"), F.mean(c).alias(f"{c}__mean"),
                       F.stddev_samp(c).alias(f"{c}__stddev"), F.min(c).alias(f"{c}__min"),
                       F.max(c).alias(f"{c}__max")]
    totals = typed.agg(*aggregates).first().asDict()
    cuts = grid(points) + list(SUMMARY_POINTS)
    found = dict(zip(numeric, typed.approxQuantile(numeric, cuts, relative_error))) if numeric else {}
    # Frequent values of a numeric column with more distinct values than this have about one row
    # each: counting them would cost the largest aggregation of the profile and say nothing.
    counted_columns = [c for c in numeric if totals[f"{c}__distinct"] <= FREQUENT_MAX_DISTINCT] + list(categorical)
    counted = _value_counts(typed, counted_columns, set(categorical), values or {}, max(max_categories, frequent),
                            frequent)

    numeric_profiles, categorical_profiles, summaries = {}, {}, {}
    for c in numeric:
        counts = tuple(int(totals[f"{c}__{i}"]) for i in range(len(edges[c]) + 1))
        q = [float(v) for v in found[c]]
        numeric_profiles[c] = NumericProfile(c, sum(counts), int(totals[f"{c}__nulls"]), tuple(edges[c]), counts,
                                             tuple(q[:points]))
        summaries[c] = ColumnSummary(
            c, "numeric", sum(counts), int(totals[f"{c}__nulls"]), int(totals[f"{c}__zeros"]),
            int(totals[f"{c}__distinct"]), totals[f"{c}__mean"], totals[f"{c}__stddev"], totals[f"{c}__min"],
            totals[f"{c}__max"], {_point_name(u): v for u, v in zip(SUMMARY_POINTS, q[points:])},
            _most_frequent(counted.get(c, {}), frequent))
    for c in categorical:
        nulls = int(totals[f"{c}__nulls"])
        rows = int(totals["__rows"]) - nulls
        seen = counted.get(c, {})
        if c in (values or {}):
            kept = {v: seen.get(v, 0) for v in values[c]}
        else:
            kept = dict(sorted(seen.items(), key=lambda kv: (-kv[1], kv[0]))[:max_categories])
        other = rows - sum(kept.values())
        categorical_profiles[c] = CategoricalProfile(c, rows, nulls, {**kept, **({OTHER: other} if other else {})})
        summaries[c] = ColumnSummary(c, "categorical", rows, nulls, distinct=int(totals[f"{c}__distinct"]),
                                     frequent=_most_frequent(seen, frequent))
    return Profile(numeric_profiles, categorical_profiles, summaries)


def _value_counts(typed: DataFrame, columns: Sequence[str], categorical: set[str],
                  values: Mapping[str, Collection[str]], most: int, frequent: int) -> dict[str, dict[str, int]]:
    """Rows per value of each column, in one aggregation: the `most` most frequent values of a
    categorical column (`frequent` of a numeric one) and every value of `values`."""
    if not columns:
        return {}
    pairs = F.explode(F.array(*[F.struct(F.lit(c).alias("column"), F.col(c).cast("string").alias("value"))
                                for c in columns]))
    counts = (typed.select(pairs.alias("pair")).select("pair.*").where(F.col("value").isNotNull())
              .groupBy("column", "value").count())
    rank = F.row_number().over(Window.partitionBy("column").orderBy(F.desc("count"), "value"))
    limit = F.when(F.col("column").isin(*categorical), most).otherwise(frequent) if categorical else F.lit(frequent)
    wanted = F.col("rank") <= limit
    for c, kept in values.items():
        if kept:
            wanted = wanted | ((F.col("column") == c) & F.col("value").isin(*sorted(kept)))
    found: dict[str, dict[str, int]] = {}
    for row in counts.withColumn("rank", rank).where(wanted).collect():
        found.setdefault(row["column"], {})[row["value"]] = int(row["count"])
    return found


def _most_frequent(counts: Mapping[str, int], n: int) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n])


def drift_rows(reference: Profile, current: Profile) -> list[dict]:
    """One drift row per column both profiles have (numeric and categorical)."""
    rows = [numeric_drift(reference.numeric[c], current.numeric[c]) for c in reference.numeric if c in current.numeric]
    rows += [categorical_drift(reference.categorical[c], current.categorical[c])
             for c in reference.categorical if c in current.categorical]
    return rows


# --- metrics: arithmetic on two profiles ---------------------------------------------------------

def shares(counts: Sequence[int]) -> list[float]:
    total = sum(counts)
    return [n / total if total else 0.0 for n in counts]


def population_stability_index(p: Sequence[float], q: Sequence[float]) -> float:
    return sum((max(b, EMPTY_SHARE) - max(a, EMPTY_SHARE)) * math.log(max(b, EMPTY_SHARE) / max(a, EMPTY_SHARE))
               for a, b in zip(p, q))


def js_distance(p: Sequence[float], q: Sequence[float]) -> float:
    def kl(x: Sequence[float], m: Sequence[float]) -> float:
        return sum(a * math.log2(a / b) for a, b in zip(x, m) if a > 0)
    mid = [(a + b) / 2 for a, b in zip(p, q)]
    return math.sqrt(max(0.0, (kl(p, mid) + kl(q, mid)) / 2))


def ks_test(p_counts: Sequence[int], q_counts: Sequence[int]) -> dict[str, float | None]:
    from scipy.special import kolmogorov

    n, m = sum(p_counts), sum(q_counts)
    if not n or not m:
        return {"statistic": None, "pvalue": None}
    gap, below_p, below_q = 0.0, 0, 0
    for a, b in zip(p_counts[:-1], q_counts[:-1]):  # the cumulative shares at each edge
        below_p, below_q = below_p + a, below_q + b
        gap = max(gap, abs(below_p / n - below_q / m))
    return {"statistic": gap, "pvalue": float(kolmogorov(gap * math.sqrt(n * m / (n + m))))}


def wasserstein_distance(p_quantiles: Sequence[float], q_quantiles: Sequence[float]) -> float | None:
    if not p_quantiles or len(p_quantiles) != len(q_quantiles):
        return None
    return sum(abs(a - b) for a, b in zip(p_quantiles, q_quantiles)) / len(p_quantiles)


def chi_squared_test(p_counts: Sequence[int], q_counts: Sequence[int]) -> dict[str, float | None]:
    from scipy.stats import chi2_contingency

    kept = [(a, b) for a, b in zip(p_counts, q_counts) if a + b > 0]
    if len(kept) < 2 or not sum(a for a, _ in kept) or not sum(b for _, b in kept):
        return {"statistic": None, "pvalue": None}
    result = chi2_contingency([[a for a, _ in kept], [b for _, b in kept]], correction=False)
    return {"statistic": float(result.statistic), "pvalue": float(result.pvalue)}


def _share_distances(p_counts: Sequence[int], q_counts: Sequence[int]) -> dict[str, float | None]:
    """None when a side has no value: zero shares are no distribution to compare."""
    names = ("population_stability_index", "js_distance", "tv_distance", "l_infinity_distance")
    if not sum(p_counts) or not sum(q_counts):
        return dict.fromkeys(names)
    p, q = shares(p_counts), shares(q_counts)
    return {"population_stability_index": population_stability_index(p, q), "js_distance": js_distance(p, q),
            "tv_distance": sum(abs(a - b) for a, b in zip(p, q)) / 2,
            "l_infinity_distance": max((abs(a - b) for a, b in zip(p, q)), default=0.0)}


def _null_share(profile: NumericProfile | CategoricalProfile) -> float | None:
    total = profile.rows + profile.nulls
    return profile.nulls / total if total else None


def _counts_delta(reference, current) -> dict[str, float | None]:
    """count_delta: values (not nulls) current minus reference; null_share_delta: the change in
    the share of nulls (a column going empty shows here, not in the distances)."""
    before, after = _null_share(reference), _null_share(current)
    return {"count_delta": current.rows - reference.rows,
            "null_share_delta": None if before is None or after is None else after - before}


def numeric_drift(reference: NumericProfile, current: NumericProfile) -> dict:
    """One row of the drift table for a numeric column (current binned at reference's edges)."""
    if reference.edges != current.edges:
        raise ValueError(f"{current.column}: the current profile is binned at other edges than the reference's")
    return {"column_name": reference.column, **_counts_delta(reference, current),
            **_share_distances(reference.counts, current.counts),
            "ks_test": ks_test(reference.counts, current.counts),
            "wasserstein_distance": wasserstein_distance(reference.quantiles, current.quantiles),
            "chi_squared_test": None}


def categorical_drift(reference: CategoricalProfile, current: CategoricalProfile) -> dict:
    """One row of the drift table for a categorical column, over the values of either sample."""
    values = sorted(set(reference.counts) | set(current.counts))
    p_counts = [reference.counts.get(v, 0) for v in values]
    q_counts = [current.counts.get(v, 0) for v in values]
    return {"column_name": reference.column, **_counts_delta(reference, current),
            **_share_distances(p_counts, q_counts),
            "ks_test": None, "wasserstein_distance": None, "chi_squared_test": chi_squared_test(p_counts, q_counts)}
