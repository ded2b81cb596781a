"""Benchmark: the monitor job (strata.jobs.monitor) against a bare describe() + approxQuantile pass
over the same rows, as rows grow.

Measured at each of --sizes scored rows (default 1M and 4M):
  (a) monitor.run(ctx) in process: the registry and the champion's training profile, the
      predictions partitions predict's commits of the run date changed joined to their gold
      features (cached), the profile (strata.ml.drift.profile: one aggregate, one approxQuantile,
      one value count per (column, value)), the BASELINE and CONSECUTIVE drift rows, the realised
      performance (strata.ml.evaluate.binary_metrics on the champion's labelled rows), and the
      publish of 4 small tables through their suites. Broken down by the job's own laps
      (counts["seconds"]: profile, drift_and_performance, publish; setup is the rest) and by its
      steps with their Spark jobs (common.Recorder).
  (b) the bare pass over the SAME frame the job profiles: monitor.scored_rows of the same
      partitions (read and joined the same way), the champion's rows, then
      `df.describe(*cols).collect()` (the features, probability, prediction and label) and
      `df.approxQuantile(numeric_cols, [0.05, 0.25, 0.5, 0.75, 0.95], 0.001)` (the numeric
      features and the probability). Not cached: each of the two actions reads and joins.
Reported: job / bare overall and for the compute part (the job without its publish: the publish
is ~4 small gated tables whatever the rows, a fixed cost reported apart), and the growth
exponent from the smallest to the largest size of the job, its compute part and the bare pass.
Target: job <= 2x the bare pass; linear in rows (a report: a missed target does not fail the run).

Setup reuses bench/score.py (its project, model bench_score: logistic regression on
bench/train.py's synthetic trips, champion trained by train.run on --train-rows rows, run date
2024-01-08) and adds the monitoring suites of the model (the tips ones renamed, as
tests/test_monitor.py does). An untimed warm-up predict + monitor on the training table (JIT, the
monitoring tables created, so the timed runs replace partitions as a nightly would and have a
CONSECUTIVE baseline). Then for each size, on its own run date (2024-01-09, -10, ...): the
features table rewritten with that many rows by overwrite_partitions (its commit records the
run date), predict run untimed (the monitor reads its predictions), then the monitor and the
bare pass, interleaved --repeat times (median).

    .venv/bin/python bench/monitor.py                         # 1M and 4M rows: ~25 min on 2 busy cores
    .venv/bin/python bench/monitor.py --sizes 50000,100000    # smoke: ~8 min

Exits 1 only if a result is wrong: the job's rows or its champion's labelled rows != the size,
the bare count != the size, or the published profile's rows, mean, min and max of a numeric
column differ from describe()'s. The last stdout line is the figures as one JSON line.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import math
import os
import sys
from pathlib import Path
from typing import Any

try:  # run as a script (bench/ is sys.path[0]) or imported as bench.monitor
    import score as score_bench
    import train as train_bench
    from common import Recorder, add_spark_args, cpu_seconds_between, print_table, process_tree_cpu_seconds
except ImportError:  # pragma: no cover
    from bench import score as score_bench
    from bench import train as train_bench
    from bench.common import Recorder, add_spark_args, cpu_seconds_between, print_table, process_tree_cpu_seconds

MODEL = score_bench.MODEL
TRAIN_DATE = score_bench.TRAIN_DATE
FIRST_DATE = dt.date(2024, 1, 9)  # the run date of the first size; the next sizes a day later each
TARGET_RATIO = 2.0
TARGET_EXPONENT = 1.0
POINTS = [0.05, 0.25, 0.5, 0.75, 0.95]
RELATIVE_ERROR = 0.001
MOMENT_TOLERANCE = 1e-9  # relative: the profile's and describe()'s mean, min and max
LAPS = ("profile", "drift_and_performance", "publish")
# Steps of the job timed with their Spark jobs: (owner, function, label). The scored rows are
# cached and materialised by the profile's first aggregate (read + join inside it).
STEPS = [
    ("strata.jobs.monitor", "load_reference", "load_reference (training profile artifact)"),
    ("strata.jobs.monitor", "scored_partitions", "scored_partitions (commit history)"),
    ("strata.ml.monitoring", "current_profile", "current_profile (3 passes; read + join + cache if first)"),
    ("pyspark.sql.classic.dataframe:DataFrame", "approxQuantile", "  approxQuantile (grid + summary points)"),
    ("strata.ml.drift", "_value_counts", "  _value_counts (explode, count per (column, value), rank)"),
    ("strata.jobs.monitor", "previous_profile", "previous_profile (the CONSECUTIVE baseline)"),
    ("strata.ml.drift", "drift_rows", "drift_rows (arithmetic)"),
    ("strata.jobs.monitor", "realised_performance", "realised_performance"),
    ("strata.ml.evaluate", "binary_metrics", "  evaluate.binary_metrics"),
    ("strata.publish", "publish", "publish.publish (4 gated tables)"),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,4000000",
                        help="scored rows monitored, one run date each (default: 1000000,4000000)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="timed runs of the job and of the bare pass per size; the median counts (default: 1)")
    parser.add_argument("--train-rows", type=int, default=20_000,
                        help="rows the champion trains on (default: 20000)")
    add_spark_args(parser)
    parser.set_defaults(shuffle_partitions=2)  # as conf/local.yaml: the job's local setting on 2 cores
    args = parser.parse_args(argv)
    args.sizes = sorted(int(s) for s in args.sizes.split(","))
    if args.repeat < 1 or min(args.sizes) < 1000 or args.train_rows < 2000:
        parser.error("--repeat must be >= 1, --sizes >= 1000, --train-rows >= 2000")
    return args


# ---- the project ------------------------------------------------------------------------------
def make_project(workdir: Path) -> Path:
    """bench/score.py's project, plus the monitoring suites of the bench model."""
    from strata import catalog
    project = score_bench.make_project(workdir)
    for kind in catalog.MONITORING_TABLES:
        suite = (project / "expectations" / "monitoring" / f"tips_{kind}.json").read_text()
        (project / "expectations" / "monitoring" / f"{MODEL}_{kind}.json").write_text(
            suite.replace(f'"monitoring.tips_{kind}"', f'"monitoring.{MODEL}_{kind}"'))
    return project


