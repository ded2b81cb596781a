"""Stratified train/validation/test splits and cross-validation folds: pure DataFrame ->
DataFrame functions (no I/O), exact per class, deterministic, distributed.

Assignment rule. Within each label value (class), the items -- rows, or groups of rows when
`group` is given -- are ordered by (h, key) where

    h = xxhash64(salt, seed, key columns cast to string)

(the group value instead of the key columns for groups; salt "strata.ml.split" for splits,
"strata.ml.fold" for folds, so folds are not correlated with splits) and key is the key columns
cast to string, a tie-break that makes the order total. With n_c rows in class c and
cumulative fractions F_1 < F_2 < ... < F_S = 1, the boundaries are B_s = round(F_s * n_c)
(half up; B_S = n_c), and an item goes to the first split s with start < B_s, where start is
the item's rank (rows) or the number of rows of the class in the groups before it (groups). So
split s of a class holds round(F_s * n_c) - round(F_{s-1} * n_c) rows (within one row of
fraction_s * n_c), or as close as whole groups allow.

The assignment is a function of the seed, the keys (group values), the labels and which rows are
present -- not of partitioning or row order. Keys cast to string must be stable: a timestamp
key's text depends on the session time zone (Strata runs in UTC).

How it is computed without ranking every row (and without funnelling a class through one task):
an item is in split s exactly when it is smaller, in the (h, key) order, than the threshold
T_s = the first item of the class whose start is >= B_s (no such item: every remaining item is
in split s). Only the thresholds need exact ranks, and they are found in two small jobs:

1. one aggregation counts rows per (class, bucket), bucket = the top `bucket_bits` bits of h
   (buckets are ordered like h); partial sums in every input task, a few thousand rows out. On
   the driver, cumulative counts tell which bucket holds each boundary B_s.
2. only those candidate buckets (the bucket where the boundary falls and the next one, about
   n_c / 2**bucket_bits items each) are ranked exactly, by a window over (class, bucket); the
   threshold items are collected (one row per class).

The returned frame then assigns each row with a projection comparing its (h, key) with its
class's thresholds: no shuffle, each row decided in the task that reads it (groups: the group
-> split table is joined back on the group column). A global sort by (label, h, key) with
per-partition offsets was the alternative: it sorts and shuffles all the data and needs the
sorted frame materialised (cached) between the count and the assignment, because a range
partitioner samples its bounds anew on each execution. The thresholds, by contrast, are
functions of the set of (class, h, key) only, so they are deterministic by construction, and
the returned frame stays lazy.

Cost: calling a function runs the two small jobs (the input is read twice, and once more when
the result is used; cache the input if it is expensive). Keys are assumed unique and are not
checked (that would cost a distinct pass over the data): duplicated keys with the same label get
the same (h, key) and hence the same split -- they never straddle two splits -- but they shift
the counts by their number. Null labels, null keys and null groups raise ValueError.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from numbers import Real
from typing import Any, Mapping, Sequence

from pyspark.sql import Column, DataFrame, Window, functions as F

SPLIT_SALT = "strata.ml.split"
FOLD_SALT = "strata.ml.fold"
# 4096 buckets per class: the first job returns at most that many rows per class, and a boundary
# bucket holds about n_c / 4096 items (1,000 for a class of 4M rows). The result does not depend
# on it.
BUCKET_BITS = 12

_HASH = "__strata_split_hash"  # temporary column of the returned frame (dropped)


# ---- public API -------------------------------------------------------------------------------
def stratified_split(df: DataFrame, label: str, key: str | Sequence[str], fractions: Mapping[str, float],
                     seed: int, group: str | None = None, column: str = "split", *,
                     bucket_bits: int = BUCKET_BITS) -> DataFrame:
    """df plus a string column `column` naming each row's split, one of the names in fractions
    (an ordered mapping such as {"train": 0.7, "validation": 0.15, "test": 0.15}, summing to 1).

    Exact per class: split s of a class with n_c rows gets round(F_s * n_c) - round(F_{s-1} * n_c)
    rows (F_s: cumulative fractions, rounded half up). `key`: the column(s) identifying a row
    (unique). `group`: rows with the same group value land in the same split; each group counts
    in the class of its most frequent label (ties: the larger label), groups are ordered by the
    hash of (seed, group value) (the key is then not used), and shares are as exact as whole
    groups allow. `bucket_bits` only tunes the work (see the module docstring); the result does
    not depend on it. Runs two small Spark jobs; the returned frame is lazy.
    """
    names, cuts = _check_fractions(fractions)
    ranking = _rank(df, label, _check_key(key), seed, SPLIT_SALT, cuts, group, column, bucket_bits)
    return _assigned(df, label, ranking, names, "string", group, column)


def stratified_folds(df: DataFrame, label: str, key: str | Sequence[str], k: int, seed: int,
                     group: str | None = None, column: str = "fold", *,
                     bucket_bits: int = BUCKET_BITS) -> DataFrame:
    """df plus an int column `column` in [0, k) (CrossValidator's foldCol).

    Per class, the items in hash order (another salt than stratified_split's, so folds are not
    correlated with splits) are cut into k contiguous blocks at round(i * n_c / k): fold sizes
    of a class differ by at most one row (groups: by rows as close as whole groups allow).
    Raises ValueError if a class has fewer rows (groups) than k.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an integer >= 2, got {k!r}")
    cuts = [Fraction(i, k) for i in range(1, k)]
    ranking = _rank(df, label, _check_key(key), seed, FOLD_SALT, cuts, group, column, bucket_bits, min_items=k)
    return _assigned(df, label, ranking, list(range(k)), "int", group, column)


def split_counts(df: DataFrame, label: str, column: str) -> dict[Any, dict[Any, int]]:
    """{split: {label: rows}} of an assigned frame, for logging."""
    counts: dict[Any, dict[Any, int]] = {}
    rows = (df.groupBy(_col(column).alias("split"), _col(label).alias("label")).count()
            .orderBy("split", "label").collect())
    for row in rows:
        counts.setdefault(row["split"], {})[row["label"]] = row["count"]
    return counts


# ---- validation -------------------------------------------------------------------------------
def _check_fractions(fractions: Mapping[str, float]) -> tuple[list[str], list[Fraction]]:
    """(split names, the cumulative fractions at the inner boundaries), computed exactly."""
    if not isinstance(fractions, Mapping) or not fractions:
        raise ValueError(f"fractions must be a non-empty mapping of split name to fraction, got {fractions!r}")
    exact = []
    for name, value in fractions.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"split names must be non-empty strings, got {name!r}")
        if (isinstance(value, bool) or not isinstance(value, (Real, Decimal))
                or not math.isfinite(value) or value <= 0):
            raise ValueError(f"the fraction of split {name!r} must be a number > 0, got {value!r}")
        # From the decimal text, exactly: 0.7 + 0.15 of 10 rows is 8.5 and rounds to 9 (in
        # floats it is 8.499999999999998).
        exact.append(Fraction(str(value)))
    total = sum(exact)
    if abs(total - 1) > Fraction(1, 10**9):
        raise ValueError(f"fractions must sum to 1, got {float(total):.6g}: {dict(fractions)!r}")
    cuts, cumulative = [], Fraction(0)
    for value in exact[:-1]:
        cumulative += value
        cuts.append(cumulative)
    return list(fractions), cuts


