"""Benchmark: the train job (strata.jobs.train) against the bare model fit it wraps, as rows grow.

Data: synthetic rows of gold/trips_features (bench/data.py's trip values, a label that follows
fare per mile, distance, evening hours and weekends), made by spark.range and column
expressions and written through the project's lake. One table: each size is a new version
holding ids 0..N-1, so a bigger table holds the smaller ones' rows (a table that grew). The
model is conf/models/bench_train.yaml in a temp copy of conf/ (--algorithm, a 2-point grid,
3 folds, parallelism 2, --bootstrap-replicates); MLflow is a sqlite store and an artifact
folder in the work dir. An untimed warm-up run first trains a small model: JIT, the store's
schema, and a champion, so every timed run takes the nightly path (champion comparison included).

(a) overhead at the largest --sizes: train.run(ctx) in process (split, folds, CrossValidator
    tuning, threshold, evaluation, bootstrap interval, baselines, MLflow logging with
    log_model and registration, promotion) vs a bare CrossValidator.fit of the same pipeline
    and grid (estimators.build_pipeline / param_grid, the job's folds via foldCol, the same
    parallelism) on the same training rows, cached and materialised before timing.
    Target: job / bare <= 1.30. The job's time is broken down by its own counts["seconds"] laps,
    and by its steps (functions of train, strata.ml and MLflow) with their Spark jobs.
(b) the split alone at --split-sizes (bench/split_scale.py's data and timing).
    Target: time ratio largest / smallest <= rows ratio (at most linear).
(c) the job's wall time at every --sizes and the scaling exponent (least squares of log time on
    log rows). Target: <= 1.15.
(d) the same search in scikit-learn on the same rows collected with toPandas (the
    single-machine reference): same algorithm family, grid size and folds (PredefinedSplit
    from the fold column), class weights as sample weights, n_jobs=2; its time (toPandas
    included) and test metric next to Spark's.

    .venv/bin/python bench/train.py     # 250k/500k/1M job rows, 1M/4M split rows: ~17 min on 2 busy cores
    .venv/bin/python bench/train.py --sizes 20000,40000,80000 --split-sizes 100000,200000   # smoke: ~7 min

(Each job run costs about a minute here whatever its size, ~540 Spark jobs; the smoke run is
five of them.) A report, not a test: exits 1 only if a result is wrong (the job's split counts
not exact or not the bare run's, the bare search's fold metrics not the job's beyond float
noise, an inexact split in (b)), never because a timing target was missed. The last line of
stdout is the figures as one JSON line.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import math
import os
import shutil
import statistics
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml

try:  # run as a script (bench/ is sys.path[0]) or imported as bench.train
    import data
    import split_scale
    from common import (Recorder, add_spark_args, bench_workdir, build_spark, cpu_seconds_between, finish,
                        print_table, process_tree_cpu_seconds, timed)
except ImportError:  # pragma: no cover
    from bench import data, split_scale
    from bench.common import (Recorder, add_spark_args, bench_workdir, build_spark, cpu_seconds_between, finish,
                              print_table, process_tree_cpu_seconds, timed)

REPO = Path(__file__).resolve().parents[1]
MODEL = "bench_train"
TARGET_OVERHEAD, TARGET_EXPONENT = 1.30, 1.15
# The job's laps (counts["seconds"]) and what each holds.
LAPS = {"split": "split (class counts, split, folds, class weights)",
        "tuning": "tuning (class-weight count + CrossValidator.fit)",
        "evaluation": "evaluation (baseline model fit, threshold, test metrics)",
        "bootstrap": "bootstrap (interval of the test metric)",
        "baselines": "baselines (zero rule, split counts, calibration, baseline metrics)",
        "mlflow": "mlflow (params, dataset, plots, log_model, registration)",
        "promotion": "promotion (champion comparison, tags, aliases)"}
# Two fits of the same rows and folds may differ in the last bits (MLlib merges partial sums of
# the weighted rows in task-completion order, which can tip a near-tie split); other rows or
# folds would move the fold metrics far more than this.
FOLD_METRIC_TOLERANCE = 1e-4
DAYS = 7                  # event_date partitions of the table
WRITE_PARTITIONS = 2      # Spark tasks writing the table: 2 x DAYS files whatever the size
WARMUP_ROWS = 5000
RUN_DATE = dt.date(2024, 1, 8)  # the run date of the contexts (commits of the table record it)
NUMERIC = ["trip_duration_min", "trip_distance", "speed_mph", "fare_amount", "fare_per_mile", "passenger_count"]
CATEGORICAL = ["pickup_hour", "pickup_weekday", "rate_code"]
# Two param maps each: the grid size (d) reproduces.
GRIDS = {"gbt": {"maxIter": [10], "maxDepth": [3, 5]},
         "random_forest": {"numTrees": [20], "maxDepth": [5, 8]},
         "logistic_regression": {"maxIter": [50], "regParam": [0.001, 0.01]}}
# Steps of the job timed with their Spark jobs (common.Recorder), in the order the job takes them:
# (owner, function, label). A step's figures include the steps it calls (indented).
STEPS = [
    ("strata.tracking:Tracking", "connect", "Tracking.connect (the MLflow store)"),
    ("strata.jobs.train", "pinned_rows", "pinned_rows (table version, read)"),
    ("strata.jobs.train", "split_rows", "split_rows (class counts, split)"),
    ("strata.ml.split", "stratified_split", "  stratified_split (the job's; the champion's in promote)"),
    ("strata.jobs.train", "train_and_evaluate", "train_and_evaluate"),
    ("strata.ml.split", "stratified_folds", "  stratified_folds"),
    ("strata.ml.estimators", "with_class_weights", "  with_class_weights (also in cross_validate)"),
    ("strata.ml.estimators", "cross_validate", "  cross_validate (CrossValidator.fit)"),
    ("strata.ml.evaluate", "best_threshold", "  best_threshold (model, baseline)"),
    ("strata.ml.evaluate", "binary_metrics", "  binary_metrics (model, baseline; in zero_rule, bootstraps)"),
    ("strata.ml.evaluate", "bootstrap_interval", "  bootstrap_interval"),
    ("strata.ml.evaluate", "zero_rule", "  zero_rule"),
    ("strata.ml.split", "split_counts", "  split_counts"),
    ("strata.ml.evaluate", "calibration", "  calibration"),
    ("strata.jobs.train", "log_to_mlflow", "log_to_mlflow"),
    ("mlflow", "log_input", "  mlflow.log_input (the Delta dataset)"),
    ("strata.ml.plots", "curve_points", "  plots.curve_points"),
    ("strata.ml.plots", "write_all", "  plots.write_all (PNGs)"),
    ("strata.jobs.train", "datasheet", "  datasheet"),
    ("mlflow", "log_artifacts", "  mlflow.log_artifacts"),
    ("mlflow.models", "infer_signature", "  infer_signature"),
    ("mlflow.spark", "log_model", "  mlflow.spark.log_model (+ registration)"),
    ("strata.jobs.train", "promote", "promote"),
    ("mlflow.spark", "load_model", "  mlflow.spark.load_model (the champion)"),
    ("strata.ml.evaluate", "paired_bootstrap_difference", "  paired_bootstrap_difference"),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="250000,500000,1000000",
                        help="labelled rows the job trains on; (a) and (d) at the largest (default: 250000,500000,1000000)")
    parser.add_argument("--split-sizes", default="1000000,4000000",
                        help="rows for the split alone, (b) (default: 1000000,4000000)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="timed runs of the job per size, of the bare fit and of each split size; "
                             "the median counts (default: 1)")
    parser.add_argument("--algorithm", default="gbt", choices=sorted(GRIDS), help="the model's algorithm (default: gbt)")
    parser.add_argument("--bootstrap-replicates", type=int, default=100,
                        help="the model's bootstrap_replicates (default: 100)")
    parser.add_argument("--no-sklearn", action="store_true", help="skip (d)")
    add_spark_args(parser)
    parser.set_defaults(shuffle_partitions=2)  # as conf/local.yaml: the job's local setting on 2 cores
    args = parser.parse_args(argv)
    args.sizes = sorted(int(s) for s in args.sizes.split(","))
    args.split_sizes = sorted(int(s) for s in args.split_sizes.split(","))
    if args.repeat < 1 or min(args.sizes) < 2000 or min(args.split_sizes) < 1000:
        parser.error("--repeat must be >= 1, --sizes >= 2000, --split-sizes >= 1000")
    return args


# ---- the project: config, data, contexts --------------------------------------------------------
def model_config(algorithm: str, replicates: int) -> dict[str, Any]:
    return {"dataset": "trips", "algorithm": algorithm, "numeric_features": NUMERIC,
            "categorical_features": CATEGORICAL, "grid": GRIDS[algorithm],
            # split_scale's fractions: its exact_sizes checks the job's split counts
            "split": dict(split_scale.FRACTIONS), "seed": 7, "folds": 3, "parallelism": 2,
            "class_weights": "balanced", "beta": 1.0, "primary_metric": "pr_auc",
            "bootstrap_replicates": replicates, "baseline_features": ["fare_amount", "trip_distance"],
            "promotion": {"tolerance": 0.01, "baseline_margin": 0.02}}


def write_model(project: Path, config: dict[str, Any], name: str = MODEL) -> None:
    (project / "conf" / "models" / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def warmup_config(config: dict[str, Any]) -> dict[str, Any]:
    """The same pipeline, cheaper: one param map, 2 folds, few replicates."""
    return {**config, "grid": {k: v[:1] for k, v in config["grid"].items()}, "folds": 2, "bootstrap_replicates": 20}


def make_project(workdir: Path) -> Path:
    """A copy of conf/; the bench model, lake, MLflow store and artifacts go beside it."""
    shutil.copytree(REPO / "conf", workdir / "conf", dirs_exist_ok=True)
    return workdir


def context(spark, project: Path, version: int | None = None, *, job: str = "train", model: str = MODEL,
            run_date: dt.date = RUN_DATE, no_promote: bool = False, environ: dict[str, str] | None = None):
    """A JobContext of `job` over the project's lake and MLflow store (bench/score.py runs
    predict, and trains with no_promote, through it)."""
    from strata.config import load_config
    from strata.runner import JobContext
    environ = {"STRATA_LAKE__ROOT": str(project / "lake"),
               "STRATA_MLFLOW__TRACKING_URI": f"sqlite:///{project}/mlflow.db",
               "STRATA_MLFLOW__ARTIFACT_LOCATION": str(project / "artifacts"), **(environ or {})}
    config = load_config("local", project / "conf", environ=environ)
    args = argparse.Namespace(model=model, table_version=version, no_promote=no_promote)
    return JobContext(job, "local", uuid.uuid4().hex[:12], run_date, config, args, _spark=spark)


def gold_trips(spark, rows: int):
    """gold/trips_features rows for ids 0..rows-1 (the gold job's feature expressions over
    bench/data.py's trip values). The label is a Bernoulli draw whose log-odds rise with fare
    per mile, evening hours and weekends and fall with distance: learnable, not separable."""
    from pyspark.sql import functions as F
    src = F.col("id")
    start = int(dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc).timestamp())
    v = data.trip_values(src, F.lit(start) + (data._uniform(src, 1) * (DAYS * 86_400)).cast("long"))
    pickup = F.timestamp_seconds(v["pickup_s"])
    minutes = F.round(v["duration_s"] / 60.0, 2)
    per_mile = F.round(v["fare_amount"] / F.nullif(v["trip_distance"], F.lit(0.0)), 2)
    hour, weekday = F.hour(pickup), F.dayofweek(pickup)
    logit = (F.lit(-2.0) + 0.35 * per_mile - 0.3 * v["trip_distance"] + 1.2 * (hour >= 18).cast("double")
             + 0.5 * weekday.isin(1, 7).cast("double"))
    label = (data._uniform(src, 20) < 1 / (1 + F.exp(-logit))).cast("int")
    return spark.range(0, rows, numPartitions=WRITE_PARTITIONS).select(
        F.format_string("t%010d", src).alias("trip_id"), F.to_date(pickup).alias("event_date"),
        minutes.alias("trip_duration_min"), v["trip_distance"].alias("trip_distance"),
        F.round(v["trip_distance"] / F.nullif(minutes / 60.0, F.lit(0.0)), 2).alias("speed_mph"),
        v["fare_amount"].alias("fare_amount"), per_mile.alias("fare_per_mile"),
        hour.alias("pickup_hour"), weekday.alias("pickup_weekday"), v["pickup_zone"].alias("pickup_zone"),
        v["dropoff_zone"].alias("dropoff_zone"), v["passenger_count"].alias("passenger_count"),
        v["payment_type"].alias("payment_type"), v["rate_code"].alias("rate_code"), label.alias("label"))


def write_table(spark, project: Path, rows: int) -> int:
    """A new version of gold/trips_features holding `rows` rows; its version."""
    from strata import catalog
    ctx = context(spark, project)
    return ctx.lake.overwrite(catalog.features(ctx.config.dataset("trips")), gold_trips(spark, rows)).version


# ---- what is timed ------------------------------------------------------------------------------
def run_job(spark, project: Path, version: int) -> dict[str, Any]:
    """train.run on one table version: wall and CPU seconds, the job's counts, and its STEPS
    ({function: (calls, seconds, Spark jobs)}); "train.run" is the whole run."""
    from strata.jobs import train
    ctx = context(spark, project, version)
    recorder = Recorder(spark, prefix="train")
    cpu = process_tree_cpu_seconds()
    # as the runner does: stdout is for the report; a library's stray print goes to stderr
    with contextlib.ExitStack() as stack:
        for owner, function, _ in STEPS:
            module, _, cls = owner.partition(":")
            target = importlib.import_module(module)
            stack.enter_context(recorder.patched(getattr(target, cls) if cls else target, [function]))
        stack.enter_context(contextlib.redirect_stdout(sys.stderr))
        with recorder.phase("train.run") as call:
            counts = train.run(ctx)
    recorder.collect_jobs()
    steps = {name: (len(recorder.find(name)), recorder.total(name), recorder.total_jobs(name))
             for name in ["train.run", *(function for _, function, _ in STEPS)]}
    return {"seconds": call.seconds, "cpu_s": cpu_seconds_between(cpu, process_tree_cpu_seconds()),
            "counts": counts, "steps": steps}


def bare_inputs(spark, project: Path, version: int):
    """The job's rows at `version`, made by its own functions: (model, splits, training rows
    with folds and class weights), both cached and materialised."""
    from pyspark.sql import functions as F

    from strata.jobs import train
    from strata.ml import estimators
    from strata.ml.split import stratified_folds
    ctx = context(spark, project, version)
    model = ctx.config.model(MODEL)
    dataset = ctx.config.dataset(model.dataset)
    _, rows = train.pinned_rows(ctx, dataset, model, version)
    splits = train.split_rows(rows, dataset, model).cache()
    rows_train = splits.where(F.col(train.SPLIT) == "train").drop(train.SPLIT)
    rows_train = stratified_folds(rows_train, train.LABEL, dataset.keys, model.folds, model.seed,
                                  group=model.split.group, column=train.FOLD)
    rows_train, _ = estimators.with_class_weights(rows_train, model, label=train.LABEL, weight=train.WEIGHT)
    rows_train = rows_train.cache()
    splits.count()
    rows_train.count()
    return model, splits, rows_train


def bare_fit(model, rows_train) -> dict[str, Any]:
    """CrossValidator.fit alone: what the job's tuning is made of, nothing else."""
    from pyspark.ml.tuning import CrossValidator

    from strata.jobs import train
    from strata.ml import estimators
    pipeline = estimators.build_pipeline(model)
    search = CrossValidator(estimator=pipeline, estimatorParamMaps=estimators.param_grid(pipeline, model),
                            evaluator=estimators.evaluator(model), numFolds=model.folds, foldCol=train.FOLD,
                            parallelism=model.parallelism, seed=model.seed)
    recorder = Recorder(rows_train.sparkSession, prefix="bare")
    cpu = process_tree_cpu_seconds()
    with recorder.phase("fit") as call:
        fitted = search.fit(rows_train)
    return {"seconds": call.seconds, "cpu_s": cpu_seconds_between(cpu, process_tree_cpu_seconds()),
            "spark_jobs": recorder.collect_jobs().total_jobs("fit"),
            "avg_metrics": [float(m) for m in fitted.avgMetrics]}


