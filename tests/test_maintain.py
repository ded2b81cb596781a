"""Lake upkeep: compaction changes no row, vacuum never deletes a running writer's files, old Data
Docs go. Real Delta tables (local disk and the local S3 endpoint), read back with deltalake."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
import uuid

import boto3
import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from chispa import assert_df_equality
from deltalake import DeltaTable
from pyspark.sql.pandas.types import to_arrow_schema

from strata.catalog import FAILED_RUNS, QUALITY_RESULTS
from strata.jobs import maintain
from strata.lake import ConflictError, ReadSet, StagedFiles, TableSpec, files
from strata.lake.delta_rs import DeltaRsLake

from conftest import REPO, job_context

SCHEMA = "id long, event_date date, amount double, label string"
TRIPS = TableSpec("silver", "trips", partition_by=("event_date",))
D1, D2 = dt.date(2024, 1, 1), dt.date(2024, 1, 2)
RUN_DATE = "2024-01-01"


def make_lake(spark, lake_root, job="test_maintain", run_date=RUN_DATE):
    root, endpoint = lake_root
    return DeltaRsLake(spark, root, job=job, run_id=uuid.uuid4().hex, run_date=run_date, s3_endpoint=endpoint)


@pytest.fixture
def lake(spark, lake_root):
    return make_lake(spark, lake_root)


def rows(spark, data):
    return spark.createDataFrame(data, SCHEMA)


def batch(spark, start, n=3):
    return rows(spark, [(i, D1 if i % 2 else D2, float(i), f"l{i}") for i in range(start, start + n)])


def independent_read(spark, lake, table):
    """The table as deltalake (delta-rs, no Spark involved) sees it."""
    options = None
    if lake.s3_endpoint:
        options = {"AWS_ENDPOINT_URL": lake.s3_endpoint, "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
    arrow = DeltaTable(lake.path(table), storage_options=options).to_pyarrow_table()
    return spark.createDataFrame(pa.table(arrow).select(["id", "event_date", "amount", "label"]).to_pandas(), SCHEMA)


def same(actual, expected):
    assert_df_equality(actual.select("id", "event_date", "amount", "label"), expected,
                       ignore_row_order=True, ignore_nullable=True)


def live_files(lake, table):
    return len(DeltaTable(lake.path(table), storage_options=lake.storage_options).file_uris())


def test_compaction_changes_no_row_and_is_no_data_change(spark, lake):
    for start in range(0, 12, 3):  # four appends of small files into both partitions
        lake.append(TRIPS, batch(spark, start))
    expected = batch(spark, 0, 12)
    before = lake.read(TRIPS).cache()
    same(before, expected)
    version, files_before, history_before = lake.version(TRIPS), live_files(lake, TRIPS), lake.history(TRIPS)
    maintainer = make_lake(spark, (lake.root, lake.s3_endpoint), job="maintain")

    result = maintainer.compact(TRIPS, target_size=16 * 1024 * 1024)

    assert (result.version_before, result.version) == (version, version + 1)
    assert lake.version(TRIPS) == version + 1
    assert result.files_before == files_before >= 8 and result.files_after == live_files(lake, TRIPS) == 2
    same(lake.read(TRIPS), expected)
    same(independent_read(spark, lake, TRIPS), expected)
    assert_df_equality(lake.read(TRIPS), before, ignore_row_order=True)
    # the commit carries Strata's commit info and changes no data
    [entry] = DeltaTable(lake.path(TRIPS), storage_options=lake.storage_options).history(1)
    assert entry["operation"] == "OPTIMIZE" and entry["strata.job"] == "maintain"
    assert entry["strata.run_id"] == maintainer.run_id and entry["strata.run_date"] == RUN_DATE
    assert entry["strata.partitions"] == []
    # downstream sees no new data: history leaves upkeep out, the date's changed partitions are unchanged
    assert lake.history(TRIPS) == history_before
    assert maintainer.changed_partitions(TRIPS, RUN_DATE) == lake.changed_partitions(TRIPS, RUN_DATE)
    # compacting again finds nothing to do: no commit
    again = maintainer.compact(TRIPS, target_size=16 * 1024 * 1024)
    assert again.version == again.version_before == version + 1


class CompactedMidWrite(DeltaRsLake):
    """A writer during whose write (files written, commit not yet made) a compaction lands."""
    compactor: DeltaRsLake | None = None

    def _write_files(self, table, df, partition_by):
        adds = super()._write_files(table, df, partition_by)
        if self.compactor is not None:
            self.compactor.compact(table, target_size=16 * 1024 * 1024)
            self.compactor = None
        return adds


def test_a_compaction_never_fails_a_fenced_append_and_never_lets_a_rewrite_resurrect_rows(spark, lake_root):
    lake = make_lake(spark, lake_root)
    for start in range(0, 9, 3):
        lake.append(TRIPS, batch(spark, start))
    writer = CompactedMidWrite(spark, lake.root, job="ingest", run_id="w1", s3_endpoint=lake.s3_endpoint)

    # an append fenced by the partitions it read: the compaction changed no data there
    writer.compactor = make_lake(spark, lake_root, job="maintain")
    read = ReadSet(lake.version(TRIPS), frozenset({(str(D1),), (str(D2),)}))
    writer.append(TRIPS, rows(spark, [(100, D1, 1.0, "new")]), read)
    assert writer.compactor is None  # the compaction did land in between
    same(independent_read(spark, lake, TRIPS), batch(spark, 0, 9).unionByName(rows(spark, [(100, D1, 1.0, "new")])))

    # more small files, then an upsert that rewrites the partitions the compaction rewrites too:
    # committing it on top would keep the compacted copies of the rows it replaces
    for start in range(200, 206, 3):
        lake.append(TRIPS, batch(spark, start))
    expected = independent_read(spark, lake, TRIPS).cache()
    expected.count()
    version = lake.version(TRIPS)
    writer.compactor = make_lake(spark, lake_root, job="maintain")
    with pytest.raises(ConflictError, match="removed a file that this write replaces"):
        writer.upsert(TRIPS, rows(spark, [(1, D1, -1.0, "changed"), (2, D2, -2.0, "changed")]), keys=["id"])
    assert lake.version(TRIPS) == version + 1  # the compaction only
    same(independent_read(spark, lake, TRIPS), expected)


def stage(spark, lake, table, data) -> StagedFiles:
    """What ingest's executors do: write rows as Parquet files where the lake stages them."""
    frame = rows(spark, data)
    writer = files.PartitionedWriter(lake.staging_location(table), table.partition_by, to_arrow_schema(frame.schema))
    writer.write(pa.Table.from_pandas(frame.toPandas(), preserve_index=False))
    return StagedFiles(table, frame.schema, tuple(writer.close()))


