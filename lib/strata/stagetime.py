"""Executor time of a block of Spark work, read from the driver's status store.

The store (the JVM's AppStatusStore, `SparkContext.statusStore`) is what Spark's status REST API
(`/api/v1/applications/<id>/stages`) serves, and it is there with the UI off too. Each stage
holds executorRunTime (milliseconds tasks spent running, summed over its tasks: core-seconds,
one core per task) and executorCpuTime (nanoseconds on the CPU). A Measure sums them over the
stages whose ids are above the newest stage id seen when it started (every attempt of a stage,
skipped stages adding nothing): the work of the block, as long as no other thread of the same
SparkContext runs jobs meanwhile.

The store keeps the newest spark.ui.retainedStages stages (1000 by default): a block that runs
more stages than that loses its oldest ones, which Measure reports as an error rather than
under-counting (raise the setting for such blocks).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


class StagesLost(RuntimeError):
    """Stages of the measured block were dropped from the status store before they were read."""


@dataclass
class Measure:
    """with Measure(spark) as m: ...; then m.wall_seconds, m.core_seconds, m.cpu_seconds, m.stages."""
    spark: Any
    first_stage: int = 0
    wall_seconds: float = 0.0
    core_seconds: float = 0.0
    cpu_seconds: float = 0.0
    stages: int = 0
    tasks: int = 0
    _started: float = field(default=0.0, repr=False)

    def __enter__(self) -> "Measure":
        _drain(self.spark)
        newest = next(iter(_stages(self.spark)), None)
        self.first_stage = newest[0] + 1 if newest else 0
        self._started = time.monotonic()
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.wall_seconds = time.monotonic() - self._started
        if kind is not None:
            return
        _drain(self.spark)
        seen: set[int] = set()
        newest = self.first_stage - 1
        for stage_id, _attempt, tasks, run_ms, cpu_ns in _stages(self.spark):
            if stage_id < self.first_stage:
                break
            newest = max(newest, stage_id)
            seen.add(stage_id)
            self.core_seconds += run_ms / 1000
            self.cpu_seconds += cpu_ns / 1e9
            self.tasks += tasks
        self.stages = len(seen)
        expected = newest - self.first_stage + 1
        if len(seen) < expected:
            raise StagesLost(f"{expected - len(seen)} of the {expected} stages run were dropped from Spark's status "
                             f"store before they were read: raise spark.ui.retainedStages (now "
                             f"{self.spark.sparkContext.getConf().get('spark.ui.retainedStages', '1000')})")

    def figures(self) -> dict[str, float]:
        return {"wall_seconds": round(self.wall_seconds, 3), "core_seconds": round(self.core_seconds, 3),
                "cpu_seconds": round(self.cpu_seconds, 3), "stages": self.stages, "tasks": self.tasks}


def _drain(spark) -> None:
    """Wait until the listener bus has handed every event to the status store (it is
    asynchronous: a job's last stage may complete in the store after the action returned)."""
    bus = spark.sparkContext._jsc.sc().listenerBus()
    bus.waitUntilEmpty(60_000)


def _stages(spark):
    """(stage id, attempt, tasks, executorRunTime ms, executorCpuTime ns) of every stage the
    store holds, newest first (the store lists them so)."""
    sc = spark.sparkContext
    gateway = sc._gateway
    store = sc._jsc.sc().statusStore()
    listed = store.stageList(None, False, False, gateway.new_array(gateway.jvm.double, 0), None)
    iterator = listed.iterator()
    while iterator.hasNext():
        stage = iterator.next()
        yield stage.stageId(), stage.attemptId(), stage.numCompleteTasks(), stage.executorRunTime(), stage.executorCpuTime()