def _check_key(key: str | Sequence[str]) -> list[str]:
    keys = [key] if isinstance(key, str) else list(key) if isinstance(key, (list, tuple)) else None
    if not keys or not all(isinstance(k, str) and k for k in keys):
        raise ValueError(f"key must be a column name or a non-empty list of column names, got {key!r}")
    return keys


def _check_columns(df: DataFrame, label: str, keys: list[str], group: str | None, column: str) -> None:
    wanted = [label, *keys, *([group] if group is not None else [])]
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise ValueError(f"columns not in the frame: {missing} (columns: {df.columns})")
    for name in (column, _HASH):
        if name in df.columns:
            raise ValueError(f"the frame already has a column {name!r}")


# ---- the ranking ------------------------------------------------------------------------------
@dataclass
class _Class:
    """One class's buckets, in bucket (= hash) order."""
    buckets: list[int] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)  # rows of the class in the buckets before
    items: int = 0                                   # rows, or groups
    total: int = 0                                   # rows


@dataclass
class _Ranking:
    keys: list[str]
    seed: int
    salt: str
    items: DataFrame            # one row per item: label, h, bucket, w (rows), nl, t0.. [, g]
    ties: list[str]             # the tie-break columns of items (the key, or group, as strings)
    classes: dict[Any, _Class]
    ranked: DataFrame | None    # the candidate items, exactly ranked (None: no boundary to find)
    thresholds: dict[Any, list[tuple | None]]  # per class, per inner boundary: T_s, None = beyond