# ---- (d) scikit-learn ---------------------------------------------------------------------------
def sklearn_search(model, n_fit: int):
    """An unfitted GridSearchCV's estimator and grid that mirror build_pipeline / param_grid:
    median imputation, one-hot categories (unseen ones ignored), scaling for logistic
    regression, the classifier with MLlib's defaults, the grid's params by their sklearn names."""
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    if model.algorithm == "gbt":
        # histogram-based like MLlib's GBT (maxBins 32); depth-limited trees, leaves of >= 1 row
        classifier = HistGradientBoostingClassifier(max_iter=20, learning_rate=0.1, max_depth=5, max_bins=32,
                                                    max_leaf_nodes=None, min_samples_leaf=1, early_stopping=False,
                                                    random_state=model.seed)
        names = {"maxIter": "max_iter", "stepSize": "learning_rate", "maxDepth": "max_depth"}
    elif model.algorithm == "random_forest":
        classifier = RandomForestClassifier(n_estimators=20, max_depth=5, max_features="sqrt", random_state=model.seed)
        names = {"numTrees": "n_estimators", "maxDepth": "max_depth"}
    else:
        classifier = LogisticRegression(max_iter=100)
        names = {"maxIter": "max_iter", "regParam": "C"}
    grid = {}
    for name, values in model.grid.items():
        if name not in names:
            raise ValueError(f"grid param {name!r} has no scikit-learn counterpart here")
        if name == "regParam":
            # MLlib minimises mean loss + regParam/2 |w|^2, sklearn C * total loss + |w|^2/2
            values = [1 / (v * n_fit) if v > 0 else np.inf for v in values]
        grid[f"classifier__{names[name]}"] = values
    features = ColumnTransformer([
        ("numeric", SimpleImputer(strategy="median"), list(model.numeric_features)),
        ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), list(model.categorical_features)),
    ], sparse_threshold=0)
    steps = [("features", features)]
    if model.algorithm == "logistic_regression":
        steps.append(("scale", StandardScaler(with_mean=False)))
    return Pipeline(steps + [("classifier", classifier)]), grid


