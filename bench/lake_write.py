"""Benchmark: the delta-rs lake's writes against Spark's native Parquet writer.

The frame is silver.trips (bench/data.py: the demo columns typed, event_date, trip_duration_min;
trip_id keys that start with their date, like the demo's), cached before anything is timed.

1. append: DeltaRsLake.append into a fresh table, vs df.write.partitionBy("event_date").parquet
   of the same frame; --repeat runs each, alternated (ABBA) so a noisy machine hurts both alike.
   Target: lake throughput >= 0.8x native (native s / lake s).
2. breakdown of the append, each stage measured on its own in the same run (cumulative: each
   adds one step to the one before): Spark computing the frame alone (noop sink), + the Arrow
   hand-off (mapInArrow, nothing written), + the sort within partitions, + the per-partition
   split in Python, + Parquet encoding and compression (to a null sink), + file I/O (the real
   files), + the commit. --no-breakdown skips it.
3. upsert: 1% of the rows (half updates of existing trips, half new trips) on 3 of the date
   partitions, keyed by trip_id alone (the key does not hold the partition column, as in
   silver), into each appended table. Only those 3 partitions may be rewritten and the result
   is checked (exit 1 if wrong). Target: at most 0.3x of the append of the same table.

    .venv/bin/python bench/lake_write.py                 # 5M rows, several minutes on 2 cores
    .venv/bin/python bench/lake_write.py --rows 200000   # smoke run, about a minute
    .venv/bin/python bench/lake_write.py --before 26c8111  # also the lake code of that commit, same run

--before REV loads lib/strata/lake/{files,delta_rs}.py as of git REV next to the working
tree's and alternates them too: the before/after ratios come from the same run.

A report, not a test: exits 0 below the targets, 1 only if an upsert result is wrong.
The last line of stdout is the figures as one JSON line.
"""
from __future__ import annotations

import argparse
import datetime as dt
import statistics
import subprocess
import sys
import types
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

try:  # run as a script (bench/ is sys.path[0]) or imported as bench.lake_write
    import data
    from common import (Recorder, add_spark_args, bench_workdir, build_spark, finish,
                        print_table, timed)
except ImportError:  # pragma: no cover
    from bench import data
    from bench.common import (Recorder, add_spark_args, bench_workdir, build_spark, finish,
                              print_table, timed)

