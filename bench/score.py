"""Benchmark: the predict job (strata.jobs.predict) against the bare transform-and-write it wraps.

Measured, in one run, on --rows rows of gold/trips_features (default 2M):
  (1) champion only: predict.run(ctx) in process (registry look-up, changed partitions from the
      table's commits, read at one version, cache + count, load_model, transform, the
      predictions gate with its quality.results commit, the quarantine split, the
      ReplacePartitions commit of gold/<model>_predictions and its quarantine, reconciliation)
      vs the bare path: `champion.transform(df).write.parquet(tmp)` with the same champion
      loaded once before timing and df the same rows (the same partitions of the features
      table at the same version, read through the project's lake).
  (2) with shadow scoring: a second version registered with --no-promote (challenger !=
      champion), so the job scores the rows twice (roles champion and shadow) vs the bare
      path doing the transform-and-write twice (one parquet folder per model, both loaded once).
Wall and CPU seconds (process tree: driver, JVM, Python workers) of each, the ratio, the rows
written, and the job's breakdown by its steps (common.Recorder: registry, changed partitions,
load_model, gate, split, write), with their Spark jobs.
Target: job <= 1.2x the bare path (a report: a missed target does not fail the run).

Data and setup reuse bench/train.py: its synthetic gold_trips rows through the project's lake, a
temp copy of conf/ with a bench model (conf/models/bench_score.yaml: logistic regression, one
param map, 2 folds), a sqlite MLflow store. The champion is trained by train.run on a small
table (--train-rows, default 20k; run date 2024-01-08); an untimed warm-up predict scores that
table (JIT, the predictions table created, so the timed runs replace partitions as a nightly
would). Then the --rows table is written as a new version by a context of run date 2024-01-09
(overwrite_partitions: its commit records the run date and partitions, which is how predict
finds the rows to score), and predict runs with that run date.

    .venv/bin/python bench/score.py                   # 2M rows: ~15 min on 2 busy cores (load ~8)
    .venv/bin/python bench/score.py --rows 100000     # smoke: ~6 min

Reading the figures: the bare path writes transform's whole output (the input columns, the
assembled and one-hot vectors, rawPrediction and probability), the job 13 scalar columns; at 2M
rows that difference outweighs the job's own steps. Transform is lazy, so the job's scoring
time shows in publish.gate (its validation is the first action on the persisted predictions).

Exits 1 only if a result is wrong: rows scored != --rows, predictions (written + quarantined,
and per role in the table) != rows x roles, or the job's probabilities differ from the bare
path's on a sample of keys joined (or the sample does not join whole). The last stdout line is
the figures as one JSON line.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import sys
from pathlib import Path
from typing import Any

try:  # run as a script (bench/ is sys.path[0]) or imported as bench.score
    import train as train_bench
    from common import (Recorder, add_spark_args, bench_workdir, build_spark, cpu_seconds_between, finish,
                        print_table, process_tree_cpu_seconds)
except ImportError:  # pragma: no cover
    from bench import train as train_bench
    from bench.common import (Recorder, add_spark_args, bench_workdir, build_spark, cpu_seconds_between, finish,
                              print_table, process_tree_cpu_seconds)

REPO = Path(__file__).resolve().parents[1]
MODEL = "bench_score"
TARGET_OVERHEAD = 1.2
TRAIN_DATE, SCORE_DATE = train_bench.RUN_DATE, dt.date(2024, 1, 9)
CHALLENGER_SEED = 12
SAMPLE_BUCKETS = 500       # the probability check joins the keys with hash(trip_id) % 500 == 0
PROBABILITY_TOLERANCE = 1e-12
# Steps of the job timed with their Spark jobs: (owner, function, label). Transform is lazy: the
# scoring runs inside the steps that consume the predictions (gate, split, write).
STEPS = [
    ("strata.tracking:Tracking", "connect", "Tracking.connect (the MLflow store)"),
    ("strata.jobs.predict", "scoring_versions", "scoring_versions (aliases)"),
    ("lake", "changed_partitions", "lake.changed_partitions (commit history)"),
    ("strata.jobs.predict", "scored", "scored (load_model, transform plan)"),
    ("mlflow.spark", "load_model", "  mlflow.spark.load_model"),
    ("strata.publish", "prepare", "publish.prepare (gate + split)"),
    ("strata.publish", "gate", "  publish.gate (validate: scores the rows; quality.results)"),
    ("strata.publish", "write", "publish.write (predictions + quarantine commits)"),
    ("lake", "overwrite_partitions", "  lake.overwrite_partitions"),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows scored (default: 2000000)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="timed runs of the job and of the bare path per row of the report; the median "
                             "counts (default: 1)")
    parser.add_argument("--train-rows", type=int, default=20_000,
                        help="rows the champion and challenger train on (default: 20000)")
    add_spark_args(parser)
    parser.set_defaults(shuffle_partitions=2)  # as conf/local.yaml: the job's local setting on 2 cores
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.rows < 1000 or args.train_rows < 2000:
        parser.error("--repeat must be >= 1, --rows >= 1000, --train-rows >= 2000")
    return args


# ---- the project ------------------------------------------------------------------------------
def model_config(seed: int = 7) -> dict[str, Any]:
    """bench/train.py's logistic regression, cheap: one param map, 2 folds, 20 replicates."""
    return {**train_bench.warmup_config(train_bench.model_config("logistic_regression", 20)), "seed": seed}