def write_scored_table(spark, project: Path, rows: int, run_date: dt.date) -> int:
    """A new version of gold/trips_features with `rows` rows, written by a run of run_date that
    replaces the partitions it holds; the rows added."""
    from strata import catalog
    ctx = score_bench.context(spark, project, "gold", run_date)
    return ctx.lake.overwrite_partitions(catalog.features(ctx.config.dataset("trips")),
                                         train_bench.gold_trips(spark, rows)).rows_added


# ---- what is timed ----------------------------------------------------------------------------
def _target(owner: str):
    module, _, cls = owner.partition(":")
    target = importlib.import_module(module)
    return getattr(target, cls) if cls else target


def run_job(spark, project: Path, run_date: dt.date) -> dict[str, Any]:
    """monitor.run in process: wall and CPU seconds, its counts (with its laps) and its STEPS
    ({function: (calls, seconds, Spark jobs)}); "monitor.run" is the whole run."""
    from strata.jobs import monitor
    ctx = score_bench.context(spark, project, "monitor", run_date)
    recorder = Recorder(spark, prefix="monitor")
    cpu = process_tree_cpu_seconds()
    with contextlib.ExitStack() as stack:
        for owner, function, _ in STEPS:
            stack.enter_context(recorder.patched(_target(owner), [function]))
        stack.enter_context(contextlib.redirect_stdout(sys.stderr))
        with recorder.phase("monitor.run") as call:
            counts = monitor.run(ctx)
    cpu_s = cpu_seconds_between(cpu, process_tree_cpu_seconds())
    recorder.collect_jobs()
    steps = {name: (len(recorder.find(name)), recorder.total(name), recorder.total_jobs(name))
             for name in ["monitor.run", *(function for _, function, _ in STEPS)]}
    return {"seconds": call.seconds, "cpu_s": cpu_s, "counts": counts, "steps": steps}