def sklearn_fit(model, splits, rows_train) -> dict[str, Any]:
    """GridSearchCV on the job's training rows and folds, scored on its test rows."""
    from pyspark.sql import functions as F
    from sklearn.metrics import average_precision_score, roc_auc_score
    from sklearn.model_selection import GridSearchCV, PredefinedSplit

    from strata.jobs import train
    columns = [*model.numeric_features, *model.categorical_features]
    cpu = process_tree_cpu_seconds()
    with timed() as collect:
        train_pd = rows_train.select(*columns, train.LABEL, train.FOLD, train.WEIGHT).toPandas()
        test_pd = splits.where(F.col(train.SPLIT) == "test").select(*columns, train.LABEL).toPandas()
    pipeline, grid = sklearn_search(model, len(train_pd))
    search = GridSearchCV(pipeline, grid, cv=PredefinedSplit(train_pd[train.FOLD].to_numpy()), n_jobs=2,
                          scoring="average_precision" if model.primary_metric == "pr_auc" else "roc_auc")
    with contextlib.redirect_stdout(sys.stderr), timed() as fit:
        search.fit(train_pd[columns], train_pd[train.LABEL], classifier__sample_weight=train_pd[train.WEIGHT].to_numpy())
    score = search.predict_proba(test_pd[columns])[:, 1]
    metric = average_precision_score if model.primary_metric == "pr_auc" else roc_auc_score
    return {"collect_s": collect.seconds, "fit_s": fit.seconds, "seconds": collect.seconds + fit.seconds,
            "cpu_s": cpu_seconds_between(cpu, process_tree_cpu_seconds()),
            "test_metric": float(metric(test_pd[train.LABEL], score)), "cv_best": float(search.best_score_),
            "best_params": {k.removeprefix("classifier__"): v for k, v in search.best_params_.items()},
            "train_rows": len(train_pd), "test_rows": len(test_pd)}