def _rank(df: DataFrame, label: str, keys: list[str], seed: int, salt: str, cuts: list[Fraction],
          group: str | None, column: str, bucket_bits: int, min_items: int | None = None) -> _Ranking:
    _check_columns(df, label, keys, group, column)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if isinstance(bucket_bits, bool) or not isinstance(bucket_bits, int) or not 1 <= bucket_bits <= 20:
        raise ValueError(f"bucket_bits must be an integer in [1, 20], got {bucket_bits!r}")

    items, ties = _items(df, label, keys, seed, salt, group, bucket_bits)
    classes = _classes(items, ties, label, keys, group)
    if min_items is not None:
        for value, cls in classes.items():
            if cls.items < min_items:
                unit = "groups" if group is not None else "rows"
                raise ValueError(f"class {value!r} has {cls.items} {unit}, fewer than {min_items} folds")

    # Boundary s of a class: B_s = round(F_s * rows), half up; an item with start < B_s is
    # before it. The threshold T_s is the first item with start >= B_s: it is in the last
    # bucket starting before B_s, or else it is the first item of the next bucket.
    candidates: dict[Any, dict[int, int]] = {}  # class -> {bucket: rows of the class before it}
    wanted: dict[Any, dict[int, int]] = {}      # class -> {s: B_s}
    for value, cls in classes.items():
        for s, cut in enumerate(cuts):
            boundary = math.floor(cut * cls.total + Fraction(1, 2))
            if boundary >= cls.total:
                continue  # no item starts at or after it: T_s stays None
            last = bisect.bisect_left(cls.starts, boundary) - 1
            for i in (last, last + 1):
                if 0 <= i < len(cls.buckets):
                    candidates.setdefault(value, {})[cls.buckets[i]] = cls.starts[i]
            wanted.setdefault(value, {})[s] = boundary

    ranked, found = None, {}
    if wanted:
        ranked = _ranked(items, ties, candidates)
        found = _thresholds(ranked, ties, wanted, len(cuts))
    thresholds = {value: [found.get((value, s)) for s in range(len(cuts))] for value in classes}
    return _Ranking(keys, seed, salt, items, ties, classes, ranked, thresholds)