def bare_pass(spark, project: Path, run_date: dt.date) -> dict[str, Any]:
    """describe() + approxQuantile over the frame the job profiles: the predictions partitions
    changed on run_date joined to their features (monitor.scored_rows), the champion's rows."""
    from pyspark.sql import functions as F

    from strata import catalog
    from strata.jobs import monitor
    ctx = score_bench.context(spark, project, "bench", run_date)
    model = ctx.config.model(MODEL)
    dataset = ctx.config.dataset(model.dataset)
    predictions = catalog.predictions(model, dataset)
    numeric = [*model.numeric_features, "probability"]
    columns = [*model.numeric_features, *model.categorical_features, "probability", "prediction", monitor.LABEL]
    recorder = Recorder(spark, prefix="bare")
    cpu = process_tree_cpu_seconds()
    with recorder.phase("bare") as call:
        partitions = monitor.scored_partitions(ctx, predictions)
        df = (monitor.scored_rows(ctx, dataset, model, predictions, partitions)
              .where(F.col("role") == monitor.CHAMPION_ROLE).select(*columns))
        with recorder.phase("describe"):
            described = df.describe(*columns).collect()
        with recorder.phase("approxQuantile"):
            quantiles = df.approxQuantile(numeric, POINTS, RELATIVE_ERROR)
    cpu_s = cpu_seconds_between(cpu, process_tree_cpu_seconds())
    recorder.collect_jobs()
    stats = {r["summary"]: {c: r[c] for c in columns} for r in described}
    return {"seconds": call.seconds, "cpu_s": cpu_s, "spark_jobs": recorder.total_jobs("bare"),
            "describe_s": recorder.total("describe"), "quantile_s": recorder.total("approxQuantile"),
            "stats": stats, "quantiles": dict(zip(numeric, quantiles)), "numeric": numeric}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]


def laps(job: dict[str, Any]) -> dict[str, float]:
    """The job's laps, and setup: the rest of its wall time (registry, reference, before the laps)."""
    seconds = job["counts"].get("seconds", {})
    out = {lap: float(seconds.get(lap, 0.0)) for lap in LAPS}
    out["setup"] = max(0.0, job["seconds"] - sum(out.values()))
    out["compute"] = job["seconds"] - out["publish"]
    return out


# ---- checks -----------------------------------------------------------------------------------
def check_results(spark, project: Path, run_date: dt.date, rows: int, job: dict, bare: dict) -> list[str]:
    """Row counts of both, and the published profile's rows, mean, min and max of each numeric
    column against describe()'s."""
    from pyspark.sql import functions as F

    from strata import catalog
    problems = []
    label = f"{rows:,} rows"
    counts = job["counts"]
    if counts.get("rows") != rows:
        problems.append(f"{label}: the job profiled {counts.get('rows')} rows")
    champion = counts.get("performance", {}).get("champion", {})
    if champion.get("rows") != rows:
        problems.append(f"{label}: the job's realised performance counts {champion.get('rows')} labelled rows")
    described = bare["stats"]
    ctx = score_bench.context(spark, project, "bench", run_date)
    profile = {r["column_name"]: r for r in ctx.lake.read(catalog.monitoring(MODEL, "profile"))
               .where(F.col("run_date") == F.lit(run_date)).collect()}
    for c in bare["numeric"]:
        count = int(described["count"][c])
        if c == "probability" and count != rows:
            problems.append(f"{label}: describe() counts {count} probabilities")
        p = profile.get(c)
        if p is None:
            problems.append(f"{label}: no profile row for {c}")
            continue
        if p["rows"] != count:
            problems.append(f"{label}, {c}: the profile has {p['rows']} values, describe() {count}")
        for field, stat in (("mean", "mean"), ("min", "min"), ("max", "max")):
            theirs = described[stat][c]
            if theirs is None and p[field] is None:
                continue
            if theirs is None or p[field] is None or not math.isclose(
                    float(p[field]), float(theirs), rel_tol=MOMENT_TOLERANCE, abs_tol=1e-12):
                problems.append(f"{label}, {c}: profile {field} {p[field]} vs describe() {theirs}")
    return problems


# ---- the run ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    return score_bench.run_in_session("bench.monitor", parse_args(argv), run, "wrong monitor benchmark result")


