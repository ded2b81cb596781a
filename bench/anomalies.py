"""Benchmark: precision and recall of the anomalies job on the demo data, per feature set.

Uploads the `make demo` data (DemoDataSpec defaults: 3 days x 4 objects x 2,500 trips, 1% of them
planted anomalies: long trips done in a minute or two, short ones taking hours) to a local S3
endpoint, runs the real ingest and silver for 2024-01-01 (every folder is new, so silver holds the
three days), then the real anomalies job for each run date and feature set, against the manifest
the generator left beside the data. Feature sets: the shipped config (conf/datasets/trips.yaml:
distance, duration and implied speed on a log scale), and the same without the log scale and/or
without the implied speed; and the shipped features with c = 6, or with no cluster taken as
anomalous for its size (min_cluster_share 0); everything else as shipped.

    .venv/bin/python bench/anomalies.py                      # every variant: 18 fits
    .venv/bin/python bench/anomalies.py --variants shipped   # the shipped config only: 3 fits
    .venv/bin/python bench/anomalies.py --variants shipped --seed 7   # other demo data

Target (the shipped config, every run date): recall >= 0.8 at precision >= 0.5; exit 1 if not.
The last line of stdout is the figures as one JSON line.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

try:  # run as a script (bench/ is sys.path[0]) or imported as bench.anomalies
    from common import add_spark_args, main_with_local_s3, print_table, timed
except ImportError:  # pragma: no cover
    from bench.common import add_spark_args, main_with_local_s3, print_table, timed

BUCKET = "anomalies-raw"
PREFIX = "trips"  # conf/datasets/trips.yaml: source.prefix
DISTANCE_DURATION = {"trip_distance": "trip_distance", "trip_duration_min": "trip_duration_min"}
# Environment overrides of conf/datasets/trips.yaml per feature set ({}: as shipped).
VARIANTS = {
    "shipped": {},
    "no_log": {"STRATA_DATASETS__TRIPS__ANOMALIES__LOG_SCALE": "false"},
    "no_speed": {"STRATA_DATASETS__TRIPS__ANOMALIES__FEATURES": json.dumps(DISTANCE_DURATION)},
    "no_log_no_speed": {"STRATA_DATASETS__TRIPS__ANOMALIES__LOG_SCALE": "false",
                        "STRATA_DATASETS__TRIPS__ANOMALIES__FEATURES": json.dumps(DISTANCE_DURATION)},
    # the shipped features with another threshold: c = 6, or no small clusters taken as anomalous
    "c6": {"STRATA_DATASETS__TRIPS__ANOMALIES__THRESHOLD__C": "6"},
    "no_small_clusters": {"STRATA_DATASETS__TRIPS__ANOMALIES__THRESHOLD__MIN_CLUSTER_SHARE": "0"},
}
TARGET_RECALL, TARGET_PRECISION = 0.8, 0.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=42,
                        help="the generator's seed (default: 42, make demo's; another one is data the shipped "
                             "threshold was not chosen on)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"feature sets to measure, comma-separated (default: all of {', '.join(VARIANTS)})")
    add_spark_args(parser)
    parser.set_defaults(shuffle_partitions=2)
    args = parser.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",")]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {list(VARIANTS)}")
    return args


def context(spark, job: str, environ: dict, run_date: dt.date):
    from strata.config import load_config
    from strata.runner import JobContext
    config = load_config("local", environ=environ)
    return JobContext(job, "local", uuid.uuid4().hex[:12], run_date, config,
                      argparse.Namespace(dataset="trips", manifest=None), _spark=spark)


def main(argv: list[str] | None = None) -> int:
    return main_with_local_s3("bench.anomalies", parse_args(argv), run, "anomalies runs")


def run(spark, args, workdir: Path, endpoint: str) -> tuple[dict[str, Any], list[str]]:
    import boto3

    from strata.jobs import anomalies, ingest, silver
    from strata_dev.demo_data import DemoDataSpec, upload

    spec = DemoDataSpec(seed=args.seed)
    manifest = upload(spec, boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1"), BUCKET, PREFIX)
    environ = {"STRATA_LAKE__ROOT": str(workdir / "lake"), "STRATA_S3__ENDPOINT_URL": endpoint,
               "STRATA_DATASETS__TRIPS__SOURCE__BUCKET": BUCKET,
               "STRATA_QUALITY__DATA_DOCS_DIR": str(workdir / "docs"),
               "STRATA_MLFLOW__TRACKING_URI": f"sqlite:///{workdir}/mlflow.db",
               "STRATA_MLFLOW__ARTIFACT_LOCATION": str(workdir / "mlartifacts")}
    with timed() as build:
        for job in (ingest, silver):
            job.run(context(spark, job.__name__.rsplit(".", 1)[-1], environ, spec.start_date))
    print(f"demo data through ingest and silver in {build.seconds:.0f} s "
          f"({manifest.totals['trips']:,} trips, {len(manifest.anomalies)} planted anomalies)", flush=True)

    problems: list[str] = []
    results: list[dict[str, Any]] = []
    for variant in args.variants:
        # A lake per feature set, each with a copy of silver: the flagged table's columns follow
        # the features (as gold's features table follows gold.features).
        lake = workdir / f"lake-{variant}"
        shutil.copytree(workdir / "lake" / "silver", lake / "silver")
        variant_environ = {**environ, **VARIANTS[variant], "STRATA_LAKE__ROOT": str(lake)}
        for day in range(spec.days):
            run_date = spec.start_date + dt.timedelta(days=day)
            with timed() as t:
                counts = anomalies.run(context(spark, "anomalies", variant_environ, run_date))
            figures = counts.get("manifest", {})
            result = {"variant": variant, "run_date": run_date.isoformat(), "k": counts.get("k"),
                      "fit_rows": counts.get("fit_rows"), "rides": counts.get("run_date_rows"),
                      "planted": figures.get("planted"), "flagged": counts.get("outliers"),
                      "precision": figures.get("precision"), "recall": figures.get("recall"),
                      "seconds": round(t.seconds, 1), "skipped": counts.get("skipped")}
            results.append(result)
            print(json.dumps(result), flush=True)
            if variant == "shipped" and not ((result["recall"] or 0) >= TARGET_RECALL
                                             and (result["precision"] or 0) >= TARGET_PRECISION):
                problems.append(f"{run_date}: recall {result['recall']} at precision {result['precision']} misses "
                                f"the target (recall >= {TARGET_RECALL} at precision >= {TARGET_PRECISION})")
    print_table(["features", "run date", "k", "fit rows", "rides", "planted", "flagged", "precision", "recall", "s"],
                [[r["variant"], r["run_date"], r["k"], r["fit_rows"], r["rides"], r["planted"], r["flagged"],
                  r["precision"], r["recall"], r["seconds"]] for r in results],
                title="anomalies on the demo data: is_outlier against the planted anomalies of each run date's rides")
    figures = {"bench": "anomalies", "spec": {"days": spec.days, "objects_per_day": spec.objects_per_day,
                                             "rows_per_object": spec.rows_per_object, "seed": spec.seed},
               "target": {"recall": TARGET_RECALL, "precision": TARGET_PRECISION}, "results": results}
    return figures, problems


if __name__ == "__main__":
    raise SystemExit(main())
