"""`make demo` end to end, twice, on a lake, registry and Data Docs of its own (two days instead
of the week, for time): the first run delivers and runs each day, trains and promotes the demo
model on the first, scores and flags both; the second, the first day again with no new data,
changes no table, trains nothing, scores and flags nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from deltalake import DeltaTable
from mlflow import MlflowClient

from conftest import REPO
from test_report import Page, assert_self_contained

pytestmark = pytest.mark.slow


def demo(env: dict[str, str], days: int) -> tuple[dict, str]:
    result = subprocess.run([sys.executable, "-m", "strata_dev.demo", "--env", "local", "--days", str(days)], env=env,
                            capture_output=True, text=True, timeout=1200, cwd=REPO)
    assert result.returncode == 0, result.stderr[-4000:]
    *report, last = result.stdout.strip().splitlines()
    return json.loads(last), "\n".join(report) + "\n" + result.stderr


def test_make_demo_trains_promotes_and_scores_once_and_a_second_run_changes_nothing(tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib"), "STRATA_LAKE__ROOT": str(tmp_path / "lake"),
           "STRATA_MLFLOW__TRACKING_URI": store, "STRATA_MLFLOW__ARTIFACT_LOCATION": str(tmp_path / "artifacts"),
           "STRATA_QUALITY__DATA_DOCS_DIR": str(tmp_path / "docs")}
    first, output = demo(env, days=2)
    assert first["status"] == "ok" and first["days"] == ["2024-01-01", "2024-01-02"]
    tips = first["models"]["tips"]
    assert tips["version"] == "1" and tips["promoted"] is True and tips["champion"] == "1", tips
    # the generator makes tips learnable: the whole interval is clear of the majority-class rule
    assert tips["interval"]["low"] > tips["zero_rule"] + 0.05, tips
    # the champion scored every gold features row, day by day
    features, predictions = first["tables"]["gold.trips_features"], first["tables"]["gold.tips_predictions"]
    assert predictions["rows"] == features["rows"] > 0
    assert DeltaTable(predictions["path"]).to_pyarrow_table().num_rows == features["rows"]
    # what a person reads: one progress line per day, then the summary with the model and the places
    assert output.count("demo: 2024-01-0") >= 2 and "train version 1 promoted" in output
    assert "Quarantined rows by reason:" in output and "make mlflow-ui" in output
    assert f"test pr_auc {tips['interval']['estimate']:.3f}" in output
    # the monitor watched each day of unshifted trips and asked for no retrain
    assert tips["monitor"]["retrain"] == {"triggered": False, "reasons": []} and "retrain_triggered" not in tips
    assert "monitor: no retrain asked" in output
    # the anomaly flags recover the generator's planted rides (the floor: recall 0.8 at precision 0.5)
    flags = first["flags"]
    flagged = DeltaTable(first["tables"]["gold.trips_flagged"]["path"]).to_pyarrow_table(columns=["is_outlier"])
    assert flags["outliers"] == sum(flagged.column("is_outlier").to_pylist()) > 0
    assert flags["recall"] >= 0.8 and flags["precision"] >= 0.5, flags
    assert f"precision {flags['precision']:.3f}, recall {flags['recall']:.3f}" in output

    # the run report of each day, beside the Data Docs: the last day's named in the summary, holding
    # the tables as its run's JSON line has them, the stages with their seconds, and the figures
    reports = [step["report"] for step in first["steps"]]
    assert [Path(r).parent for r in reports] == [tmp_path / "reports"] * 2 and all(Path(r).exists() for r in reports)
    assert f"Run report:  {reports[-1]} (2024-01-02; " in output
    text = Path(reports[-1]).read_text()
    page = Page(text)
    assert_self_contained(page, text)
    shown = {row[1]: (int(row[2]), int(row[3].replace(",", ""))) for row in page.tables["tables"][1:]}
    assert shown and all(shown[name] == (first["tables"][name]["version"], first["tables"][name]["rows"])
                         for name in shown)
    assert page.column("stages", "outcome")["trips.predict.tips"] == "ok"
    assert all(float(seconds) >= 0 for seconds in page.column("stages", "seconds").values())
    assert {"scatter-trips", "roc-tips", "pr-tips", "confusion-tips", "scores-tips"} <= set(page.figures)
    assert page.tables["evaluation-tips"][1][0] == "1"  # the champion's curves

    mlflow.set_tracking_uri(store)
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("tips", "champion").version) == "1"

    # the first day again, after the second: the harder case (a later date's commits must not
    # make an earlier date look stale)
    second, _ = demo(env, days=1)
    assert second["status"] == "ok"
    assert "version" not in second["models"]["tips"] and second["models"]["tips"]["predictions_written"] == 0
    assert "outliers" not in second["flags"]  # the anomalies stage was skipped: nothing new
    assert [str(v.version) for v in client.search_model_versions("name='tips'")] == ["1"]
    # nothing new: every table at the version and row count the first run left (read back by deltalake)
    for name, table in first["tables"].items():
        lake_table = DeltaTable(table["path"])
        assert (lake_table.version(), lake_table.to_pyarrow_table().num_rows) == (table["version"], table["rows"]), name
    assert all(first["tables"][name] == table for name, table in second["tables"].items())