def exists(lake, table, staged) -> list[bool]:
    fs, root = files.Location(lake.path(table), lake.s3_endpoint).filesystem()
    return [fs.get_file_info(f"{root}/{f['path']}").type == pafs.FileType.File for f in staged.files]


def test_vacuum_spares_a_running_writers_staged_files_and_deletes_a_dead_ones(spark, lake_root):
    lake = make_lake(spark, lake_root)
    lake.append(TRIPS, batch(spark, 0, 4))
    first = live_files(lake, TRIPS)
    lake.overwrite(TRIPS, batch(spark, 0, 4))  # the first version's files are now removed ones
    running = make_lake(spark, lake_root, job="ingest")
    staged = stage(spark, running, TRIPS, [(50, D1, 5.0, "staged"), (51, D2, 5.1, "staged")])
    maintainer = make_lake(spark, lake_root, job="maintain")

    # retention 0 and no grace: the removed files go, the staged ones stay (their marker is live)
    deleted = maintainer.vacuum(TRIPS, retention_hours=0, orphan_grace_hours=0, inflight_ttl_hours=48)
    assert len(deleted) == first and all(exists(lake, TRIPS, staged))
    running.commit_staged(staged)
    same(independent_read(spark, lake, TRIPS), batch(spark, 0, 4).unionByName(
        rows(spark, [(50, D1, 5.0, "staged"), (51, D2, 5.1, "staged")])))
    assert maintainer.vacuum(TRIPS, retention_hours=0, orphan_grace_hours=0) == []  # committed: kept

    # a run that dies with staged files: its marker stays, so do they, until the marker expires
    dead = make_lake(spark, lake_root, job="ingest")
    orphans = stage(spark, dead, TRIPS, [(60, D1, 6.0, "orphan")])
    dead._inflight.clear()  # what a killed process leaves: the marker, and nobody to delete it
    assert maintainer.vacuum(TRIPS, retention_hours=0, orphan_grace_hours=0, inflight_ttl_hours=48) == []
    assert maintainer.vacuum(TRIPS, retention_hours=0, orphan_grace_hours=48, inflight_ttl_hours=0) == []
    assert all(exists(lake, TRIPS, orphans))  # younger than the grace
    deleted = maintainer.vacuum(TRIPS, retention_hours=0, orphan_grace_hours=0, inflight_ttl_hours=0)
    assert deleted == [f["path"] for f in orphans.files] and not any(exists(lake, TRIPS, orphans))
    assert independent_read(spark, lake, TRIPS).count() == 6


