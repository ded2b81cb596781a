"""Schema enforcement: a frame is conformed to the table's schema before anything is written."""
from __future__ import annotations

from pyspark.sql import DataFrame, functions as F
from pyspark.sql import types as T

from strata.lake.base import SchemaMismatchError

# Widenings that lose nothing; anything else between different types is a mismatch.
_SAFE_WIDENING = {
    (T.ByteType, T.ShortType), (T.ByteType, T.IntegerType), (T.ByteType, T.LongType),
    (T.ShortType, T.IntegerType), (T.ShortType, T.LongType), (T.IntegerType, T.LongType),
    (T.FloatType, T.DoubleType), (T.ByteType, T.DoubleType), (T.ShortType, T.DoubleType),
    (T.IntegerType, T.DoubleType), (T.DateType, T.TimestampType),
}


def conform(df: DataFrame, table_schema: T.StructType, table_name: str,
            schema_evolution: bool) -> tuple[DataFrame, list[T.StructField]]:
    """Returns df with the table's column order and types, plus the new columns to add to the
    table (only when schema_evolution allows them). Raises SchemaMismatchError otherwise."""
    frame = {f.name: f for f in df.schema.fields}
    table = {f.name: f for f in table_schema.fields}

    missing = [name for name in table if name not in frame]
    if missing:
        raise SchemaMismatchError(
            f"{table_name}: frame is missing table column(s) {missing}; nothing was committed")

    columns = []
    for name, field in table.items():
        have = frame[name].dataType
        if have == field.dataType:
            columns.append(F.col(name))
        elif isinstance(have, T.NullType) or (type(have), type(field.dataType)) in _SAFE_WIDENING:
            columns.append(F.col(name).cast(field.dataType).alias(name))
        else:
            raise SchemaMismatchError(
                f"{table_name}: column '{name}' is {field.dataType.simpleString()} in the table but "
                f"{have.simpleString()} in the frame; nothing was committed")

    extra = [frame[name] for name in frame if name not in table]
    if extra and not schema_evolution:
        raise SchemaMismatchError(
            f"{table_name}: frame has column(s) {[f.name for f in extra]} that the table does not, "
            "and schema evolution is off for this table; nothing was committed")
    new_fields = [T.StructField(f.name, f.dataType, nullable=True) for f in extra]
    columns.extend(F.col(f.name) for f in new_fields)
    return df.select(*columns), new_fields
