"""Configuration loading: merging, overrides, and one-line errors naming key and file."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from strata.config import ConfigError, load_config

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture
def conf_dir(tmp_path):
    target = tmp_path / "conf"
    shutil.copytree(CONF, target)
    return target


def test_every_environment_loads_typed():
    for env in ("local", "dev", "prod"):
        config = load_config(env, CONF, environ={})
        assert config.env == env
        assert isinstance(config.spark.shuffle_partitions, int)
        assert config.lake.engine in ("delta-rs", "delta-spark")
    local = load_config("local", CONF, environ={})
    assert local.spark.master == "local[2]" and local.spark.shuffle_partitions == 2
    assert local.spark.conf["spark.ui.showConsoleProgress"] == "false"  # from base.yaml, kept
    assert Path(local.lake.root).is_absolute() and local.lake.root.endswith("/lake")
    assert load_config("prod", CONF, environ={}).lake.root.startswith("s3://")


def test_datasets_come_from_their_own_files():
    trips = load_config("local", CONF, environ={}).dataset("trips")
    assert trips.keys == ["trip_id"] and trips.partition_by == ["event_date"]
    assert trips.schema["pickup_at"] == "timestamp"
    assert trips.source.prefix == "trips"


def test_environment_variables_override_single_keys():
    config = load_config("local", CONF, environ={"STRATA_SPARK__SHUFFLE_PARTITIONS": "7",
                                                 "STRATA_LAKE__ROOT": "s3://bucket/lake",
                                                 "STRATA_ENV": "ignored-not-a-key"})
    assert config.spark.shuffle_partitions == 7
    assert config.lake.root == "s3://bucket/lake"


@pytest.mark.parametrize("env_file, content, message", [
    ("local.yaml", "spark:\n  shuffle_partitions: many\n", r"local.yaml: key 'spark.shuffle_partitions' must be an integer"),
    ("local.yaml", "spark:\n  masterr: local\n", r"local.yaml: unknown key 'spark.masterr'"),
    ("local.yaml", "lake:\n  engine: hudi\n", r"local.yaml: key 'lake.engine' must be one of \['delta-rs', 'delta-spark'\]"),
    ("base.yaml", "spark:\n  master: local\n  shuffle_partitions: 2\n  driver_memory: 1g\nlake:\n  root: lake\n",
     r"base.yaml: missing required key 'spark.app_name'"),
    ("local.yaml", "spark: [1, 2\n", r"local.yaml: invalid YAML"),
    ("datasets/trips.yaml", "keys: [trip_id]\nschema: {a: string}\n", r"trips.yaml: missing required key 'datasets.trips.source'"),
])
def test_bad_config_is_one_clear_line(conf_dir, env_file, content, message):
    (conf_dir / env_file).write_text(content)
    with pytest.raises(ConfigError, match=message) as error:
        load_config("local", conf_dir, environ={})
    assert "\n" not in str(error.value)


def test_bad_override_names_the_variable(conf_dir):
    with pytest.raises(ConfigError, match="environment variable STRATA_SPARK__SHUFFLE_PARTITIONS: key 'spark.shuffle_partitions' must be an integer"):
        load_config("local", conf_dir, environ={"STRATA_SPARK__SHUFFLE_PARTITIONS": "lots"})
    with pytest.raises(ConfigError, match="unknown key 'lake.rooot'"):
        load_config("local", conf_dir, environ={"STRATA_LAKE__ROOOT": "x"})


def test_unknown_environment():
    with pytest.raises(ConfigError, match="unknown environment 'staging'"):
        load_config("staging", CONF, environ={})


def test_unknown_dataset_is_named():
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        load_config("local", CONF, environ={}).dataset("nope")