def make_project(workdir: Path) -> Path:
    """train's project, plus expectations/ with the predictions suite of the bench model."""
    project = train_bench.make_project(workdir)
    shutil.copytree(REPO / "expectations", project / "expectations", dirs_exist_ok=True)
    suite = (project / "expectations" / "gold" / "tips_predictions.json").read_text()
    (project / "expectations" / "gold" / f"{MODEL}_predictions.json").write_text(
        suite.replace('"gold.tips_predictions"', f'"gold.{MODEL}_predictions"'))
    return project


def context(spark, project: Path, job: str, run_date: dt.date, **kwargs):
    return train_bench.context(spark, project, job=job, model=MODEL, run_date=run_date, **kwargs)


def train_model(spark, project: Path, version: int, seed: int, no_promote: bool) -> dict[str, Any]:
    from strata.jobs import train
    train_bench.write_model(project, model_config(seed), MODEL)
    with contextlib.redirect_stdout(sys.stderr):
        return train.run(context(spark, project, "train", TRAIN_DATE, version=version, no_promote=no_promote))


def write_scoring_table(spark, project: Path, rows: int):
    """A new version of gold/trips_features with `rows` rows, written by a run of SCORE_DATE that
    replaces the partitions it holds (its commit records them). The CommitResult."""
    from strata import catalog
    ctx = context(spark, project, "gold", SCORE_DATE)
    return ctx.lake.overwrite_partitions(catalog.features(ctx.config.dataset("trips")),
                                         train_bench.gold_trips(spark, rows))


# ---- what is timed ----------------------------------------------------------------------------
def run_job(spark, project: Path, run_date: dt.date) -> dict[str, Any]:
    """predict.run in process: wall and CPU seconds, its counts, its STEPS
    ({label: (calls, seconds, Spark jobs)}); "predict.run" is the whole run."""
    import importlib

    from strata.jobs import predict
    ctx = context(spark, project, "predict", run_date)
    lake = ctx.lake  # opened now, so its methods can be wrapped
    recorder = Recorder(spark, prefix="predict")
    cpu = process_tree_cpu_seconds()
    with contextlib.ExitStack() as stack:
        for owner, function, _ in STEPS:
            if owner == "lake":
                target = lake
            else:
                module, _, cls = owner.partition(":")
                target = importlib.import_module(module)
                target = getattr(target, cls) if cls else target
            stack.enter_context(recorder.patched(target, [function]))
        stack.enter_context(contextlib.redirect_stdout(sys.stderr))
        with recorder.phase("predict.run") as call:
            counts = predict.run(ctx)
    cpu_s = cpu_seconds_between(cpu, process_tree_cpu_seconds())
    recorder.collect_jobs()
    steps = {name: (len(recorder.find(name)), recorder.total(name), recorder.total_jobs(name))
             for name in ["predict.run", *(function for _, function, _ in STEPS)]}
    return {"seconds": call.seconds, "cpu_s": cpu_s, "counts": counts, "steps": steps}