def _items(df: DataFrame, label: str, keys: list[str], seed: int, salt: str, group: str | None,
           bucket_bits: int) -> tuple[DataFrame, list[str]]:
    """The items to rank, one row each: label, w (its rows), nl (its rows with a null label),
    t0.. (the key or group as strings), h (the hash), bucket, and g (the group value)."""
    if group is None:
        ties = [f"t{i}" for i in range(len(keys))]
        base = df.select(_col(label).alias("label"), F.lit(1).cast("long").alias("w"),
                         _col(label).isNull().cast("long").alias("nl"),
                         *[_col(k).cast("string").alias(t) for k, t in zip(keys, ties)])
    else:
        # A group's label: its most frequent one, ties to the larger value (max of (count, label)).
        ties = ["t0"]
        per_label = df.groupBy(_col(group).alias("g"), _col(label).alias("label")).count()
        base = (per_label.groupBy("g")
                .agg(F.max(F.struct("count", "label")).getField("label").alias("label"),
                     F.sum("count").alias("w"),
                     F.sum(F.when(F.col("label").isNull(), F.col("count")).otherwise(0)).alias("nl"))
                .select("label", "w", "nl", F.col("g").cast("string").alias("t0"), "g"))
    h = _hash(salt, seed, [F.col(t) for t in ties])
    return base.withColumn("h", h).withColumn("bucket", F.shiftright("h", 64 - bucket_bits)), ties


def _hash(salt: str, seed: int, strings: list[Column]) -> Column:
    return F.xxhash64(F.lit(salt), F.lit(seed).cast("long"), *strings)


def _bucket_counts(items: DataFrame, ties: list[str]) -> DataFrame:
    """Job 1's aggregate: per (class, bucket) its rows, items, null labels and null keys."""
    null_key = F.greatest(*[F.col(t).isNull() for t in ties]) if len(ties) > 1 else F.col(ties[0]).isNull()
    return items.groupBy("label", "bucket").agg(
        F.sum("w").alias("w"), F.count(F.lit(1)).alias("n"), F.sum("nl").alias("nl"),
        F.sum(null_key.cast("long")).alias("nk"))


def _classes(items: DataFrame, ties: list[str], label: str, keys: list[str], group: str | None) -> dict[Any, _Class]:
    rows = sorted(_bucket_counts(items, ties).collect(), key=lambda r: r["bucket"])
    null_labels = sum(r["nl"] for r in rows)
    if null_labels:
        raise ValueError(f"label column {label!r} has {null_labels} null values")
    null_keys = sum(r["nk"] for r in rows)
    if null_keys:
        what = f"group column {group!r}" if group is not None else f"key column(s) {keys}"
        raise ValueError(f"{what} has null values ({null_keys} {'groups' if group else 'rows'})")
    if any(isinstance(r["label"], float) and math.isnan(r["label"]) for r in rows):
        raise ValueError(f"label column {label!r} has NaN values")  # NaN != NaN: not a class key
    classes: dict[Any, _Class] = {}
    for r in rows:
        cls = classes.setdefault(r["label"], _Class())
        cls.buckets.append(r["bucket"])
        cls.starts.append(cls.total)
        cls.items += r["n"]
        cls.total += r["w"]
    return classes


def _ranked(items: DataFrame, ties: list[str], candidates: dict[Any, dict[int, int]]) -> DataFrame:
    """The items of the candidate buckets with their exact start (rows of the class before them).
    The window is partitioned by (class, bucket): each candidate bucket, not each class, is one
    task, and every other item is dropped by a filter in the task that reads it. (Literal CASE
    expressions, not joins with small frames: those would be built in Python workers.)"""
    bucket_start = None
    for value, starts in candidates.items():
        for bucket, start in starts.items():
            this = (F.col("label") == F.lit(value)) & (F.col("bucket") == F.lit(bucket))
            bucket_start = (F.when(this, F.lit(start)) if bucket_start is None
                            else bucket_start.when(this, F.lit(start)))
    before = (Window.partitionBy("label", "bucket").orderBy("h", *ties)
              .rowsBetween(Window.unboundedPreceding, -1))
    # The bucket test first: Spark inlines the hash into each reference to `bucket` in the
    # filter, and the one IN test rejects almost every row before the CASE is evaluated.
    buckets = sorted({bucket for starts in candidates.values() for bucket in starts})
    return (items.where(F.col("bucket").isin(buckets))
            .withColumn("bucket_start", bucket_start.cast("long"))
            .where(F.col("bucket_start").isNotNull())
            .withColumn("start", F.col("bucket_start") + F.coalesce(F.sum("w").over(before), F.lit(0))))


