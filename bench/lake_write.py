"""Benchmark: the delta-rs lake's writes against Spark's native Parquet writer.

1. append: DeltaRsLake.append of a cached narrow frame into a fresh date-partitioned table, vs
   df.write.partitionBy(...).parquet of the same frame; best of --repeat runs each, alternated
   (ABBA) so a noisy machine hurts both alike. Target: lake throughput >= 0.8x native.
2. upsert: 1% of the keys (half updates of existing ids, half new ids), all in 3 of the date
   partitions, upserted into each appended table; only those 3 partitions may be rewritten, and
   the result is checked (exit 1 if wrong).

    .venv/bin/python bench/lake_write.py                 # 5M rows, a few minutes on 2 cores
    .venv/bin/python bench/lake_write.py --rows 200000   # smoke run, well under a minute

A report, not a test: exits 0 below the throughput target, 1 only if the upsert result is wrong.
The last line of stdout is the figures as one JSON line.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import uuid
from pathlib import Path

try:  # run as a script (bench/ is sys.path[0]) or imported as bench.lake_write
    from common import add_spark_args, bench_workdir, build_spark, finish, print_table, timed
except ImportError:  # pragma: no cover
    from bench.common import add_spark_args, bench_workdir, build_spark, finish, print_table, timed

TARGET_RATIO = 0.8
START_DATE = dt.date(2024, 1, 1)
CATEGORIES = 50
TOUCHED_PARTITIONS = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5_000_000, help="rows in the frame (default: 5,000,000)")
    parser.add_argument("--partitions", type=int, default=30,
                        help="distinct event_date values = table partitions (default: 30)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each write; the best counts (default: 2)")
    add_spark_args(parser)
    args = parser.parse_args(argv)
    if args.rows < 1000:
        parser.error("--rows must be at least 1000")
    if args.partitions < TOUCHED_PARTITIONS:
        parser.error(f"--partitions must be at least {TOUCHED_PARTITIONS}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    # The updated ids are k*partitions + day for k < rows/(100*TOUCHED_PARTITIONS*2): all must exist.
    if (args.rows // 200 // TOUCHED_PARTITIONS + 1) * args.partitions >= args.rows:
        parser.error("--partitions is too large for --rows")
    return args


# ---- data -----------------------------------------------------------------------------------
def _category(id_col):
    from pyspark.sql import functions as F
    return F.concat(F.lit("cat_"), F.lpad(F.pmod(F.xxhash64(id_col), F.lit(CATEGORIES)).cast("string"), 2, "0"))


def build_frame(spark, rows: int, days: int):
    """id long, event_date date (id % days days after START_DATE), value double in [0, 1),
    category string (50 values). Same partitioning as the cores, so both writers get the same tasks."""
    from pyspark.sql import functions as F
    return spark.range(0, rows, numPartitions=spark.sparkContext.defaultParallelism).select(
        F.col("id"),
        F.date_add(F.lit(START_DATE), (F.col("id") % days).cast("int")).alias("event_date"),
        F.rand(seed=7).alias("value"),
        _category(F.col("id")).alias("category"),
    )


def touched_days(days: int) -> list[int]:
    """Day offsets of the TOUCHED_PARTITIONS partitions the upsert changes (spread out)."""
    return [i * days // TOUCHED_PARTITIONS + days // (2 * TOUCHED_PARTITIONS) for i in range(TOUCHED_PARTITIONS)]


def build_changes(spark, rows: int, days: int):
    """1% of the keys: half existing ids of the touched days with a changed (negative) value,
    half new ids (>= rows) in the same days. Returns (frame, n_updates, n_new)."""
    from pyspark.sql import functions as F
    n_changes = max(2, rows // 100)
    n_updates = n_changes // 2
    n_new = n_changes - n_updates
    chosen = F.array(*[F.lit(d) for d in touched_days(days)])

    def rows_of(k_count: int, id_expr):
        k = F.col("id")
        day = F.element_at(chosen, (k % TOUCHED_PARTITIONS + 1).cast("int"))
        return spark.range(0, k_count, numPartitions=1).select(
            id_expr(k, day).alias("id"),
            F.date_add(F.lit(START_DATE), day).alias("event_date"),
        )

    # Existing row id = k' * days + day has event_date START + day in the base frame.
    updates = rows_of(n_updates, lambda k, day: (k / TOUCHED_PARTITIONS).cast("long") * days + day)
    new = rows_of(n_new, lambda k, day: F.lit(rows).cast("long") + k)
    changes = (updates.unionByName(new)
               .withColumn("value", -(F.col("id") + 1).cast("double"))
               .withColumn("category", _category(F.col("id"))))
    return changes, n_updates, n_new


# ---- the two writers ------------------------------------------------------------------------
def lake_append(spark, df, root: str):
    from strata.lake.base import TableSpec
    from strata.lake.delta_rs import DeltaRsLake
    lake = DeltaRsLake(spark, root, job="bench.lake_write", run_id=uuid.uuid4().hex)
    table = TableSpec("bench", "events", ("event_date",))
    with timed() as t:
        result = lake.append(table, df)
    return t.seconds, result.files_added, lake, table


def native_write(df, path: str):
    with timed() as t:
        df.write.mode("overwrite").partitionBy("event_date").parquet(path)
    return t.seconds, len(list(Path(path).glob("event_date=*/part-*.parquet")))


# ---- upsert and its check -------------------------------------------------------------------
def check_upsert(lake, table, result, changes, rows: int, n_updates: int, n_new: int, days: int) -> list[str]:
    """Problems with the upserted table; empty when it is right."""
    from pyspark.sql import functions as F
    problems = []
    expected_dates = sorted((START_DATE + dt.timedelta(days=d)).isoformat() for d in touched_days(days))
    replaced = sorted(p.get("event_date") for p in result.partitions_replaced)
    if replaced != expected_dates:
        problems.append(f"partitions replaced {replaced}, expected exactly {expected_dates}")
    expected_rows = rows + n_new
    logged = lake.row_count(table)
    if logged != expected_rows:
        problems.append(f"row count from the Delta log is {logged:,}, expected {expected_rows:,} "
                        f"({rows:,} old + {n_new:,} new ids)")
    current = lake.read(table)
    scanned = current.count()
    if scanned != expected_rows:
        problems.append(f"lake.read(...) returns {scanned:,} rows, expected {expected_rows:,}")
    touched = current.where(F.col("event_date").isin(*[dt.date.fromisoformat(d) for d in expected_dates]))
    expected = changes.select("id", "event_date", F.col("value").alias("expected"))
    # One pass over the touched partitions: duplicate keys, upserted keys found, wrong values.
    seen = (touched.join(F.broadcast(expected), ["id", "event_date"], "left")
            .agg(F.count(F.lit(1)).alias("rows"),
                 F.countDistinct("id", "event_date").alias("keys"),
                 F.count("expected").alias("found"),
                 F.sum(F.when(F.col("value") != F.col("expected"), 1).otherwise(0)).alias("wrong"))
            .first())
    if seen["rows"] != seen["keys"]:
        problems.append(f"{seen['rows'] - seen['keys']:,} duplicate key rows in the touched partitions")
    if seen["found"] != n_updates + n_new:
        problems.append(f"{seen['found']:,} rows match the {n_updates + n_new:,} upserted keys")
    if seen["wrong"]:
        problems.append(f"{seen['wrong']:,} upserted keys do not show their new value")
    return problems


# ---- main -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spark = build_spark("bench.lake_write", args.master, args.shuffle_partitions, args.driver_memory)
    try:
        with bench_workdir(args.workdir) as workdir:
            figures, problems = run(spark, args, workdir)
    finally:
        spark.stop()
    return finish(figures, problems, "upsert result is wrong")


def run(spark, args, workdir: Path) -> tuple[dict, list[str]]:
    import pyspark
    import deltalake
    rows, days = args.rows, args.partitions
    print(f"lake_write: {rows:,} rows, {days} date partitions, best of {args.repeat}, "
          f"master {spark.sparkContext.master}, pyspark {pyspark.__version__}, "
          f"deltalake {deltalake.__version__}, workdir {workdir}", flush=True)

    df = build_frame(spark, rows, days).cache()
    with timed() as t:
        cached = df.count()
    assert cached == rows, (cached, rows)
    print(f"generated and cached the frame in {t.seconds:.1f}s (not timed below)\n", flush=True)

    # Warm-up (untimed): Python workers, JIT, the deltalake import, for both writers.
    small = df.limit(10_000)
    lake_append(spark, small, str(workdir / "warmup-lake"))
    native_write(small, str(workdir / "warmup-native"))

    lake_runs: list[tuple[float, int]] = []
    native_runs: list[tuple[float, int]] = []
    tables = []
    per_run = []
    for r in range(args.repeat):
        order = ["lake", "native"] if r % 2 == 0 else ["native", "lake"]  # ABBA
        for writer in order:
            if writer == "lake":
                seconds, n_files, lake, table = lake_append(spark, df, str(workdir / f"lake-{r}"))
                lake_runs.append((seconds, n_files))
                tables.append((lake, table))
                label = "lake append (delta-rs)"
            else:
                seconds, n_files = native_write(df, str(workdir / "native"))
                native_runs.append((seconds, n_files))
                label = "native parquet"
            per_run.append((r + 1, label, seconds, rows / seconds, n_files))
            print(f"  run {r + 1}: {label:<24} {seconds:7.2f}s", flush=True)
    print()
    print_table(["run", "writer", "seconds", "rows/s", "files"], per_run, title="append runs")

    lake_s, lake_files = min(lake_runs)
    native_s, native_files = min(native_runs)
    ratio = (rows / lake_s) / (rows / native_s)
    verdict = "PASS" if ratio >= TARGET_RATIO else "BELOW TARGET"

    # Upsert into each appended table (identical contents): best time, every result checked.
    changes, n_updates, n_new = build_changes(spark, rows, days)
    upserts = []
    problems: list[str] = []
    for lake, table in tables:
        with timed() as t:
            result = lake.upsert(table, changes, keys=["id", "event_date"])
        with timed() as check:
            found = check_upsert(lake, table, result, changes, rows, n_updates, n_new, days)
        problems += [p for p in found if p not in problems]
        upserts.append((t.seconds, result))
        print(f"  upsert: {t.seconds:7.2f}s, files removed {result.files_removed}, "
              f"added {result.files_added}, partitions {len(result.partitions_replaced)}, "
              f"check {'ok' if not found else 'FAILED'} ({check.seconds:.1f}s)", flush=True)
    upsert_s, upsert_result = min(upserts, key=lambda u: u[0])
    print()

    print_table(
        ["operation", "best s", "rows/s", "files", "note"],
        [("lake append (delta-rs)", lake_s, rows / lake_s, lake_files, ""),
         ("native parquet", native_s, rows / native_s, native_files, ""),
         ("lake upsert (delta-rs)", upsert_s, (n_updates + n_new) / upsert_s,
          upsert_result.files_added,
          f"{n_updates:,} updates + {n_new:,} new ids; removed {upsert_result.files_removed} files, "
          f"{len(upsert_result.partitions_replaced)} of {days} partitions rewritten")],
        title=f"results ({rows:,} rows, best of {args.repeat})")
    print(f"append throughput ratio lake/native: {ratio:.2f}x (target >= {TARGET_RATIO}x): {verdict}")
    print(f"upsert correctness: {'ok' if not problems else 'FAILED'}\n", flush=True)

    figures = {
        "benchmark": "lake_write",
        "rows": rows,
        "partitions": days,
        "repeat": args.repeat,
        "master": spark.sparkContext.master,
        "lake_append_s": round(lake_s, 3),
        "lake_append_rows_per_s": round(rows / lake_s),
        "lake_append_files": lake_files,
        "native_parquet_s": round(native_s, 3),
        "native_parquet_rows_per_s": round(rows / native_s),
        "native_parquet_files": native_files,
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "verdict": verdict,
        "upsert_s": round(upsert_s, 3),
        "upsert_rows": n_updates + n_new,
        "upsert_updates": n_updates,
        "upsert_new": n_new,
        "upsert_files_removed": upsert_result.files_removed,
        "upsert_files_added": upsert_result.files_added,
        "upsert_partitions_touched": len(upsert_result.partitions_replaced),
        "upsert_correct": not problems,
    }
    df.unpersist()
    return figures, problems


if __name__ == "__main__":
    sys.exit(main())