def test_maintain_job_compacts_shared_tables_and_skips_missing_ones(spark, tmp_path):
    environ = {"STRATA_LAKE__ROOT": str(tmp_path / "lake"), "STRATA_QUALITY__DATA_DOCS_DIR": str(tmp_path / "docs")}
    ctx = job_context(spark, "maintain", "trips", dt.date(2024, 1, 1), environ)
    lake = ctx.lake
    for i in range(3):  # quality results grow by one tiny append per gate
        lake.append(QUALITY_RESULTS, spark.createDataFrame([(f"r{i}", i)], "run_id string, n int"))
    counts = maintain.run(ctx)
    report = counts["maintained"][QUALITY_RESULTS.qualified_name]
    assert (report["files_before"], report["files_after"], report["compacted"]) == (3, 1, True)
    # local retention is 0: the compacted-away files are vacuumed in the same run
    assert report["files_vacuumed"] == 3 and report["bytes_reclaimed"] > 0
    assert report["storage_files_after"] == 1
    assert counts["maintained"][FAILED_RUNS.qualified_name] == {"skipped": "does not exist"}
    assert counts["maintained"]["bronze.trips"] == {"skipped": "does not exist"}
    assert counts["totals"]["tables_compacted"] == 1 and counts["totals"]["tables_failed"] == 0
    assert sorted(r.n for r in lake.read(QUALITY_RESULTS).collect()) == [0, 1, 2]


def test_maintain_covers_the_models_tables_of_its_datasets():
    from strata.config import load_config

    names = {t.qualified_name for t in maintain.selected_tables(load_config("local"), "trips")}
    assert {"gold.tips_predictions", "quarantine.tips_predictions", "ml.tips_learnt_rows", "monitoring.tips_profile",
            "monitoring.tips_drift", "monitoring.tips_performance", "monitoring.tips_decisions",
            "quarantine.tips_drift"} <= names
    assert {"bronze.trips", "gold.trips_flagged", "quality.results"} <= names


def test_old_data_docs_are_pruned_and_recent_ones_kept(spark, tmp_path):
    from great_expectations import expectations as gxe
    from great_expectations.core import ExpectationSuite
    from strata.quality import validate

    suite = ExpectationSuite(name="silver.docs_test", expectations=[
        gxe.ExpectColumnValuesToNotBeNull(column="id", meta={"severity": "error"})])
    docs = tmp_path / "docs"
    result = validate(spark.createDataFrame([(1,)], "id long"), suite, "silver", "docs_test", docs, run_id="r1")
    assert result.docs_path and os.path.exists(result.docs_path)
    stored = list((docs / "_gx" / "validations").rglob("*.json"))
    assert stored

    assert maintain.prune_data_docs(docs, max_age_days=1) == 0
    assert os.path.exists(result.docs_path) and all(p.exists() for p in stored)
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)
    assert maintain.prune_data_docs(docs, max_age_days=1, now=later) == 1
    assert not os.path.exists(result.docs_path) and not any(p.exists() for p in stored)
    assert (docs / "index.html").exists()


