"""The stages of the pipeline, declared: the job each runs, the tables it reads and the tables
it writes (from the catalog). The pipeline derives their order from inputs and outputs and skips
a stage whose inputs did not change since it last completed; the pre-flight check finds the
suites a job gates with from its gated outputs. Adding a stage is one declaration here plus its
job module (strata.jobs.<job>, with run(ctx) and add_arguments).

Importing this module imports neither Spark nor the jobs (the checks before Spark use it).
"""
from __future__ import annotations

import graphlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from strata import catalog
from strata.catalog import TableSpec

if TYPE_CHECKING:
    from strata.config import DatasetConfig

Tables = Callable[["DatasetConfig"], list[TableSpec]]


@dataclass(frozen=True)
class Stage:
    """job: strata.jobs.<job> runs it, once per dataset. inputs: the lake tables it reads.
    outputs: the tables it writes, in the order it writes them (the last one is written last, so
    a commit there for the run date means the stage completed). applies: whether the dataset's
    config has this stage. always_gated: its gates run even with quality.gates off (ingest's
    bronze gate)."""
    job: str
    inputs: Tables
    outputs: Tables
    applies: Callable[["DatasetConfig"], bool] = lambda dataset: True
    always_gated: bool = False

    def gated(self, dataset: DatasetConfig) -> list[TableSpec]:
        """The outputs its gates validate, each with its suite."""
        return [t for t in self.outputs(dataset) if t.layer in catalog.GATED_LAYERS]


def _with_quarantine(tables: list[TableSpec]) -> list[TableSpec]:
    return [t for table in tables for t in (table, catalog.quarantine_of(table))]


STAGES = (
    Stage("ingest", inputs=lambda d: [], outputs=lambda d: [catalog.bronze(d)], always_gated=True),
    Stage("silver", inputs=lambda d: [catalog.bronze(d)], outputs=lambda d: _with_quarantine([catalog.silver(d)])),
    Stage("gold", inputs=lambda d: [catalog.silver(d)], outputs=lambda d: _with_quarantine(catalog.gold_tables(d)),
          applies=lambda d: d.gold is not None),
    Stage("anomalies", inputs=lambda d: [catalog.silver(d)], outputs=lambda d: _with_quarantine([catalog.flagged(d)]),
          applies=lambda d: d.anomalies is not None),
)


def stage(job: str) -> Stage | None:
    return next((s for s in STAGES if s.job == job), None)


def in_order(dataset: DatasetConfig, stages: tuple[Stage, ...] = STAGES) -> list[Stage]:
    """The stages that apply to the dataset, each after every stage that writes one of its
    inputs (declaration order among independent ones). ValueError on a cycle."""
    applying = [s for s in stages if s.applies(dataset)]
    writers = {t: s.job for s in applying for t in s.outputs(dataset)}
    graph = {s.job: {writers[t] for t in s.inputs(dataset) if t in writers} for s in applying}
    sorter = graphlib.TopologicalSorter(graph)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        raise ValueError(f"the stages of dataset {dataset.name} form a cycle: {exc.args[1]}") from None
    by_job, ordered = {s.job: s for s in applying}, []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=[s.job for s in applying].index)
        ordered.extend(by_job[job] for job in ready)
        sorter.done(*ready)
    return ordered


def upstream(dataset: DatasetConfig, of: Stage, stages: tuple[Stage, ...] = STAGES) -> list[Stage]:
    """The stages that write an input of `of`."""
    inputs = set(of.inputs(dataset))
    return [s for s in stages if s.applies(dataset) and inputs & set(s.outputs(dataset))]
