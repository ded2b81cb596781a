"""Benchmark: strata.ml.split.stratified_split as the data grows.

Generates rows with spark.range (id, a label with about 3% positives, two features; pure
functions of id), then times at each size, --repeat times (the median counts):
  - prepare: the stratified_split call (its two small jobs: bucket counts, boundary thresholds),
  - assign: the returned frame written to the noop sink (every row hashed and assigned),
  - input: the generated frame alone written to the noop sink (what reading the input costs;
    the split reads it three times),
and checks that every class's split sizes are the exact round-based counts.

    .venv/bin/python bench/split_scale.py                           # 1M and 4M rows
    .venv/bin/python bench/split_scale.py --sizes 100000,400000 --repeat 1   # smoke run

A report, not a test: exits 1 only if a split's counts are not exact.
The last line of stdout is the figures as one JSON line.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
from fractions import Fraction
from typing import Any

try:  # run as a script (bench/ is sys.path[0]) or imported as bench.split_scale
    from common import add_spark_args, build_spark, cpu_seconds_between, finish, print_table, \
        process_tree_cpu_seconds, timed
except ImportError:  # pragma: no cover
    from bench.common import add_spark_args, build_spark, cpu_seconds_between, finish, print_table, \
        process_tree_cpu_seconds, timed

FRACTIONS = {"train": 0.7, "validation": 0.15, "test": 0.15}
SEED = 42


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,4000000", help="rows to split (default: 1000000,4000000)")
    parser.add_argument("--partitions", type=int, default=8, help="input partitions (default: 8)")
    parser.add_argument("--positives", type=float, default=0.03, help="share of label 1 (default: 0.03)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per size; the median counts (default: 3)")
    parser.add_argument("--group-size", type=int, default=0,
                        help="also time the group variant, groups of this many consecutive ids (default: 0, off)")
    add_spark_args(parser)
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    if args.repeat < 1 or args.partitions < 1 or min(args.sizes) < 1000:
        parser.error("--repeat and --partitions must be >= 1, sizes >= 1000")
    return args


def generated(spark, rows: int, partitions: int, positives: float, group_size: int):
    from pyspark.sql import functions as F
    u = F.pmod(F.xxhash64("id", F.lit(1)), F.lit(1_000_003)) / F.lit(1_000_003.0)
    df = (spark.range(0, rows, 1, numPartitions=partitions)
          .withColumn("label", (u < positives).cast("double"))
          .withColumn("x1", F.pmod(F.xxhash64("id", F.lit(2)), F.lit(1000)) / 10.0)
          .withColumn("x2", F.col("id") % 97))
    if group_size:
        df = df.withColumn("customer", (F.col("id") / group_size).cast("long"))
    return df


def exact_sizes(n: int) -> list[int]:
    values = [Fraction(str(v)) for v in FRACTIONS.values()]
    bounds = [math.floor(sum(values[:i + 1]) * n + Fraction(1, 2)) for i in range(len(values) - 1)] + [n]
    return [b - a for a, b in zip([0, *bounds], bounds)]


def noop(df) -> None:
    df.write.format("noop").mode("overwrite").save()


def run_once(spark, df, group: str | None) -> dict[str, float]:
    from strata.ml.split import stratified_split
    cpu = process_tree_cpu_seconds()
    with timed() as prepare:
        out = stratified_split(df, "label", "id", FRACTIONS, seed=SEED, group=group)
    with timed() as assign:
        noop(out)
    return {"prepare_s": prepare.seconds, "assign_s": assign.seconds,
            "total_s": prepare.seconds + assign.seconds,
            "cpu_s": cpu_seconds_between(cpu, process_tree_cpu_seconds()) or 0.0}, out


def check(out, df, group: str | None) -> list[str]:
    """Row mode: every class's split sizes are the exact ones. Group mode: no group straddles."""
    from pyspark.sql import functions as F
    from strata.ml.split import split_counts
    if group:
        straddling = out.groupBy(group).agg(F.countDistinct("split").alias("k")).where("k > 1").count()
        return [f"{straddling} groups in two splits"] if straddling else []
    counts = split_counts(out, "label", "split")
    problems = []
    for row in df.groupBy("label").count().collect():
        got = [counts.get(s, {}).get(row["label"], 0) for s in FRACTIONS]
        if got != exact_sizes(row["count"]):
            problems.append(f"class {row['label']}: {got} != {exact_sizes(row['count'])}")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spark = build_spark("bench.split_scale", args.master, args.shuffle_partitions, args.driver_memory)
    try:
        figures, problems = run(spark, args)
    finally:
        spark.stop()
    return finish(figures, problems, "inexact split")


def run(spark, args) -> tuple[dict[str, Any], list[str]]:
    import pyspark
    modes = [("rows", None)] + ([("groups", "customer")] if args.group_size else [])
    print(f"split_scale: stratified_split {FRACTIONS} on {', '.join(f'{n:,}' for n in args.sizes)} rows "
          f"({args.positives:.0%} positives, {args.partitions} input partitions), median of {args.repeat}, "
          f"master {spark.sparkContext.master}, {args.shuffle_partitions} shuffle partitions, "
          f"pyspark {pyspark.__version__}", flush=True)

    # Warm-up (untimed): JIT, code generation, both modes.
    warm = generated(spark, 100_000, args.partitions, args.positives, args.group_size or 5)
    for _, group in modes:
        run_once(spark, warm, group)

    rows, problems, results = [], [], {}
    for mode, group in modes:
        for n in args.sizes:
            df = generated(spark, n, args.partitions, args.positives, args.group_size)
            with timed() as t_input:
                noop(df)
            runs = []
            for _ in range(args.repeat):
                figures, out = run_once(spark, df, group)
                runs.append(figures)
            problems += [f"{mode} {n:,} rows: {p}" for p in check(out, df, group)]
            median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            median["input_s"] = t_input.seconds
            results[f"{mode}_{n}"] = {k: round(v, 3) for k, v in median.items()}
            rows.append((mode, n, median["prepare_s"], median["assign_s"], median["total_s"], median["input_s"],
                         median["cpu_s"], median["total_s"] / (n / 1e6)))
    print_table(["mode", "rows", "prepare s", "assign s", "total s", "input s", "CPU s", "total s per M rows"], rows,
                title="stratified_split (medians)")

    figures: dict[str, Any] = {"benchmark": "split_scale", "fractions": FRACTIONS, "sizes": args.sizes,
                               "partitions": args.partitions, "repeat": args.repeat, "results": results}
    small, large = min(args.sizes), max(args.sizes)
    for mode, _ in modes:
        if small != large:
            ratio = results[f"{mode}_{large}"]["total_s"] / results[f"{mode}_{small}"]["total_s"]
            figures[f"{mode}_ratio_{large}_over_{small}"] = round(ratio, 3)
            print(f"{mode}: {large:,} rows take {ratio:.2f}x the time of {small:,} rows "
                  f"({large / small:.1f}x the rows)", flush=True)
    figures["exact"] = not problems
    return figures, problems


if __name__ == "__main__":
    sys.exit(main())
