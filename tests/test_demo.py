"""`make demo` end to end, twice, on a lake, registry and Data Docs of its own: the first run
ingests, refines, trains and promotes the demo model and scores with it; the second, with no new
data, changes no table, trains nothing and scores nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import pytest
from deltalake import DeltaTable
from mlflow import MlflowClient

from conftest import REPO

pytestmark = pytest.mark.slow


def demo(env: dict[str, str]) -> dict:
    result = subprocess.run([sys.executable, "-m", "strata_dev.demo", "--env", "local"], env=env,
                            capture_output=True, text=True, timeout=1200, cwd=REPO)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_make_demo_trains_promotes_and_scores_once_and_a_second_run_changes_nothing(tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib"), "STRATA_LAKE__ROOT": str(tmp_path / "lake"),
           "STRATA_MLFLOW__TRACKING_URI": store, "STRATA_MLFLOW__ARTIFACT_LOCATION": str(tmp_path / "artifacts"),
           "STRATA_QUALITY__DATA_DOCS_DIR": str(tmp_path / "docs")}
    first = demo(env)
    assert first["status"] == "ok"
    tips = first["models"]["tips"]
    assert tips["version"] == "1" and tips["promoted"] is True, tips
    # the generator makes tips learnable: the whole interval is clear of the majority-class rule
    assert tips["interval"]["low"] > tips["zero_rule"] + 0.05, tips
    # the champion scored every gold features row of the run date
    features, predictions = first["tables"]["gold.trips_features"], first["tables"]["gold.tips_predictions"]
    assert tips["predict"]["champion_version"] == "1" and predictions["rows"] == features["rows"] > 0
    assert tips["predict"]["predictions"] == {"rows": features["rows"], "quarantined": 0}
    mlflow.set_tracking_uri(store)
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("tips", "champion").version) == "1"

    second = demo(env)
    assert second["status"] == "ok"
    assert second["models"]["tips"]["skipped"].startswith("version 1 was trained with this config for 2024-01-01")
    assert second["models"]["tips"]["predict"]["skipped"].startswith("already scored")
    assert [str(v.version) for v in client.search_model_versions("name='tips'")] == ["1"]
    # nothing new: every table at the version and row count the first run left (read back by deltalake)
    for name, table in first["tables"].items():
        lake_table = DeltaTable(table["path"])
        assert (lake_table.version(), lake_table.to_pyarrow_table().num_rows) == (table["version"], table["rows"]), name
    assert all(first["tables"][name] == table for name, table in second["tables"].items())