def _thresholds(ranked: DataFrame, ties: list[str], wanted: dict[Any, dict[int, int]],
                boundaries: int) -> dict[tuple[Any, int], tuple]:
    """{(class, s): (h, key strings) of the first item whose start is >= B_s}: the smallest such
    candidate (candidates of a class's later boundaries start later, so they are larger)."""
    columns = []
    for s in range(boundaries):
        boundary = None  # B_s of the row's class; null where not wanted (T_s stays None)
        for value, per_boundary in wanted.items():
            if s in per_boundary:
                this = F.col("label") == F.lit(value)
                boundary = (F.when(this, F.lit(per_boundary[s])) if boundary is None
                            else boundary.when(this, F.lit(per_boundary[s])))
        if boundary is not None:
            columns.append(F.min(F.when(F.col("start") >= boundary, F.struct("h", *ties))).alias(f"s{s}"))
    found = {}
    for row in ranked.groupBy("label").agg(*columns).collect():
        values = row.asDict()
        for s in range(boundaries):
            if values.get(f"s{s}") is not None:
                found[(values["label"], s)] = tuple(values[f"s{s}"])
    return found


# ---- the assignment ---------------------------------------------------------------------------
def _assigned(df: DataFrame, label: str, ranking: _Ranking, names: list, type_: str,
              group: str | None, column: str) -> DataFrame:
    if group is None:
        # Each row is compared with its class's thresholds where it is read: a projection. The
        # hash goes in a column of its own so the comparisons do not recompute it.
        strings = [_col(k).cast("string") for k in ranking.keys]
        hashed = df.withColumn(_HASH, _hash(ranking.salt, ranking.seed, strings))
        order = [F.col(_HASH), *strings]
        return hashed.withColumn(column, _split_expr(_col(label), order, ranking.thresholds, names, type_)).drop(_HASH)
    order = [F.col("h"), *[F.col(t) for t in ranking.ties]]
    table = ranking.items.select(F.col("g").alias(group),
                                 _split_expr(F.col("label"), order, ranking.thresholds, names, type_).alias(column))
    return df.join(table, on=group, how="inner").select(*[_col(c) for c in df.columns], column)


def _split_expr(label: Column, order: list[Column], thresholds: dict[Any, list[tuple | None]],
                names: list, type_: str) -> Column:
    """CASE class WHEN c THEN (CASE WHEN item < T_1 THEN name_1 WHEN item < T_2 ... ELSE last)."""
    expr = None
    for value, class_thresholds in thresholds.items():
        when = label == F.lit(value)
        inner = _class_expr(order, class_thresholds, names)
        expr = F.when(when, inner) if expr is None else expr.when(when, inner)
    return (F.lit(None) if expr is None else expr).cast(type_)


def _class_expr(order: list[Column], thresholds: list[tuple | None], names: list) -> Column:
    expr = None
    for name, threshold in zip(names, thresholds):
        if threshold is None:  # no item starts at or after this boundary: the rest is in this split
            return F.lit(name) if expr is None else expr.otherwise(F.lit(name))
        before = _less(order, threshold)
        expr = F.when(before, F.lit(name)) if expr is None else expr.when(before, F.lit(name))
    return F.lit(names[-1]) if expr is None else expr.otherwise(F.lit(names[-1]))


def _less(order: list[Column], values: tuple) -> Column:
    """(c1, c2, ...) < (v1, v2, ...) lexicographically."""
    expr = order[-1] < F.lit(values[-1])
    for col, value in zip(reversed(order[:-1]), reversed(values[:-1])):
        expr = (col < F.lit(value)) | ((col == F.lit(value)) & expr)
    return expr


def _col(name: str) -> Column:
    """A column by its exact name (dots and spaces included)."""
    return F.col("`" + name.replace("`", "``") + "`")