# ---- checks -------------------------------------------------------------------------------------
def split_problems(counts: dict, rows: int) -> list[str]:
    """The job's split counts: every row once, each class cut at the exact round-based sizes."""
    per_split = counts["split_counts"]
    classes = sorted({label for per_class in per_split.values() for label in per_class})
    problems = []
    for label in classes:
        got = [per_split.get(s, {}).get(label, 0) for s in split_scale.FRACTIONS]
        if got != split_scale.exact_sizes(sum(got)):
            problems.append(f"{rows:,} rows, class {label}: split {got} != {split_scale.exact_sizes(sum(got))}")
    total = sum(sum(per_class.values()) for per_class in per_split.values())
    if total != rows:
        problems.append(f"{rows:,} rows: the job's splits hold {total:,} rows")
    return problems


def job_fold_metrics(counts: dict) -> list[float]:
    """The job's mean fold metric per param map, from the tuning.json it logged."""
    import mlflow
    tuning = mlflow.artifacts.load_dict(f"runs:/{counts['mlflow_run_id']}/tuning.json")
    return [float(r["mean"]) for r in tuning["results"]]


def exponent(sizes: list[int], seconds: list[float]) -> float | None:
    """Slope of the least-squares line of log(seconds) on log(rows)."""
    if len(set(sizes)) < 2:
        return None
    x, y = [math.log(n) for n in sizes], [math.log(s) for s in seconds]
    mx, my = statistics.fmean(x), statistics.fmean(y)
    return sum((a - mx) * (b - my) for a, b in zip(x, y)) / sum((a - mx) ** 2 for a in x)


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]


