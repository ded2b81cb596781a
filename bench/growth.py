"""Benchmark: pipeline cost as the lake's history grows.

Builds one lake day by day (the demo generator's small days, uploaded to a local S3 endpoint,
each run through the real pipeline in-process: ingest -> silver -> gold in one Spark session),
and at 1x, 10x and 100x days of history times
  - a no-op re-run of the pipeline for the last day (no new object), and
  - a one-new-day run (that day's objects uploaded, then the pipeline for it),
each --repeat times (the one-new-day runs add consecutive days). After each size it reports
the Python driver's peak RSS during the measured runs and the JVM heap in use after a GC.
Target: at 100x both timings stay within 1.5x of their 1x figure, and memory stays flat.

    .venv/bin/python bench/growth.py                       # 1, 10, 100 days; tens of minutes
    .venv/bin/python bench/growth.py --sizes 1,3 --repeat 1   # smoke run

A report, not a test: exits 1 only if a run fails or the no-op run changes a table.
The last line of stdout is the figures as one JSON line.
"""
from __future__ import annotations

import argparse
import datetime as dt
import statistics
import uuid
from pathlib import Path
from typing import Any

try:  # run as a script (bench/ is sys.path[0]) or imported as bench.growth
    from common import add_spark_args, main_with_local_s3, print_table, timed
except ImportError:  # pragma: no cover
    from bench.common import add_spark_args, main_with_local_s3, print_table, timed

BUCKET = "growth-raw"
PREFIX = "trips"  # conf/datasets/trips.yaml: source.prefix
START = dt.date(2023, 1, 1)
TARGET_RATIO = 1.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,10,100", help="days of history to measure at (default: 1,10,100)")
    parser.add_argument("--objects-per-day", type=int, default=2, help="raw objects per day (default: 2)")
    parser.add_argument("--rows-per-object", type=int, default=150, help="rows per object (default: 150)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each kind per size (default: 3)")
    parser.add_argument("--build-days-per-run", type=int, default=1,
                        help="days of objects each history-building pipeline run takes (default: 1; more "
                             "builds faster with fewer, larger commits)")
    parser.add_argument("--gates", action="store_true",
                        help="run the Great Expectations gates too (default: off; their cost is per batch, "
                             "not per day of history, and dominates a small day)")
    add_spark_args(parser)
    parser.set_defaults(shuffle_partitions=2)
    args = parser.parse_args(argv)
    args.sizes = sorted({int(s) for s in args.sizes.split(",")})
    return args


def upload_day(s3, day: dt.date, args) -> None:
    from strata_dev.demo_data import DemoDataSpec, upload
    spec = DemoDataSpec(start_date=day, days=1, objects_per_day=args.objects_per_day,
                        rows_per_object=args.rows_per_object, seed=day.toordinal(), formats=("csv", "csv.gz"),
                        truncated_gzip_objects=0, empty_objects=0)
    upload(spec, s3, BUCKET, PREFIX)


def run_pipeline(spark, environ: dict, day: dt.date) -> dict:
    from strata.config import load_config
    from strata.jobs import pipeline
    from strata.runner import JobContext
    config = load_config("local", environ=environ)
    ctx = JobContext("pipeline", "local", uuid.uuid4().hex[:12], day, config,
                     argparse.Namespace(dataset=["trips"]), _spark=spark)
    result = pipeline.run(ctx)
    return {"stages": result["stages"], "tables": {k: v["version"] for k, v in ctx.tables.items()}}


def reset_peak_rss() -> None:
    try:  # Linux: "5" resets the peak resident set size (VmHWM) of this process
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def jvm_heap_used_mb(spark) -> float:
    runtime = spark.sparkContext._jvm.java.lang.Runtime.getRuntime()  # noqa: SLF001
    spark.sparkContext._jvm.java.lang.System.gc()  # noqa: SLF001
    return (runtime.totalMemory() - runtime.freeMemory()) / 2**20


