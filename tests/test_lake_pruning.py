"""Partition pruning and log-driven reads of the delta-rs engine, on local disk and local S3:
what a pruned read returns must be exactly the rows of those partitions."""
from __future__ import annotations

import datetime as dt
import uuid

import pytest
from chispa import assert_df_equality

from strata.lake import LakeError, TableSpec
from strata.lake.delta_rs import DeltaRsLake

SCHEMA = "id long, event_date date, amount double, label string"
TRIPS = TableSpec("silver", "trips", partition_by=("event_date",))
D1, D2, D3 = dt.date(2024, 1, 1), dt.date(2024, 1, 2), dt.date(2024, 1, 3)
ROWS = [(1, D1, 10.0, "a"), (2, D1, 20.0, "b"), (3, D2, 30.0, "c"), (4, D3, 40.0, "d"), (5, None, 50.0, "e")]


@pytest.fixture
def lake(spark, lake_root):
    root, endpoint = lake_root
    return DeltaRsLake(spark, root, job="test_pruning", run_id=uuid.uuid4().hex, s3_endpoint=endpoint)


def expected(spark, where):
    return spark.createDataFrame([r for r in ROWS if where(r)], SCHEMA)


def assert_same(actual, wanted):
    assert_df_equality(actual.select("id", "event_date", "amount", "label"), wanted,
                       ignore_row_order=True, ignore_nullable=True)


def test_partitioned_read_returns_exactly_the_rows_of_those_partitions(spark, lake):
    lake.append(TRIPS, spark.createDataFrame(ROWS, SCHEMA))
    assert_same(lake.read(TRIPS, partitions=[{"event_date": D1}]), expected(spark, lambda r: r[1] == D1))
    # several partitions, given as Delta strings or dates alike, and the null partition
    assert_same(lake.read(TRIPS, partitions=[{"event_date": "2024-01-02"}, {"event_date": None}]),
                expected(spark, lambda r: r[1] in (D2, None)))
    assert lake.read(TRIPS, partitions=[{"event_date": dt.date(2030, 1, 1)}]).count() == 0
    empty = lake.read(TRIPS, partitions=[])
    assert empty.count() == 0 and empty.schema == lake.read(TRIPS).schema
    with pytest.raises(LakeError, match="not partition columns"):
        lake.read(TRIPS, partitions=[{"label": "a"}])


def test_partitioned_read_skips_removed_files_and_reads_old_versions(spark, lake):
    lake.append(TRIPS, spark.createDataFrame(ROWS, SCHEMA))
    lake.overwrite_partitions(TRIPS, spark.createDataFrame([(9, D1, 90.0, "z")], SCHEMA))
    assert_same(lake.read(TRIPS, partitions=[{"event_date": D1}]),
                spark.createDataFrame([(9, D1, 90.0, "z")], SCHEMA))
    assert_same(lake.read(TRIPS, version=0, partitions=[{"event_date": D1}]), expected(spark, lambda r: r[1] == D1))


def test_partition_values_max_value_and_read_added(spark, lake):
    lake.append(TRIPS, spark.createDataFrame(ROWS[:2], SCHEMA))                      # version 0
    lake.append(TRIPS, spark.createDataFrame(ROWS[2:4], SCHEMA))                     # version 1
    lake.append(TRIPS, spark.createDataFrame(ROWS[4:], SCHEMA))                      # version 2
    assert sorted(lake.partition_values(TRIPS), key=str) == sorted(
        [{"event_date": "2024-01-01"}, {"event_date": "2024-01-02"}, {"event_date": "2024-01-03"},
         {"event_date": None}], key=str)
    assert lake.max_value(TRIPS, "amount") == 50.0
    assert lake.max_value(TRIPS, "id", partitions=[{"event_date": D1}, {"event_date": D2}]) == 3
    assert lake.max_value(TRIPS, "amount", partitions=[{"event_date": dt.date(2030, 1, 1)}]) is None
    assert_same(lake.read_added(TRIPS, 0, 2), spark.createDataFrame(ROWS[2:], SCHEMA))
    assert_same(lake.read_added(TRIPS, 0, 1), spark.createDataFrame(ROWS[2:4], SCHEMA))
    # a file added and then replaced is no longer there to read
    lake.overwrite_partitions(TRIPS, spark.createDataFrame([(7, D2, 70.0, "y")], SCHEMA))  # version 3
    assert_same(lake.read_added(TRIPS, 0, 3),
                spark.createDataFrame([ROWS[3], ROWS[4], (7, D2, 70.0, "y")], SCHEMA))
    assert lake.read_added(TRIPS, 3, 3).count() == 0