# ---- the run ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Arrow for toPandas, as conf/base.yaml sets it for the job (log_model's input example) and (d)
    spark = build_spark("bench.train", args.master, args.shuffle_partitions, args.driver_memory,
                        conf={"spark.sql.execution.arrow.pyspark.enabled": "true"})
    try:
        with bench_workdir(args.workdir) as workdir:
            figures, problems = run(spark, args, workdir)
    finally:
        spark.stop()
    return finish(figures, problems, "wrong train benchmark result")


def run(spark, args: argparse.Namespace, workdir: Path) -> tuple[dict[str, Any], list[str]]:
    import pyspark

    from strata.ml.split import split_counts
    project = make_project(workdir)
    config = model_config(args.algorithm, args.bootstrap_replicates)
    largest = args.sizes[-1]
    # the machine may be shared: its load at both ends goes in the figures, to read them by
    load_start = os.getloadavg()[0]
    print(f"train: model {MODEL} ({args.algorithm}, grid {config['grid']}, {config['folds']} folds, parallelism "
          f"{config['parallelism']}, {config['bootstrap_replicates']} bootstrap replicates); "
          f"job rows {', '.join(f'{n:,}' for n in args.sizes)}, split rows {', '.join(f'{n:,}' for n in args.split_sizes)}; "
          f"median of {args.repeat}; master {spark.sparkContext.master}, {args.shuffle_partitions} shuffle partitions, "
          f"pyspark {pyspark.__version__}; workdir {workdir}; load average {load_start:.1f}", flush=True)
    problems: list[str] = []

    # Untimed warm-up: JIT, the MLflow store's schema, and the champion the timed runs compare with.
    write_model(project, warmup_config(config))
    warm = run_job(spark, project, write_table(spark, project, WARMUP_ROWS))
    write_model(project, config)
    print(f"warm-up: {WARMUP_ROWS:,} rows in {warm['seconds']:.1f} s, "
          f"promoted: {warm['counts']['promotion'].get('promoted')}", flush=True)

    # (c), and the job side of (a): the job at every size, sizes ascending.
    jobs: dict[int, dict[str, Any]] = {}
    versions: dict[int, int] = {}
    for n in args.sizes:
        versions[n] = write_table(spark, project, n)
        runs = [run_job(spark, project, versions[n]) for _ in range(args.repeat)]
        for r in runs:
            problems += split_problems(r["counts"], n)
        jobs[n] = median_run(runs)
        print(f"job at {n:,} rows: {', '.join(format(r['seconds'], '.1f') for r in runs)} s", flush=True)

    # (a) the bare search on the job's own training rows at the largest size.
    model, splits, rows_train = bare_inputs(spark, project, versions[largest])
    job = jobs[largest]
    bare_counts = split_counts(splits, "label", "split")
    if bare_counts != job["counts"]["split_counts"]:
        problems.append(f"split counts at {largest:,} rows: bare {bare_counts} != job {job['counts']['split_counts']}")
    bares = [bare_fit(model, rows_train) for _ in range(args.repeat)]
    bare = median_run(bares)
    print(f"bare CrossValidator.fit at {largest:,} rows: {', '.join(format(b['seconds'], '.1f') for b in bares)} s",
          flush=True)
    # The same rows, folds, pipeline and seed: the job's search must find the same fold metrics.
    job_means = job_fold_metrics(job["counts"])
    bare["fold_metric_diff"] = (max(abs(a - b) for a, b in zip(job_means, bare["avg_metrics"]))
                                if len(job_means) == len(bare["avg_metrics"]) else math.inf)
    if not bare["fold_metric_diff"] <= FOLD_METRIC_TOLERANCE:
        problems.append(f"fold metrics at {largest:,} rows: job {job_means} != bare {bare['avg_metrics']}")
    # (d) scikit-learn on the same rows.
    try:
        if args.no_sklearn:
            reference = {"status": "skipped (--no-sklearn)"}
        else:
            try:
                import sklearn
            except ImportError:
                reference = {"status": "not installed"}
            else:
                reference = {"status": "ok", "version": sklearn.__version__, **sklearn_fit(model, splits, rows_train)}
    finally:
        rows_train.unpersist()
        splits.unpersist()

    # (b) the split alone, by split_scale's own run (its table is printed as it goes).
    split_args = split_scale.parse_args(["--sizes", ",".join(map(str, args.split_sizes)), "--repeat", str(args.repeat),
                                         "--shuffle-partitions", str(args.shuffle_partitions)])
    split_figures, split_issues = split_scale.run(spark, split_args)
    problems += split_issues

    figures = report(args, jobs, job, bare, reference, split_figures, problems)
    figures["load_average"] = {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)}
    return figures, problems


