"""strata.ml.split: stratified splits and folds on a real local SparkSession.

The expected assignments are computed on the driver from the documented rule (rank within a
class by (xxhash64(salt, seed, key as text), key as text), cumulative boundaries rounded half up)
and compared row by row with what Spark assigns.

Cost: the time goes into Spark jobs, not rows, so each assigned frame is collected once and
checked on the driver (counts, keys, joins), and the main split is computed and collected once
per module for the tests that only read it."""
from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from fractions import Fraction

import pytest
from pyspark.sql import functions as F

from strata.ml import split
from strata.ml.split import FOLD_SALT, SPLIT_SALT, split_counts, stratified_folds, stratified_split

FRACTIONS = {"train": 0.7, "validation": 0.15, "test": 0.15}
ROWS = 3000


def skewed(spark, rows=ROWS, partitions=2):
    """id, label (about 3% positives, a pure function of id), x."""
    return (spark.range(0, rows, 1, numPartitions=partitions)
            .withColumn("label", (F.pmod(F.xxhash64("id", F.lit(99)), F.lit(1000)) < 30).cast("int"))
            .withColumn("x", F.col("id") * 0.5))


def boundaries(fractions, n):
    """round(F_s * n) half up for the cumulative fractions; the last one is n."""
    values = [Fraction(str(v)) for v in fractions.values()]
    cuts = [sum(values[:i + 1]) for i in range(len(values) - 1)]
    return [math.floor(c * n + Fraction(1, 2)) for c in cuts] + [n]


def hashed(df, label, keys, seed, salt=SPLIT_SALT):
    """[(label, h, key tuple)] of every row of df, h = xxhash64(salt, seed, keys as text)."""
    h = F.xxhash64(F.lit(salt), F.lit(seed).cast("long"), *[F.col(k).cast("string") for k in keys])
    rows = df.select(label, *keys, h.alias("h")).collect()
    return [(row[label], row["h"], tuple(row[k] for k in keys)) for row in rows]


def expected_rows(df, label, keys, fractions, seed, salt=SPLIT_SALT, rows=None):
    """{key tuple: split name} by the documented rule, on the driver (rows: hashed(...) of df,
    if already collected)."""
    by_class = defaultdict(list)
    for c, h, key in rows if rows is not None else hashed(df, label, keys, seed, salt):
        by_class[c].append((h, tuple(str(v) for v in key), key))
    names, out = list(fractions), {}
    for items in by_class.values():
        items.sort()
        bounds = boundaries(fractions, len(items))
        for rank, (_, _, key) in enumerate(items):
            out[key] = names[next(s for s, b in enumerate(bounds) if rank < b)]
    return out


def expected_groups(df, label, group, fractions, seed):
    """By the documented group rule, on the driver: {group: (split name, class, rows)}."""
    h = F.xxhash64(F.lit(SPLIT_SALT), F.lit(seed).cast("long"), F.col(group).cast("string"))
    labels, hashes = defaultdict(Counter), {}
    for row in df.select(label, group, h.alias("h")).collect():
        labels[row[group]][row[label]] += 1
        hashes[row[group]] = row["h"]
    by_class = defaultdict(list)
    for g, counts in labels.items():
        majority = max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]  # ties: larger label
        by_class[majority].append((hashes[g], str(g), g, sum(counts.values())))
    names, out = list(fractions), {}
    for c, items in by_class.items():
        items.sort()
        bounds = boundaries(fractions, sum(i[3] for i in items))
        start = 0
        for _, _, g, rows in items:
            out[g] = (names[next(s for s, b in enumerate(bounds) if start < b)], c, rows)
            start += rows
    return out


def assigned(df, keys, column="split"):
    return {tuple(r[k] for k in keys): r[column] for r in df.select(*keys, column).collect()}


def class_counts(rows):
    """{split: {label: rows}} of (split, label) pairs, as split_counts returns it."""
    counts = defaultdict(Counter)
    for name, c in rows:
        counts[name][c] += 1
    return {name: dict(per_class) for name, per_class in counts.items()}


@pytest.fixture(scope="module")
def data(spark):
    return skewed(spark)


@pytest.fixture(scope="module")
def split_data(data):
    return stratified_split(data, "label", "id", FRACTIONS, seed=7)