def bare_path(spark, project: Path, models: list, version: int, partitions: list[dict], out: Path) -> dict[str, Any]:
    """model.transform(df).write.parquet(out/<i>) for each already-loaded model, df the features
    rows of these partitions at `version` read through the lake (read inside the timing)."""
    from strata import catalog
    ctx = context(spark, project, "bench", SCORE_DATE)
    features = catalog.features(ctx.config.dataset("trips"))
    lake = ctx.lake
    shutil.rmtree(out, ignore_errors=True)
    recorder = Recorder(spark, prefix="bare")
    cpu = process_tree_cpu_seconds()
    with recorder.phase("bare") as call:
        df = lake.read(features, version=version, partitions=partitions)
        for i, model in enumerate(models):
            model.transform(df).write.parquet(str(out / str(i)))
    return {"seconds": call.seconds, "cpu_s": cpu_seconds_between(cpu, process_tree_cpu_seconds()),
            "spark_jobs": recorder.collect_jobs().total_jobs("bare")}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]


# ---- checks -----------------------------------------------------------------------------------
def check_results(spark, project: Path, job: dict, roles: list[tuple[str, str]], rows: int, out: Path,
                  label: str) -> tuple[dict[str, Any], list[str]]:
    """Counts, rows per role in the predictions table, and the job's probabilities against the
    bare path's on a sample of keys. roles: (role, model version) in the bare path's order."""
    from pyspark.sql import functions as F

    from strata import catalog
    from strata.ml.estimators import positive_probability
    problems: list[str] = []
    counts = job["counts"]
    expected = rows * len(roles)
    predictions = counts.get("predictions", {})
    if counts.get("rows_scored") != rows:
        problems.append(f"{label}: the job scored {counts.get('rows_scored')} rows, not {rows}")
    if predictions.get("rows", 0) + predictions.get("quarantined", 0) != expected or predictions.get("quarantined"):
        problems.append(f"{label}: predictions {predictions} for {rows:,} rows x {len(roles)} roles ({expected:,})")
    ctx = context(spark, project, "bench", SCORE_DATE)
    model = ctx.config.model(MODEL)
    table = ctx.lake.read(catalog.predictions(model, ctx.config.dataset(model.dataset)))
    per_role = {(r["role"], r["model_version"]): r["n"]
                for r in table.groupBy("role", "model_version").agg(F.count("*").alias("n")).collect()}
    if per_role != {role: rows for role in roles}:
        problems.append(f"{label}: the predictions table holds {per_role}, expected {rows:,} for each of {roles}")
    sample = F.abs(F.hash("trip_id")) % SAMPLE_BUCKETS == 0
    check = {"sample_keys": {}, "max_abs_diff": {}}
    for i, (role, version) in enumerate(roles):
        bare = (positive_probability(spark.read.parquet(str(out / str(i))), out="bare_p")
                .where(sample).select("trip_id", "bare_p"))
        job_rows = table.where((F.col("role") == role) & sample).select("trip_id", "probability", "model_version")
        joined = bare.join(job_rows, "trip_id", "full_outer")
        stats = joined.agg(F.count("*").alias("n"), F.count("bare_p").alias("bare"),
                           F.count("probability").alias("job"),
                           F.max(F.abs(F.col("bare_p") - F.col("probability"))).alias("diff"),
                           F.sum((F.col("model_version") != F.lit(version)).cast("int")).alias("other_version")
                           ).first()
        check["sample_keys"][role], check["max_abs_diff"][role] = stats["n"], stats["diff"]
        if not (stats["n"] == stats["bare"] == stats["job"]) or stats["n"] == 0:
            problems.append(f"{label}, {role}: sample keys {stats['n']}, of them {stats['bare']} in the bare "
                            f"output and {stats['job']} in the job's")
        elif stats["other_version"]:
            problems.append(f"{label}, {role}: {stats['other_version']} sampled rows not of version {version}")
        elif not stats["diff"] <= PROBABILITY_TOLERANCE:
            problems.append(f"{label}, {role}: probabilities differ from the bare path's by up to {stats['diff']}")
    return check, problems


# ---- the run ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    return run_in_session("bench.score", parse_args(argv), run, "wrong score benchmark result")


