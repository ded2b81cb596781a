"""Contract tests of the delta-rs lake engine, on local disk and on the local S3 endpoint.
Tables are read back with deltalake directly as an independent reader."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from chispa import assert_df_equality
from deltalake import DeltaTable
from pyspark.sql.pandas.types import to_arrow_schema

from pyspark.sql import functions as F

from strata.lake import ConflictError, Lake, LakeError, ReadSet, SchemaMismatchError, StagedFiles, TableSpec, files
from strata.lake.delta_rs import DeltaRsLake

SCHEMA = "id long, event_date date, amount double, label string"
TRIPS = TableSpec("silver", "trips", partition_by=("event_date",))
D1, D2, D3 = dt.date(2024, 1, 1), dt.date(2024, 1, 2), dt.date(2024, 1, 3)


@pytest.fixture
def lake(spark, lake_root):
    root, endpoint = lake_root
    return DeltaRsLake(spark, root, job="test_lake", run_id=uuid.uuid4().hex, s3_endpoint=endpoint)


def rows(spark, data):
    return spark.createDataFrame(data, SCHEMA)


def independent_read(spark, lake, table, version=None):
    """The table as deltalake (delta-rs, no Spark involved) sees it."""
    options = None
    if lake.s3_endpoint:
        options = {"AWS_ENDPOINT_URL": lake.s3_endpoint, "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
    arrow = DeltaTable(lake.path(table), version=version, storage_options=options).to_pyarrow_table()
    return spark.createDataFrame(pa.table(arrow).select(["id", "event_date", "amount", "label"]).to_pandas(),
                                 SCHEMA)


def assert_same(actual, expected):
    assert_df_equality(actual.select("id", "event_date", "amount", "label"), expected,
                       ignore_row_order=True, ignore_nullable=True)


BASE = [(1, D1, 10.0, "a"), (2, D1, 20.0, "b"), (3, D2, 30.0, "c"), (4, D3, 40.0, "d")]


def test_append_creates_then_appends_and_independent_reader_agrees(spark, lake):
    first = lake.append(TRIPS, rows(spark, BASE[:2]))
    second = lake.append(TRIPS, rows(spark, BASE[2:]))
    assert (first.version, second.version) == (0, 1)
    assert second.rows_added == 2
    expected = rows(spark, BASE)
    assert_same(lake.read(TRIPS), expected)
    assert_same(independent_read(spark, lake, TRIPS), expected)
    assert lake.row_count(TRIPS) == 4
    assert DeltaTable(lake.path(TRIPS), storage_options=lake.storage_options).metadata().partition_columns == ["event_date"]


def test_create_empty_table_then_read(spark, lake):
    table = TableSpec("bronze", "empty", partition_by=("event_date",))
    result = lake.create(table, rows(spark, []).schema)
    assert result.version == 0 and lake.exists(table)
    assert lake.read(table).count() == 0
    with pytest.raises(ConflictError):
        lake.create(table, rows(spark, []).schema)


def test_overwrite_and_time_travel(spark, lake):
    lake.append(TRIPS, rows(spark, BASE))
    before = lake.history(TRIPS)[0]["timestamp"]
    time.sleep(1.1)
    result = lake.overwrite(TRIPS, rows(spark, [(9, D1, 90.0, "z")]))
    assert result.version == 1 and result.files_added == 1
    assert_same(lake.read(TRIPS), rows(spark, [(9, D1, 90.0, "z")]))
    assert_same(lake.read(TRIPS, version=0), rows(spark, BASE))
    assert_same(independent_read(spark, lake, TRIPS, version=0), rows(spark, BASE))
    as_of = dt.datetime.fromisoformat(before) + dt.timedelta(milliseconds=500)
    assert_same(lake.read(TRIPS, timestamp=as_of), rows(spark, BASE))


def test_overwrite_partitions_replaces_only_those(spark, lake):
    lake.append(TRIPS, rows(spark, BASE))
    result = lake.overwrite_partitions(TRIPS, rows(spark, [(5, D1, 50.0, "e")]))
    assert result.partitions_replaced == [{"event_date": "2024-01-01"}]
    expected = rows(spark, [(5, D1, 50.0, "e"), (3, D2, 30.0, "c"), (4, D3, 40.0, "d")])
    assert_same(independent_read(spark, lake, TRIPS), expected)

    # explicit partitions: an emptied partition is replaced by nothing
    lake.overwrite_partitions(TRIPS, rows(spark, [(6, D2, 60.0, "f")]), partitions=[{"event_date": D2}, {"event_date": D3}])
    assert_same(lake.read(TRIPS), rows(spark, [(5, D1, 50.0, "e"), (6, D2, 60.0, "f")]))

    version = lake.version(TRIPS)
    with pytest.raises(LakeError, match="outside the ones to overwrite"):
        lake.overwrite_partitions(TRIPS, rows(spark, [(7, D3, 1.0, "g")]), partitions=[{"event_date": D2}])
    assert lake.version(TRIPS) == version


def test_upsert_rewrites_only_touched_partitions(spark, lake):
    lake.append(TRIPS, rows(spark, BASE))
    lake.append(TRIPS, rows(spark, [(5, D3, 50.0, "e")]))
    files_before = set(DeltaTable(lake.path(TRIPS), storage_options=lake.storage_options).file_uris())
    changes = rows(spark, [(2, D1, 21.0, "B"), (6, D1, 60.0, "new")])
    result = lake.upsert(TRIPS, changes, keys=["id", "event_date"])

    assert result.partitions_replaced == [{"event_date": "2024-01-01"}]
    assert result.files_removed == 1  # only D1's file; D2 and D3 untouched
    files_after = set(DeltaTable(lake.path(TRIPS), storage_options=lake.storage_options).file_uris())
    untouched = {f for f in files_before if "event_date=2024-01-01" not in f}
    assert len(untouched) == 3 and untouched <= files_after
    expected = rows(spark, [(1, D1, 10.0, "a"), (2, D1, 21.0, "B"), (6, D1, 60.0, "new"),
                            (3, D2, 30.0, "c"), (4, D3, 40.0, "d"), (5, D3, 50.0, "e")])
    assert_same(independent_read(spark, lake, TRIPS), expected)
    assert_same(lake.read(TRIPS, version=1), rows(spark, BASE + [(5, D3, 50.0, "e")]))
    assert lake.history(TRIPS, limit=1)[0]["operation"] == "WRITE"


def test_upsert_moves_a_key_between_partitions_without_duplicating(spark, lake):
    lake.append(TRIPS, rows(spark, BASE))
    lake.upsert(TRIPS, rows(spark, [(3, D3, 33.0, "moved")]), keys=["id"])
    expected = rows(spark, [(1, D1, 10.0, "a"), (2, D1, 20.0, "b"), (4, D3, 40.0, "d"), (3, D3, 33.0, "moved")])
    assert_same(independent_read(spark, lake, TRIPS), expected)


def _files_of(lake, table, date):
    uris = DeltaTable(lake.path(table), storage_options=lake.storage_options).file_uris()
    return {u for u in uris if f"event_date={date.isoformat()}" in u}


# The key lookup reads only files whose key stats can hold a new row's key (and files without
# usable stats): one append per date, so each date's file holds one id range.
def test_upsert_by_key_reads_only_files_whose_stats_can_hold_the_keys(spark, lake):
    for day in (BASE[:2], BASE[2:3], BASE[3:]):
        lake.append(TRIPS, rows(spark, day))
    d3_files = _files_of(lake, TRIPS, D3)
    # id 3 moves from D2 to D1; id 9 is new in D1. D3's file (ids 4..4) cannot hold either.
    result = lake.upsert(TRIPS, rows(spark, [(3, D1, 33.0, "moved"), (9, D1, 90.0, "new")]), keys=["id"])
    assert result.partitions_replaced == [{"event_date": "2024-01-01"}, {"event_date": "2024-01-02"}]
    assert _files_of(lake, TRIPS, D3) == d3_files and not _files_of(lake, TRIPS, D2)
    expected = rows(spark, [BASE[0], BASE[1], (3, D1, 33.0, "moved"), (9, D1, 90.0, "new"), BASE[3]])
    assert_same(independent_read(spark, lake, TRIPS), expected)
    assert_same(lake.read(TRIPS), expected)


def test_upsert_moves_a_key_out_of_a_file_without_stats(spark, lake):
    lake.append(TRIPS, rows(spark, BASE[:2]))
    # A file of D2 with no min/max stats (as another writer may leave it): it must be read.
    adds = lake._write_files(TRIPS, rows(spark, [(3, D2, 30.0, "c")]), ("event_date",))
    bare = [dataclasses.replace(a, stats=json.dumps({"numRecords": json.loads(a.stats)["numRecords"]}))
            for a in adds]
    lake._append_adds(TRIPS, lake._delta(TRIPS), bare, rows(spark, BASE[:1]).schema, None)
    lake.append(TRIPS, rows(spark, BASE[3:]))
    result = lake.upsert(TRIPS, rows(spark, [(3, D3, 33.0, "moved")]), keys=["id"])
    assert {p["event_date"] for p in result.partitions_replaced} == {"2024-01-02", "2024-01-03"}
    assert_same(independent_read(spark, lake, TRIPS),
                rows(spark, [BASE[0], BASE[1], BASE[3], (3, D3, 33.0, "moved")]))


def test_upsert_by_a_long_string_key_without_stats_finds_it_in_another_partition(spark, lake):
    table = TableSpec("silver", "events", partition_by=("event_date",))
    long_id = "x" * (files.STATS_STRING_MAX + 8)  # too long for stats: the file is always read
    schema = "key string, event_date date, amount double"
    lake.append(table, spark.createDataFrame([(long_id, D1, 1.0), ("short", D1, 2.0)], schema))
    lake.append(table, spark.createDataFrame([("other", D2, 3.0)], schema))
    lake.upsert(table, spark.createDataFrame([(long_id, D3, 10.0)], schema), keys=["key"])
    assert_df_equality(lake.read(table), spark.createDataFrame(
        [("short", D1, 2.0), ("other", D2, 3.0), (long_id, D3, 10.0)], schema),
        ignore_row_order=True, ignore_nullable=True)


def test_upsert_key_ranges_compare_per_partition_of_the_new_rows(spark, lake):
    # New rows in D1 (ids 1..2) and D3 (ids 7..8): D2's file (ids 3..6) overlaps the overall
    # range 1..8 but neither partition's range, so it is not rewritten.
    lake.append(TRIPS, rows(spark, [(1, D1, 1.0, "a"), (2, D1, 2.0, "b")]))
    lake.append(TRIPS, rows(spark, [(3, D2, 3.0, "c"), (6, D2, 6.0, "f")]))
    lake.append(TRIPS, rows(spark, [(7, D3, 7.0, "g")]))
    result = lake.upsert(TRIPS, rows(spark, [(2, D1, 20.0, "B"), (8, D3, 80.0, "h")]), keys=["id"])
    assert result.partitions_replaced == [{"event_date": "2024-01-01"}, {"event_date": "2024-01-03"}]
    assert_same(independent_read(spark, lake, TRIPS), rows(spark, [
        (1, D1, 1.0, "a"), (2, D1, 20.0, "B"), (3, D2, 3.0, "c"), (6, D2, 6.0, "f"), (7, D3, 7.0, "g"),
        (8, D3, 80.0, "h")]))


def test_upsert_rejects_duplicate_keys(spark, lake):
    lake.append(TRIPS, rows(spark, BASE))
    with pytest.raises(LakeError, match="duplicate keys"):
        lake.upsert(TRIPS, rows(spark, [(1, D1, 1.0, "x"), (1, D1, 2.0, "y")]), keys=["id"])
    assert lake.version(TRIPS) == 0


def test_every_commit_records_job_and_run_id(spark, lake):
    lake.append(TRIPS, rows(spark, BASE))
    lake.upsert(TRIPS, rows(spark, [(1, D1, 11.0, "a")]), keys=["id"])
    history = lake.history(TRIPS)
    assert [h["version"] for h in history] == [1, 0]
    assert {(h["job"], h["run_id"]) for h in history} == {("test_lake", lake.run_id)}


@pytest.mark.parametrize("bad_frame, message", [
    (lambda s: s.createDataFrame([(1, D1, 1.0)], "id long, event_date date, amount double"), "missing table column"),
    (lambda s: s.createDataFrame([(1, D1, "x", "a")], "id long, event_date date, amount string, label string"),
     "column 'amount' is double in the table but string"),
    (lambda s: s.createDataFrame([(1, D1, 1.0, "a", "x")], SCHEMA + ", extra string"), "schema evolution is off"),
])
def test_schema_mismatch_fails_and_commits_nothing(spark, lake, bad_frame, message):
    lake.append(TRIPS, rows(spark, BASE))
    with pytest.raises(SchemaMismatchError, match=message):
        lake.append(TRIPS, bad_frame(spark))
    assert lake.version(TRIPS) == 0
    assert_same(independent_read(spark, lake, TRIPS), rows(spark, BASE))


def test_safe_widening_is_cast(spark, lake):
    lake.append(TRIPS, rows(spark, BASE))
    narrow = spark.createDataFrame([(7, D1, 70, "g")], "id int, event_date date, amount int, label string")
    lake.append(TRIPS, narrow)
    assert lake.read(TRIPS).where("id = 7").select("amount").first()[0] == 70.0


def test_schema_evolution_adds_nullable_column_where_allowed(spark, lake):
    table = TableSpec("silver", "evolving", partition_by=("event_date",), schema_evolution=True)
    lake.append(table, rows(spark, BASE))
    wider = spark.createDataFrame([(8, D2, 80.0, "h", "extra!")], SCHEMA + ", note string")
    lake.append(table, wider)
    result = lake.read(table)
    assert result.columns == ["id", "event_date", "amount", "label", "note"]
    assert result.where("note is null").count() == 4
    assert result.where("id = 8").first()["note"] == "extra!"


def test_concurrent_appends_both_land(spark, lake):
    lake.append(TRIPS, rows(spark, BASE))
    errors = []

    def append(start):
        try:
            lake.append(TRIPS, rows(spark, [(start + i, D2, 1.0, "w") for i in range(5)]))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(100 * (n + 1),)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert lake.version(TRIPS) == 2
    assert independent_read(spark, lake, TRIPS).count() == 14


def test_concurrent_upserts_of_one_partition_land_or_conflict_cleanly(spark, lake):
    lake.append(TRIPS, rows(spark, BASE))
    outcomes = []

    def upsert(label):
        try:
            lake.upsert(TRIPS, rows(spark, [(1, D1, 99.0, label)]), keys=["id"])
            outcomes.append(("ok", label))
        except ConflictError as exc:
            outcomes.append(("conflict", str(exc)))

    threads = [threading.Thread(target=upsert, args=(name,)) for name in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    landed = [o for o in outcomes if o[0] == "ok"]
    assert len(outcomes) == 2 and landed
    table = independent_read(spark, lake, TRIPS)
    # never both versions of key 1, never lost rows
    assert table.where("id = 1").count() == 1
    assert table.count() == 4
    assert lake.version(TRIPS) == len(landed)
    for kind, detail in outcomes:
        if kind == "conflict":
            assert "conflicted with a concurrent commit" in detail


KILLED_WRITER = textwrap.dedent("""
    import os, sys, time
    from pyspark.sql import SparkSession
    from strata.lake import TableSpec
    from strata.lake.delta_rs import DeltaRsLake

    root, endpoint = sys.argv[1], sys.argv[2] or None
    spark = (SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
             .config("spark.sql.session.timeZone", "UTC").getOrCreate())

    def stall(*args, **kwargs):  # files are written; stop right before the commit
        print("FILES WRITTEN", flush=True)
        time.sleep(600)

    DeltaRsLake._commit = stall
    lake = DeltaRsLake(spark, root, "killed", "run-killed", s3_endpoint=endpoint)
    df = spark.createDataFrame([(i, __import__("datetime").date(2024, 1, 1), 1.0, "k") for i in range(100, 200)],
                               "id long, event_date date, amount double, label string")
    lake.upsert(TableSpec("silver", "trips", ("event_date",)), df, keys=["id"])