def main(argv: list[str] | None = None) -> int:
    return main_with_local_s3("bench.growth", parse_args(argv), run, "growth runs")


def run(spark, args, workdir: Path, endpoint: str) -> tuple[dict[str, Any], list[str]]:
    import boto3
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    environ = {"STRATA_LAKE__ROOT": str(workdir / "lake"), "STRATA_S3__ENDPOINT_URL": endpoint,
               "STRATA_DATASETS__TRIPS__SOURCE__BUCKET": BUCKET,
               "STRATA_QUALITY__DATA_DOCS_DIR": str(workdir / "docs"),
               "STRATA_QUALITY__GATES": "true" if args.gates else "false"}
    problems: list[str] = []
    days_built = 0
    last_versions: dict = {}
    per_size: list[dict[str, Any]] = []

    def day(n: int) -> dt.date:
        return START + dt.timedelta(days=n - 1)

    def add_day(days: int = 1) -> tuple[float, dict]:
        nonlocal days_built, last_versions
        for _ in range(days):
            days_built += 1
            upload_day(s3, day(days_built), args)
        with timed() as t:
            result = run_pipeline(spark, environ, day(days_built))
        if result["stages"]["trips.ingest"].get("objects_new", 0) < days * args.objects_per_day:
            problems.append(f"day {days_built}: {result['stages']['trips.ingest'].get('objects_new')} new objects")
        last_versions = result["tables"]
        return t.seconds, result

    for size in args.sizes:
        with timed() as build:
            while days_built < size:
                add_day(max(1, min(args.build_days_per_run, size - days_built - 1)))
        print(f"built {days_built} days in {build.seconds:.1f} s", flush=True)
        before = days_built
        reset_peak_rss()
        noop, new_day = [], []
        for _ in range(args.repeat):
            with timed() as t:
                again = run_pipeline(spark, environ, day(days_built))
            noop.append(t.seconds)
            if again["stages"]["trips.ingest"].get("objects_new") or \
                    any(last_versions.get(name) != version for name, version in again["tables"].items()):
                problems.append(f"{before} days: the no-op re-run changed a table")
            seconds, _ = add_day()
            new_day.append(seconds)
        per_size.append({"days": before, "noop_s": noop, "new_day_s": new_day, "driver_peak_rss_mb": peak_rss_mb(),
                         "jvm_heap_used_mb": jvm_heap_used_mb(spark), "build_s": build.seconds})

    base = per_size[0]
    rows = []
    for entry in per_size:
        noop, new_day = statistics.median(entry["noop_s"]), statistics.median(entry["new_day_s"])
        entry.update(noop_median_s=noop, new_day_median_s=new_day,
                     noop_ratio=noop / statistics.median(base["noop_s"]),
                     new_day_ratio=new_day / statistics.median(base["new_day_s"]))
        rows.append([entry["days"], noop, f"{min(entry['noop_s']):.2f}-{max(entry['noop_s']):.2f}", entry["noop_ratio"],
                     new_day, f"{min(entry['new_day_s']):.2f}-{max(entry['new_day_s']):.2f}", entry["new_day_ratio"],
                     entry["driver_peak_rss_mb"], entry["jvm_heap_used_mb"]])
    print_table(["days", "no-op s (median)", "no-op range", "x 1st", "new day s (median)", "new-day range", "x 1st",
                 "driver peak RSS MB", "JVM heap used MB"], rows,
                title=f"pipeline runs by days of history ({args.objects_per_day} x {args.rows_per_object} rows a day, "
                      f"{args.repeat} runs each)")
    last = per_size[-1]
    figures = {"bench": "growth", "objects_per_day": args.objects_per_day, "rows_per_object": args.rows_per_object,
               "repeat": args.repeat, "gates": args.gates, "sizes": per_size, "target_ratio": TARGET_RATIO,
               "flat": last["noop_ratio"] <= TARGET_RATIO and last["new_day_ratio"] <= TARGET_RATIO}
    return figures, problems


if __name__ == "__main__":
    raise SystemExit(main())