@pytest.fixture(scope="module")
def split_rows(split_data):
    """(id, label, split) of every row of split_data: collected once, read by several tests."""
    return [tuple(r) for r in split_data.select("id", "label", "split").collect()]


@pytest.fixture(scope="module")
def split_assigned(split_rows):
    """{(id,): split} of split_data (ids are unique: test_no_key_in_two_splits)."""
    return {(i,): name for i, _, name in split_rows}


# ---- exactness --------------------------------------------------------------------------------
def test_split_is_exact_per_class_on_a_skewed_label(data, split_data, split_rows):
    rows = hashed(data, "label", ["id"], 7)  # the input's labels and hashes, collected once
    n = dict(Counter(c for c, _, _ in rows))
    assert 40 < n[1] < 150 and n[0] + n[1] == ROWS  # about 3% positives
    want = expected_rows(data, "label", ["id"], FRACTIONS, 7, rows=rows)
    # every input row once, with its label unchanged, in the split the rule gives it
    assert len(split_rows) == ROWS
    assert {(i,): (c, name) for i, c, name in split_rows} == {key: (c, want[key]) for c, _, key in rows}
    counts = split_counts(split_data, "label", "split")
    assert counts == class_counts((name, c) for _, c, name in split_rows)
    for c, n_c in n.items():
        bounds = boundaries(FRACTIONS, n_c)
        sizes = [b - a for a, b in zip([0, *bounds], bounds)]
        assert [counts[s].get(c, 0) for s in FRACTIONS] == sizes
        for name, size in zip(FRACTIONS, sizes):
            assert abs(size - FRACTIONS[name] * n_c) <= 1
    assert split_data.schema["split"].dataType.simpleString() == "string"
    assert split_data.columns == ["id", "label", "x", "split"]


def test_split_is_exact_on_a_frame_over_many_partitions(spark):
    # Three classes (one of 7 rows), 17 partitions, a two-column key, odd fractions.
    df = (spark.range(0, 2500, 1, numPartitions=3)
          .withColumn("label", F.when(F.col("id") < 7, "rare")
                      .when(F.pmod(F.col("id"), F.lit(5)) == 0, "b").otherwise("a"))
          .withColumn("region", F.concat(F.lit("r"), (F.col("id") % 3).cast("string")))
          .repartition(17).cache())  # read four times below: shuffle it once
    try:
        fractions = {"train": 0.6, "validation": 0.25, "test": 0.15}
        out = stratified_split(df, "label", ["region", "id"], fractions, seed=123)
        assert df.rdd.getNumPartitions() == 17
        got = out.select("region", "id", "label", "split").collect()
        assert len(got) == 2500
        want = expected_rows(df, "label", ["region", "id"], fractions, 123)
        assert {(r["region"], r["id"]): r["split"] for r in got} == want
        counts = class_counts((r["split"], r["label"]) for r in got)
        assert [counts.get(s, {}).get("rare", 0) for s in fractions] == [4, 2, 1]  # round(4.2), round(5.95)-4, 7-6
    finally:
        df.unpersist()


def test_result_does_not_depend_on_bucket_bits(data, split_assigned):
    # 1 bit: two huge buckets; 20 bits: about one row per bucket, so boundaries often fall
    # between buckets and the threshold is the first item of the next non-empty bucket.
    for bits in (1, 20):
        got = assigned(stratified_split(data, "label", "id", FRACTIONS, seed=7, bucket_bits=bits), ["id"])
        assert got == split_assigned


# ---- determinism and leakage ------------------------------------------------------------------
def test_split_is_deterministic_whatever_the_partitioning_or_row_order(data, split_data, split_rows):
    # A second run, on the same rows over other partitions in another order: the same rows (as
    # a multiset) and schema as the first run (the module's split_data).
    # (Cached: the three reads below see one shuffle, not three.)
    shuffled = data.repartition(9, F.rand(5)).orderBy(F.rand(6)).repartition(3).cache()
    try:
        moved = stratified_split(shuffled, "label", "id", FRACTIONS, seed=7).select("id", "split")
        assert moved.schema == split_data.select("id", "split").schema
        want = sorted((i, name) for i, _, name in split_rows)
        assert sorted(tuple(r) for r in moved.collect()) == want
    finally:
        shuffled.unpersist()
    first = dict(want)
    other_seed = assigned(stratified_split(data, "label", "id", FRACTIONS, seed=8), ["id"])
    assert sum(v != first[k] for (k,), v in other_seed.items()) > ROWS // 10


