"""Silver -> gold transforms: pure DataFrame -> DataFrame functions, no I/O."""
from __future__ import annotations

from pyspark.sql import DataFrame, functions as F


def features(silver: DataFrame, keys: list[str], partition_by: list[str], expressions: dict[str, str],
             label: str | None) -> DataFrame:
    """One row per entity: its keys, partition columns, features and (optional) label."""
    columns = [F.col(c) for c in [*keys, *partition_by]]
    columns += [F.expr(expression).alias(name) for name, expression in expressions.items()]
    if label:
        columns.append(F.expr(label).alias("label"))
    return silver.select(*columns)


def aggregate(silver: DataFrame, group_by: list[str], metrics: dict[str, str]) -> DataFrame:
    return silver.groupBy(*group_by).agg(*[F.expr(expression).alias(name) for name, expression in metrics.items()])
