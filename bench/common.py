"""Shared helpers for the benchmarks in bench/: a local SparkSession, a timer, a readable table,
and the one final JSON line (always the last line of stdout) that scripts and CI parse."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence


def add_spark_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The Spark options every benchmark takes."""
    parser.add_argument("--master", default="local[2]", help="Spark master (default: local[2])")
    parser.add_argument("--shuffle-partitions", type=int, default=4,
                        help="spark.sql.shuffle.partitions (default: 4)")
    parser.add_argument("--driver-memory", default="4g", help="spark.driver.memory (default: 4g)")
    return parser


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
