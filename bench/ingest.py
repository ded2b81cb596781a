"""Benchmark: the ingest job (raw S3 -> bronze Delta) against Spark's own CSV -> Parquet.

1. full ingest: strata.jobs.ingest.run into a fresh lake root (S3 listing, executor-side S3
   reads and parsing, the GX bronze gate, the Delta commit), vs the baseline
   spark.read.option("header", True).csv(<the same bytes on local disk>) (all columns strings,
   no inference) written with df.write.parquet. Same SparkSession; alternated (ABBA) when
   repeating so a noisy machine hurts both alike. Target: ingest throughput >= 0.7x baseline.
2. incremental re-run of the job against the same lake with no new objects. Target: at most
   10% of the full run's time.
3. a breakdown of the full run, from wrapping the job's functions in this script (lib/ is not
   touched), and a few single-process probes (S3 GETs, the parser on one object) for context.
Each run also reports the CPU seconds of this process tree (driver, JVM, Python workers, the local
S3 server): on a shared machine their ratio moves less than the wall-clock one.

The objects are plain CSV with no planted problems (DemoDataSpec with every rate and count 0),
so both sides parse the same clean data; bronze must hold exactly objects x rows rows.

    .venv/bin/python bench/ingest.py                                  # 200 x 5,000 rows, minutes
    .venv/bin/python bench/ingest.py --objects 8 --rows-per-object 1000   # smoke run

A report, not a test: exits 0 below the targets, 1 only if a row count is wrong.
The last line of stdout is the figures as one JSON line.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import sys
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

try:  # run as a script (bench/ is sys.path[0]) or imported as bench.ingest
    import data
    from common import (Recorder, add_spark_args, breakdown_rows, cpu_seconds_between, main_with_local_s3,
                        print_table, process_tree_cpu_seconds, timed)
except ImportError:  # pragma: no cover
    from bench import data
    from bench.common import (Recorder, add_spark_args, breakdown_rows, cpu_seconds_between, main_with_local_s3,
                              print_table, process_tree_cpu_seconds, timed)

TARGET_RATIO = 0.7
TARGET_RERUN_PCT = 10
BUCKET = "bench-raw"
WARMUP_BUCKET = "bench-warmup"
PREFIX = data.PREFIX
RUN_DATE = dt.date(2024, 2, 1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=200, help="CSV objects (default: 200)")
    parser.add_argument("--rows-per-object", type=int, default=5000, help="rows per object (default: 5,000)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each side; the best counts (default: 1)")
    add_spark_args(parser)
    args = parser.parse_args(argv)
    if args.objects < 1 or args.rows_per_object < 1:
        parser.error("--objects and --rows-per-object must be at least 1")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


# ---- the job, with its phases timed ---------------------------------------------------------
# Wrapped where present (the job's code moves between releases; a missing name is skipped).
JOB_FUNCTIONS = ("list_objects", "known_objects", "stage_objects")     # in strata.jobs.ingest
GATE_FUNCTIONS = ("gate", "load_suite", "validate", "enforce")         # the job's bronze gate
QUALITY_FUNCTIONS = ("load_suite", "validate", "enforce")              # in strata.quality
DOCS_FUNCTIONS = ("_build_docs",)                                      # in strata.quality.validation
LAKE_METHODS = ("append", "commit_staged")                              # on the run's lake


@contextmanager
def instrumented(ctx, recorder: Recorder) -> Iterator[Recorder]:
    """Wrap the job module's and the quality module's functions, and this run's lake and
    context methods; everything is restored afterwards."""
    from strata import publish, quality
    from strata.jobs import ingest
    from strata.quality import validation
    with ExitStack() as stack:
        stack.enter_context(recorder.patched(ingest, JOB_FUNCTIONS))
        stack.enter_context(recorder.patched(publish, ("gate",)))
        stack.enter_context(recorder.patched(quality, QUALITY_FUNCTIONS))
        stack.enter_context(recorder.patched(validation, DOCS_FUNCTIONS, "quality."))
        # The lake is created now, so its methods can be wrapped on the instance.
        stack.enter_context(recorder.patched(ctx.lake, LAKE_METHODS, "lake.", by_table=True))
        stack.enter_context(recorder.patched(ctx, ("record_table",)))
        yield recorder


def make_context(spark, lake_root: Path, endpoint: str, bucket: str, run_date: dt.date, docs_dir: Path):
    """A JobContext like tests/test_ingest.py's run_ingest: local config plus env overrides
    (and GX Data Docs under the workdir, not the checkout's .strata/)."""
    from strata.config import load_config
    from strata.runner import JobContext
    environ = {"STRATA_LAKE__ROOT": str(lake_root), "STRATA_S3__ENDPOINT_URL": endpoint,
               "STRATA_DATASETS__TRIPS__SOURCE__BUCKET": bucket}
    if hasattr(load_config("local", environ=environ).quality, "data_docs_dir"):
        environ["STRATA_QUALITY__DATA_DOCS_DIR"] = str(docs_dir)
    config = load_config("local", environ=environ)
    return JobContext("ingest", "local", uuid.uuid4().hex[:8], run_date, config,
                      argparse.Namespace(dataset="trips"), _spark=spark)


def run_job(spark, lake_root: Path, endpoint: str, bucket: str, run_date: dt.date = RUN_DATE,
            docs_dir: Path | None = None):
    """(seconds, cpu seconds, counts, recorder, ctx) of one in-process run of the ingest job."""
    from strata.jobs import ingest
    ctx = make_context(spark, lake_root, endpoint, bucket, run_date, docs_dir or lake_root / "data_docs")
    recorder = Recorder(spark, "bench-ingest")
    with instrumented(ctx, recorder):
        cpu_before = process_tree_cpu_seconds()
        with recorder.phase("run") as call:
            counts = ingest.run(ctx)
        cpu = cpu_seconds_between(cpu_before, process_tree_cpu_seconds())
    return call.seconds, cpu, counts, recorder.collect_jobs(), ctx


# (json key, label, sub-phase?): sub-phases detail the phase above them and are not added up.
FULL_PHASES = [
    ("list_s", "list objects (boto3 on the driver)", False),
    ("known_objects_s", "known objects (bronze keys; none yet)", False),
    ("stage_s", "read + parse + write staged files (executors, one pass)", False),
    ("gate_s", "bronze quality gate", False),
    ("gate_validate_s", "  GX validate (reads the staged files back)", True),
    ("gate_docs_s", "  GX Data Docs build", True),
    ("gate_results_s", "  append to quality.results", True),
    ("gate_rest_s", "  rest (suite, version, enforce)", True),
    ("commit_s", "Delta commit of the staged files (driver)", False),
    ("record_table_s", "record_table (versions + row counts)", False),
    ("other_s", "other (job glue)", False),
]
RERUN_PHASES = [
    ("list_s", "list objects (boto3 on the driver)", False),
    ("known_objects_s", "known objects (distinct keys of all of bronze)", False),
    ("record_table_s", "record_table (versions + row counts)", False),
    ("other_s", "other", False),
]


def full_breakdown(events: Recorder, bronze: str) -> tuple[dict[str, float], dict[str, int]]:
    """The full run's wall time cut into consecutive phases, from the wrapped calls, and the
    Spark jobs of each."""
    start, end = events.span("run")
    gate = events.span(*GATE_FUNCTIONS)
    figures = {
        "list_s": events.total("list_objects"),
        "known_objects_s": events.total("known_objects"),
        "stage_s": events.total("stage_objects"),
        "gate_s": gate[1] - gate[0] if gate else 0.0,
        "gate_validate_s": (events.total("validate") or events.total("validate"))
                           - events.total("quality._build_docs"),
        "gate_docs_s": events.total("quality._build_docs"),
        "gate_results_s": events.total("lake.append[quality.results]"),
        "commit_s": events.total("lake.commit_staged"),
        "record_table_s": events.total("record_table"),
    }
    figures["gate_rest_s"] = figures["gate_s"] - figures["gate_validate_s"] - figures["gate_docs_s"] \
        - figures["gate_results_s"]
    figures["other_s"] = (end - start) - sum(figures[k] for k, _, sub in FULL_PHASES if not sub and k != "other_s")
    jobs = {"list_s": events.total_jobs("list_objects"), "known_objects_s": events.total_jobs("known_objects"),
            "stage_s": events.total_jobs("stage_objects"), "gate_s": events.total_jobs("gate"),
            "gate_validate_s": events.total_jobs("validate") - events.total_jobs("quality._build_docs"),
            "gate_docs_s": events.total_jobs("quality._build_docs"),
            "gate_results_s": events.total_jobs("lake.append[quality.results]"),
            "commit_s": events.total_jobs("lake.commit_staged"), "record_table_s": events.total_jobs("record_table"),
            "other_s": events.calls[events.find("run")[0]].own_jobs}
    return figures, jobs


def rerun_breakdown(events: Recorder) -> tuple[dict[str, float], dict[str, int]]:
    start, end = events.span("run")
    figures = {"list_s": events.total("list_objects"), "known_objects_s": events.total("known_objects"),
               "record_table_s": events.total("record_table")}
    figures["other_s"] = (end - start) - sum(figures.values())
    jobs = {"list_s": events.total_jobs("list_objects"), "known_objects_s": events.total_jobs("known_objects"),
            "record_table_s": events.total_jobs("record_table"),
            "other_s": events.calls[events.find("run")[0]].own_jobs}
    return figures, jobs


# ---- the baseline ---------------------------------------------------------------------------
def baseline(spark, csv_dir: Path, out: Path) -> tuple[float, float | None]:
    """(seconds, cpu seconds) of Spark's CSV reader (all columns strings) -> Parquet."""
    cpu_before = process_tree_cpu_seconds()
    with timed() as t:
        df = spark.read.option("header", True).csv(str(csv_dir))
        df.write.mode("overwrite").parquet(str(out))
    return t.seconds, cpu_seconds_between(cpu_before, process_tree_cpu_seconds())


# ---- probes: single process, no Spark -------------------------------------------------------
class _OneObjectClient:
    """Stands in for the S3 client: get_object returns the given bytes (parse cost only)."""

    def __init__(self, data: bytes):
        self.data = data

    def get_object(self, **_):
        return {"Body": io.BytesIO(self.data)}


def probes(s3, endpoint: str, keys: list[str], sample: bytes, rows_per_object: int) -> list[tuple]:
    """Context for the breakdown: the cost of the raw S3 GETs and of the job's two CSV parsers,
    in one process (the driver), against pyarrow's CSV reader on the same bytes."""
    import pyarrow.csv as pacsv
    from strata_dev.demo_data import COLUMNS
    from strata.sources import parse

    rows = []
    with timed() as t:
        size = sum(len(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read()) for k in keys)
    rows.append((f"S3 GET of all {len(keys)} objects (sequential)", t.seconds, len(keys) * rows_per_object / t.seconds,
                 f"{size / t.seconds / 1e6:.0f} MB/s from the local endpoint"))

    columns = list(COLUMNS)
    client = _OneObjectClient(sample)

    def best_of_3(fast: bool) -> float:
        best = float("inf")
        for _ in range(3):
            with timed() as t:
                parsed = sum(b.num_rows for b in parse.read_object(client, BUCKET, "x/a.csv", "etag",
                                                                   "csv", columns, fast=fast))
            best = min(best, t.seconds)
        assert parsed == rows_per_object, (parsed, rows_per_object)
        return best

    fast, line = best_of_3(True), best_of_3(False)
    rows.append(("job CSV fast path (pyarrow, no quoting)", fast, rows_per_object / fast,
                 "what clean objects take"))
    rows.append(("job line parser (the fallback)", line, rows_per_object / line,
                 f"objects with quotes or malformed lines; {line / fast:.0f}x slower"))

    best_arrow = float("inf")
    opts = pacsv.ConvertOptions(column_types={c: "string" for c in columns})
    for _ in range(3):
        with timed() as t:
            table = pacsv.read_csv(io.BytesIO(sample), read_options=pacsv.ReadOptions(use_threads=False),
                                   convert_options=opts)
        best_arrow = min(best_arrow, t.seconds)
    assert table.num_rows == rows_per_object
    rows.append(("pyarrow.csv.read_csv, same object, 1 thread", best_arrow, table.num_rows / best_arrow,
                 "for reference"))
    return rows


# ---- main -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    return main_with_local_s3("bench.ingest", parse_args(argv), run, "wrong row counts")


def run(spark, args, workdir: Path, endpoint: str) -> tuple[dict[str, Any], list[str]]:
    import boto3
    import pyspark
    import deltalake
    from deltalake import DeltaTable
    
    n_objects, per_object = args.objects, args.rows_per_object
    rows = n_objects * per_object
    problems: list[str] = []
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")

    with timed() as t_gen:
        objects, manifest, spec = data.clean_objects(n_objects, per_object)
    assert manifest.totals["data_rows"] == rows, manifest.totals
    csv_dir = workdir / "csv"
    with timed() as t_up:
        size = data.put_objects(s3, BUCKET, objects, csv_dir)
    print(f"ingest: {n_objects} CSV objects x {per_object:,} rows = {rows:,} rows, {size / 1e6:.1f} MB "
          f"({spec.days} days x {spec.objects_per_day} objects), best of {args.repeat}, "
          f"master {spark.sparkContext.master}, pyspark {pyspark.__version__}, deltalake {deltalake.__version__}, "
          f"workdir {workdir}", flush=True)
    print(f"generated in {t_gen.seconds:.1f}s, uploaded to {endpoint} and written to {csv_dir} "
          f"in {t_up.seconds:.1f}s (not timed below)\n", flush=True)

    # Warm-up (untimed): Python workers, the GX and deltalake imports, both code paths.
    warm_objects, _, _ = data.clean_objects(2, 200, seed=8)
    data.put_objects(s3, WARMUP_BUCKET, warm_objects, workdir / "warmup-csv")
    with timed() as t_warm:
        run_job(spark, workdir / "warmup-lake", endpoint, WARMUP_BUCKET, docs_dir=workdir / "data_docs")
        baseline(spark, workdir / "warmup-csv", workdir / "warmup-parquet")
    print(f"warm-up (2 small objects through both paths) took {t_warm.seconds:.1f}s\n", flush=True)

    # Per side: [(seconds, cpu seconds, run index)]; the best (least wall time) counts.
    sides: dict[str, list[tuple[float, float | None, int]]] = {"ingest": [], "rerun": [], "baseline": []}
    per_run, events_of, bronze_of = [], {}, {}
    labels = {"ingest": "ingest job (full)", "rerun": "ingest re-run, nothing new",
              "baseline": "baseline csv -> parquet"}

    def record(side: str, r: int, seconds: float, cpu: float | None, note: str = "") -> None:
        sides[side].append((seconds, cpu, r))
        per_run.append((r + 1, labels[side], seconds, cpu, rows / seconds if side != "rerun" else None))
        cpu_text = f"  cpu {cpu:6.1f}s" if cpu is not None else ""
        print(f"  run {r + 1}: {labels[side]:<28} {seconds:7.2f}s{cpu_text}  {note}".rstrip(), flush=True)

    for r in range(args.repeat):
        order = ["ingest", "baseline"] if r % 2 == 0 else ["baseline", "ingest"]  # ABBA
        for side in order:
            if side == "ingest":
                lake_root = workdir / f"lake-{r}"
                seconds, cpu, counts, events, ctx = run_job(spark, lake_root, endpoint, BUCKET,
                                                            docs_dir=workdir / "data_docs")
                bronze = _bronze_spec(ctx)
                events_of[("ingest", r)], bronze_of[r] = events, (lake_root, ctx, bronze)
                record("ingest", r, seconds, cpu,
                       f"({counts['objects_ingested']} objects, {counts['rows_written']:,} rows written)")
                if counts["rows_written"] != rows or counts["objects_ingested"] != n_objects:
                    problems.append(f"run {r + 1}: the job wrote {counts['rows_written']:,} rows from "
                                    f"{counts['objects_ingested']} objects, expected {rows:,} from {n_objects}")
                version = ctx.lake.version(bronze)
                seconds, cpu, re_counts, events, _ = run_job(spark, lake_root, endpoint, BUCKET,
                                                             RUN_DATE + dt.timedelta(days=1),
                                                             docs_dir=workdir / "data_docs")
                events_of[("rerun", r)] = events
                record("rerun", r, seconds, cpu, f"({re_counts['objects_new']} new objects)")
                if re_counts["objects_new"] or re_counts["rows_written"]:
                    problems.append(f"run {r + 1}: the re-run found {re_counts['objects_new']} new objects "
                                    f"and wrote {re_counts['rows_written']:,} rows, expected none")
                if ctx.lake.version(bronze) != version:
                    problems.append(f"run {r + 1}: the re-run committed to bronze")
            else:
                out = workdir / "baseline-parquet"
                seconds, cpu = baseline(spark, csv_dir, out)
                record("baseline", r, seconds, cpu)
                written = spark.read.parquet(str(out)).count()
                if written != rows:
                    problems.append(f"run {r + 1}: the baseline wrote {written:,} rows, expected {rows:,}")
    print()
    print_table(["run", "what", "seconds", "cpu s", "rows/s"], per_run,
                title="runs (cpu s: this process tree - driver, JVM, Python workers, the local S3 server)")

    # Bronze row counts of every full run's lake: from the Delta log and read back by delta-rs.
    for r, (lake_root, ctx, bronze) in bronze_of.items():
        from_log = ctx.lake.row_count(bronze)
        read = DeltaTable(ctx.lake.path(bronze)).to_pyarrow_table(columns=["_source_key"]).num_rows
        if from_log != rows or read != rows:
            problems.append(f"run {r + 1}: bronze has {from_log:,} rows in its log and {read:,} read back, "
                            f"expected {rows:,}")

    ingest_s, ingest_cpu, best_run = min(sides["ingest"], key=lambda x: x[0])
    baseline_s, baseline_cpu, _ = min(sides["baseline"], key=lambda x: x[0])
    rerun_s, _, best_rerun = min(sides["rerun"], key=lambda x: x[0])
    ratio = baseline_s / ingest_s  # = ingest rows/s over baseline rows/s
    cpu_ratio = baseline_cpu / ingest_cpu if baseline_cpu and ingest_cpu else None
    rerun_pct = 100 * rerun_s / ingest_s
    ratio_verdict = "PASS" if ratio >= TARGET_RATIO else "BELOW TARGET"
    rerun_verdict = "PASS" if rerun_pct <= TARGET_RERUN_PCT else "ABOVE TARGET"

    print_table(
        ["what", "best s", "its cpu s", "rows/s"],
        [("ingest job (full)", ingest_s, ingest_cpu, rows / ingest_s),
         ("baseline csv -> parquet", baseline_s, baseline_cpu, rows / baseline_s),
         ("ingest re-run, nothing new", rerun_s, None, None)],
        title=f"results ({n_objects} objects, {rows:,} rows, best of {args.repeat})")
    print(f"throughput ratio ingest/baseline (= baseline s / ingest s): {ratio:.2f}x "
          f"(target >= {TARGET_RATIO}x): {ratio_verdict}")
    if cpu_ratio is not None:
        print(f"  the same in CPU seconds (less sensitive to a busy machine): {cpu_ratio:.2f}x")
    print(f"re-run with nothing new: {rerun_s:.2f}s = {rerun_pct:.1f}% of the full run "
          f"(target <= {TARGET_RERUN_PCT}%): {rerun_verdict}")
    print(f"row counts: {'ok' if not problems else 'WRONG'}\n", flush=True)

    phases, phase_jobs = full_breakdown(events_of[("ingest", best_run)], bronze_of[best_run][2].qualified_name)
    print_table(["phase", "seconds", "% of run", "Spark jobs"],
                breakdown_rows(FULL_PHASES, phases, ingest_s, phase_jobs),
                title=f"full ingest run {best_run + 1}, breakdown (wrapped functions; top-level phases "
                      f"are consecutive, indented ones detail the phase above)")
    re_phases, re_jobs = rerun_breakdown(events_of[("rerun", best_rerun)])
    print_table(["phase", "seconds", "% of re-run", "Spark jobs"],
                breakdown_rows(RERUN_PHASES, re_phases, rerun_s, re_jobs),
                title="re-run with nothing new, breakdown")

    probe_rows = probes(s3, endpoint, [f"{PREFIX}/{o.key}" for o in objects], objects[0].data, per_object)
    print_table(["probe (driver process, no Spark)", "seconds", "rows/s", "note"], probe_rows,
                title="probes, for context (not part of the ratio)")

    figures = {
        "benchmark": "ingest",
        "objects": n_objects,
        "rows_per_object": per_object,
        "rows": rows,
        "bytes": size,
        "repeat": args.repeat,
        "master": spark.sparkContext.master,
        "ingest_s": round(ingest_s, 3),
        "ingest_rows_per_s": round(rows / ingest_s),
        "baseline_csv_to_parquet_s": round(baseline_s, 3),
        "baseline_rows_per_s": round(rows / baseline_s),
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "ratio_verdict": ratio_verdict,
        "ingest_cpu_s": None if ingest_cpu is None else round(ingest_cpu, 1),
        "baseline_cpu_s": None if baseline_cpu is None else round(baseline_cpu, 1),
        "cpu_ratio": None if cpu_ratio is None else round(cpu_ratio, 3),
        "rerun_s": round(rerun_s, 3),
        "rerun_pct_of_full": round(rerun_pct, 1),
        "target_rerun_pct": TARGET_RERUN_PCT,
        "rerun_verdict": rerun_verdict,
        "breakdown_s": {key: round(phases[key], 3) for key, _, _ in FULL_PHASES},
        "rerun_breakdown_s": {key: round(re_phases[key], 3) for key, _, _ in RERUN_PHASES},
        "breakdown_jobs": phase_jobs,
        "rerun_breakdown_jobs": re_jobs,
        "probe_fast_path_rows_per_s": round(probe_rows[1][2]),
        "probe_line_parser_rows_per_s": round(probe_rows[2][2]),
        "probe_pyarrow_csv_rows_per_s": round(probe_rows[3][2]),
        "rows_correct": not problems,
    }
    return figures, problems


def _bronze_spec(ctx):
    from strata import catalog
    return catalog.bronze(ctx.config.dataset("trips"))


if __name__ == "__main__":
    sys.exit(main())
