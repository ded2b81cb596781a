"""Benchmark: train --estimate's prediction against the training it predicts, at --rows rows.

Data and model: bench/train.py's (synthetic gold/trips_features written through the project's
lake; conf/models/bench_train.yaml in a temp copy of conf/ with --algorithm's 2-point grid, 3
folds, parallelism 2, --bootstrap-replicates; MLflow a sqlite store in the work dir).

1. The estimate: train.run with --estimate (its samples are estimate.fractions, --fractions here),
   in process on this session: its samples, its scaling models and its prediction for the full
   table on --cores cores (default: the session's cores, the ones the actual run gets).
2. The actual training: train.run on the full table right after, on the same session, measured
   the same way (wall seconds; executor core-seconds = the executors' task time over the run,
   from Spark's status store, strata.stagetime). The MLflow logging (log_model, registration) and the
   promotion gate are measured apart too: the estimate does not run them (it would log and
   register), so "modelled" is the training without them, what the estimate's fits time.

Predicted vs actual, as ratios; target: within 25% (0.75 to 1.25) for wall seconds and
core-seconds of the whole training. The session keeps 100,000 stages in its status store (the
full training runs more than the default 1,000), so the CPU seconds, read per stage, are whole.

    .venv/bin/python bench/estimate.py                         # 1M rows, logistic regression: ~15 min on 2 busy cores
    .venv/bin/python bench/estimate.py --rows 200000 --fractions 0.02,0.05,0.1   # smoke

A report, not a test: exits 1 only if a result is wrong (stages lost, a sample with no work),
never because the target was missed. The last line of stdout is the figures as one JSON line.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any

try:  # run as a script (bench/ is sys.path[0]) or imported as bench.estimate
    import train as bench_train
    from common import add_spark_args, bench_workdir, build_spark, finish, print_table
except ImportError:  # pragma: no cover
    from bench import train as bench_train
    from bench.common import add_spark_args, bench_workdir, build_spark, finish, print_table

TARGET = 0.25


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="labelled rows of the table (default: 1000000)")
    parser.add_argument("--fractions", default="0.01,0.02,0.05,0.1",
                        help="the estimate's sample shares (estimate.fractions; default: 0.01,0.02,0.05,0.1)")
    parser.add_argument("--algorithm", default="logistic_regression", choices=sorted(bench_train.GRIDS),
                        help="the model's algorithm (default: logistic_regression, as conf/models/tips.yaml)")
    parser.add_argument("--bootstrap-replicates", type=int, default=100, help="(default: 100)")
    parser.add_argument("--cores", type=int, default=None, help="cores to predict for (default: the session's)")
    parser.add_argument("--price", type=float, default=0.05, help="price per core-hour (default: 0.05)")
    add_spark_args(parser)
    parser.set_defaults(shuffle_partitions=2)  # as conf/local.yaml
    args = parser.parse_args(argv)
    args.fractions = [float(f) for f in args.fractions.split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spark = build_spark("bench.estimate", args.master, args.shuffle_partitions, args.driver_memory,
                        conf={"spark.sql.execution.arrow.pyspark.enabled": "true",
                              "spark.ui.retainedStages": "100000", "spark.ui.retainedJobs": "100000"})
    try:
        with bench_workdir(args.workdir) as workdir:
            figures, problems = run(spark, args, workdir)
    finally:
        spark.stop()
    return finish(figures, problems, "wrong estimate benchmark result")


def run(spark, args: argparse.Namespace, workdir) -> tuple[dict[str, Any], list[str]]:
    from strata.jobs import train
    from strata.stagetime import Measure

    project = bench_train.make_project(workdir)
    config = bench_train.model_config(args.algorithm, args.bootstrap_replicates)
    bench_train.write_model(project, config)
    load_start = os.getloadavg()[0]
    version = bench_train.write_table(spark, project, args.rows)
    cores = args.cores or spark.sparkContext.defaultParallelism
    print(f"estimate: model {bench_train.MODEL} ({args.algorithm}, grid {config['grid']}, {config['folds']} folds, "
          f"{config['bootstrap_replicates']} bootstrap replicates); {args.rows:,} rows; samples {args.fractions}; "
          f"master {spark.sparkContext.master}; predicted for {cores} cores; load average {load_start:.1f}", flush=True)
    environ = {"STRATA_ESTIMATE__FRACTIONS": str(args.fractions), "STRATA_ESTIMATE__PRICE_PER_CORE_HOUR": str(args.price)}
    problems: list[str] = []

    # 1. the estimate
    ctx = bench_train.context(spark, project, version, environ=environ)
    ctx.args.estimate, ctx.args.cores = True, cores
    with contextlib.redirect_stdout(sys.stderr), Measure(spark) as whole_estimate:
        estimated = train.run(ctx)
    prediction, samples = estimated["prediction"], estimated["samples"]
    problems += [f"sample {s['fraction']}: no executor time" for s in samples if not s["core_seconds"] > 0]
    print_table(["sample", "rows", "wall s", "core-s", "cpu s", "stages"],
                [(f"{s['fraction']:.0%}", s["rows"], s["wall_seconds"], s["core_seconds"], s["cpu_seconds"], s["stages"])
                 for s in samples], title=f"estimate: samples (warm-up not counted: {estimated['warmup']['wall_seconds']:.1f} s)")

    # 2. the actual training, its MLflow logging and promotion measured apart
    measured: dict[str, Measure] = {}

    def measuring(name, fn):
        def wrapper(*a, **k):
            with Measure(spark) as m:
                result = fn(*a, **k)
            measured[name] = m
            return result
        return wrapper

    saved = train.log_to_mlflow, train.promote
    train.log_to_mlflow, train.promote = measuring("mlflow", saved[0]), measuring("promotion", saved[1])
    try:
        with contextlib.redirect_stdout(sys.stderr), Measure(spark) as actual:
            trained = train.run(bench_train.context(spark, project, version))
    finally:
        train.log_to_mlflow, train.promote = saved
    rows = sum(n for per_class in trained["split_counts"].values() for n in per_class.values())
    if rows != args.rows or prediction["rows"] != args.rows:
        problems.append(f"rows: table {args.rows}, trained {rows}, estimated {prediction['rows']}")
    aside_wall = sum(m.wall_seconds for m in measured.values())
    aside_core = sum(m.core_seconds for m in measured.values())
    modelled = {"wall_seconds": actual.wall_seconds - aside_wall, "core_seconds": actual.core_seconds - aside_core}

    def ratio(a, b):
        return a / b if b else None

    # The same linear model on the samples' executor CPU time: work that a busy machine does not
    # stretch (task time counts the time a task waits for a core too).
    from strata.ml import estimate as scaling
    cpu_model = scaling.fit_work([s["rows"] for s in samples], [s["cpu_seconds"] for s in samples])
    predicted_cpu = scaling.at(cpu_model, args.rows)
    modelled["cpu_seconds"] = actual.cpu_seconds - sum(m.cpu_seconds for m in measured.values())
    comparison = [
        ("wall seconds", prediction["wall_seconds"], actual.wall_seconds, modelled["wall_seconds"]),
        ("executor core-seconds", prediction["core_seconds"], actual.core_seconds, modelled["core_seconds"]),
        ("executor CPU seconds (same model)", predicted_cpu, actual.cpu_seconds, modelled["cpu_seconds"]),
    ]
    print_table(["figure", "predicted", "actual", "predicted / actual", "actual modelled", "predicted / modelled"],
                [(name, p, a, ratio(p, a), m, ratio(p, m)) for name, p, a, m in comparison],
                title=f"{args.rows:,} rows on {cores} cores (actual: the whole train.run; modelled: without MLflow "
                      f"logging and promotion, {aside_wall:.1f} s wall / {aside_core:.1f} core-s)")
    wall_ratio, core_ratio = ratio(prediction["wall_seconds"], actual.wall_seconds), ratio(prediction["core_seconds"], actual.core_seconds)
    within = all(r is not None and abs(r - 1) <= TARGET for r in (wall_ratio, core_ratio))
    print(f"target: predicted within {TARGET:.0%} of actual (wall and core-seconds): {'met' if within else 'MISSED'}; "
          f"the estimate itself took {whole_estimate.wall_seconds:.0f} s wall, {whole_estimate.core_seconds:.0f} core-s "
          f"(warm-up included); load average {os.getloadavg()[0]:.1f} at the end", flush=True)
    figures = {
        "bench": "estimate", "rows": args.rows, "algorithm": args.algorithm, "cores": cores,
        "fractions": args.fractions, "load_average": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "samples": samples, "warmup": estimated["warmup"], "scaling": estimated["scaling"], "prediction": prediction,
        "estimate_run": whole_estimate.figures(),
        "actual": {**actual.figures(), "modelled_wall_seconds": round(modelled["wall_seconds"], 3),
                   "modelled_core_seconds": round(modelled["core_seconds"], 3),
                   "modelled_cpu_seconds": round(modelled["cpu_seconds"], 3),
                   "mlflow": measured["mlflow"].figures() if "mlflow" in measured else None,
                   "promotion": measured["promotion"].figures() if "promotion" in measured else None,
                   "laps": trained.get("seconds")},
        "predicted_cpu_seconds": round(predicted_cpu, 3),
        "ratio_cpu_seconds": round(ratio(predicted_cpu, actual.cpu_seconds), 4),
        "ratio_cpu_seconds_modelled": round(ratio(predicted_cpu, modelled["cpu_seconds"]), 4),
        "ratio_wall": round(wall_ratio, 4) if wall_ratio else None,
        "ratio_core_seconds": round(core_ratio, 4) if core_ratio else None,
        "ratio_wall_modelled": round(ratio(prediction["wall_seconds"], modelled["wall_seconds"]), 4),
        "ratio_core_seconds_modelled": round(ratio(prediction["core_seconds"], modelled["core_seconds"]), 4),
        "target": TARGET, "target_met": within,
    }
    return figures, problems


if __name__ == "__main__":
    raise SystemExit(main())