def test_no_key_in_two_splits(spark, split_rows):
    # every key once, so in exactly one split
    ids = [i for i, _, _ in split_rows]
    assert len(ids) == ROWS and len(set(ids)) == ROWS
    # Duplicated keys (unsupported, documented): rows of one key and label share the same
    # (hash, key), so they still never straddle two splits.
    df = skewed(spark, 600)
    doubled = df.unionByName(df.where(F.col("id") % 4 == 0))
    out = stratified_split(doubled, "label", "id", FRACTIONS, seed=1).select("id", "split").collect()
    assert len(out) == 750  # the 150 duplicates are all there
    splits = defaultdict(set)
    for r in out:
        splits[r["id"]].add(r["split"])
    assert len(splits) == 600 and all(len(s) == 1 for s in splits.values())


# ---- folds ------------------------------------------------------------------------------------
def test_folds_are_balanced_per_class_and_in_range(data, split_assigned):
    k = 5
    folds = stratified_folds(data, "label", "id", k, seed=7)
    assert folds.schema["fold"].dataType.simpleString() == "int"
    rows = folds.select("id", "label", "fold").collect()
    assert len(rows) == ROWS
    counts = class_counts((r["fold"], r["label"]) for r in rows)
    assert sorted(counts) == list(range(k))
    for c in (0, 1):
        sizes = [counts[f].get(c, 0) for f in range(k)]
        assert max(sizes) - min(sizes) <= 1
    # Blocks of the fold order (its own salt), cut at round(i * n_c / k).
    want = expected_rows(data, "label", ["id"], {i: Fraction(1, k) for i in range(k)}, 7, salt=FOLD_SALT)
    assert {(r["id"],): r["fold"] for r in rows} == want
    # Not correlated with the split: each fold takes train rows close to the train share.
    per_fold = Counter(r["fold"] for r in rows if split_assigned[(r["id"],)] == "train")
    assert all(abs(per_fold[f] - 0.7 * ROWS / k) < 60 for f in range(k))


def test_a_class_smaller_than_k_raises(spark):
    df = spark.range(40).withColumn("label", (F.col("id") < 3).cast("int"))
    with pytest.raises(ValueError, match=r"^class 1 has 3 rows, fewer than 5 folds$"):
        stratified_folds(df, "label", "id", 5, seed=1)
    with pytest.raises(ValueError, match="k must be an integer >= 2"):
        stratified_folds(df, "label", "id", 1, seed=1)


# ---- groups -----------------------------------------------------------------------------------
def test_groups_never_straddle_splits_and_shares_are_close(data):
    # About 600 groups of 1 to 15 rows (a customer's trips, say) whose labels disagree now and then.
    df = data.withColumn("customer", F.pmod(F.xxhash64("id", F.lit(3)), F.lit(600)))
    out = stratified_split(df, "label", "id", FRACTIONS, seed=7, group="customer")
    assert out.columns == [*df.columns, "split"]
    got = defaultdict(set)
    for row in out.select("customer", "split").collect():
        got[row["customer"]].add(row["split"])
    assert sum(len(splits) for splits in got.values()) == len(got)  # one split per group
    want = expected_groups(df, "label", "customer", FRACTIONS, 7)
    assert {g: splits.pop() for g, splits in got.items()} == {g: w[0] for g, w in want.items()}
    # Row shares per class (the groups' label): off by less than the largest group.
    biggest = max(rows for _, _, rows in want.values())
    assert 8 <= biggest <= 20
    per_class = defaultdict(Counter)  # class -> split -> rows
    for name, c, rows in want.values():
        per_class[c][name] += rows
    assert sum(sum(v.values()) for v in per_class.values()) == ROWS
    for per_split in per_class.values():
        total = sum(per_split.values())
        for name, fraction in FRACTIONS.items():
            assert abs(per_split[name] - fraction * total) < biggest


def test_group_folds_keep_groups_together(data):
    df = data.withColumn("customer", F.pmod(F.xxhash64("id", F.lit(4)), F.lit(700)))
    folds = stratified_folds(df, "label", "id", 3, seed=2, group="customer").select("customer", "fold").collect()
    assert len(folds) == ROWS
    per_group = defaultdict(set)
    for r in folds:
        per_group[r["customer"]].add(r["fold"])
    assert all(len(f) == 1 for f in per_group.values())  # one fold per group
    assert sorted({r["fold"] for r in folds}) == [0, 1, 2]