TARGET_RATIO = 0.8
TARGET_UPSERT_RATIO = 0.3
TOUCHED_PARTITIONS = 3
KEYS = ["trip_id"]
REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5_000_000, help="rows in the frame (default: 5,000,000)")
    parser.add_argument("--partitions", type=int, default=30,
                        help="distinct event_date values = table partitions (default: 30)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each write, alternated; best and spread reported (default: 3)")
    parser.add_argument("--before", metavar="REV", default=None,
                        help="also run the lake code (files.py, delta_rs.py) of this git revision")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the append's stage breakdown")
    add_spark_args(parser)
    args = parser.parse_args(argv)
    if args.rows < 1000:
        parser.error("--rows must be at least 1000")
    if args.partitions < TOUCHED_PARTITIONS:
        parser.error(f"--partitions must be at least {TOUCHED_PARTITIONS}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if (args.rows // 200 // TOUCHED_PARTITIONS + 1) * args.partitions >= args.rows:
        parser.error("--partitions is too large for --rows")
    return args


# ---- the lake code under test: this tree's, and optionally an earlier revision's -------------
def lake_versions(before: str | None) -> dict[str, Any]:
    """{label: DeltaRsLake class}: 'after' is this tree's; 'before' the one of git REV, loaded
    as its own modules (pickled by value, so executors need nothing installed)."""
    from strata.lake.delta_rs import DeltaRsLake
    versions = {"after": DeltaRsLake}
    if before:
        from pyspark import cloudpickle

        def load(name: str, path: str, replace: tuple[str, str] | None = None) -> types.ModuleType:
            source = subprocess.run(["git", "-C", str(REPO), "show", f"{before}:{path}"], check=True,
                                    capture_output=True, text=True).stdout
            if replace:
                source = source.replace(*replace)
            module = types.ModuleType(name)
            module.__file__ = f"<{before}:{path}>"
            sys.modules[name] = module
            exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102 - our own history
            cloudpickle.register_pickle_by_value(module)
            return module

        load("strata_before_files", "lib/strata/lake/files.py")
        old = load("strata_before_delta_rs", "lib/strata/lake/delta_rs.py",
                   ("from strata.lake import files\n", "import strata_before_files as files\n"))
        versions["before"] = old.DeltaRsLake
    return versions


def table_spec():
    from strata import catalog
    from strata.config import load_config
    return catalog.silver(load_config("local", environ={}).dataset(data.DATASET))


def lake_append(lake_class, spark, df, root: str, recorder: Recorder | None = None):
    """(seconds, files, lake, table) of one append into a fresh table; recorder: its phases."""
    lake = lake_class(spark, root, job="bench.lake_write", run_id=uuid.uuid4().hex)
    table = table_spec()
    if recorder is not None:
        with recorder.patched(lake, ("_write_files", "_commit", "_create"), "lake."):
            with recorder.phase("append") as call:
                result = lake.append(table, df)
        return call.seconds, result.files_added, lake, table
    with timed() as t:
        result = lake.append(table, df)
    return t.seconds, result.files_added, lake, table


def native_write(df, path: str):
    with timed() as t:
        df.write.mode("overwrite").partitionBy("event_date").parquet(path)
    return t.seconds, len(list(Path(path).glob("event_date=*/part-*.parquet")))


# ---- the append's stages, each measured on its own -------------------------------------------
class _NullHandler(pafs.FileSystemHandler):
    """Output streams that count bytes and keep nothing (the writer's encoding without I/O)."""

    def __eq__(self, other):
        return isinstance(other, _NullHandler)

    def __ne__(self, other):
        return not self == other

    def get_type_name(self):
        return "null"

    def normalize_path(self, path):
        return path

    def create_dir(self, path, recursive):
        pass

    def open_output_stream(self, path, metadata):
        return pa.MockOutputStream()

    def open_append_stream(self, path, metadata):
        return pa.MockOutputStream()

    def _unused(self, *args):
        raise NotImplementedError("the null filesystem only writes")

    get_file_info = get_file_info_selector = delete_dir = delete_dir_contents = delete_root_dir_contents = _unused
    delete_file = move = copy_file = open_input_stream = open_input_file = _unused


def _null_location(files_module):
    class NullLocation(files_module.Location):
        def filesystem(self):
            return pafs.PyFileSystem(_NullHandler()), "null"
    return NullLocation("null://")


def _drain(batches):
    """A mapInArrow sink: consumes the batches, yields one count row."""
    import pyarrow as pa
    n = sum(b.num_rows for b in batches)
    yield pa.RecordBatch.from_pydict({"n": [n]})


def _split_only(files_module, partition_by, schema):
    def run(batches):
        import pyarrow as pa
        n = 0
        for batch in batches:
            table = pa.Table.from_batches([batch]).select(schema.names).cast(schema)
            for _, _, part in files_module._split_by_partition(table, partition_by):
                n += part.num_rows
        yield pa.RecordBatch.from_pydict({"n": [n]})
    return run


def append_stages(spark, df, lake_class, workdir: Path, recorder: Recorder) -> dict[str, float]:
    """Seconds of each cumulative stage of the append (see the module docstring), for
    lake_class's files module."""
    import importlib
    from pyspark.sql.pandas.types import to_arrow_schema
    files_module = importlib.import_module(lake_class.__module__.replace("delta_rs", "files"))
    partition_by = ("event_date",)
    schema = to_arrow_schema(df.schema)
    prepared = df.sortWithinPartitions(*partition_by)
    stages: dict[str, float] = {}

    def stage(key: str, fn) -> None:
        with recorder.phase(f"stage {key}") as call:
            fn()
        stages[key] = call.seconds

    stage("frame_s", lambda: df.write.format("noop").mode("overwrite").save())
    stage("arrow_s", lambda: df.mapInArrow(_drain, "n long").collect())
    stage("sort_s", lambda: prepared.mapInArrow(_drain, "n long").collect())
    stage("split_s", lambda: prepared.mapInArrow(_split_only(files_module, partition_by, schema),
                                                 "n long").collect())
    null_writer = files_module.write_task(_null_location(files_module), partition_by, schema)
    stage("encode_s", lambda: prepared.mapInArrow(null_writer, files_module.FILE_SCHEMA_DDL).collect())
    seconds, _, _, _ = lake_append(lake_class, spark, df, str(workdir / f"stages-{uuid.uuid4().hex[:6]}"),
                                   recorder)
    stages["append_s"] = seconds
    last = recorder.calls[recorder.find("append")[-1]]
    commit = [c for c in recorder.calls if c.name in ("lake._commit", "lake._create") and c.start >= last.start]
    stages["write_s"] = sum(c.seconds for c in recorder.calls
                            if c.name == "lake._write_files" and c.start >= last.start)
    stages["commit_s"] = sum(c.seconds for c in commit)
    return stages


STAGES = [  # (key, label, sub?): the cost of each step = its stage minus the one before
    ("frame_d", "Spark computes the cached frame (noop sink)", False),
    ("arrow_d", "+ Arrow hand-off to Python (mapInArrow, rows dropped)", False),
    ("sort_d", "+ sort within partitions by event_date", False),
    ("split_d", "+ split by partition value in Python (cast, filter)", False),
    ("encode_d", "+ Parquet encoding and snappy compression (null sink)", False),
    ("io_d", "+ file I/O (the files written for real: _write_files)", False),
    ("commit_d", "+ the Delta commit (driver)", False),
    ("rest_d", "+ rest of append (exists, schema, snapshot)", False),
]


def stage_deltas(s: dict[str, float]) -> dict[str, float]:
    return {"frame_d": s["frame_s"], "arrow_d": s["arrow_s"] - s["frame_s"], "sort_d": s["sort_s"] - s["arrow_s"],
            "split_d": s["split_s"] - s["sort_s"], "encode_d": s["encode_s"] - s["split_s"],
            "io_d": s["write_s"] - s["encode_s"], "commit_d": s["commit_s"],
            "rest_d": s["append_s"] - s["write_s"] - s["commit_s"]}


# ---- upsert and its check -------------------------------------------------------------------
def check_upsert(lake, table, result, changes, rows: int, n_updates: int, n_new: int, days: int) -> list[str]:
    """Problems with the upserted table; empty when it is right."""
    from pyspark.sql import functions as F
    problems = []
    touched = sorted((data.SILVER_START + dt.timedelta(days=d)).isoformat()
                     for d in data.touched_days(days, TOUCHED_PARTITIONS))
    replaced = sorted(p.get("event_date") for p in result.partitions_replaced)
    if replaced != touched:
        problems.append(f"partitions replaced {replaced}, expected exactly {touched}")
    expected_rows = rows + n_new
    logged = lake.row_count(table)
    if logged != expected_rows:
        problems.append(f"row count from the Delta log is {logged:,}, expected {expected_rows:,} "
                        f"({rows:,} old + {n_new:,} new trips)")
    current = lake.read(table)
    scanned = current.count()
    if scanned != expected_rows:
        problems.append(f"lake.read(...) returns {scanned:,} rows, expected {expected_rows:,}")
    columns = [c for c in changes.columns]
    in_touched = current.where(F.col("event_date").isin(*[dt.date.fromisoformat(d) for d in touched]))
    expected = changes.select("trip_id", F.xxhash64(*columns).alias("expected"))
    # One pass over the touched partitions: duplicate keys, upserted keys found, wrong rows.
    seen = (in_touched.select("trip_id", F.xxhash64(*columns).alias("actual"))
            .join(F.broadcast(expected), "trip_id", "left")
            .agg(F.count(F.lit(1)).alias("rows"), F.countDistinct("trip_id").alias("keys"),
                 F.count("expected").alias("found"),
                 F.sum(F.when(F.col("actual") != F.col("expected"), 1).otherwise(0)).alias("wrong"))
            .first())
    if seen["rows"] != seen["keys"]:
        problems.append(f"{seen['rows'] - seen['keys']:,} duplicate key rows in the touched partitions")
    if seen["found"] != n_updates + n_new:
        problems.append(f"{seen['found']:,} rows match the {n_updates + n_new:,} upserted keys")
    if seen["wrong"]:
        problems.append(f"{seen['wrong']:,} upserted keys do not show their new row")
    return problems


UPSERT_METHODS = ("_touched_partitions", "_snapshot", "_read_files", "_write_files", "_commit")


# ---- main -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spark = build_spark("bench.lake_write", args.master, args.shuffle_partitions, args.driver_memory)
    try:
        with bench_workdir(args.workdir) as workdir:
            figures, problems = run(spark, args, workdir)
    finally:
        spark.stop()
    return finish(figures, problems, "upsert result is wrong")


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def run(spark, args, workdir: Path) -> tuple[dict, list[str]]:
    import deltalake
    import pyspark
    rows, days = args.rows, args.partitions
    versions = lake_versions(args.before)
    print(f"lake_write: {rows:,} silver trips, {days} date partitions, {args.repeat} runs each, "
          f"lake code: {', '.join(versions)}{f' (before = {args.before})' if args.before else ''}, "
          f"master {spark.sparkContext.master}, pyspark {pyspark.__version__}, "
          f"deltalake {deltalake.__version__}, workdir {workdir}", flush=True)

    df = data.silver_trips(spark, rows, days).cache()
    with timed() as t:
        cached = df.count()
    assert cached == rows, (cached, rows)
    print(f"generated and cached the frame in {t.seconds:.1f}s (not timed below)\n", flush=True)

    # Warm-up (untimed): Python workers, JIT, the deltalake import, every writer.
    small = df.limit(10_000)
    for label, lake_class in versions.items():
        lake_append(lake_class, spark, small, str(workdir / f"warmup-lake-{label}"))
    native_write(small, str(workdir / "warmup-native"))

    writers = [*versions, "native"]
    times: dict[str, list[float]] = {w: [] for w in writers}
    tables: dict[str, list] = {w: [] for w in versions}
    per_run = []
    for r in range(args.repeat):
        order = writers if r % 2 == 0 else writers[::-1]  # ABBA
        for writer in order:
            if writer == "native":
                seconds, n_files = native_write(df, str(workdir / "native"))
            else:
                seconds, n_files, lake, table = lake_append(versions[writer], spark, df,
                                                            str(workdir / f"lake-{writer}-{r}"))
                tables[writer].append((lake, table, seconds))
            times[writer].append(seconds)
            per_run.append((r + 1, writer, seconds, rows / seconds, n_files))
            print(f"  run {r + 1}: {writer:<7} {seconds:7.2f}s", flush=True)
    print()
    print_table(["run", "writer", "seconds", "rows/s", "files"], per_run,
                title="append runs (before/after: lake code; native: Spark's parquet writer)")

    # Ratio per round (each lake run against the native run of the same round) and of the bests.
    ratios = {w: [n / s for n, s in zip(times["native"], times[w])] for w in versions}
    best_ratio = {w: min(times["native"]) / min(times[w]) for w in versions}

    stage_figures: dict[str, dict[str, float]] = {}
    if not args.no_breakdown:
        recorder = Recorder(spark, "bench-lake-stages")
        for r in range(max(1, min(2, args.repeat))):
            for label, lake_class in (versions.items() if r % 2 == 0 else list(versions.items())[::-1]):
                s = stage_deltas(append_stages(spark, df, lake_class, workdir, recorder))
                for key, value in s.items():
                    stage_figures.setdefault(label, {}).setdefault(key, []).append(value)
        recorder.collect_jobs()
        best = {label: {k: min(v) for k, v in s.items()} for label, s in stage_figures.items()}
        headers = ["step"] + [f"{label} s" for label in best]
        rows_table = [(label_text, *[best[v][key] for v in best]) for key, label_text, _ in STAGES]
        rows_table.append(("total (sum of steps)", *[sum(best[v].values()) for v in best]))
        rows_table.append(("native parquet, best run", *[min(times["native"]) for _ in best]))
        print_table(headers, rows_table,
                    title="where the append's time goes: each stage measured on its own, cumulative; a step's "
                          "cost = its stage minus the one before (best of "
                          f"{len(next(iter(stage_figures.values()))['frame_d'])})")
        stage_figures = best

    # Upsert into each appended table: ratio to that table's own append.
    changes, n_updates, n_new = data.silver_changes(spark, rows, days,
                                                    data.touched_days(days, TOUCHED_PARTITIONS))
    changes = changes.cache()
    changes.count()
    problems: list[str] = []
    upserts: dict[str, list[tuple[float, float, Any]]] = {w: [] for w in versions}
    breakdowns: dict[str, Recorder] = {}
    upsert_rows = []
    order = [(w, i) for i in range(args.repeat) for w in (versions if i % 2 == 0 else list(versions)[::-1])]
    for writer, i in order:
        lake, table, append_s = tables[writer][i]
        recorder = Recorder(spark, f"bench-upsert-{writer}")
        with recorder.patched(lake, UPSERT_METHODS, "lake."):
            with recorder.phase("upsert") as call:
                result = lake.upsert(table, changes, keys=KEYS)
        found = check_upsert(lake, table, result, changes, rows, n_updates, n_new, days)
        problems += [f"{writer}: {p}" for p in found if f"{writer}: {p}" not in problems]
        upserts[writer].append((call.seconds, call.seconds / append_s, result))
        if call.seconds == min(u[0] for u in upserts[writer]):
            breakdowns[writer] = recorder.collect_jobs()
        upsert_rows.append((i + 1, writer, call.seconds, call.seconds / append_s, result.files_removed,
                            result.files_added, len(result.partitions_replaced), "ok" if not found else "WRONG"))
        print(f"  upsert {i + 1} ({writer}): {call.seconds:7.2f}s = {call.seconds / append_s:.2f}x its append, "
              f"check {'ok' if not found else 'FAILED'}", flush=True)
    print()
    print_table(["run", "lake code", "seconds", "x its append", "files removed", "files added", "partitions",
                 "check"], upsert_rows, title=f"upserts of {n_updates:,} updates + {n_new:,} new trips, keyed by "
                                              f"{KEYS} (partitioned by event_date)")
    upsert_phase_rows = []
    for writer, rec in breakdowns.items():
        [root] = rec.find("upsert")
        total = rec.calls[root].seconds
        for name in UPSERT_METHODS:
            upsert_phase_rows.append((writer, name, rec.total(f"lake.{name}"), rec.total_jobs(f"lake.{name}"),
                                      100 * rec.total(f"lake.{name}") / total))
        upsert_phase_rows.append((writer, "upsert (all)", total, rec.jobs(root), 100.0))
    print_table(["lake code", "call (nested calls counted in their callers too)", "seconds", "Spark jobs",
                 "% of upsert"], upsert_phase_rows, title="the best upsert of each, by lake method")

    summary = []
    figures: dict[str, Any] = {"benchmark": "lake_write", "rows": rows, "partitions": days, "repeat": args.repeat,
                               "master": spark.sparkContext.master, "before_rev": args.before,
                               "native_parquet_s": [round(x, 3) for x in times["native"]]}
    for w in versions:
        up_ratios = [u[1] for u in upserts[w]]
        summary.append((f"append ({w})", min(times[w]), best_ratio[w], spread(ratios[w]), f">= {TARGET_RATIO}"))
        summary.append((f"upsert 1% ({w})", min(u[0] for u in upserts[w]), statistics.median(up_ratios),
                        spread(up_ratios), f"<= {TARGET_UPSERT_RATIO}"))
        figures[w] = {
            "append_s": [round(x, 3) for x in times[w]],
            "append_ratio_vs_native_best": round(best_ratio[w], 3),
            "append_ratio_vs_native_per_round": [round(x, 3) for x in ratios[w]],
            "append_verdict": "PASS" if best_ratio[w] >= TARGET_RATIO else "BELOW TARGET",
            "upsert_s": [round(u[0], 3) for u in upserts[w]],
            "upsert_ratio_vs_append": [round(x, 3) for x in up_ratios],
            "upsert_ratio_median": round(statistics.median(up_ratios), 3),
            "upsert_verdict": "PASS" if statistics.median(up_ratios) <= TARGET_UPSERT_RATIO else "ABOVE TARGET",
            "upsert_files_removed": upserts[w][0][2].files_removed,
            "upsert_partitions_replaced": len(upserts[w][0][2].partitions_replaced),
            "append_stage_s": {k: round(v, 3) for k, v in stage_figures.get(w, {}).items()},
        }
    summary.append(("native parquet", min(times["native"]), 1.0, "", ""))
    print_table(["what", "best s", "ratio", "spread (per round)", "target"], summary,
                title=f"results ({rows:,} rows; append ratio = native s / lake s, best of {args.repeat}; "
                      f"upsert ratio = upsert s / its table's append s, median)")
    for w in versions:
        print(f"{w}: append {figures[w]['append_verdict']}, upsert {figures[w]['upsert_verdict']}")
    print(f"upsert correctness: {'ok' if not problems else 'FAILED'}\n", flush=True)
    figures.update(upsert_rows=n_updates + n_new, upsert_updates=n_updates, upsert_new=n_new,
                   target_ratio=TARGET_RATIO, target_upsert_ratio=TARGET_UPSERT_RATIO, upsert_correct=not problems)
    changes.unpersist()
    df.unpersist()
    return figures, problems


if __name__ == "__main__":
    sys.exit(main())
