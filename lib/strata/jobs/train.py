"""train: a model of conf/models/NAME.yaml from its dataset's gold features table, tracked and
registered in MLflow, promoted only past a leakage-free champion/challenger gate.

    ./spark-submit.sh train --env ENV --model NAME [--table-version N] [--no-promote]

1. Pinned input: the gold features table at one Delta version (the latest by default), labelled
   rows only. Path and version go to MLflow (params, tags, a dataset input); the same version
   gives the same splits, folds, models and metrics.
2. An exact stratified split (train / validation / test) and stratified folds of the training
   rows (strata.ml.split), both functions of (seed, row key) and the snapshot.
3. The MLlib pipeline of the config, tuned by CrossValidator on those folds; the decision
   threshold maximises F-beta on the validation rows.
4. Evaluation on every test row in Spark (strata.ml.evaluate), with a Poisson-bootstrap interval
   for the primary metric; the same for the zero-rule baseline and a simple baseline model.
5. MLflow: params, metrics, split counts, plots, a datasheet, the fitted PipelineModel (signature,
   input example, pinned pip requirements) registered under the model's name with the alias
   `challenger`, its threshold as a version tag.
6. The gate: the challenger becomes `champion` only if its interval clears the zero-rule baseline
   by promotion.baseline_margin and, when a champion exists, a paired bootstrap on rows neither
   model learnt from (the challenger's test rows minus the champion's training and validation
   rows, rebuilt from the champion's logged table version and split) shows it is not worse by
   more than promotion.tolerance. --no-promote trains and registers only.

Bad input (no labelled rows, one class, a class too small for the folds, a table version that
does not exist, an unreachable tracking store) is one line, exit 1, and no registry change.

    ./spark-submit.sh train --env ENV --model NAME --estimate [--cores N] [--table-version N]

--estimate trains nothing and registers nothing (no MLflow run, no lake write): it runs steps 1
to 4 (split_rows and train_and_evaluate, what a training spends its Spark time on) on growing
samples of the pinned rows (estimate.fractions), measures each one's wall seconds and executor
core-seconds in Spark's status store (strata.stagetime), fits scaling models (strata.ml.estimate) and predicts
the full table's wall time on N cores (default: the session's defaultParallelism), its
core-hours and their cost at estimate.price_per_core_hour.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import sys
import tempfile
from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from strata import catalog
from strata.config import DatasetConfig, ModelConfig
from strata.runner import JobContext, Laps
from strata.tracking import CHALLENGER, CHAMPION, Tracking

log = logging.getLogger(__name__)

LABEL, SCORE, SPLIT, FOLD, WEIGHT, GROUP = "label", "score", "split", "fold", "weight", "split_group"


class TrainingDataError(ValueError):
    """The pinned rows cannot train this model (no labels, one class, too few rows)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a model of conf/models/")
    parser.add_argument("--table-version", type=int, default=None, metavar="N",
                        help="the gold features table's Delta version to train on (default: the latest)")
    parser.add_argument("--no-promote", action="store_true", help="train and register only; aliases other "
                        "than challenger stay")

    def cores(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
        return value

    parser.add_argument("--estimate", action="store_true", help="train nothing: predict the training's wall "
                        "time, core-hours and cost from fits on samples (estimate.fractions of the config)")
    parser.add_argument("--cores", type=cores, default=None, metavar="N", help="with --estimate: the cluster's "
                        "executor cores to predict for (default: the session's default parallelism)")


def run(ctx: JobContext) -> dict:
    model = ctx.config.model(ctx.args.model)
    dataset = ctx.config.dataset(model.dataset)
    if getattr(ctx.args, "estimate", False):
        return estimate(ctx, dataset, model)
    if getattr(ctx.args, "cores", None) is not None:
        raise ValueError("--cores is the cluster size of an estimate: it goes with --estimate")
    # Before Spark: an unreachable store fails the run with nothing trained or registered.
    tracking = Tracking.connect(ctx.config.mlflow)
    table = catalog.features(dataset)
    version, rows = pinned_rows(ctx, dataset, model, ctx.args.table_version)
    counts = ctx.counts
    counts.update(model=model.name, table=table.qualified_name, table_version=version)
    lap = Laps(counts)

    splits = split_rows(rows, dataset, model).cache()
    outcome = None
    try:
        outcome = train_and_evaluate(splits, dataset, model, lap)
        outcome["table_version"] = version
        counts.update(split_counts=outcome["split_counts"], metrics=outcome["metrics"],
                      interval=outcome["interval"], threshold=outcome["threshold"])
        registered = log_to_mlflow(ctx, tracking, dataset, model, table, version, outcome)
        lap("mlflow")
        counts.update(mlflow_run_id=registered["run_id"], model_version=registered["version"])
        if ctx.args.no_promote:
            counts["promotion"] = {"decision": "not considered (--no-promote)"}
        else:
            counts["promotion"] = promote(ctx, tracking, dataset, model, outcome, registered)
            lap("promotion")
    finally:
        splits.unpersist()
        if outcome is not None:
            outcome["test_scored"].unpersist()
    return counts


# --- input ---------------------------------------------------------------------------------------

def pinned_rows(ctx: JobContext, dataset: DatasetConfig, model: ModelConfig,
                version: int | None) -> tuple[int, DataFrame]:
    """(version, labelled rows of the gold features table at that version): keys, features, label."""
    lake, table = ctx.lake, catalog.features(dataset)
    if not lake.exists(table):
        raise TrainingDataError(f"{table.qualified_name} does not exist: run gold for {dataset.name} first")
    latest = lake.version(table)
    if version is None:
        version = latest
    elif not 0 <= version <= latest:
        raise TrainingDataError(f"{table.qualified_name} has no version {version} (versions 0 to {latest})")
    try:
        frame = lake.read(table, version=version)
    except Exception as exc:  # noqa: BLE001 - e.g. the version's files were vacuumed
        raise TrainingDataError(f"{table.qualified_name} version {version} cannot be read: "
                                f"{str(exc).strip().splitlines()[0]}") from None
    columns = [*dataset.keys, *_features(model), LABEL]
    if model.split.group and model.split.group not in columns:
        columns.append(model.split.group)
    return version, frame.where(F.col(LABEL).isNotNull()).select(*columns).withColumn(LABEL, F.col(LABEL).cast("int"))


def _features(model: ModelConfig) -> list[str]:
    return [*model.numeric_features, *model.categorical_features]


def split_rows(rows: DataFrame, dataset: DatasetConfig, model: ModelConfig) -> DataFrame:
    """The rows with their split; TrainingDataError when they cannot train the model."""
    from strata.ml.split import stratified_split

    per_class = {r[LABEL]: r["count"] for r in rows.groupBy(LABEL).count().collect()}
    check_classes(per_class, dataset, model)
    fractions = {"train": model.split.train, "validation": model.split.validation, "test": model.split.test}
    return stratified_split(rows, LABEL, dataset.keys, fractions, model.seed, group=model.split.group, column=SPLIT)


def check_classes(per_class: dict[int, int], dataset: DatasetConfig, model: ModelConfig) -> None:
    """TrainingDataError when rows of these counts per class cannot train the model."""
    if not per_class:
        raise TrainingDataError(f"{model.name}: no labelled rows in gold/{dataset.name}_features")
    if len(per_class) < 2:
        raise TrainingDataError(f"{model.name}: every labelled row is of class {next(iter(per_class))}: "
                                "a classifier needs both classes")
    smallest = min(per_class, key=per_class.get)
    if per_class[smallest] * model.split.train < model.folds:
        raise TrainingDataError(f"{model.name}: class {smallest} has {per_class[smallest]} labelled row(s), "
                                f"too few for {model.folds} folds of its {model.split.train:.0%} training share")


# --- training and evaluation ---------------------------------------------------------------------

def train_and_evaluate(splits: DataFrame, dataset: DatasetConfig, model: ModelConfig, lap: Laps) -> dict:
    """Fits, tunes, picks the threshold and evaluates; everything the log and the gate need."""
    from strata.ml import estimators, evaluate, monitoring
    from strata.ml.split import split_counts, stratified_folds

    keys = dataset.keys
    train = splits.where(F.col(SPLIT) == "train").drop(SPLIT)
    validation = splits.where(F.col(SPLIT) == "validation").drop(SPLIT)
    test = splits.where(F.col(SPLIT) == "test").drop(SPLIT)
    train = stratified_folds(train, LABEL, keys, model.folds, model.seed, group=model.split.group, column=FOLD)
    # the baseline model trains with the same class weights as the searched pipeline
    train, weights = estimators.with_class_weights(train, model, label=LABEL, weight=WEIGHT)
    train = train.cache()
    try:
        lap("split")
        fitted, tuning = estimators.cross_validate(train, model, fold_col=FOLD)
        lap("tuning")
        baseline = (estimators.baseline_pipeline(model).fit(train) if model.baseline_features else None)
        lap("baseline_fit")
    finally:
        train.unpersist()

    def scored(pipeline_model, rows):
        return estimators.positive_probability(pipeline_model.transform(rows), out=SCORE).select(*keys, LABEL, SCORE)

    threshold, validation_fbeta = evaluate.best_threshold(scored(fitted, validation), LABEL, SCORE, model.beta)
    test_scored = scored(fitted, test).cache()
    metrics = evaluate.binary_metrics(test_scored, LABEL, SCORE, threshold, model.beta)
    lap("evaluation")
    interval = evaluate.bootstrap_interval(test_scored, LABEL, SCORE, keys, model.primary_metric,
                                           replicates=model.bootstrap_replicates, seed=model.seed,
                                           threshold=threshold, beta=model.beta)
    lap("bootstrap")
    train_rate = _positive_rate(splits.where(F.col(SPLIT) == "train"))
    zero = evaluate.zero_rule(test, LABEL, positive_rate=train_rate)
    outcome = {
        "model": fitted, "test_scored": test_scored, "table_version": None, "threshold": threshold,
        "validation_f_beta": validation_fbeta, "metrics": metrics, "interval": interval,
        "zero_rule": zero, "tuning": tuning, "class_weights": weights,
        "split_counts": split_counts(splits, LABEL, SPLIT),
        "learnt": splits.where(F.col(SPLIT) != "test").select(*keys, _group_value(model), SPLIT),
        "calibration": evaluate.calibration(test_scored, LABEL, SCORE),
        "importances": estimators.feature_importances(fitted, model),
    }
    if baseline is not None:
        base_threshold, _ = evaluate.best_threshold(scored(baseline, validation), LABEL, SCORE, model.beta)
        outcome["baseline"] = {"threshold": base_threshold, "metrics": evaluate.binary_metrics(
            scored(baseline, test), LABEL, SCORE, base_threshold, model.beta)}
    lap("baselines")
    # the monitor's reference for this version: its training rows and its scores on the test rows
    outcome["reference_profile"] = monitoring.reference_profile(
        splits.where(F.col(SPLIT) == "train"), test_scored, SCORE, threshold, model).to_dict()
    lap("reference_profile")
    return outcome


def _group_value(model: ModelConfig):
    """The row's split group as a string (null without split.group): one schema for every config."""
    return (F.col(model.split.group).cast("string") if model.split.group else F.lit(None).cast("string")).alias(GROUP)


def _positive_rate(rows: DataFrame) -> float:
    return float(rows.agg(F.avg(F.col(LABEL).cast("double"))).first()[0])


# --- estimate -----------------------------------------------------------------------------------

def estimate(ctx: JobContext, dataset: DatasetConfig, model: ModelConfig) -> dict:
    """--estimate: split_rows and train_and_evaluate on growing samples of the pinned rows, each
    measured (wall seconds, executor core-seconds); the scaling models fitted on them predict the
    full table. Nothing is logged, registered or written."""
    from strata.ml import estimate as scaling
    from strata.stagetime import Measure

    settings = ctx.config.estimate
    table = catalog.features(dataset)
    version, rows = pinned_rows(ctx, dataset, model, ctx.args.table_version)
    counts = ctx.counts
    counts.update(model=model.name, table=table.qualified_name, table_version=version, estimate=True)
    per_class = {r[LABEL]: r["count"] for r in rows.groupBy(LABEL).count().collect()}
    check_classes(per_class, dataset, model)  # the full table cannot train: nothing to estimate
    total = sum(per_class.values())
    fractions = scaling.smallest_trainable(settings.fractions, per_class, model.split.train, model.folds)
    if len(fractions) < 2:
        raise TrainingDataError(
            f"{model.name}: {total:,} labelled rows (smallest class {min(per_class.values()):,}) are too few to "
            f"estimate from samples {settings.fractions}: fewer than two of them would hold {2 * model.folds} "
            f"training rows of each class ({model.folds} folds); set larger estimate.fractions, or train")
    skipped = [f for f in settings.fractions if f not in fractions]
    if skipped:
        log.info("%s: samples %s are too small to train; estimating from %s", model.name, skipped, fractions)
    spark, samples = ctx.spark, []
    counts.update(samples=samples, skipped_fractions=skipped)

    def fit(fraction: float) -> int:
        """What a training does, on a sample; its rows."""
        sample = rows.sample(withReplacement=False, fraction=fraction, seed=model.seed)
        try:
            splits = split_rows(sample, dataset, model).cache()
        except TrainingDataError as exc:
            raise TrainingDataError(f"the {fraction:.0%} sample cannot train: {exc}") from None
        try:
            outcome = train_and_evaluate(splits, dataset, model, Laps({}))
            outcome["test_scored"].unpersist()
        finally:
            splits.unpersist()
        return sum(n for per_split in outcome["split_counts"].values() for n in per_split.values())

    # Not measured: the first fit of a session also pays the JIT's compiling and the Python
    # workers' start, work that does not grow with the rows and would flatten the model.
    with Measure(spark) as warmup:
        fit(fractions[0])
    counts["warmup"] = warmup.figures()
    for fraction in fractions:
        with Measure(spark) as measure:
            sampled = fit(fraction)
        samples.append({"fraction": fraction, "rows": sampled, **measure.figures()})
        log.info("%s: %.0f%% sample, %d rows: %.1f s wall, %.1f executor core-seconds", model.name,
                 100 * fraction, sampled, measure.wall_seconds, measure.core_seconds)
    measured_cores = spark.sparkContext.defaultParallelism
    sizes, core_seconds = [s["rows"] for s in samples], [s["core_seconds"] for s in samples]
    work = scaling.fit_work(sizes, core_seconds)
    serial = scaling.fit_serial(sizes, [s["wall_seconds"] for s in samples], core_seconds, measured_cores)
    cores = getattr(ctx.args, "cores", None) or measured_cores
    prediction = scaling.predict(work, serial, total, cores, settings.price_per_core_hour)
    counts.update(scaling={"work": work, "serial": serial, "measured_cores": measured_cores},
                  prediction={k: (round(v, 6) if isinstance(v, float) else v) for k, v in prediction.items()})
    print(scaling.readable(samples, work, serial, prediction), file=sys.stderr, flush=True)
    return counts


# --- MLflow -------------------------------------------------------------------------------------

def log_to_mlflow(ctx: JobContext, tracking: Tracking, dataset: DatasetConfig, model: ModelConfig,
                  table, version: int, outcome: dict) -> dict:
    """One MLflow run: params, metrics, plots, datasheet and the registered model (alias challenger)."""
    import mlflow
    import mlflow.spark
    import pyspark
    from mlflow.exceptions import MlflowException
    from mlflow.models import infer_signature
    from pyspark.ml.classification import LogisticRegressionModel

    from strata.ml import monitoring, plots

    table_path = ctx.lake.path(table)
    primary = model.primary_metric
    with mlflow.start_run(run_name=f"{model.name}-{ctx.run_id}") as run:
        mlflow.set_tags({"strata.model": model.name, "strata.dataset": dataset.name, "strata.table": table.qualified_name,
                         "strata.table_version": str(version), "strata.run_id": ctx.run_id,
                         "strata.run_date": ctx.run_date.isoformat()})
        mlflow.log_params({
            "algorithm": model.algorithm, "numeric_features": ",".join(model.numeric_features),
            "categorical_features": ",".join(model.categorical_features), "grid": json.dumps(model.grid),
            "seed": model.seed, "folds": model.folds, "split_train": model.split.train,
            "split_validation": model.split.validation, "split_test": model.split.test,
            "split_group": model.split.group or "", "class_weights": model.class_weights, "beta": model.beta,
            "primary_metric": primary, "bootstrap_replicates": model.bootstrap_replicates,
            "table_path": table_path, "table_version": version, "threshold": outcome["threshold"],
            **{f"best_{k}": v for k, v in outcome["tuning"]["best_params"].items()}})
        # A Delta dataset source by path and version (load_delta would need the JVM connector).
        # MLflow recognises only local and DBFS Delta paths: on S3 the params and tags hold them.
        try:
            mlflow.log_input(mlflow.data.from_spark(ctx.lake.read(table, version=version), path=table_path,
                                                    version=str(version), name=table.qualified_name, targets=LABEL),
                             context="training")
        except MlflowException as exc:
            log.warning("%s: dataset input not logged (%s); table_path and table_version are params",
                        model.name, str(exc).splitlines()[0])
        interval = outcome["interval"]
        metrics = {f"test_{k}": v for k, v in outcome["metrics"].items() if isinstance(v, (int, float))}
        metrics.update({f"test_{primary}_low": interval["low"], f"test_{primary}_high": interval["high"],
                        "validation_f_beta": outcome["validation_f_beta"]})
        metrics.update({f"zero_rule_{k}": v for k, v in outcome["zero_rule"].items() if isinstance(v, (int, float))})
        if "baseline" in outcome:
            metrics.update({f"baseline_{k}": v for k, v in outcome["baseline"]["metrics"].items()
                            if isinstance(v, (int, float))})
        for split, per_class in outcome["split_counts"].items():
            for label, count in per_class.items():
                metrics[f"rows_{split}_class_{label}"] = count
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})

        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            curves = plots.curve_points(outcome["test_scored"], LABEL, SCORE)
            auc = {"roc_auc": outcome["metrics"]["roc_auc"], "pr_auc": outcome["metrics"]["pr_auc"],
                   "positive_rate": outcome["zero_rule"].get("positive_rate", 0.0)}
            plots.write_all(folder / "plots", curves, auc, outcome["metrics"]["confusion"],
                            outcome["calibration"], outcome["importances"], model.name)
            # The same points as data: the run report draws the champion's curves from them.
            (folder / plots.CURVES_ARTIFACT).parent.mkdir(parents=True)
            (folder / plots.CURVES_ARTIFACT).write_text(json.dumps(
                plots.evaluation_record(curves, auc, outcome["metrics"], outcome["threshold"])))
            (folder / "datasheet.md").write_text(datasheet(ctx, dataset, model, table, version, outcome))
            (folder / "tuning.json").write_text(json.dumps(outcome["tuning"], indent=2, default=str))
            (folder / monitoring.REFERENCE_ARTIFACT).parent.mkdir(parents=True)
            (folder / monitoring.REFERENCE_ARTIFACT).write_text(json.dumps(outcome["reference_profile"]))
            mlflow.log_artifacts(str(folder))

        # Before the model is registered: a version whose learnt rows were not kept falls back to
        # rebuilding its split by time travel (compare_with_champion).
        learnt = catalog.learnt_rows(model.name)
        ctx.lake.append(learnt, outcome["learnt"].withColumn("mlflow_run_id", F.lit(run.info.run_id)))
        mlflow.set_tag("strata.learnt_rows", learnt.qualified_name)

        # The registered model predicts at the tuned threshold, not at 0.5.
        classifier, threshold = outcome["model"].stages[-1], outcome["threshold"]
        if isinstance(classifier, LogisticRegressionModel):
            classifier.setThreshold(threshold)  # its threshold and thresholds must agree
        else:
            classifier.setThresholds([1 - threshold, threshold])  # class 1 when p1 / t > p0 / (1 - t)
        # Numeric features as doubles: the pipeline casts them itself, and a signature has no
        # decimal type (gold keeps some columns decimal).
        example_rows = (ctx.lake.read(table, version=version).where(F.col(LABEL).isNotNull())
                        .select(*[F.col(c).cast("double").alias(c) for c in model.numeric_features],
                                *model.categorical_features).limit(5).cache())
        example = example_rows.toPandas()
        signature = infer_signature(example, outcome["model"].transform(example_rows).select("prediction").toPandas())
        example_rows.unpersist()
        info = mlflow.spark.log_model(
            outcome["model"], "model", signature=signature, input_example=example,
            pip_requirements=[f"pyspark=={pyspark.__version__}", f"mlflow=={mlflow.__version__}"],
            registered_model_name=model.name)
        registered = info.registered_model_version
        tracking.client.set_model_version_tag(model.name, str(registered), "threshold", str(outcome["threshold"]))
        tracking.client.set_model_version_tag(model.name, str(registered), "table_version", str(version))
        tracking.client.set_model_version_tag(model.name, str(registered), "config_digest", config_digest(model))
        tracking.client.set_model_version_tag(model.name, str(registered), "run_date", ctx.run_date.isoformat())
        tracking.set_alias(model.name, CHALLENGER, registered)
        return {"run_id": run.info.run_id, "version": str(registered)}


