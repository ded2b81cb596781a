"""The delta-spark engine: refuses to run without the Delta connector; its contract tests need
the connector on the classpath and skip, saying so, where it is absent (as on these machines)."""
from __future__ import annotations

import datetime as dt
import uuid

import pytest

from strata.lake import LakeError, TableSpec
from strata.lake.delta_spark import DeltaSparkLake, delta_connector_available


def test_configuring_delta_spark_without_connector_is_a_clear_error(spark, tmp_path):
    if delta_connector_available(spark):
        pytest.skip("the Delta connector is on this classpath")
    with pytest.raises(LakeError, match="Delta connector .* is not on the Spark classpath"):
        DeltaSparkLake(spark, str(tmp_path), "test", "run")


def test_delta_spark_contract(spark, tmp_path):
    if not delta_connector_available(spark):
        pytest.skip("Delta connector jars (io.delta:delta-spark) are not on the classpath: no Maven "
                    "repository is reachable here; run with spark-submit.sh --packages on a cluster")
    lake = DeltaSparkLake(spark, str(tmp_path), "test", uuid.uuid4().hex)
    table = TableSpec("silver", "t", partition_by=("d",))
    schema = "id long, d date, v double"
    day = dt.date(2024, 1, 1)
    lake.append(table, spark.createDataFrame([(1, day, 1.0), (2, day, 2.0)], schema))
    lake.upsert(table, spark.createDataFrame([(2, day, 3.0), (3, day, 4.0)], schema), keys=["id"])
    assert sorted(r.v for r in lake.read(table).collect()) == [1.0, 3.0, 4.0]
    assert lake.read(table, version=0).count() == 2
    assert lake.history(table)[0]["run_id"] == lake.run_id