""")


def test_writer_killed_before_commit_leaves_last_version(spark, lake, tmp_path):
    lake.append(TRIPS, rows(spark, BASE))
    script = tmp_path / "killed_writer.py"
    script.write_text(KILLED_WRITER)
    proc = subprocess.Popen([sys.executable, str(script), lake.root, lake.s3_endpoint or ""],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=os.environ.copy())
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            line = proc.stdout.readline()
            if "FILES WRITTEN" in line or not line:
                break
        assert "FILES WRITTEN" in line, "the writer never reached its commit"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    assert lake.version(TRIPS) == 0
    assert_same(independent_read(spark, lake, TRIPS), rows(spark, BASE))
    assert_same(lake.read(TRIPS), rows(spark, BASE))
    # the dead writer's files are orphans: once its in-flight marker expired, vacuum removes them
    assert lake.vacuum(TRIPS, retention_hours=0) == []  # marker still live: they may yet be committed
    deleted = lake.vacuum(TRIPS, retention_hours=0, inflight_ttl_hours=0)
    assert deleted, "vacuum should remove the orphaned files"
    assert_same(independent_read(spark, lake, TRIPS), rows(spark, BASE))


def test_vacuum_removes_files_of_replaced_versions(spark, lake):
    lake.append(TRIPS, rows(spark, BASE))
    lake.overwrite(TRIPS, rows(spark, [(9, D1, 90.0, "z")]))
    deleted = lake.vacuum(TRIPS, retention_hours=0)
    assert len(deleted) == 3  # the three partition files of version 0
    assert_same(independent_read(spark, lake, TRIPS), rows(spark, [(9, D1, 90.0, "z")]))


def test_string_partition_values_with_special_characters(spark, lake):
    table = TableSpec("gold", "by_label", partition_by=("label",))
    data = [(1, D1, 1.0, "a b:c/d"), (2, D1, 2.0, None), (3, D2, 3.0, "100%")]
    lake.append(table, rows(spark, data))
    assert_same(lake.read(table), rows(spark, data))
    assert_same(independent_read(spark, lake, table), rows(spark, data))
    lake.upsert(table, rows(spark, [(1, D1, 5.0, "a b:c/d")]), keys=["id", "label"])
    assert [r.amount for r in lake.read(table).where("id = 1").collect()] == [5.0]
    assert independent_read(spark, lake, table).count() == 3


class CopyingStagedLake(DeltaRsLake):
    """The generic staged path (a staging folder, commit = append a copy), as engines without an
    in-place commit (delta-spark) take it, here over the delta-rs engine's append."""
    staging_location = Lake.staging_location
    commit_staged = Lake.commit_staged