def datasheet(ctx: JobContext, dataset: DatasetConfig, model: ModelConfig, table, version: int, outcome: dict) -> str:
    """Markdown: where the rows came from, how many per split and class, the features and their
    preprocessing, rows excluded upstream (quarantine counts) and the label distribution."""
    lines = [f"# {model.name}: datasheet", "",
             f"- Source: `{table.qualified_name}` at Delta version {version} (labelled rows only)",
             f"- Label: `{dataset.gold.label}`", f"- Algorithm: {model.algorithm}; grid {json.dumps(model.grid)}; "
             f"{model.folds} stratified folds; class weights {model.class_weights} {outcome['class_weights']}",
             f"- Split: exact per class, seed {model.seed}, fractions train {model.split.train} / validation "
             f"{model.split.validation} / test {model.split.test}" + (f", grouped by `{model.split.group}`" if model.split.group else ""),
             f"- Decision threshold {outcome['threshold']:.4f} (max F{model.beta:g} on validation)", "",
             "## Rows per split and class", "", "| split | class 0 | class 1 | positive share |", "| --- | --- | --- | --- |"]
    for split in ("train", "validation", "test"):
        per_class = outcome["split_counts"].get(split, {})
        zero, one = per_class.get(0, 0), per_class.get(1, 0)
        lines.append(f"| {split} | {zero:,} | {one:,} | {one / max(zero + one, 1):.3f} |")
    lines += ["", "## Features", "", "| feature | kind | preprocessing |", "| --- | --- | --- |"]
    lines += [f"| {c} | numeric | median imputation (training rows){'; scaled' if model.algorithm == 'logistic_regression' else ''} |"
              for c in model.numeric_features]
    lines += [f"| {c} | categorical | indexed by frequency, one-hot; unseen categories share one slot |"
              for c in model.categorical_features]
    lines += ["", "## Rows excluded upstream", ""]
    lines += _excluded_upstream(ctx, dataset) or ["none quarantined"]
    return "\n".join(lines) + "\n"


