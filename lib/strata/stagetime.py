"""Executor time of a block of Spark work, read from the driver's status store.

The store (the JVM's AppStatusStore, `SparkContext.statusStore`) is what Spark's status REST API
(`/api/v1/applications/<id>/executors`, `/stages`) serves, and it is there with the UI off too.
A Measure takes the difference, over the block, of every executor's totalDuration (milliseconds
its tasks ran, summed over tasks: core-seconds, one core per task). Executors' totals are kept
for the whole application, so nothing is lost however many stages the block runs; the work is
the block's as long as no other thread of the same SparkContext runs jobs meanwhile.

CPU seconds (executorCpuTime) exist per stage only, and the store keeps the newest
spark.ui.retainedStages stages (1000 by default), dropping skipped ones first: they are summed
over the stages still held, and `stages_missing` counts the ids it no longer holds (skipped
stages, which did no work, or dropped ones, whose CPU time is then missing).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Measure:
    """with Measure(spark) as m: ...; then m.wall_seconds, m.core_seconds, m.cpu_seconds, m.stages."""
    spark: Any
    first_stage: int = 0
    wall_seconds: float = 0.0
    core_seconds: float = 0.0
    cpu_seconds: float = 0.0
    stages: int = 0
    stages_missing: int = 0
    tasks: int = 0
    _started: float = field(default=0.0, repr=False)
    _task_ms: int = field(default=0, repr=False)
    _tasks: int = field(default=0, repr=False)

    def __enter__(self) -> "Measure":
        _drain(self.spark)
        newest = next(iter(_stages(self.spark)), None)
        self.first_stage = newest[0] + 1 if newest else 0
        self._task_ms, self._tasks = _executor_totals(self.spark)
        self._started = time.monotonic()
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.wall_seconds = time.monotonic() - self._started
        if kind is not None:
            return
        _drain(self.spark)
        task_ms, tasks = _executor_totals(self.spark)
        self.core_seconds, self.tasks = (task_ms - self._task_ms) / 1000, tasks - self._tasks
        seen: set[int] = set()
        newest = self.first_stage - 1
        for stage_id, _attempt, _tasks, _run_ms, cpu_ns in _stages(self.spark):
            if stage_id < self.first_stage:
                break
            newest = max(newest, stage_id)
            seen.add(stage_id)
            self.cpu_seconds += cpu_ns / 1e9
        self.stages = len(seen)
        self.stages_missing = newest - self.first_stage + 1 - len(seen)

    def figures(self) -> dict[str, float]:
        return {"wall_seconds": round(self.wall_seconds, 3), "core_seconds": round(self.core_seconds, 3),
                "cpu_seconds": round(self.cpu_seconds, 3), "stages": self.stages,
                "stages_missing": self.stages_missing, "tasks": self.tasks}


def _executor_totals(spark) -> tuple[int, int]:
    """(milliseconds tasks ran, tasks finished) over every executor of the application, the
    driver in local mode and removed ones included."""
    listed = spark.sparkContext._jsc.sc().statusStore().executorList(False).iterator()
    task_ms = tasks = 0
    while listed.hasNext():
        executor = listed.next()
        task_ms, tasks = task_ms + executor.totalDuration(), tasks + executor.totalTasks()
    return task_ms, tasks


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