def stage(spark, lake, table, data) -> StagedFiles:
    """What executors do: write the rows as Parquet files where the lake stages them."""
    frame = rows(spark, data)
    writer = files.PartitionedWriter(lake.staging_location(table), table.partition_by, to_arrow_schema(frame.schema))
    writer.write(pa.Table.from_pandas(frame.toPandas(), preserve_index=False))
    return StagedFiles(table, frame.schema, tuple(writer.close()))


def staged_paths_exist(lake, staged) -> list[bool]:
    fs, root = lake.staging_location(staged.table).filesystem()
    return [fs.get_file_info(f"{root}/{f['path']}").type != pafs.FileType.NotFound for f in staged.files]


@pytest.mark.parametrize("engine", [DeltaRsLake, CopyingStagedLake], ids=["in-place", "copy"])
def test_staged_files_are_invisible_until_committed_in_one_commit(spark, lake_root, engine):
    root, endpoint = lake_root
    lake = engine(spark, root, job="test_lake", run_id=uuid.uuid4().hex, s3_endpoint=endpoint)
    lake.append(TRIPS, rows(spark, BASE[:1]))
    staged = stage(spark, lake, TRIPS, BASE[1:])
    assert len(staged.files) == 3 and staged.rows == 3  # one file per partition
    assert_same(lake.read_staged(staged), rows(spark, BASE[1:]))
    assert lake.row_count(TRIPS) == 1 and lake.version(TRIPS) == 0  # not in the table yet

    commit = lake.commit_staged(staged)
    assert (commit.version, commit.rows_added) == (1, 3)
    assert_same(independent_read(spark, lake, TRIPS), rows(spark, BASE))
    assert lake.history(TRIPS, 1)[0]["job"] == "test_lake"