def _excluded_upstream(ctx: JobContext, dataset: DatasetConfig) -> list[str]:
    lines = []
    for table in (catalog.quarantine_of(catalog.silver(dataset)), catalog.quarantine_of(catalog.features(dataset))):
        if not ctx.lake.exists(table):
            continue
        reasons = (ctx.lake.read(table).select(F.explode("failed_rules").alias("rule"))
                   .groupBy("rule").count().orderBy(F.desc("count")).collect())
        lines += [f"- `{table.qualified_name}`: {r['count']:,} row(s): {r.rule}" for r in reasons]
    return lines


# Keys that change how the model is run or scored, not what is learnt: no retraining for them.
NOT_LEARNT = ("parallelism", "shadow", "retrain_after_days", "monitoring")


def config_digest(model: ModelConfig) -> str:
    """A digest of what the model's config says to learn: a changed one is a new model to train."""
    learnt = {k: v for k, v in dataclasses.asdict(model).items() if k not in NOT_LEARNT}
    text = json.dumps(learnt, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def current_version(tracking: Tracking, model: ModelConfig, run_date: dt.date) -> tuple[str, str] | None:
    """(version, its run date) of the newest registered version trained with this config whose
    gate decided (a run that died before the gate does not count) and that is less than
    model.retrain_after_days older than run_date (a backfill of earlier days counts it as
    current); None when the model is due for training."""
    digest, newest = config_digest(model), None
    for version in tracking.client.search_model_versions(f"name='{model.name}'"):
        tags = version.tags or {}
        if tags.get("config_digest") != digest or "promotion" not in tags or "run_date" not in tags:
            continue
        trained_on = dt.date.fromisoformat(tags["run_date"])
        if (run_date - trained_on).days < model.retrain_after_days and \
                (newest is None or int(version.version) > int(newest[0])):
            newest = (str(version.version), trained_on.isoformat())
    return newest


def version_trained_for(tracking: Tracking, model: ModelConfig, run_date: dt.date) -> str | None:
    """The newest registered version trained with this config for run_date whose gate decided,
    whatever versions were trained for later dates; None if there is none."""
    digest, found = config_digest(model), None
    for version in tracking.client.search_model_versions(f"name='{model.name}'"):
        tags = version.tags or {}
        if tags.get("config_digest") == digest and "promotion" in tags and tags.get("run_date") == run_date.isoformat() \
                and (found is None or int(version.version) > int(found)):
            found = str(version.version)
    return found


# --- promotion ----------------------------------------------------------------------------------

def promote(ctx: JobContext, tracking: Tracking, dataset: DatasetConfig, model: ModelConfig,
            outcome: dict, registered: dict) -> dict:
    """The gate's decision, with its evidence, also as tags of the MLflow run."""
    primary, promotion = model.primary_metric, model.promotion
    challenger = registered["version"]
    floor = outcome["zero_rule"][primary] + promotion.baseline_margin
    decision = {"challenger": challenger, "metric": primary, "interval": outcome["interval"],
                "zero_rule": outcome["zero_rule"][primary], "required_low": floor}
    champion = tracking.version_by_alias(model.name, CHAMPION)
    decision["champion"] = str(champion.version) if champion is not None else None
    clears_baseline = outcome["interval"]["low"] > floor
    reasons = [] if clears_baseline else [
        f"the interval's low end {outcome['interval']['low']:.4f} does not clear the zero-rule baseline "
        f"{decision['zero_rule']:.4f} by {promotion.baseline_margin}"]
    if champion is not None:
        # compared whatever the baseline said: the evidence is recorded either way
        comparison = compare_with_champion(ctx, dataset, model, outcome, champion)
        decision["comparison"] = comparison
        if comparison.get("error"):
            reasons.append(comparison["error"])
        elif not comparison["low"] >= -promotion.tolerance:  # NaN (no defined replicate) never passes
            reasons.append(f"worse than champion {champion.version}: paired interval low {comparison['low']:.4f} "
                           f"< -{promotion.tolerance}")
    decision["promoted"] = not reasons
    if reasons:
        decision["reason"] = "; ".join(reasons)
    elif champion is None:
        decision["reason"] = "first model to clear the zero-rule baseline"
    else:
        decision["reason"] = (f"clears the zero-rule baseline and is not worse than champion {champion.version} by "
                              f"more than {promotion.tolerance} (paired interval low {decision['comparison']['low']:.4f})")
    # The evidence first: an alias never moves without it.
    tracking.client.set_tag(registered["run_id"], "strata.promotion", json.dumps(decision, default=str))
    tracking.client.set_model_version_tag(model.name, challenger, "promotion",
                                          "promoted" if decision["promoted"] else "not promoted")
    if decision["promoted"]:
        tracking.set_alias(model.name, CHAMPION, challenger)
    log.info("%s: version %s %s: %s", model.name, challenger,
             "promoted to champion" if decision["promoted"] else "not promoted", decision["reason"])
    return decision


def compare_with_champion(ctx: JobContext, dataset: DatasetConfig, model: ModelConfig, outcome: dict, champion) -> dict:
    """Paired bootstrap of challenger - champion on the challenger's test rows that the champion
    neither trained nor tuned on (its split rebuilt from its run's table version and config).
    Never raises once the challenger is registered: a failure is the comparison's error, and the
    challenger is then not promoted."""
    try:
        return _compare_with_champion(ctx, dataset, model, outcome, champion)
    except Exception as exc:  # noqa: BLE001 - the decision records why; the registry stays as it is
        log.warning("%s: comparison with champion %s failed", model.name, champion.version, exc_info=True)
        return {"error": f"comparing with champion {champion.version} failed: {type(exc).__name__}: "
                         f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}; not promoted"}


def _compare_with_champion(ctx: JobContext, dataset: DatasetConfig, model: ModelConfig, outcome: dict, champion) -> dict:
    import mlflow
    import mlflow.spark

    from strata.ml import estimators, evaluate
    from strata.ml.split import stratified_split

    run = mlflow.get_run(champion.run_id)
    params = run.data.params
    try:
        champion_version = int(params["table_version"])
        fractions = {"train": float(params["split_train"]), "validation": float(params["split_validation"]),
                     "test": float(params["split_test"])}
        seed, group = int(params["seed"]), params.get("split_group") or None
    except (KeyError, ValueError) as exc:
        return {"error": f"champion {champion.version}'s run lacks its split parameters ({exc}): not compared, not promoted"}
    table = catalog.features(dataset)
    # by group when the champion split by group: a group it trained on is seen in every row
    seen_by = [GROUP] if group else dataset.keys
    learnt = _kept_learnt_rows(ctx, model, run.info.run_id, seen_by)
    learnt_from = catalog.learnt_rows(model.name).qualified_name
    if learnt is None:
        learnt_from = f"{table.qualified_name} version {champion_version} (split rebuilt)"
        try:
            champion_rows = ctx.lake.read(table, version=champion_version).where(F.col(LABEL).isNotNull())
            columns = [*dataset.keys, LABEL] + ([group] if group else [])
            learnt = (stratified_split(champion_rows.select(*columns).withColumn(LABEL, F.col(LABEL).cast("int")),
                                       LABEL, dataset.keys, fractions, seed, group=group, column=SPLIT)
                      .where(F.col(SPLIT) != "test")
                      .select(*([F.col(group).cast("string").alias(GROUP)] if group else dataset.keys)).distinct())
        except Exception as exc:  # noqa: BLE001 - e.g. that version vacuumed: the comparison would leak
            return {"error": f"champion {champion.version}'s learnt rows were not kept and its split cannot be rebuilt "
                             f"from {table.qualified_name} version {champion_version}: "
                             f"{str(exc).strip().splitlines()[0]}; not promoted"}
    # every gold column: the champion may use features the current config no longer names
    gold = ctx.lake.read(table, version=outcome["table_version"]).drop(LABEL)
    test = outcome["test_scored"].withColumnRenamed(SCORE, "challenger_score").join(gold, dataset.keys)
    if group:
        test = test.withColumn(GROUP, F.col(group).cast("string"))
    unseen = test.join(learnt, seen_by, "left_anti")
    champion_model = mlflow.spark.load_model(f"models:/{model.name}/{champion.version}")
    both = estimators.positive_probability(champion_model.transform(unseen), out="champion_score") \
        .select(*dataset.keys, LABEL, "challenger_score", "champion_score").cache()
    try:
        rows = both.count()
        if rows == 0:
            return {"error": "no test row of the challenger is unseen by the champion: not compared, not promoted"}
        difference = evaluate.paired_bootstrap_difference(
            both, LABEL, "challenger_score", "champion_score", dataset.keys, model.primary_metric,
            replicates=model.bootstrap_replicates, seed=model.seed)
    finally:
        both.unpersist()
    return {**difference, "rows": rows, "champion_table_version": champion_version, "learnt_from": learnt_from}


def _kept_learnt_rows(ctx: JobContext, model: ModelConfig, run_id: str, seen_by: list[str]) -> DataFrame | None:
    """The champion run's learnt rows as train kept them (distinct seen_by values), None if not kept."""
    table = catalog.learnt_rows(model.name)
    if not ctx.lake.exists(table):
        return None
    rows = ctx.lake.read(table).where(F.col("mlflow_run_id") == run_id)
    if rows.limit(1).count() == 0:
        return None
    return rows.select(*seen_by).distinct()
