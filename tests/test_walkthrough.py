"""README "Bring your own data", followed as written: its shell and YAML blocks run in a copy of
the project, from files on disk through upload, check, ingest, silver and gold. The gold table is
then compared with an independent computation of the same numbers from the files (pandas)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
from deltalake import DeltaTable

from conftest import REPO

pytestmark = pytest.mark.slow


def walkthrough_blocks() -> list[tuple[str, str]]:
    """(language, text) of each fenced block of the README's numbered steps, in order."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Bring your own data\n", 1)[1].split("\n`cp` works too", 1)[0]
    return [(lang, textwrap.dedent(body)) for lang, body in re.findall(r"```(\w+)\n(.*?)```", section, re.S)]


@pytest.fixture
def project(tmp_path):
    """The checkout as a new user has it (the code is linked, not copied)."""
    root = tmp_path / "project"
    root.mkdir()
    for part in ("conf", "expectations", "jobs"):
        shutil.copytree(REPO / part, root / part)
    shutil.copytree(REPO / "tests" / "fixtures" / "yellow", root / "tests" / "fixtures" / "yellow")
    shutil.copy2(REPO / "spark-submit.sh", root / "spark-submit.sh")
    (root / "lib").symlink_to(REPO / "lib")
    return root


def expected_daily_zone(files) -> pd.DataFrame:
    """yellow_daily_zone from the files, by hand: the silver suite quarantines negative distances,
    a record delivered twice counts once, the day is New York's (the files' times are local)."""
    trips = pd.concat(pd.read_csv(f, dtype=str) for f in files).drop_duplicates()
    trips = trips[trips["trip_distance"].astype(float) >= 0]
    trips = trips.assign(event_date=pd.to_datetime(trips["tpep_pickup_datetime"]).dt.date,
                         pickup_zone=trips["PULocationID"].astype("int32"),
                         total_amount=trips["total_amount"].astype(float))
    daily = trips.groupby(["event_date", "pickup_zone"]).agg(trips=("total_amount", "size"),
                                                               revenue=("total_amount", "sum")).reset_index()
    return daily.sort_values(["event_date", "pickup_zone"]).reset_index(drop=True)


def test_the_readme_walkthrough_takes_files_on_disk_to_gold(project):
    env = {**os.environ, "STRATA_PYTHON": sys.executable}
    env.pop("STRATA_CONF_DIR", None)
    summaries = []
    blocks = walkthrough_blocks()
    assert [lang for lang, _ in blocks] == ["sh", "yaml", "sh", "sh"]
    for lang, text in blocks:
        if lang == "yaml":
            with open(project / "conf" / "local.yaml", "a") as f:
                f.write("\n" + text)
            continue
        for command in (line for line in text.splitlines() if line.strip() and not line.startswith("#")):
            done = subprocess.run(["bash", "-c", command], cwd=project, env=env, capture_output=True,
                                  text=True, timeout=600)
            assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
            if command.startswith("./spark-submit.sh"):
                summaries.append(json.loads(done.stdout.strip().splitlines()[-1]))

    upload, check, pipeline = summaries
    assert upload["files_uploaded"] == 2 and upload["destination"].endswith("/raw/yellow/2024/01/07/")
    assert all(c["ok"] for c in check["checks"]), check["checks"]
    assert pipeline["status"] == "ok"

    files = sorted((project / "tests" / "fixtures" / "yellow" / "files").glob("*.csv"))
    expected = expected_daily_zone(files)
    gold = DeltaTable(str(project / "lake" / "gold" / "yellow_daily_zone")).to_pandas()
    gold = gold.sort_values(["event_date", "pickup_zone"]).reset_index(drop=True)
    assert gold[["event_date", "pickup_zone", "trips"]].astype({"trips": int}).values.tolist() == \
        expected[["event_date", "pickup_zone", "trips"]].astype({"trips": int}).values.tolist()
    assert (gold["revenue"] - expected["revenue"]).abs().max() <= 0.01  # round(sum, 2) vs a float sum
    quarantine = DeltaTable(str(project / "lake" / "quarantine" / "yellow")).to_pandas()
    assert len(quarantine) == 1 and json.loads(quarantine["record"][0])["trip_distance"] == "-1.2"
    assert list(quarantine["failed_rules"][0]) == ["trip_distance >= 0"]
    features = DeltaTable(str(project / "lake" / "gold" / "yellow_features")).to_pandas()
    assert len(features) == expected["trips"].sum()
    bronze = DeltaTable(str(project / "lake" / "bronze" / "yellow")).to_pandas()
    assert sorted(bronze["_source_key"].unique()) == [f"yellow/2024/01/07/{f.name}" for f in files]
