"""Every table of the lake, defined once: <root>/<layer>/<name>.

Jobs, the pipeline, maintenance, the pre-flight suite check and the benchmarks find their tables
here and nowhere else. A table's quality suite is expectations/<layer>/<name>.json; a table whose
rows can be rejected by its suite has a quarantine table of the same name
(quarantine_of). Names are checked when a spec is made: they become paths and SQL identifiers.

Importing this module imports neither Spark nor Great Expectations (the config checks use it
before the JVM starts).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from strata.config import DatasetConfig, ModelConfig

NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
NAME_RULE = "lowercase letters, digits and _, starting with a letter"
# The layers a table's suite can gate (expectations/<layer>/).
GATED_LAYERS = ("bronze", "silver", "gold", "monitoring")


@dataclass(frozen=True)
class TableSpec:
    """A table of the lake: <root>/<layer>/<name>."""
    layer: str
    name: str
    partition_by: tuple[str, ...] = ()
    # New nullable columns in a written frame are added to the table only when this is set.
    schema_evolution: bool = False

    def __post_init__(self) -> None:
        for what, value in (("layer", self.layer), ("name", self.name)):
            if not isinstance(value, str) or not NAME.match(value):
                raise ValueError(f"table {what} {value!r} is not a valid name: {NAME_RULE}")
        object.__setattr__(self, "partition_by", tuple(self.partition_by))

    @property
    def qualified_name(self) -> str:
        return f"{self.layer}.{self.name}"


# --- tables every dataset shares ----------------------------------------------------------------

# Objects that yielded no rows (empty or permanently unreadable), judged under a config fingerprint.
INGEST_ERRORS = TableSpec("ops", "ingest_errors", schema_evolution=True)
# Every object version ingest accounted for (strata.sources.manifest), by dataset and folder: what
# ingest and silver look objects up in instead of all of bronze.
INGESTED_OBJECTS = TableSpec("ops", "ingested_objects", partition_by=("dataset", "key_prefix"))
# One row per job, dataset and run date that failed or was blocked (strata.runs).
FAILED_RUNS = TableSpec("ops", "failed_runs")
# One row per expectation of every gate that ran (strata.quality).
QUALITY_RESULTS = TableSpec("quality", "results")


def shared_tables() -> list[TableSpec]:
    return [INGEST_ERRORS, INGESTED_OBJECTS, FAILED_RUNS, QUALITY_RESULTS]


# --- a dataset's tables -------------------------------------------------------------------------

def bronze(dataset: DatasetConfig) -> TableSpec:
    """Raw rows as read, with lineage, partitioned by the date they were ingested on."""
    return TableSpec("bronze", dataset.name, partition_by=("_ingest_date",),
                     schema_evolution=dataset.schema_evolution)


def silver(dataset: DatasetConfig) -> TableSpec:
    """Typed, de-duplicated, latest version of each key, partitioned by event partition."""
    return TableSpec("silver", dataset.name, partition_by=tuple(dataset.partition_by),
                     schema_evolution=dataset.schema_evolution)


def features(dataset: DatasetConfig) -> TableSpec:
    """One row per key: keys, partition columns, features and label (training and scoring)."""
    return TableSpec("gold", f"{dataset.name}_features", partition_by=tuple(dataset.partition_by))


def analysis(dataset: DatasetConfig) -> TableSpec | None:
    """The warehouse's aggregate, partitioned by its configured partition_by (by default the
    dataset's partition columns it groups by); None when the dataset configures none."""
    if dataset.gold is None or dataset.gold.analysis is None:
        return None
    config = dataset.gold.analysis
    if config.partition_by is not None:
        return TableSpec("gold", config.name, partition_by=tuple(config.partition_by))
    return TableSpec("gold", config.name,
                     partition_by=tuple(c for c in dataset.partition_by if c in config.group_by))


def flagged(dataset: DatasetConfig) -> TableSpec:
    """Each ride of a run date with its cluster, outlier score and flag (the anomalies job),
    partitioned by the event date (anomalies.date_column)."""
    return TableSpec("gold", f"{dataset.name}_flagged", partition_by=(dataset.anomalies.date_column,))


def quarantine_of(table: TableSpec) -> TableSpec:
    """Where the rows that table's publication rejected go, with their reasons."""
    return TableSpec("quarantine", table.name, partition_by=("quarantined_on",))


def gold_tables(dataset: DatasetConfig) -> list[TableSpec]:
    """The gold tables gold publishes for the dataset, in publication order."""
    if dataset.gold is None:
        return []
    found = analysis(dataset)
    return [features(dataset)] + ([found] if found else [])


def dataset_tables(dataset: DatasetConfig) -> dict[str, TableSpec]:
    """Every table of the dataset by role, in layer order."""
    tables = {"bronze": bronze(dataset), "silver": silver(dataset), "quarantine": quarantine_of(silver(dataset))}
    if dataset.gold is not None:
        tables.update(features=features(dataset), features_quarantine=quarantine_of(features(dataset)))
        found = analysis(dataset)
        if found is not None:
            tables.update(analysis=found, analysis_quarantine=quarantine_of(found))
    if dataset.anomalies is not None:
        tables.update(flagged=flagged(dataset), flagged_quarantine=quarantine_of(flagged(dataset)))
    return tables


# --- a model's tables ---------------------------------------------------------------------------

def predictions(model: ModelConfig, dataset: DatasetConfig) -> TableSpec:
    """The model's batch predictions for the warehouse (predict): one row per key and role
    (champion, shadow), partitioned like the gold features they score."""
    return TableSpec("gold", f"{model.name}_predictions", partition_by=tuple(dataset.partition_by))


def learnt_rows(model: str) -> TableSpec:
    """The rows each training run of the model trained or tuned on (keys, group, split), by MLflow
    run id: what the promotion gate excludes when it compares with that run's model. Appended
    only, so it outlives vacuums of the features table's old versions."""
    return TableSpec("ml", f"{model}_learnt_rows", partition_by=("mlflow_run_id",))


# The monitor job's tables of a model (strata.jobs.monitor), each one partition per run date.
MONITORING_TABLES = ("profile", "drift", "performance", "decisions")


def monitoring(model: str, kind: str) -> TableSpec:
    """monitoring/<model>_<kind>: profile (per column of the run date's scored rows), drift (per
    column against the training profile and the previous day), performance (realised metrics per
    role once labels exist) or decisions (the retrain trigger's decision and its evidence)."""
    if kind not in MONITORING_TABLES:
        raise ValueError(f"unknown monitoring table {kind!r}; one of {', '.join(MONITORING_TABLES)}")
    return TableSpec("monitoring", f"{model}_{kind}", partition_by=("run_date",))


def model_tables(model: ModelConfig, dataset: DatasetConfig) -> dict[str, TableSpec]:
    """Every table of the model by role: predictions, learnt rows and monitoring, with the
    quarantines of the gated ones."""
    tables = {"predictions": predictions(model, dataset),
              "predictions_quarantine": quarantine_of(predictions(model, dataset)),
              "learnt_rows": learnt_rows(model.name)}
    for kind in MONITORING_TABLES:
        tables[kind] = monitoring(model.name, kind)
        tables[f"{kind}_quarantine"] = quarantine_of(tables[kind])
    return tables


def suite_name(table: TableSpec) -> tuple[str, str]:
    """(layer, name) of the table's suite: expectations/<layer>/<name>.json."""
    if table.layer not in GATED_LAYERS:
        raise ValueError(f"table {table.qualified_name} has no quality suite (layers with suites: "
                         f"{', '.join(GATED_LAYERS)})")
    return table.layer, table.name