def run(spark, args: argparse.Namespace, workdir: Path) -> tuple[dict[str, Any], list[str]]:
    import pyspark

    project = make_project(workdir)
    os.environ["STRATA_EXPECTATIONS_DIR"] = str(project / "expectations")
    load_start = os.getloadavg()[0]
    print(f"monitor: model {MODEL} (logistic regression) trained on {args.train_rows:,} rows; sizes "
          f"{', '.join(f'{n:,}' for n in args.sizes)}; median of {args.repeat}; master {spark.sparkContext.master}, "
          f"{args.shuffle_partitions} shuffle partitions, driver memory {args.driver_memory}, pyspark "
          f"{pyspark.__version__}; workdir {workdir}; load average {load_start:.1f}", flush=True)
    problems: list[str] = []

    # Setup, untimed: the champion on a small table, a warm-up predict + monitor on it.
    train_version = train_bench.write_table(spark, project, args.train_rows)
    champion = score_bench.train_model(spark, project, train_version, seed=7, no_promote=False)
    if not champion["promotion"].get("promoted"):
        problems.append(f"the champion was not promoted: {champion['promotion']}")
    warm_predict = score_bench.run_job(spark, project, TRAIN_DATE)
    warm = run_job(spark, project, TRAIN_DATE)
    print(f"setup: champion version {champion['model_version']}; warm-up predict of "
          f"{warm_predict['counts'].get('rows_scored'):,} rows in {warm_predict['seconds']:.1f} s, monitor of "
          f"{warm['counts'].get('rows'):,} rows in {warm['seconds']:.1f} s", flush=True)

    results: dict[int, dict[str, Any]] = {}
    for i, rows in enumerate(args.sizes):
        run_date = FIRST_DATE + dt.timedelta(days=i)
        added = write_scored_table(spark, project, rows, run_date)
        scored = score_bench.run_job(spark, project, run_date)  # untimed: the monitor reads its predictions
        if scored["counts"].get("rows_scored") != rows:
            problems.append(f"{rows:,} rows: predict scored {scored['counts'].get('rows_scored')}")
        print(f"{rows:,} rows ({run_date}): features table rewritten ({added:,} rows), predict in "
              f"{scored['seconds']:.1f} s (untimed)", flush=True)
        jobs, bares = [], []
        for _ in range(args.repeat):  # interleaved, the machine is shared
            jobs.append(run_job(spark, project, run_date))
            bares.append(bare_pass(spark, project, run_date))
        job, bare = median_run(jobs), median_run(bares)
        problems.extend(check_results(spark, project, run_date, rows, jobs[-1], bares[-1]))
        results[rows] = {"job": job, "bare": bare, "run_date": run_date,
                         "job_runs": [r["seconds"] for r in jobs], "bare_runs": [b["seconds"] for b in bares]}
        lap = laps(job)
        print(f"{rows:,} rows: job {', '.join(f'{s:.1f}' for s in results[rows]['job_runs'])} s (publish "
              f"{lap['publish']:.1f} s), bare {', '.join(f'{s:.1f}' for s in results[rows]['bare_runs'])} s",
              flush=True)

    figures = report(args, results, problems)
    figures["load_average"] = {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)}
    return figures, problems