def run_in_session(app: str, args: argparse.Namespace, body, wrong: str) -> int:
    """body(spark, args, workdir) -> (figures, problems) on a bench session and work folder (the
    project's suites through STRATA_EXPECTATIONS_DIR, restored after); finish's exit code."""
    spark = build_spark(app, args.master, args.shuffle_partitions, args.driver_memory,
                        conf={"spark.sql.execution.arrow.pyspark.enabled": "true"})
    before = os.environ.get("STRATA_EXPECTATIONS_DIR")
    try:
        with bench_workdir(args.workdir) as workdir:
            figures, problems = body(spark, args, workdir)
    finally:
        spark.stop()
        if before is None:
            os.environ.pop("STRATA_EXPECTATIONS_DIR", None)
        else:
            os.environ["STRATA_EXPECTATIONS_DIR"] = before
    return finish(figures, problems, wrong)


def run(spark, args: argparse.Namespace, workdir: Path) -> tuple[dict[str, Any], list[str]]:
    import mlflow
    import pyspark

    from strata import catalog
    project = make_project(workdir)
    os.environ["STRATA_EXPECTATIONS_DIR"] = str(project / "expectations")
    load_start = os.getloadavg()[0]
    print(f"score: model {MODEL} (logistic regression) trained on {args.train_rows:,} rows; {args.rows:,} rows "
          f"scored; median of {args.repeat}; master {spark.sparkContext.master}, {args.shuffle_partitions} shuffle "
          f"partitions, pyspark {pyspark.__version__}; workdir {workdir}; load average {load_start:.1f}", flush=True)
    problems: list[str] = []

    # Setup, untimed: the champion on a small table, a warm-up predict on it, the big table.
    train_version = train_bench.write_table(spark, project, args.train_rows)
    champion_counts = train_model(spark, project, train_version, seed=7, no_promote=False)
    if not champion_counts["promotion"].get("promoted"):
        problems.append(f"the champion was not promoted: {champion_counts['promotion']}")
    warm = run_job(spark, project, TRAIN_DATE)
    print(f"setup: champion version {champion_counts['model_version']}; warm-up predict of "
          f"{warm['counts'].get('rows_scored'):,} rows in {warm['seconds']:.1f} s", flush=True)
    commit = write_scoring_table(spark, project, args.rows)
    ctx = context(spark, project, "bench", SCORE_DATE)
    features = catalog.features(ctx.config.dataset("trips"))
    partitions = ctx.lake.changed_partitions(features, SCORE_DATE.isoformat())
    version = ctx.lake.version(features)
    print(f"features table version {version}: {commit.rows_added:,} rows in {len(partitions)} partitions "
          f"changed on {SCORE_DATE}", flush=True)

    tracking_uri = f"sqlite:///{project}/mlflow.db"
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    bare_dir = workdir / "bare"
    results: dict[str, dict[str, Any]] = {}

    def measure(label: str, roles: list[tuple[str, str]], models: list) -> None:
        jobs, bares = [], []
        for _ in range(args.repeat):  # interleaved, the machine is shared
            jobs.append(run_job(spark, project, SCORE_DATE))
            bares.append(bare_path(spark, project, models, version, partitions, bare_dir))
        job, bare = median_run(jobs), median_run(bares)
        versions = [(r, job["counts"].get(f"{r}_version")) for r, _ in roles]
        if versions != roles:
            problems.append(f"{label}: the job scored with {versions}, expected {roles}")
        # the last job run's table and the last bare run's files
        check, issues = check_results(spark, project, jobs[-1], roles, args.rows, bare_dir, label)
        problems.extend(issues)
        results[label] = {"job": job, "bare": bare, "check": check, "roles": roles,
                          "job_runs": [r["seconds"] for r in jobs], "bare_runs": [b["seconds"] for b in bares]}
        print(f"{label}: job {', '.join(f'{r:.1f}' for r in results[label]['job_runs'])} s, bare "
              f"{', '.join(f'{b:.1f}' for b in results[label]['bare_runs'])} s", flush=True)

    champion_version = str(champion_counts["model_version"])
    champion = mlflow.spark.load_model(f"models:/{MODEL}/{champion_version}")  # loaded once, untimed
    measure("champion", [("champion", champion_version)], [champion])

    challenger_counts = train_model(spark, project, train_version, seed=CHALLENGER_SEED, no_promote=True)
    challenger_version = str(challenger_counts["model_version"])
    challenger = mlflow.spark.load_model(f"models:/{MODEL}/{challenger_version}")
    print(f"challenger version {challenger_version} registered (--no-promote)", flush=True)
    measure("champion + shadow",
            [("champion", champion_version), ("shadow", challenger_version)], [champion, challenger])

    figures = report(args, results, problems)
    figures["load_average"] = {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)}
    figures["features_version"] = version
    return figures, problems