def report(args, jobs: dict[int, dict], job: dict, bare: dict, reference: dict, split_figures: dict,
           problems: list[str]) -> dict[str, Any]:
    """The tables, and the figures for the JSON line."""
    sizes, largest = args.sizes, args.sizes[-1]
    counts = job["counts"]

    # (a) overhead and where the job's time goes
    ratio = job["seconds"] / bare["seconds"]
    laps = {lap: counts["seconds"].get(lap, 0.0) for lap in LAPS}
    other = job["seconds"] - sum(laps.values())
    print_table(["run", "wall s", "CPU s", "Spark jobs", "x bare"],
                [("train.run (the job)", job["seconds"], job["cpu_s"], job["steps"]["train.run"][2], ratio),
                 ("CrossValidator.fit (bare)", bare["seconds"], bare["cpu_s"], bare["spark_jobs"], 1.0)],
                title=f"(a) the train job vs a bare CrossValidator.fit at {largest:,} rows "
                      f"(target: job <= {TARGET_OVERHEAD:.2f}x bare)")
    rows = [(label, laps[lap], 100 * laps[lap] / job["seconds"]) for lap, label in LAPS.items()]
    rows.append(("other (store connect, table version, lap rounding)", other, 100 * other / job["seconds"]))
    rows.append(("job total", job["seconds"], 100.0))
    print_table(["phase (counts['seconds'])", "seconds", "% of job"], rows,
                title=f"(a) the job's laps at {largest:,} rows; the bare fit took {bare['seconds']:.1f} s "
                      f"(tuning = class-weight count + the same fit)")
    steps = job["steps"]
    print_table(["step", "calls", "seconds", "% of job", "Spark jobs"],
                [(label, steps[function][0], steps[function][1], 100 * steps[function][1] / job["seconds"],
                  steps[function][2]) for _, function, label in STEPS if steps[function][0]],
                title=f"(a) inside the job at {largest:,} rows: its steps with their Spark jobs "
                      "(a step includes the indented ones it calls)")

    # (c) scaling
    seconds = [jobs[n]["seconds"] for n in sizes]
    slope = exponent(sizes, seconds)
    print_table(["rows", "job s", "CPU s", "s per M rows", "tuning s", "mlflow s", "promotion s", "test pr_auc",
                 "champion compared", "promoted"],
                [(n, jobs[n]["seconds"], jobs[n]["cpu_s"], jobs[n]["seconds"] / (n / 1e6),
                  jobs[n]["counts"]["seconds"].get("tuning"), jobs[n]["counts"]["seconds"].get("mlflow"),
                  jobs[n]["counts"]["seconds"].get("promotion"), jobs[n]["counts"]["metrics"]["pr_auc"],
                  "comparison" in jobs[n]["counts"]["promotion"], jobs[n]["counts"]["promotion"].get("promoted"))
                 for n in sizes],
                title="(c) the job's wall time by size" + (f": exponent {slope:.3f} (target <= {TARGET_EXPONENT})"
                                                           if slope is not None else ""))

    # (b) the split alone (split_scale printed its table above)
    small, big = args.split_sizes[0], args.split_sizes[-1]
    split_s = {n: split_figures["results"][f"rows_{n}"]["total_s"] for n in args.split_sizes}
    split_ratio = split_s[big] / split_s[small] if big != small else None

    # (d) scikit-learn next to Spark
    spark_metric = counts["metrics"]["pr_auc"]
    ref_rows = [("Spark: train.run (the job)", job["seconds"], job["cpu_s"], None, spark_metric, ""),
                ("Spark: CrossValidator.fit (bare)", bare["seconds"], bare["cpu_s"], max(bare["avg_metrics"]), None, "")]
    if reference["status"] == "ok":
        ref_rows.append((f"scikit-learn {reference['version']}: toPandas {reference['collect_s']:.1f} s + "
                         f"GridSearchCV {reference['fit_s']:.1f} s", reference["seconds"], reference["cpu_s"],
                         reference["cv_best"], reference["test_metric"], reference["best_params"]))
    else:
        ref_rows.append(("scikit-learn", None, None, None, None, reference["status"]))
    print_table(["engine", "wall s", "CPU s", "CV best", "test pr_auc", "best params"], ref_rows,
                title=f"(d) the same search, single machine: {args.algorithm} in scikit-learn at {largest:,} rows "
                      "(same training rows, folds, grid size, class weights; n_jobs=2). CV best: MLlib's "
                      "areaUnderPR (trapezoids), sklearn's average precision; test pr_auc: average precision both")

    targets = {
        "overhead": {"value": round(ratio, 3), "target": TARGET_OVERHEAD, "met": ratio <= TARGET_OVERHEAD},
        "split_ratio": {"value": None if split_ratio is None else round(split_ratio, 3), "target": big / small,
                        "met": None if split_ratio is None else split_ratio <= big / small},
        "exponent": {"value": None if slope is None else round(slope, 3), "target": TARGET_EXPONENT,
                     "met": None if slope is None else slope <= TARGET_EXPONENT},
    }
    print_table(["target", "value", "limit", "met"],
                [(f"(a) job / bare at {largest:,} rows", targets["overhead"]["value"], TARGET_OVERHEAD,
                  targets["overhead"]["met"]),
                 (f"(b) split time {big:,} / {small:,} rows", targets["split_ratio"]["value"], big / small,
                  targets["split_ratio"]["met"]),
                 ("(c) scaling exponent of the job", targets["exponent"]["value"], TARGET_EXPONENT,
                  targets["exponent"]["met"]),
                 ("results correct (split counts, fold metrics)", not problems, None, None)],
                title="targets (a report: missing one does not fail the run)")

    def job_figures(r: dict) -> dict[str, Any]:
        c = r["counts"]
        return {"seconds": round(r["seconds"], 2), "cpu_s": r["cpu_s"] and round(r["cpu_s"], 1),
                "laps": c["seconds"], "spark_jobs": r["steps"]["train.run"][2], "split_counts": c["split_counts"],
                "test_pr_auc": c["metrics"]["pr_auc"], "interval": c["interval"], "champion_compared": "comparison" in c["promotion"],
                "promoted": c["promotion"].get("promoted")}

    if reference["status"] == "ok":
        reference = {k: round(v, 4) if isinstance(v, float) else v for k, v in reference.items()}
    return {
        "benchmark": "train", "algorithm": args.algorithm, "model": model_config(args.algorithm, args.bootstrap_replicates),
        "sizes": sizes, "split_sizes": args.split_sizes, "repeat": args.repeat,
        "jobs": {str(n): job_figures(jobs[n]) for n in sizes},
        "overhead": {"rows": largest, "job_s": round(job["seconds"], 2), "bare_s": round(bare["seconds"], 2),
                     "job_cpu_s": job["cpu_s"] and round(job["cpu_s"], 1),
                     "bare_cpu_s": bare["cpu_s"] and round(bare["cpu_s"], 1),
                     "job_spark_jobs": job["steps"]["train.run"][2], "bare_spark_jobs": bare["spark_jobs"],
                     "laps": laps, "other_s": round(other, 2),
                     "steps": {function: {"calls": c, "seconds": round(t, 2), "spark_jobs": j}
                               for function, (c, t, j) in job["steps"].items()},
                     "bare_fold_metrics": bare["avg_metrics"], "fold_metric_diff": bare["fold_metric_diff"],
                     **targets["overhead"]},
        "split": {"total_s": {str(n): s for n, s in split_s.items()}, "rows_ratio": big / small,
                  **targets["split_ratio"], "results": split_figures["results"]},
        "scaling": {"seconds": {str(n): round(s, 2) for n, s in zip(sizes, seconds)}, **targets["exponent"]},
        "sklearn": {**reference, "spark_test_pr_auc": spark_metric},
        "targets_met": {name: t["met"] for name, t in targets.items()},
        "correct": not problems,
    }


if __name__ == "__main__":
    sys.exit(main())
