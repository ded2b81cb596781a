"""Shared helpers for the benchmarks in bench/: a local SparkSession, the instrumentation (a
timer, CPU seconds of the process tree, a Recorder of phases with their Spark jobs), a readable
table, and the one final JSON line (always the last line of stdout) that scripts and CI parse.
A benchmark file is then a scenario: its data (bench/data.py), what it runs, what it checks."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence


def add_spark_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The Spark options every benchmark takes."""
    parser.add_argument("--master", default="local[2]", help="Spark master (default: local[2])")
    parser.add_argument("--shuffle-partitions", type=int, default=4,
                        help="spark.sql.shuffle.partitions (default: 4)")
    parser.add_argument("--driver-memory", default="4g", help="spark.driver.memory (default: 4g)")
    parser.add_argument("--workdir", default=None,
                        help="where the lakes and files go (default: a temp dir, deleted afterwards)")
    return parser


@contextmanager
def bench_workdir(path: str | None) -> Iterator[Path]:
    """The --workdir folder (kept), or a temp folder deleted afterwards."""
    own = path is None
    workdir = Path(tempfile.mkdtemp(prefix="strata-bench-") if own else path).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        yield workdir
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)


def finish(figures: dict[str, Any], problems: list[str], what: str) -> int:
    """Report wrong results (stderr and stdout), then the JSON line; the exit status."""
    if problems:
        print(f"ERROR: {what}:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        print(f"ERROR: {what}: " + "; ".join(problems), flush=True)
    emit_json(figures)
    return 1 if problems else 0


def main_with_local_s3(app_name: str, args: argparse.Namespace, run: Callable, what: str) -> int:
    """A benchmark's main over the local S3 endpoint: starts it (placeholder credentials set
    first, so Spark's Python workers inherit them) and Spark, calls
    run(spark, args, workdir, endpoint_url) -> (figures, problems), then finish()."""
    from strata_dev.local_s3 import LocalS3, use_local_credentials
    use_local_credentials()
    server = LocalS3().start()
    spark = None
    try:
        spark = build_spark(app_name, args.master, args.shuffle_partitions, args.driver_memory)
        with bench_workdir(args.workdir) as workdir:
            figures, problems = run(spark, args, workdir, server.endpoint_url)
    finally:
        if spark is not None:
            spark.stop()
        server.stop()
    return finish(figures, problems, what)


def build_spark(app_name: str, master: str = "local[2]", shuffle_partitions: int = 4,
                driver_memory: str = "4g", conf: dict[str, str] | None = None):
    """A local SparkSession configured like the tests: loopback only, executors on this
    interpreter, no UI, no console progress bars, UTC session time zone."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.driver.memory", driver_memory)
        .config("spark.pyspark.python", sys.executable)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
    )
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


class Timer:
    seconds: float = 0.0


@contextmanager
def timed() -> Iterator[Timer]:
    """with timed() as t: ...; then t.seconds (wall clock, perf_counter)."""
    timer = Timer()
    start = time.perf_counter()
    try:
        yield timer
    finally:
        timer.seconds = time.perf_counter() - start


def process_tree_cpu_seconds(root_pid: int | None = None) -> dict[int, float] | None:
    """CPU seconds (user + system, own and reaped children) of root_pid (default: this process)
    and every live descendant (the JVM, Python workers, servers we started), per pid; None where
    /proc is unavailable. Subtract two readings with cpu_seconds_between."""
    proc = "/proc"
    if not os.path.isdir(proc):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(name))
        cpu[int(name)] = sum(int(v) for v in fields[11:15]) / tick  # utime stime cutime cstime
    tree, stack = {}, [root_pid or os.getpid()]
    while stack:
        pid = stack.pop()
        tree[pid] = cpu.get(pid, 0.0)
        stack.extend(children.get(pid, []))
    return tree


def cpu_seconds_between(before: dict[int, float] | None, after: dict[int, float] | None) -> float | None:
    """CPU seconds the process tree used between two process_tree_cpu_seconds readings
    (processes that exited in between are not counted)."""
    if before is None or after is None:
        return None
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


# ---- phases and their Spark jobs --------------------------------------------------------------
JOB_GROUP_KEYS = ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel")


@dataclass
class Call:
    """One recorded phase: a wrapped call or a `with recorder.phase(...)` block."""
    name: str
    group: str
    parent: int | None
    start: float = 0.0
    end: float = 0.0
    own_jobs: int = 0
    children: list[int] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.end - self.start


class Recorder:
    """Phases of a run: each is timed and its Spark jobs land in a job group of its own (nested
    phases get theirs; the caller's group is restored after). Jobs are counted per phase with
    statusTracker().getJobIdsForGroup once the run is over (collect_jobs)."""

    def __init__(self, spark, prefix: str = "bench") -> None:
        self.sc = spark.sparkContext if hasattr(spark, "sparkContext") else spark
        self.prefix = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.calls: list[Call] = []
        self.stack: list[int] = []
        self.storage: dict[str, list[dict[str, Any]]] = {}  # cache state after a phase, by phase

    @contextmanager
    def phase(self, name: str) -> Iterator[Call]:
        index = len(self.calls)
        call = Call(name, f"{self.prefix}-{index}", self.stack[-1] if self.stack else None)
        self.calls.append(call)
        if call.parent is not None:
            self.calls[call.parent].children.append(index)
        saved = {key: self.sc.getLocalProperty(key) for key in JOB_GROUP_KEYS}
        self.sc.setJobGroup(call.group, name)
        self.stack.append(index)
        call.start = time.perf_counter()
        try:
            yield call
        finally:
            call.end = time.perf_counter()
            self.stack.pop()
            for key, value in saved.items():
                self.sc.setLocalProperty(key, value)

    def wrap(self, name: str, fn: Callable, by_table: bool = False, storage_after: bool = False) -> Callable:
        """fn, each call a phase; by_table: name[<layer>.<table>] when the first argument is a
        TableSpec (the lake's methods); storage_after: snapshot the Spark cache after it."""
        def wrapper(*args, **kwargs):
            label = name
            if by_table and args and hasattr(args[0], "qualified_name"):
                label = f"{name}[{args[0].qualified_name}]"
            try:
                with self.phase(label):
                    return fn(*args, **kwargs)
            finally:
                if storage_after:
                    self.snapshot_storage(f"after {label}")
        return wrapper

    @contextmanager
    def patched(self, owner: Any, names: Sequence[str], prefix: str = "", by_table: bool = False,
                storage_after: Sequence[str] = ()) -> Iterator["Recorder"]:
        """Wrap owner's functions (a module's, or an instance's methods) while inside; names the
        owner lacks are skipped (the code under test moves between releases)."""
        saved = [(name, owner.__dict__.get(name, _MISSING), getattr(owner, name))
                 for name in names if hasattr(owner, name)]
        for name, _, fn in saved:
            setattr(owner, name, self.wrap(f"{prefix}{name}", fn, by_table, name in storage_after))
        try:
            yield self
        finally:
            for name, own, _ in saved:
                if own is _MISSING:
                    delattr(owner, name)  # an instance's method: the class's shows again
                else:
                    setattr(owner, name, own)

    def snapshot_storage(self, label: str) -> None:
        """The block manager's cached RDDs now: memory and disk bytes, cached partitions."""
        infos = self.sc._jsc.sc().getRDDStorageInfo()
        self.storage[label] = [{"rdd": i.id(), "memory_mb": i.memSize() / 1e6, "disk_mb": i.diskSize() / 1e6,
                                "cached_partitions": i.numCachedPartitions(), "partitions": i.numPartitions()}
                               for i in infos]

    def collect_jobs(self) -> "Recorder":
        tracker = self.sc.statusTracker()
        for call in self.calls:
            call.own_jobs = len(tracker.getJobIdsForGroup(call.group))
        return self

    def jobs(self, index: int) -> int:
        """Spark jobs of a phase, its nested phases' included."""
        call = self.calls[index]
        return call.own_jobs + sum(self.jobs(c) for c in call.children)

    def find(self, name: str) -> list[int]:
        return [i for i, c in enumerate(self.calls) if c.name == name]

    def total(self, *names: str) -> float:
        return sum(self.calls[i].seconds for n in names for i in self.find(n))

    def total_jobs(self, *names: str) -> int:
        return sum(self.jobs(i) for n in names for i in self.find(n))

    def span(self, *names: str) -> tuple[float, float] | None:
        """(first start, last end) of the phases of any of these names; None if none happened."""
        found = [self.calls[i] for n in names for i in self.find(n)]
        return (min(c.start for c in found), max(c.end for c in found)) if found else None


_MISSING = object()


def breakdown_rows(phases: Sequence[tuple[str, str, bool]], seconds: dict[str, float], total: float,
                   jobs: dict[str, int | None] | None = None) -> list[tuple]:
    """Rows for print_table(["phase", "seconds", "% of run", "Spark jobs"], ...) from
    (key, label, sub-phase?) specs; sub-phases detail the phase above them."""
    return [(label, seconds[key], 100 * seconds[key] / total if total else None,
             None if jobs is None else jobs.get(key)) for key, label, _ in phases]


def fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.1f}"
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    """A fixed-width table: text columns left-aligned, numeric ones right-aligned."""
    cells = [[fmt(v) for v in row] for row in rows]
    numeric = [all(isinstance(row[i], (int, float)) and not isinstance(row[i], bool)
                   for row in rows if row[i] is not None) and bool(rows)
               for i in range(len(headers))]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if numeric[i] else v.ljust(w)
                         for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    if title:
        print(title)
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(line(row))
    print(flush=True)


def emit_json(figures: dict[str, Any]) -> None:
    """The figures as ONE JSON line; call it last so it is the last line of stdout."""
    sys.stdout.flush()
    print(json.dumps(figures, sort_keys=False, default=str), flush=True)