def report(args, results: dict[int, dict[str, Any]], problems: list[str]) -> dict[str, Any]:
    rows_table = []
    for rows, r in results.items():
        job, bare, lap = r["job"], r["bare"], laps(r["job"])
        rows_table.append((f"monitor.run at {rows:,}", job["seconds"], job["cpu_s"], job["steps"]["monitor.run"][2],
                           job["seconds"] / bare["seconds"]))
        rows_table.append(("  without publish (compute)", lap["compute"], None, None, lap["compute"] / bare["seconds"]))
        rows_table.append(("  publish (4 gated tables; fixed)", lap["publish"], None, None, None))
        rows_table.append(("  bare: describe + approxQuantile", bare["seconds"], bare["cpu_s"], bare["spark_jobs"], 1.0))
    print_table(["run", "wall s", "CPU s", "Spark jobs", "x bare"], rows_table,
                title=f"monitor vs the bare pass (target: job <= {TARGET_RATIO}x bare; publish is a fixed cost)")

    for rows, r in results.items():
        job, bare = r["job"], r["bare"]
        total, lap = job["seconds"], laps(job)
        table = [(f"lap {name}", None, lap[name], 100 * lap[name] / total, None)
                 for name in ("setup", *LAPS)]
        table += [(name, job["steps"][f][0], job["steps"][f][1], 100 * job["steps"][f][1] / total, job["steps"][f][2])
                  for _, f, name in STEPS if job["steps"][f][0]]
        before = lap["profile"] - job["steps"]["current_profile"][1]
        table.append(("profile lap outside current_profile (scored rows, registry)", None, before,
                      100 * before / total, None))
        table.append(("job total", None, total, 100.0, job["steps"]["monitor.run"][2]))
        table.append(("bare: describe().collect()", None, bare["describe_s"], None, None))
        table.append(("bare: approxQuantile", None, bare["quantile_s"], None, None))
        print_table(["step", "calls", "seconds", "% of job", "Spark jobs"], table,
                    title=f"inside the job at {rows:,} rows: its laps (setup = before the first), then its steps with "
                          f"their Spark jobs (a step includes the indented ones below it)")

    sizes = list(results)
    growth = {}
    if len(sizes) > 1:
        for name, pick in (("job", lambda r: r["job"]["seconds"]), ("compute", lambda r: laps(r["job"])["compute"]),
                           ("profile", lambda r: laps(r["job"])["profile"]), ("bare", lambda r: r["bare"]["seconds"])):
            growth[name] = train_bench.exponent(sizes, [pick(results[n]) for n in sizes])
    largest = results[sizes[-1]]
    ratio = largest["job"]["seconds"] / largest["bare"]["seconds"]
    compute_ratio = laps(largest["job"])["compute"] / largest["bare"]["seconds"]
    targets = [(f"job / bare at {sizes[-1]:,}", ratio, TARGET_RATIO, ratio <= TARGET_RATIO),
               (f"compute (no publish) / bare at {sizes[-1]:,}", compute_ratio, TARGET_RATIO,
                compute_ratio <= TARGET_RATIO)]
    for name in ("job", "compute", "bare"):
        if name in growth:
            targets.append((f"growth exponent of {name}, {sizes[0]:,} to {sizes[-1]:,}", growth[name],
                            TARGET_EXPONENT, growth[name] <= TARGET_EXPONENT + 0.05))
    targets.append(("results correct (rows, profile moments vs describe)", not problems, None, None))
    print_table(["target", "value", "limit", "met"], targets,
                title="targets (a report: missing one does not fail the run)")

    def figures(r: dict) -> dict[str, Any]:
        job, bare, lap = r["job"], r["bare"], laps(r["job"])
        return {"run_date": r["run_date"].isoformat(),
                "job_s": round(job["seconds"], 2), "job_cpu_s": job["cpu_s"] and round(job["cpu_s"], 1),
                "compute_s": round(lap["compute"], 2), "laps": {k: round(v, 2) for k, v in lap.items()},
                "bare_s": round(bare["seconds"], 2), "bare_cpu_s": bare["cpu_s"] and round(bare["cpu_s"], 1),
                "bare_describe_s": round(bare["describe_s"], 2), "bare_quantile_s": round(bare["quantile_s"], 2),
                "ratio": round(job["seconds"] / bare["seconds"], 3),
                "compute_ratio": round(lap["compute"] / bare["seconds"], 3),
                "job_runs": [round(s, 2) for s in r["job_runs"]], "bare_runs": [round(s, 2) for s in r["bare_runs"]],
                "job_spark_jobs": job["steps"]["monitor.run"][2], "bare_spark_jobs": bare["spark_jobs"],
                "steps": {f: {"calls": c, "seconds": round(t, 2), "spark_jobs": j}
                          for f, (c, t, j) in job["steps"].items()},
                "retrain": job["counts"].get("retrain"), "rows": job["counts"].get("rows")}

    return {"benchmark": "monitor", "sizes": sizes, "train_rows": args.train_rows, "repeat": args.repeat,
            "model": MODEL, "results": {str(n): figures(r) for n, r in results.items()},
            "growth_exponent": {k: v and round(v, 3) for k, v in growth.items()},
            "targets": {"ratio": TARGET_RATIO, "exponent": TARGET_EXPONENT},
            "targets_met": {"ratio": ratio <= TARGET_RATIO, "compute_ratio": compute_ratio <= TARGET_RATIO,
                            "linear": all(growth[k] <= TARGET_EXPONENT + 0.05 for k in ("job", "compute")
                                          if k in growth)},
            "correct": not problems}


if __name__ == "__main__":
    sys.exit(main())