# ---- a real ingest in flight while maintain runs ----------------------------------------------

@pytest.mark.slow
def test_maintain_during_a_slow_ingest_deletes_nothing_it_staged(spark, tmp_path, s3_endpoint, s3_bucket):
    from faults import Fault, serve
    from strata.jobs import ingest as ingest_job
    from test_ingest_trust import csv_body, environ_for, trip_line

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    lake = tmp_path / "lake"
    bronze = lake / "bronze" / "trips"
    raw = {}

    def put(day, i, n=20):
        ids = [f"d{day}-{i}-{r}" for r in range(n)]
        s3.put_object(Bucket=s3_bucket, Key=f"trips/2024/01/0{day}/part-{i}.csv",
                      Body=csv_body(*[trip_line(t) for t in ids]))
        raw.update(dict.fromkeys(ids))

    def submit(job, env, *args):
        return subprocess.Popen([str(REPO / "spark-submit.sh"), job, "--env", "local", *args], env=env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    for proxy in serve(s3_endpoint):
        environ = environ_for(lake, proxy.endpoint_url, s3_bucket)
        env = {**os.environ, **environ}
        put(1, 0)
        # committed bronze files for maintain to work on: a plain ingest, in this process (setup only)
        first = ingest_job.run(job_context(spark, "ingest", "trips", dt.date(2024, 1, 1), environ))
        assert first["objects_ingested"] == 1 and DeltaTable(str(bronze)).file_uris()
        for i in range(4):
            put(2, i)
        # The second run reads its first object at once, then every later raw read is held at the
        # proxy (45 s at most each, under the client's 60 s read timeout) until maintain is done:
        # the run is in flight with staged files in the table folder for as long as maintain runs.
        held = proxy.add(Fault("GET", rf"/{s3_bucket}/trips/2024/01/02/.+\.csv$", kind="delay", delay=45,
                               after=1, times=None))
        ingest = submit("ingest", env, "--dataset", "trips", "--run-date", "2024-01-02")
        maintenance = None
        try:
            committed = {a for a in DeltaTable(str(bronze)).file_uris()}
            deadline = time.time() + 300
            while time.time() < deadline and ingest.poll() is None:
                if {str(p) for p in bronze.rglob("*.parquet")} - committed:
                    break  # its first staged file is in the table folder
                time.sleep(0.1)
            assert ingest.poll() is None, "the ingest ended before it staged anything"
            staged = {str(p) for p in bronze.rglob("*.parquet")} - committed
            assert staged and list((lake / "_strata_inflight" / "bronze" / "trips").glob("*.json"))

            # local config: vacuum retention 0, orphan grace 0
            maintenance = submit("maintain", env, "--dataset", "trips", "--run-date", "2024-01-02")
            out, err = maintenance.communicate(timeout=600)
            assert maintenance.returncode == 0, err[-3000:]
            summary = json.loads(out.strip().splitlines()[-1])
            assert summary["status"] == "ok" and summary["job"] == "maintain"
            assert summary["maintained"]["bronze.trips"]["files_vacuumed"] == 0
            assert ingest.poll() is None, "precondition: maintain ran while the ingest was still in flight"
            assert proxy.hits(held) >= 1  # ... with one of its raw reads held at the proxy
            assert all(os.path.exists(p) for p in staged)  # nothing it staged was deleted
        except BaseException:
            for process in (maintenance, ingest):
                if process is not None and process.poll() is None:
                    process.terminate()  # the supervisor passes it on to spark-submit
            raise
        finally:
            proxy.release(held)  # the held reads go on: the ingest can finish

        out, err = ingest.communicate(timeout=600)
        assert ingest.returncode == 0, err[-3000:]
        assert proxy.hits(held) == 3  # every raw read of the run but the first was held
        assert json.loads(out.strip().splitlines()[-1])["objects_ingested"] == 4
        rows = DeltaTable(str(bronze)).to_pyarrow_table(columns=["trip_id"]).column("trip_id").to_pylist()
        assert len(rows) == len(raw) == 100 and set(rows) == set(raw)  # every raw record, once