def test_discarded_staged_files_are_deleted_and_a_mismatched_stage_is_refused(spark, lake):
    lake.append(TRIPS, rows(spark, BASE[:1]))
    staged = stage(spark, lake, TRIPS, BASE[1:])
    assert all(staged_paths_exist(lake, staged))
    lake.discard_staged(staged)
    assert not any(staged_paths_exist(lake, staged))

    other = TableSpec("silver", "trips", partition_by=("label",))  # the table is by event_date
    mismatched = stage(spark, lake, other, BASE[1:])
    with pytest.raises(SchemaMismatchError, match="partitioned by"):
        lake.commit_staged(mismatched)
    assert lake.version(TRIPS) == 0


# ---- what a write read is fenced: concurrent writers never overlap silently ----------------

def _gated(tmp_path, spark_type="double"):
    """A column function that blocks the Spark task computing it until the test says go: the
    write has read its snapshot and is working when another writer commits."""
    started, go = tmp_path / "started", tmp_path / "go"

    @F.udf(spark_type)
    def gated(value):
        started.touch()
        deadline = time.monotonic() + 120
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return value

    return gated, started, go


def _concurrent_append(lake, table, data):
    """Another writer (deltalake itself, no Spark) appends to the table."""
    from deltalake import write_deltalake
    batch = pa.table({"id": pa.array([r[0] for r in data], pa.int64()), "amount": [r[2] for r in data],
                      "label": [r[3] for r in data], "event_date": pa.array([r[1] for r in data], pa.date32())})
    options = None
    if lake.s3_endpoint:
        options = {"AWS_ENDPOINT_URL": lake.s3_endpoint, "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
    write_deltalake(lake.path(table), batch, mode="append", storage_options=options)


@pytest.mark.parametrize("operation", ["overwrite_partitions", "upsert"])
def test_replacing_partitions_conflicts_with_a_concurrent_append_into_them(spark, lake, tmp_path, operation):
    lake.append(TRIPS, rows(spark, BASE))
    outcome = {}

    def write():
        try:
            if operation == "upsert":  # its source is cached before the snapshot: gate the retraction lookup
                gated, _, _ = _gated(tmp_path, "string")
                retract = spark.createDataFrame([("none",)], "label string").withColumn("label", gated("label"))
                lake.upsert(TRIPS, rows(spark, [(1, D1, 11.0, "r")]), keys=["id"], retract=retract)
            else:
                gated, _, _ = _gated(tmp_path)
                rewrite = rows(spark, [(1, D1, 11.0, "r")]).withColumn("amount", gated("amount"))
                lake.overwrite_partitions(TRIPS, rewrite, partitions=[{"event_date": D1}])
            outcome["result"] = "committed"
        except Exception as exc:  # noqa: BLE001 - asserted below
            outcome["result"] = exc

    _, started, go = _gated(tmp_path)
    writer = threading.Thread(target=write)
    writer.start()
    deadline = time.monotonic() + 120
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    _concurrent_append(lake, TRIPS, [(1, D1, 77.0, "theirs")])
    go.touch()
    writer.join()
    assert isinstance(outcome["result"], ConflictError), outcome
    # overwrite_partitions read the partition; upsert looked its keys up in the whole table
    assert ("event_date" if operation == "overwrite_partitions" else "the table") in str(outcome["result"])
    assert "nothing was committed" in str(outcome["result"])
    # nothing of the rewrite landed; the other writer's row did
    assert_same(independent_read(spark, lake, TRIPS), rows(spark, BASE + [(1, D1, 77.0, "theirs")]))
    # a re-run succeeds on top of the other writer's commit
    lake.overwrite_partitions(TRIPS, rows(spark, [(1, D1, 11.0, "r")]), partitions=[{"event_date": D1}])
    assert_same(independent_read(spark, lake, TRIPS), rows(spark, [(1, D1, 11.0, "r")] + BASE[2:]))


def test_a_concurrent_append_outside_the_replaced_partitions_does_not_conflict(spark, lake, tmp_path):
    lake.append(TRIPS, rows(spark, BASE))
    gated, started, go = _gated(tmp_path)
    rewrite = rows(spark, [(1, D1, 11.0, "r")]).withColumn("amount", gated("amount"))
    writer = threading.Thread(target=lambda: lake.overwrite_partitions(TRIPS, rewrite, partitions=[{"event_date": D1}]))
    writer.start()
    while not started.exists():
        time.sleep(0.05)
    _concurrent_append(lake, TRIPS, [(9, D3, 90.0, "theirs")])
    go.touch()
    writer.join()
    assert_same(independent_read(spark, lake, TRIPS),
                rows(spark, [(1, D1, 11.0, "r")] + BASE[2:] + [(9, D3, 90.0, "theirs")]))


def test_fenced_append_conflicts_with_data_committed_since_its_read(spark, lake):
    table = TableSpec("bronze", "objects", partition_by=("event_date",))
    before = lake.read_version(table)
    assert before == -1
    lake.append(table, rows(spark, BASE[:1]))  # someone else creates it meanwhile
    with pytest.raises(ConflictError, match="nothing was committed"):
        lake.append(table, rows(spark, BASE[1:2]), read=ReadSet(before))
    read = ReadSet(lake.read_version(table))
    _concurrent_append(lake, table, [(5, D2, 5.0, "theirs")])
    with pytest.raises(ConflictError, match="which this write read at version 0"):
        lake.append(table, rows(spark, BASE[1:2]), read=read)
    assert independent_read(spark, lake, table).count() == 2
    lake.append(table, rows(spark, BASE[1:2]), read=ReadSet(lake.read_version(table)))
    lake.append(table, rows(spark, BASE[2:3]))  # a blind append is never fenced
    assert independent_read(spark, lake, table).count() == 4


# ---- latest wins across runs, retraction, and the partitions each commit changed -----------

def test_upsert_never_replaces_a_newer_row_with_an_older_one(spark, lake):
    lake.append(TRIPS, rows(spark, BASE))  # amount is the version column here
    result = lake.upsert(TRIPS, rows(spark, [(1, D1, 5.0, "older"), (2, D1, 25.0, "newer"), (3, D2, 30.0, "same"),
                                             (8, D2, 1.0, "new key")]),
                         keys=["id"], newer_by=["amount"])
    assert result.rows_skipped == 1
    assert_same(independent_read(spark, lake, TRIPS),
                rows(spark, [BASE[0], (2, D1, 25.0, "newer"), (3, D2, 30.0, "same"), BASE[3], (8, D2, 1.0, "new key")]))


def test_upsert_retracts_matching_rows_in_the_same_commit_wherever_they_are(spark, lake):
    lake.append(TRIPS, rows(spark, BASE))
    before = lake.version(TRIPS)
    retract = spark.createDataFrame([("d",), ("b",)], "label string")
    result = lake.upsert(TRIPS, rows(spark, [(5, D1, 50.0, "e")]), keys=["id"], retract=retract)
    assert result.version == before + 1 and result.rows_retracted == 2
    assert_same(independent_read(spark, lake, TRIPS), rows(spark, [BASE[0], BASE[2], (5, D1, 50.0, "e")]))
    changed = lake.history(TRIPS, 1)[0]["partitions"]
    assert sorted(p["event_date"] for p in changed) == ["2024-01-01", "2024-01-03"]


def test_changed_partitions_of_a_run_date(spark, lake_root):
    root, endpoint = lake_root
    day_lake = DeltaRsLake(spark, root, job="t", run_id="r1", run_date="2024-02-01", s3_endpoint=endpoint)
    day_lake.append(TRIPS, rows(spark, BASE[:2]))
    day_lake.upsert(TRIPS, rows(spark, [(3, D2, 31.0, "c")]), keys=["id"])
    other = DeltaRsLake(spark, root, job="t", run_id="r2", run_date="2024-02-02", s3_endpoint=endpoint)
    other.overwrite_partitions(TRIPS, rows(spark, [(4, D3, 40.0, "d")]))
    assert sorted(p["event_date"] for p in day_lake.changed_partitions(TRIPS, "2024-02-01")) == \
        ["2024-01-01", "2024-01-02"]
    assert other.changed_partitions(TRIPS, "2024-02-02") == [{"event_date": "2024-01-03"}]


# ---- a commit whose response was lost is recognised, never reported as "nothing committed" ----

@pytest.mark.parametrize("fault", ["drop_response", "status_after"])
def test_a_commit_that_raised_but_landed_is_recognised(spark, s3_endpoint, s3_bucket, fault):
    from faults import Fault, FaultProxy

    with FaultProxy(s3_endpoint) as proxy:
        lake = DeltaRsLake(spark, f"s3://{s3_bucket}/lake", job="t", run_id="r", s3_endpoint=proxy.endpoint_url)
        lake.append(TRIPS, rows(spark, BASE))
        # the next log entry (version 1) reaches the store, its answer never reaches the writer
        lost = proxy.add(Fault("PUT", r"/_delta_log/0+1\.json$", kind=fault, status=503))
        result = lake.overwrite_partitions(TRIPS, rows(spark, [(1, D1, 11.0, "r")]), partitions=[{"event_date": D1}])
        assert proxy.hits(lost) == 1
        assert result.version == 1 and lake.version(TRIPS) == 1
        assert_same(independent_read(spark, lake, TRIPS), rows(spark, [(1, D1, 11.0, "r")] + BASE[2:]))
        lost = proxy.add(Fault("PUT", r"/_delta_log/0+2\.json$", kind=fault, status=503))
        result = lake.append(TRIPS, rows(spark, [(9, D3, 9.0, "z")]))
        assert proxy.hits(lost) == 1 and result.version == 2 and lake.version(TRIPS) == 2
        assert independent_read(spark, lake, TRIPS).count() == 4
