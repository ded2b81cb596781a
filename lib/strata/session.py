"""The SparkSession, built from config."""
from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

from strata.config import Config

DELTA_SPARK_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def build_spark(config: Config, app_name: str | None = None) -> SparkSession:
    """getOrCreate a session for this config. Under spark-submit the master and driver memory
    given on its command line win (the JVM is already running); standalone Python gets them here."""
    spark_cfg = config.spark
    # Executors must run the same interpreter (and so the same packages) as the driver.
    python = os.environ.get("PYSPARK_PYTHON", sys.executable)
    os.environ["PYSPARK_PYTHON"] = python
    if spark_cfg.master.startswith("local") or "127.0.0.1" in spark_cfg.master:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

    builder = (
        SparkSession.builder.master(spark_cfg.master)
        .appName(app_name or spark_cfg.app_name)
        .config("spark.sql.shuffle.partitions", str(spark_cfg.shuffle_partitions))
        .config("spark.driver.memory", spark_cfg.driver_memory)
        .config("spark.pyspark.python", python)
        .config("spark.sql.session.timeZone", "UTC")
    )
    for key, value in spark_cfg.conf.items():
        builder = builder.config(key, value)
    if config.lake.engine == "delta-spark":
        for key, value in DELTA_SPARK_CONF.items():
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(spark_cfg.log_level)
    return spark
