"""The lake: Delta tables under <root>/<layer>/<table>, behind one interface and two engines."""
from __future__ import annotations

from pyspark.sql import SparkSession

from strata.config import Config
from strata.lake.base import (CommitOutcomeUnknown, CommitResult, CompactResult, ConflictError, Lake, LakeError, ReadSet,
                              SchemaMismatchError, StagedFiles, TableNotFoundError, TableSpec)

__all__ = ["CommitOutcomeUnknown", "CommitResult", "CompactResult", "ConflictError", "Lake", "LakeError", "ReadSet",
           "SchemaMismatchError", "StagedFiles", "TableNotFoundError", "TableSpec", "open_lake"]


def open_lake(config: Config, spark: SparkSession, job: str, run_id: str, run_date: str | None = None) -> Lake:
    """The engine the config names; never a silent fallback to the other."""
    if config.lake.engine == "delta-spark":
        from strata.lake.delta_spark import DeltaSparkLake
        return DeltaSparkLake(spark, config.lake.root, job, run_id, run_date,
                              s3_endpoint=config.s3.endpoint_url, s3_region=config.s3.region)
    from strata.lake.delta_rs import DeltaRsLake
    return DeltaRsLake(spark, config.lake.root, job, run_id, run_date,
                       s3_endpoint=config.s3.endpoint_url, s3_region=config.s3.region)