def report(args, results: dict[str, dict[str, Any]], problems: list[str]) -> dict[str, Any]:
    rows = []
    for label, r in results.items():
        job, bare, n_roles = r["job"], r["bare"], len(r["roles"])
        written = r["job"]["counts"].get("predictions", {}).get("rows")
        bare_label = "transform + write.parquet" + (" x2 (each model)" if n_roles > 1 else "")
        rows.append((f"predict.run ({label})", job["seconds"], job["cpu_s"], job["steps"]["predict.run"][2], written,
                     job["seconds"] / bare["seconds"]))
        rows.append((f"  bare: {bare_label}", bare["seconds"], bare["cpu_s"], bare["spark_jobs"],
                     args.rows * n_roles, 1.0))
    print_table(["run", "wall s", "CPU s", "Spark jobs", "rows written", "x bare"], rows,
                title=f"predict vs the bare path at {args.rows:,} rows (target: job <= {TARGET_OVERHEAD}x bare)")
    for label, r in results.items():
        job = r["job"]
        steps, total = job["steps"], job["seconds"]
        top = [function for owner, function, name in STEPS if not name.startswith("  ")]
        other = total - sum(steps[f][1] for f in top if f != "load_model")
        table = [(name, steps[function][0], steps[function][1], 100 * steps[function][1] / total, steps[function][2])
                 for _, function, name in STEPS if steps[function][0]]
        table.append(("other (read, cache + count, reconcile)", None, other, 100 * other / total, None))
        table.append(("job total", None, total, 100.0, steps["predict.run"][2]))
        print_table(["step", "calls", "seconds", "% of job", "Spark jobs"], table,
                    title=f"inside the job ({label}): its steps with their Spark jobs "
                          "(a step includes the indented ones it calls)")
    targets = {label: {"value": round(r["job"]["seconds"] / r["bare"]["seconds"], 3), "target": TARGET_OVERHEAD,
                       "met": r["job"]["seconds"] / r["bare"]["seconds"] <= TARGET_OVERHEAD}
               for label, r in results.items()}
    print_table(["target", "value", "limit", "met"],
                [*((f"job / bare ({label})", t["value"], TARGET_OVERHEAD, t["met"]) for label, t in targets.items()),
                 ("results correct (counts, rows per role, sampled probabilities)", not problems, None, None)],
                title="targets (a report: missing one does not fail the run)")

    def figures(r: dict) -> dict[str, Any]:
        job, bare = r["job"], r["bare"]
        return {"roles": [list(x) for x in r["roles"]],
                "job_s": round(job["seconds"], 2), "job_cpu_s": job["cpu_s"] and round(job["cpu_s"], 1),
                "bare_s": round(bare["seconds"], 2), "bare_cpu_s": bare["cpu_s"] and round(bare["cpu_s"], 1),
                "job_runs": [round(s, 2) for s in r["job_runs"]], "bare_runs": [round(s, 2) for s in r["bare_runs"]],
                "job_spark_jobs": job["steps"]["predict.run"][2], "bare_spark_jobs": bare["spark_jobs"],
                "rows_written": job["counts"].get("predictions"), "rows_scored": job["counts"].get("rows_scored"),
                "steps": {f: {"calls": c, "seconds": round(t, 2), "spark_jobs": j}
                          for f, (c, t, j) in job["steps"].items()},
                "check": r["check"]}

    return {"benchmark": "score", "rows": args.rows, "train_rows": args.train_rows, "repeat": args.repeat,
            "model": MODEL, "results": {label: {**figures(r), **targets[label]} for label, r in results.items()},
            "targets_met": {label: t["met"] for label, t in targets.items()}, "correct": not problems}


if __name__ == "__main__":
    sys.exit(main())
