"""Configuration loading: merging, overrides, and one-line errors naming key and file."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

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


# --- meaning, not just types: checked at load, before Spark -------------------------------------

SENSORS = Path(__file__).resolve().parent / "fixtures" / "sensors" / "conf" / "datasets" / "sensors.yaml"


def edit_dataset(conf_dir: Path, name: str, change) -> Path:
    """Load conf/datasets/<name>.yaml, let change(content) mutate it, write it back."""
    path = conf_dir / "datasets" / f"{name}.yaml"
    content = yaml.safe_load(path.read_text())
    change(content)
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def refused(conf_dir: Path, environ: dict | None = None) -> str:
    with pytest.raises(ConfigError) as error:
        load_config("local", conf_dir, environ=environ or {})
    message = str(error.value)
    assert "\n" not in message
    return message


def test_the_shipped_datasets_pass_the_meaning_checks(conf_dir):
    shutil.copy(SENSORS, conf_dir / "datasets" / "sensors.yaml")
    config = load_config("local", conf_dir, environ={})
    assert sorted(config.datasets) == ["sensors", "trips"]
    assert config.dataset("sensors").gold.analysis.name == "sensors_daily_site"


@pytest.mark.parametrize("key, value, message", [
    ("keys", ["trip_idd"], r"trips.yaml: key 'datasets.trips.keys' names unknown column 'trip_idd': not in 'schema' or 'derive' \(did you mean 'trip_id'\?\)"),
    ("partition_by", ["event_day"], r"trips.yaml: key 'datasets.trips.partition_by' names unknown column 'event_day'"),
    ("keys", [], r"trips.yaml: key 'datasets.trips.keys' must name at least one column"),
])
def test_keys_and_partition_columns_must_be_columns(conf_dir, key, value, message):
    edit_dataset(conf_dir, "trips", lambda d: d.update({key: value}))
    assert re.search(message, refused(conf_dir))


def test_a_derived_column_can_be_a_key_or_partition_column(conf_dir):
    def change(d):
        d["derive"]["trip_key"] = "concat_ws('-', trip_id, cast(vendor_id as string))"
        d["keys"] = ["trip_key"]
    edit_dataset(conf_dir, "trips", change)
    assert load_config("local", conf_dir, environ={}).dataset("trips").keys == ["trip_key"]


def test_analysis_group_by_must_hold_the_partition_columns(conf_dir):
    edit_dataset(conf_dir, "trips", lambda d: d["gold"]["analysis"].update(group_by=["pickup_zone"]))
    message = refused(conf_dir)
    assert "trips.yaml: key 'datasets.trips.gold.analysis.group_by'" in message
    assert "partition column 'event_date'" in message


def test_analysis_group_by_names_known_columns(conf_dir):
    edit_dataset(conf_dir, "trips", lambda d: d["gold"]["analysis"].update(group_by=["event_date", "zone"]))
    assert "key 'datasets.trips.gold.analysis.group_by' names unknown column 'zone'" in refused(conf_dir)


@pytest.mark.parametrize("spark_type", ["dobule", "varchar", "decimal(40,2)", "decimal(5,6)", "int not null",
                                        "map<string,int>", "string; drop table x"])
def test_schema_types_must_be_spark_sql_types(conf_dir, spark_type):
    edit_dataset(conf_dir, "trips", lambda d: d["schema"].update(trip_distance=spark_type))
    message = refused(conf_dir)
    assert "trips.yaml: key 'datasets.trips.schema.trip_distance'" in message
    assert "not a Spark SQL type" in message


def test_valid_schema_types_load(conf_dir):
    types = ["string", "int", "integer", "bigint", "long", "smallint", "short", "tinyint", "byte", "double",
             "float", "real", "boolean", "date", "timestamp", "timestamp_ntz", "decimal(10,2)", "decimal(38, 0)",
             "decimal", "binary", "Double"]
    edit_dataset(conf_dir, "trips", lambda d: d["schema"].update({f"c{i}": t for i, t in enumerate(types)}))
    schema = load_config("local", conf_dir, environ={}).dataset("trips").schema
    assert schema["c2"] == "integer" and schema["c16"] == "decimal(10,2)"
    assert schema["c20"] == "double"  # normalised: silver compares type names


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(name="../trips"), r"key 'datasets.trips.name' must be a plain name"),
    (lambda d: d.update(name="rides"), r"key 'datasets.trips.name' is 'rides' but the file is trips.yaml"),
    (lambda d: d["gold"]["analysis"].update(name="../../etc"), r"key 'datasets.trips.gold.analysis.name' must be a plain name"),
    (lambda d: d["gold"]["analysis"].update(name="daily; drop table x"), r"key 'datasets.trips.gold.analysis.name' must be a plain name"),
    (lambda d: d["gold"]["analysis"].update(name="Trips_Daily"), r"key 'datasets.trips.gold.analysis.name' must be a plain name"),
    (lambda d: d["gold"]["analysis"].update(name="trips_features"),
     r"key 'datasets.trips.gold.analysis.name' names table gold/trips_features, already the features table of dataset 'trips'"),
    (lambda d: d["schema"].update({"pickup at": "string"}), r"key 'datasets.trips.schema' column 'pickup at' must be a plain name"),
    (lambda d: d["schema"].update(_source_key="string"), r"key 'datasets.trips.schema' column '_source_key' must be a plain name"),
    (lambda d: d["derive"].update({"Event_Date": "to_date(pickup_at)"}), r"key 'datasets.trips.derive' column 'Event_Date' is already a column"),
    (lambda d: d["gold"]["features"].update(trip_id="trip_id"), r"key 'datasets.trips.gold.features' column 'trip_id' is already a column"),
    (lambda d: d["gold"]["analysis"]["metrics"].update(pickup_zone="count(*)"), r"key 'datasets.trips.gold.analysis.metrics' column 'pickup_zone' is already a column"),
])
def test_names_are_plain_and_unique(conf_dir, change, message):
    edit_dataset(conf_dir, "trips", change)
    assert re.search(message, refused(conf_dir))


def test_table_names_are_unique_across_the_lake(conf_dir):
    shutil.copy(SENSORS, conf_dir / "datasets" / "sensors.yaml")
    edit_dataset(conf_dir, "sensors", lambda d: d["gold"]["analysis"].update(name="trips_daily_zone"))
    assert re.search(r"(sensors|trips).yaml: key 'datasets.(sensors|trips).gold.analysis.name' names table "
                     r"gold/trips_daily_zone, already the analysis table of dataset '(trips|sensors)'", refused(conf_dir))
    edit_dataset(conf_dir, "sensors", lambda d: d["gold"]["analysis"].update(name="trips"))
    assert re.search(r"names table quarantine/trips, already the quarantine table of dataset 'trips'", refused(conf_dir))


@pytest.mark.parametrize("where, expression, message", [
    (("derive", "event_date"), "to_date(pickup_at", r"key 'datasets.trips.derive.event_date' is not valid Spark SQL"),
    (("derive", "event_date"), "to_date(pickup_att)", r"key 'datasets.trips.derive.event_date' names unknown column 'pickup_att' \(did you mean 'pickup_at'\?\)"),
    # a derived column sees the schema and the columns derived before it, not after
    (("derive", "event_date"), "trip_duration_min + 1", r"key 'datasets.trips.derive.event_date' names unknown column 'trip_duration_min'"),
    (("derive", "event_date"), "dobule(pickup_at)", r"key 'datasets.trips.derive.event_date' calls unknown function 'dobule'"),
    (("derive", "event_date"), "to_date(pickup_at); select 1", r"key 'datasets.trips.derive.event_date' must be one SQL expression"),
    (("derive", "event_date"), "(select max(pickup_at) from trips)", r"key 'datasets.trips.derive.event_date' must be an expression over columns, not a query"),
    (("derive", "event_date"), "to_date(pickup_at) as day", r"key 'datasets.trips.derive.event_date' must not alias"),
    (("derive", "event_date"), "", r"key 'datasets.trips.derive.event_date' must be one SQL expression"),
    (("gold", "features", "speed_mph"), "trip_distance / nullif(trip_duration / 60.0, 0)",
     r"key 'datasets.trips.gold.features.speed_mph' names unknown column 'trip_duration'"),
    (("gold", "features", "speed_mph"), "round(trip_distance / , 2)", r"key 'datasets.trips.gold.features.speed_mph' is not valid Spark SQL"),
    (("gold", "label",), "case when payment_typ = 1 then 1 end", r"key 'datasets.trips.gold.label' names unknown column 'payment_typ'"),
    (("gold", "analysis", "metrics", "trips"), "count(trip)", r"key 'datasets.trips.gold.analysis.metrics.trips' names unknown column 'trip'"),
    (("gold", "analysis", "metrics", "trips"), "sum(x.fare_amount)", r"key 'datasets.trips.gold.analysis.metrics.trips' names unknown column 'x.fare_amount'"),
    (("gold", "analysis", "metrics", "trips"), "count(*", r"key 'datasets.trips.gold.analysis.metrics.trips' is not valid Spark SQL"),
])
def test_sql_expressions_parse_and_name_known_columns(conf_dir, where, expression, message):
    def change(d):
        node = d
        for part in where[:-1]:
            node = node[part]
        node[where[-1]] = expression
    edit_dataset(conf_dir, "trips", change)
    message_seen = refused(conf_dir)
    assert re.search(message, message_seen), message_seen
    assert message_seen.startswith(str(conf_dir / "datasets" / "trips.yaml"))


def test_gold_and_metrics_see_silver_lineage_and_spark_functions(conf_dir):
    def change(d):
        d["derive"]["ingest_hour"] = "hour(_ingested_at)"
        d["gold"]["features"]["refined_lag_days"] = "datediff(_refined_on, to_date(_ingested_at))"
        d["gold"]["features"]["source"] = "concat_ws('#', _source_key, _source_etag, cast(_source_row as string))"
        d["gold"]["features"]["doubled"] = "transform(array(fare_amount, tip_amount), x -> x * 2)"
        d["gold"]["features"]["rounded"] = "bround(fare_amount, 1)"  # a Spark function sqlglot does not model
        d["gold"]["analysis"]["metrics"]["runs"] = "count(distinct _refined_run_id)"
        d["gold"]["analysis"]["metrics"]["versions"] = "max(_source_version)"
        d["gold"]["analysis"]["metrics"]["late"] = "sum(if(dayofweek(pickup_at) in (1, 7), 1, 0))"
    edit_dataset(conf_dir, "trips", change)
    gold = load_config("local", conf_dir, environ={}).dataset("trips").gold
    assert "refined_lag_days" in gold.features and "late" in gold.analysis.metrics


SECRET = "hunter2"


@pytest.mark.parametrize("environ, message", [
    # a mapping or list where a string was expected: the type is named, never the value
    ({"STRATA_S3__ENDPOINT_URL": f"[http://admin:{SECRET}@minio:9000]"},
     r"environment variable STRATA_S3__ENDPOINT_URL: key 's3.endpoint_url' must be a string, got a list"),
    # not even valid YAML: still one line, still no value
    ({"STRATA_S3__ENDPOINT_URL": f"`http://admin:{SECRET}@minio:9000"},
     r"environment variable STRATA_S3__ENDPOINT_URL: not a valid YAML value"),
    ({"STRATA_S3__REGION": f"{{token: {SECRET}}}"}, r"key 's3.region' must be a string, got a dict"),
])
def test_errors_never_echo_values_from_the_environment(conf_dir, environ, message):
    seen = refused(conf_dir, environ)
    assert re.search(message, seen), seen
    assert SECRET not in seen


def test_errors_never_echo_secret_looking_keys(conf_dir):
    (conf_dir / "local.yaml").write_text(
        "spark:\n  conf:\n    spark.hadoop.fs.s3a.secret.key: [" + SECRET + "]\n")
    seen = refused(conf_dir)
    assert "key 'spark.conf.spark.hadoop.fs.s3a.secret.key' must be a string, got a list" in seen
    assert SECRET not in seen
    (conf_dir / "local.yaml").write_text(f"s3:\n  endpoint_url: [http://admin:{SECRET}@minio:9000]\n")
    seen = refused(conf_dir)
    assert "key 's3.endpoint_url' must be a string" in seen and SECRET not in seen


def test_lineage_known_to_config_is_silver_lineage():
    from strata.config import SOURCE_LINEAGE
    from strata.transforms.silver import LINEAGE

    assert tuple(LINEAGE) == SOURCE_LINEAGE


def test_config_cli_prints_keys_one_per_line(capsys, monkeypatch):
    from strata.config import main

    monkeypatch.setenv("STRATA_CONF_DIR", str(CONF))
    assert main(["--env", "local", "lake.engine", "lake.delta_spark_jars", "spark.master"]) == 0
    assert capsys.readouterr().out == "delta-rs\n\nlocal[2]\n"
    assert main(["--env", "local", "spark.nope"]) == 1
    assert "no key 'spark.nope'" in capsys.readouterr().err



def test_version_by_names_known_columns(conf_dir):
    edit_dataset(conf_dir, "trips", lambda c: c.update(version_by=["_ingested_at", "_source_verison"]))
    assert re.search(r"trips.yaml: .*version_by.*_source_verison", refused(conf_dir))


# --- real feeds: renamed columns, a source time zone, a content key, stated gold partitions ------

YELLOW = Path(__file__).resolve().parent / "fixtures" / "yellow" / "conf" / "datasets" / "yellow.yaml"


@pytest.fixture
def yellow_conf(conf_dir):
    shutil.copy(YELLOW, conf_dir / "datasets" / "yellow.yaml")
    return conf_dir


def test_a_real_feed_loads_with_its_new_names(yellow_conf):
    yellow = load_config("local", yellow_conf, environ={}).dataset("yellow")
    assert yellow.source.rename["tpep_pickup_datetime"] == "pickup_at"
    assert yellow.source.timezone == "America/New_York"
    assert list(yellow.schema)[:2] == ["VendorID", "tpep_pickup_datetime"]  # bronze keeps the header
    # "all": the schema's columns, in order, by their silver names
    assert yellow.content_key.columns[:3] == ["vendor_id", "pickup_at", "dropoff_at"]
    assert len(yellow.content_key.columns) == 18
    assert yellow.gold.analysis.partition_by == ["event_date"]
    from strata import catalog
    assert catalog.analysis(yellow).partition_by == ("event_date",)
    assert catalog.silver(yellow).partition_by == ("event_date", "vendor_id")


def test_the_default_time_zone_is_utc_and_analysis_partitions_are_inferred():
    trips = load_config("local", CONF, environ={}).dataset("trips")
    assert trips.source.timezone == "UTC" and trips.source.rename == {} and trips.content_key is None
    from strata import catalog
    assert trips.gold.analysis.partition_by is None and catalog.analysis(trips).partition_by == ("event_date",)


@pytest.mark.parametrize("change, message", [
    # rename
    (lambda d: d["source"]["rename"].update(PULocationId="pickup_zone"),
     r"yellow.yaml: key 'datasets.yellow.source.rename.PULocationId' renames 'PULocationID' a second time"),
    (lambda d: d["source"]["rename"].update(DOLocation="dropoff"),
     r"yellow.yaml: key 'datasets.yellow.source.rename.DOLocation' renames unknown column 'DOLocation': "
     r"not in 'schema' \(did you mean 'DOLocationID'\?\)"),
    (lambda d: d["source"]["rename"].update(extra="fare_amount"),
     r"yellow.yaml: key 'datasets.yellow.source.rename.extra' renames 'extra' to 'fare_amount', already a column \('fare_amount'"),
    (lambda d: d["source"]["rename"].update(extra="Pickup_Zone"),
     r"key 'datasets.yellow.source.rename.(extra|PULocationID)' renames '(extra|PULocationID)' to '(Pickup_Zone|pickup_zone)', already a column"),
    (lambda d: d["source"]["rename"].update(extra="extra charge"),
     r"key 'datasets.yellow.source.rename.extra' renames 'extra' to 'extra charge', which is not a plain name"),
    (lambda d: d["source"]["rename"].update(extra="_source_key"),
     r"key 'datasets.yellow.source.rename.extra' renames 'extra' to '_source_key', which is not a plain name"),
    (lambda d: d["source"].update(rename=["VendorID"]), r"key 'datasets.yellow.source.rename' must be a mapping"),
    (lambda d: d["derive"].update(vendor_id="1"), r"key 'datasets.yellow.derive' column 'vendor_id' is already a column"),
    # after the rename, only the new names are columns: the hint says what the old one became
    (lambda d: d.update(partition_by=["event_date", "VendorID"]),
     r"key 'datasets.yellow.partition_by' names unknown column 'VendorID': not in 'schema' or 'derive' "
     r"\(source.rename renames 'VendorID' to 'vendor_id'\)"),
    (lambda d: d["derive"].update(hour="hour(tpep_pickup_datetime)"),
     r"key 'datasets.yellow.derive.hour' names unknown column 'tpep_pickup_datetime' \(source.rename renames "
     r"'tpep_pickup_datetime' to 'pickup_at'\)"),
    (lambda d: d.update(version_by=["tpep_dropoff_datetime"]), r"key 'datasets.yellow.version_by' names unknown column 'tpep_dropoff_datetime'"),
    (lambda d: d["gold"]["features"].update(zone="PULocationID"), r"key 'datasets.yellow.gold.features.zone' names unknown column 'PULocationID'"),
    # time zone
    (lambda d: d["source"].update(timezone="America/New_Yrok"),
     r"key 'datasets.yellow.source.timezone' is not an IANA time zone name: 'America/New_Yrok' \(did you mean 'America/New_York'\?\)"),
    (lambda d: d["source"].update(timezone="Mars/Olympus"), r"key 'datasets.yellow.source.timezone' is not an IANA time zone name: 'Mars/Olympus'"),
    (lambda d: d["source"].update(timezone="../../etc/passwd"), r"key 'datasets.yellow.source.timezone' is not an IANA time zone name"),
    (lambda d: d["source"].update(timezone="localtime"), r"key 'datasets.yellow.source.timezone' is not an IANA time zone name"),
    (lambda d: d["source"].update(timezone=5), r"key 'datasets.yellow.source.timezone' is not an IANA time zone name: '5'"),
    # content key
    (lambda d: d["content_key"].update(columns=["vendor_id", "pickup_time"]),
     r"key 'datasets.yellow.content_key.columns' names unknown column 'pickup_time': not a 'schema' column \(did you mean 'pickup_at'\?\)"),
    (lambda d: d["content_key"].update(columns=["VendorID"]),
     r"key 'datasets.yellow.content_key.columns' names unknown column 'VendorID': not a 'schema' column \(source.rename renames"),
    (lambda d: d["content_key"].update(columns=["event_date"]), r"key 'datasets.yellow.content_key.columns' names unknown column 'event_date'"),
    (lambda d: d["content_key"].update(columns=["fare_amount", "fare_amount"]), r"key 'datasets.yellow.content_key.columns' names 'fare_amount' twice"),
    (lambda d: d["content_key"].update(columns=[]), r"key 'datasets.yellow.content_key.columns' must name at least one column, or be 'all'"),
    (lambda d: d["content_key"].update(columns="every"), r"key 'datasets.yellow.content_key.columns' must be a list or 'all', got 'every'"),
    (lambda d: d["content_key"].update(name="fare_amount"), r"key 'datasets.yellow.content_key.name' column 'fare_amount' is already a column"),
    (lambda d: d["content_key"].update(hash="md5"), r"unknown key 'datasets.yellow.content_key.hash'"),
    # the analysis table's stated partitions
    (lambda d: d["gold"]["analysis"].update(partition_by=["vendor_id"]),
     r"key 'datasets.yellow.gold.analysis.partition_by' names 'vendor_id', which is not in group_by \['event_date', 'pickup_zone'\]"),
    (lambda d: d["gold"]["analysis"].update(partition_by=["pickup_zone"]),
     r"key 'datasets.yellow.gold.analysis.partition_by' names 'pickup_zone', which is not one of the dataset's partition columns"),
    (lambda d: d["gold"]["analysis"].update(partition_by=[]),
     r"key 'datasets.yellow.gold.analysis.partition_by' must name at least one of the dataset's partition columns"),
    (lambda d: d["gold"]["analysis"].update(partition_by="event_date"), r"key 'datasets.yellow.gold.analysis.partition_by' must be a list"),
])
def test_feed_config_mistakes_are_one_line(yellow_conf, change, message):
    edit_dataset(yellow_conf, "yellow", change)
    seen = refused(yellow_conf)
    assert re.search(message, seen), seen
    assert seen.startswith(str(yellow_conf / "datasets" / "yellow.yaml"))


def test_keys_may_name_the_content_key_and_derive_may_use_it(yellow_conf):
    def change(d):
        d["derive"]["short_id"] = "substr(trip_id, 1, 8)"
        d["content_key"]["columns"] = ["vendor_id", "pickup_at", "pickup_zone"]
    edit_dataset(yellow_conf, "yellow", change)
    yellow = load_config("local", yellow_conf, environ={}).dataset("yellow")
    assert yellow.keys == ["trip_id"] and yellow.content_key.columns == ["vendor_id", "pickup_at", "pickup_zone"]


def test_a_renamed_swap_and_a_case_only_source_spelling_load(yellow_conf):
    def change(d):
        d["source"]["rename"].update(extra="mta_tax", mta_tax="extra", Improvement_Surcharge="surcharge")
    edit_dataset(yellow_conf, "yellow", change)
    yellow = load_config("local", yellow_conf, environ={}).dataset("yellow")
    assert yellow.source.rename["extra"] == "mta_tax" and yellow.source.rename["improvement_surcharge"] == "surcharge"


def test_the_analysis_partition_columns_may_be_stated_for_the_shipped_trips(conf_dir):
    edit_dataset(conf_dir, "trips", lambda d: d["gold"]["analysis"].update(partition_by=["Event_Date"]))
    trips = load_config("local", conf_dir, environ={}).dataset("trips")
    assert trips.gold.analysis.partition_by == ["event_date"]  # the dataset's spelling
    edit_dataset(conf_dir, "trips", lambda d: d["gold"]["analysis"].update(group_by=["pickup_zone"], partition_by=["event_date"]))
    assert "key 'datasets.trips.gold.analysis.partition_by' names 'event_date', which is not in group_by" in refused(conf_dir)


def test_a_source_may_be_a_local_folder_set_by_the_environment(conf_dir):
    """source.path (a folder or file:// URI) replaces bucket and prefix: an env file or variable
    switches a dataset to local files."""
    def source(path):
        return load_config("local", conf_dir, environ={"STRATA_DATASETS__TRIPS__SOURCE__PATH": path}).dataset("trips").source

    relative = source("raw/trips")
    assert relative.is_local and relative.path == str((conf_dir.parent / "raw" / "trips").resolve())
    assert (relative.container, relative.key_prefix) == (str(conf_dir.parent / "raw"), "trips")
    assert relative.uri == f"file://{conf_dir.parent}/raw/trips/"
    assert source("file:///data/feeds/trips").path == "/data/feeds/trips"
    with pytest.raises(ConfigError, match=r"source.path must be a local folder or file:// URI, got 's3://b/trips'"):
        source("s3://b/trips")
    s3 = load_config("local", conf_dir, environ={}).dataset("trips").source
    assert not s3.is_local and s3.uri == "s3://strata-raw/trips/" and s3.object_uri("trips/a.csv") == "s3://strata-raw/trips/a.csv"


@pytest.mark.parametrize("change, message", [
    (("numeric_features: [trip_duration_min,", "numeric_features: [trip_duraton_min,"),
     r"tips.yaml: key 'models.tips.numeric_features' names 'trip_duraton_min', not a feature of "
     r"gold/trips_features \(did you mean 'trip_duration_min'\?\)"),
    (("split: {train: 0.7,", "split: {train: 0.8,"), r"key 'models.tips.split' fractions must be positive and sum to 1"),
    (("dataset: trips", "dataset: taxis"), r"key 'models.tips.dataset' names unknown dataset 'taxis'"),
    (("regParam: [0.003, 0.03]", "regParam: []"), r"key 'models.tips.grid.regParam' must be a non-empty list"),
    (("algorithm: logistic_regression", "algorithm: svm"), r"key 'models.tips.algorithm' must be one of"),
    (("folds: 3", "folds: 1"), r"key 'models.tips.folds' must be at least 2, got 1"),
])
def test_model_config_mistakes_are_one_line(conf_dir, change, message):
    path = conf_dir / "models" / "tips.yaml"
    old, new = change
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new))
    with pytest.raises(ConfigError, match=message):
        load_config("local", conf_dir, environ={})


def test_a_grid_parameter_the_classifier_lacks_is_found_before_spark(conf_dir):
    """By train (--model) and by the pipeline, which trains every model of its datasets."""
    import argparse

    from strata import preflight
    path = conf_dir / "models" / "tips.yaml"
    path.write_text(path.read_text().replace("regParam: [0.003, 0.03]", "regParm: [0.003, 0.03]"))
    config = load_config("local", conf_dir, environ={})  # loading does not import pyspark.ml
    message = r"key 'models.tips.grid.regParm' is not a parameter of logistic_regression \(did you mean 'regParam'\?\)"
    with pytest.raises(ConfigError, match=message):
        preflight.check("train", config, argparse.Namespace(model="tips"))
    with pytest.raises(ConfigError, match=message):
        preflight.check("pipeline", config, argparse.Namespace(dataset=["trips"]))
    assert preflight.models("pipeline", config, argparse.Namespace(dataset=["trips"])) == ["tips"]
    no_training = load_config("local", conf_dir, environ={"STRATA_PIPELINE__MODELS": "false"})
    assert preflight.models("pipeline", no_training, argparse.Namespace(dataset=["trips"])) == []
    assert preflight.models("gold", config, argparse.Namespace(dataset="trips")) == []
