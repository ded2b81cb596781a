"""train --estimate: the scaling models against hand-computed values, and the job on tiny gold
with the session SparkSession (it must train, log, register and write nothing)."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shutil
import subprocess
import sys
import uuid

import mlflow
import pytest

from strata import catalog
from strata.config import ConfigError, load_config
from strata.jobs import train
from strata.ml import estimate
from strata.runner import JobContext
from strata.tracking import Tracking

from conftest import REPO
from ml_data import TINY_MODEL, gold_rows


# --- the models: exact synthetic points ----------------------------------------------------------

def test_the_work_model_recovers_a_line_with_a_fixed_cost():
    rows = [1000, 2000, 5000, 10000]
    fit = estimate.fit_work(rows, [40 + 0.006 * r for r in rows])  # 46, 52, 70, 100
    assert fit["p"] == 1.0 and fit["a"] == pytest.approx(40) and fit["b"] == pytest.approx(0.006)
    assert fit["relative_rmse"] == pytest.approx(0, abs=1e-9)
    assert estimate.at(fit, 100_000) == pytest.approx(640)


def test_the_work_model_finds_the_exponent_of_its_grid_when_asked_to():
    rows = [100, 400, 900, 1600]
    fit = estimate.fit_work(rows, [5 + 2 * math.sqrt(r) for r in rows], estimate.EXPONENTS)  # 25, 45, 65, 85
    assert fit["p"] == 0.5 and fit["a"] == pytest.approx(5) and fit["b"] == pytest.approx(2)
    fit = estimate.fit_work([10, 20, 30], [100, 400, 900], estimate.EXPONENTS)  # 1 x rows^2: no fixed cost
    assert fit["p"] == 2.0 and fit["a"] == pytest.approx(0, abs=1e-9) and fit["b"] == pytest.approx(1)


def test_two_samples_give_the_line_through_them_and_a_negative_intercept_goes_through_the_origin():
    fit = estimate.fit_work([100, 300], [12, 20])
    assert (fit["p"], fit["a"], fit["b"]) == (1.0, pytest.approx(8), pytest.approx(0.04))
    # 10 -> 5, 20 -> 20: the line 5 + 1.5 (x - 10) would cross zero at x = 6.67; through the origin,
    # relative least squares: b = sum(x y / y^2) / sum(x^2 / y^2) = (2 + 1) / (4 + 1) = 0.6
    fit = estimate.fit_work([10, 20], [5, 20])
    assert fit["a"] == 0 and fit["b"] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="two sizes"):
        estimate.fit_work([10, 10], [5, 6])


def test_the_serial_model_and_the_prediction():
    # on 2 cores: wall = 10 s serial + core-s / 2
    core = [16, 32, 64]
    serial = estimate.fit_serial([1000, 2000, 4000], [10 + c / 2 for c in core], core, cores=2)  # 18, 26, 42
    assert serial["a"] == pytest.approx(10) and serial["b"] == pytest.approx(0, abs=1e-12) and serial["cores"] == 2
    # wall below core-s / cores (a busy machine stretches task time): no serial part, not a negative one
    assert estimate.fit_serial([1000, 2000], [7, 15], [16, 32], cores=2)["a"] == 0
    work = {"a": 10.0, "b": 0.001, "p": 1.0}
    # 1,000,000 rows: 1010 core-s; on 8 cores: 10 + 1010 / 8 = 136.25 s
    p = estimate.predict(work, serial, 1_000_000, 8, price_per_core_hour=0.5)
    assert p["core_seconds"] == pytest.approx(1010) and p["wall_seconds"] == pytest.approx(136.25)
    assert p["core_hours"] == pytest.approx(1010 / 3600)
    assert p["cluster_core_hours"] == pytest.approx(8 * 136.25 / 3600)
    assert p["cost"] == pytest.approx(0.5 * 8 * 136.25 / 3600)
    assert p["efficiency"] == pytest.approx(1010 / (8 * 136.25))
    assert (p["rows"], p["cores"], p["price_per_core_hour"]) == (1_000_000, 8, 0.5)


def test_fractions_too_small_to_train_are_left_out():
    # smallest class 500 rows, 60% train, 2 folds: a sample needs 500 f 0.6 >= 4, f >= 1.33%
    assert estimate.smallest_trainable([0.01, 0.02, 0.05], {0: 4000, 1: 500}, 0.6, 2) == [0.02, 0.05]


@pytest.mark.parametrize("override, message", [
    ("fractions: [0.5]", "must hold at least two shares"),
    ("fractions: [0.2, 0.1]", "must be increasing shares"),
    ("fractions: [0.5, 1.0]", "must be increasing shares"),
    ("price_per_core_hour: -1", "must be at least 0"),
])
def test_estimate_settings_are_checked(tmp_path, override, message):
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    (tmp_path / "conf" / "local.yaml").write_text((tmp_path / "conf" / "local.yaml").read_text()
                                                  + f"\nestimate:\n  {override}\n")
    with pytest.raises(ConfigError, match=rf"local.yaml: key 'estimate\.\w+' {message}"):
        load_config("local", tmp_path / "conf", environ={})


def test_the_estimate_arguments_pass_the_check_without_spark():
    command = [sys.executable, "-m", "strata.runner", "--check", "train", "--model", "tips", "--estimate"]
    assert subprocess.run([*command, "--cores", "16"], cwd=REPO, capture_output=True).returncode == 0
    bad = subprocess.run([*command, "--cores", "0"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 1 and "--cores: must be at least 1" in json.loads(bad.stdout.splitlines()[-1])["error"]


ROWS = 60_000

# --- the job -------------------------------------------------------------------------------------

def context(spark, project, **args):
    environ = {"STRATA_LAKE__ROOT": str(project / "lake"),
               "STRATA_MLFLOW__TRACKING_URI": f"sqlite:///{project}/mlflow.db",
               "STRATA_MLFLOW__ARTIFACT_LOCATION": str(project / "artifacts"),
               "STRATA_ESTIMATE__FRACTIONS": "[0.03, 0.9]", "STRATA_ESTIMATE__PRICE_PER_CORE_HOUR": "0.25"}
    config = load_config("local", project / "conf", environ=environ)
    namespace = argparse.Namespace(**{"model": "tiny", "table_version": None, "no_promote": False,
                                      "estimate": True, "cores": None, **args})
    return JobContext("train", "local", uuid.uuid4().hex[:12], dt.date(2024, 1, 8), config, namespace, _spark=spark)


@pytest.fixture
def project(tmp_path):
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    (tmp_path / "conf" / "models" / "tiny.yaml").write_text(TINY_MODEL)
    return tmp_path


def lake_files(project):
    return sorted(str(p.relative_to(project)) for p in (project / "lake").rglob("*") if p.is_file())


def test_the_estimate_measures_growing_samples_and_trains_nothing(spark, project, capsys):
    """A warm-up fit and two measured ones (every fit is some 600 small Spark stages whatever its
    rows: this takes a minute or more). 1,800 and 54,000 rows: a difference of work the noise of
    a busy machine does not hide."""
    ctx = context(spark, project, cores=8)
    features = catalog.features(ctx.config.dataset("trips"))
    ctx.lake.overwrite(features, gold_rows(spark, ROWS, seed=1))
    tracking = Tracking.connect(ctx.config.mlflow)  # a real, empty store and registry
    before = lake_files(project)

    counts = train.run(ctx)
    (project / 'counts.json').write_text(json.dumps(counts, default=str))  # for a failed run's reader

    samples = counts["samples"]
    assert [s["fraction"] for s in samples] == [0.03, 0.9]
    assert abs(samples[0]["rows"] - 0.03 * ROWS) < 300 and abs(samples[1]["rows"] - 0.9 * ROWS) < 1500
    assert all(s["core_seconds"] > 0 and s["wall_seconds"] > 0 and s["stages"] > 0 for s in samples)
    # the CPU time grows with the rows; task time (core-seconds) also counts a task's wait for a
    # core, which on a loaded machine can outweigh this little work
    assert samples[0]["cpu_seconds"] < samples[1]["cpu_seconds"]
    work, prediction = counts["scaling"]["work"], counts["prediction"]
    assert work["form"] == "core_seconds = a + b * rows^p" and work["b"] > 0
    assert prediction["rows"] == ROWS and prediction["cores"] == 8 and prediction["price_per_core_hour"] == 0.25
    assert prediction["core_seconds"] > samples[1]["core_seconds"] and prediction["wall_seconds"] > 0
    assert prediction["cost"] == pytest.approx(0.25 * prediction["cluster_core_hours"], rel=1e-4)
    assert counts["scaling"]["measured_cores"] == spark.sparkContext.defaultParallelism
    assert f"full table: {ROWS:,} rows on 8 cores" in capsys.readouterr().err

    # nothing trained, logged, registered or written
    assert tracking.client.search_registered_models() == []
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []
    assert lake_files(project) == before and ctx.lake.version(features) == 0
    assert not ctx.lake.exists(catalog.learnt_rows("tiny"))
    assert json.loads(json.dumps(counts, default=str))  # a summary line can hold it


def test_an_estimate_without_labelled_rows_or_with_too_few_is_one_line(spark, project):
    from pyspark.sql import functions as F

    ctx = context(spark, project)
    features = catalog.features(ctx.config.dataset("trips"))
    with pytest.raises(train.TrainingDataError, match="does not exist: run gold for trips first"):
        train.run(ctx)
    ctx.lake.overwrite(features, gold_rows(spark, 50, seed=4).withColumn("label", F.lit(None).cast("int")))
    with pytest.raises(train.TrainingDataError, match="no labelled rows"):
        train.run(ctx)
    # 60 rows can train (2 folds), but only the 60% sample can: one size is no scaling model
    ctx.lake.overwrite(features, gold_rows(spark, 60, seed=4))
    with pytest.raises(train.TrainingDataError, match=r"too few to estimate from samples \[0.03, 0.9\]"):
        train.run(ctx)


def test_cores_without_estimate_is_refused(spark, project):
    with pytest.raises(ValueError, match="--cores .* goes with --estimate"):
        train.run(context(spark, project, estimate=False, cores=4))