# ---- validation -------------------------------------------------------------------------------
@pytest.mark.parametrize("fractions, message", [
    ({"train": 0.7, "test": 0.2}, "must sum to 1"),
    ({"train": 0.7, "test": 0.4}, "must sum to 1"),
    ({"train": 1.2, "test": -0.2}, "must be a number > 0"),
    ({"train": 1.0, "test": 0.0}, "must be a number > 0"),
    ({"train": float("nan"), "test": 0.5}, "must be a number > 0"),
    ({"train": "0.5", "test": 0.5}, "must be a number > 0"),
    ({}, "non-empty mapping"),
    ([("train", 1.0)], "non-empty mapping"),
    ({"": 1.0}, "non-empty strings"),
])
def test_bad_fractions_raise(data, fractions, message):
    with pytest.raises(ValueError, match=message):
        stratified_split(data, "label", "id", fractions, seed=1)


def test_bad_columns_and_nulls_raise(spark, data):
    with pytest.raises(ValueError, match=r"columns not in the frame: \['nope'\]"):
        stratified_split(data, "label", "nope", FRACTIONS, seed=1)
    with pytest.raises(ValueError, match="already has a column 'x'"):
        stratified_split(data, "label", "id", FRACTIONS, seed=1, column="x")
    # ids 1, 2, null with labels 0, null, 1 (built in the JVM: no Python worker to start)
    nulls = spark.range(1, 4).select(F.when(F.col("id") < 3, F.col("id")).alias("id"),
                                     F.when(F.col("id") != 2, F.col("id") - 1).alias("label"))
    with pytest.raises(ValueError, match="label column 'label' has 1 null values"):
        stratified_split(nulls.where("id is not null"), "label", "id", FRACTIONS, seed=1)
    with pytest.raises(ValueError, match=r"key column\(s\) \['id'\] has null values"):
        stratified_split(nulls.where("label is not null"), "label", "id", FRACTIONS, seed=1)
    nan = spark.range(3).withColumn("label", F.when(F.col("id") == 1, float("nan")).otherwise(0.0))
    with pytest.raises(ValueError, match="label column 'label' has NaN values"):
        stratified_split(nan, "label", "id", FRACTIONS, seed=1)


# ---- distribution -----------------------------------------------------------------------------
def test_one_class_is_not_funnelled_through_one_task(spark):
    """A single class of 4,000 rows over 4 partitions: the rows are assigned by a projection
    (no exchange, sort or window), the full data is only aggregated (partial sums in every
    input task, then by (class, bucket)), and the exact ranking sees a few candidate buckets,
    in separate window partitions -- a small share of the class."""
    n, bits = 4000, 6  # 64 buckets of about 62 rows
    df = spark.range(0, n, 1, numPartitions=4).withColumn("label", F.when(F.col("id") >= 0, 1))  # not a literal
    out = stratified_split(df, "label", "id", FRACTIONS, seed=11, bucket_bits=bits)
    plan = out._jdf.queryExecution().executedPlan().toString()
    assert not re.search(r"Exchange|Sort|Window", plan), plan
    assert split_counts(out, "label", "split") == {"test": {1: 600}, "train": {1: 2800}, "validation": {1: 600}}

    _, cuts = split._check_fractions(FRACTIONS)
    ranking = split._rank(df, "label", ["id"], 11, SPLIT_SALT, cuts, None, "split", bits)
    counts_plan = split._bucket_counts(ranking.items, ranking.ties)._jdf.queryExecution().executedPlan().toString()
    assert "partial_sum" in counts_plan
    assert re.search(r"Exchange hashpartitioning\(label#\d+, bucket#\d+L?, \d+\)", counts_plan), counts_plan
    assert len(ranking.classes[1].buckets) == 2 ** bits
    ranked_plan = ranking.ranked._jdf.queryExecution().executedPlan().toString()
    assert re.search(r"Exchange hashpartitioning\(label#\d+, bucket#\d+L?, \d+\)", ranked_plan), ranked_plan
    ranked = ranking.ranked.select("bucket").collect()
    assert len(ranked) <= n // 10                       # 2 boundaries, at most 4 buckets
    assert len({r["bucket"] for r in ranked}) >= 2      # one window partition per bucket
