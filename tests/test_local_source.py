"""A dataset whose raw objects are files in a local folder (source.path): the same executor path
as S3 (listing, content fingerprint as the ETag, exactly once, lineage), filled by `upload` or cp."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys

import pytest
from botocore.exceptions import ClientError
from deltalake import DeltaTable
from pyspark.sql import functions as F

from strata import catalog
from strata.jobs import ingest
from strata.sources.local import FolderSettings, list_files
from strata.sources.parse import read_object
from strata.sources.s3 import SourceError
from strata_dev.demo_data import COLUMNS, DemoDataSpec, generate

from conftest import REPO, job_context

RUN_DATE = dt.date(2024, 1, 5)
SMALL = DemoDataSpec(days=2, objects_per_day=3, rows_per_object=200, seed=5)


@pytest.fixture(scope="module")
def demo():
    return generate(SMALL)


def fill(folder, objects):
    for obj in objects:
        path = folder / obj.key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(obj.data)


def run_ingest(spark, tmp_path, folder, run_date=RUN_DATE):
    environ = {"STRATA_LAKE__ROOT": str(tmp_path / "lake"), "STRATA_DATASETS__TRIPS__SOURCE__PATH": str(folder)}
    ctx = job_context(spark, "ingest", "trips", run_date, environ)
    return ingest.run(ctx), ctx


def test_a_folder_is_ingested_exactly_once_with_lineage(spark, tmp_path, demo):
    objects, manifest = demo
    folder = tmp_path / "raw" / "trips"
    fill(folder, objects)
    (folder / "2024" / ".partial.csv").write_text("half a file")  # hidden: not an object

    counts, ctx = run_ingest(spark, tmp_path, folder)
    totals = manifest.totals
    assert counts["objects_listed"] == counts["objects_new"] == totals["objects"]
    assert counts["objects_ingested"] == totals["objects"] - 2  # one truncated, one empty
    assert counts["rows_read"] == totals["data_rows"] and counts["corrupt_rows"] == totals["malformed_lines"]
    bronze = DeltaTable(str(tmp_path / "lake" / "bronze" / "trips")).to_pandas()  # independent reader
    assert len(bronze) == totals["data_rows"]
    # lineage: the key relative to the folder's parent, as <prefix>/... in a bucket; the ETag is the MD5
    expected = {f"trips/{o.key}": hashlib.md5(o.data).hexdigest() for o in objects}
    lineage = dict(bronze[["_source_key", "_source_etag"]].drop_duplicates().itertuples(index=False))
    assert lineage == {k: v for k, v in expected.items() if k in lineage}
    assert len(lineage) == counts["objects_ingested"]
    assert set(bronze["_source_version"]) == {1}

    again, _ = run_ingest(spark, tmp_path, folder, RUN_DATE + dt.timedelta(days=1))
    assert again["objects_new"] == 0 and again["rows_written"] == 0
    assert len(DeltaTable(str(tmp_path / "lake" / "bronze" / "trips")).to_pandas()) == totals["data_rows"]


def test_a_rewritten_file_is_a_new_version_whatever_its_timestamps(spark, tmp_path, demo):
    objects, _ = demo
    folder = tmp_path / "raw" / "trips"
    fill(folder, objects[:2])
    run_ingest(spark, tmp_path, folder)
    path = folder / objects[0].key
    stat = path.stat()
    line = "x-1,1,2024-01-01 10:00:00,2024-01-01 10:10:00,1,1.5,1,10,20,1,9.5,0,2,0,11.5"
    path.write_text(",".join(COLUMNS) + "\n" + line + "\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime: only the content says

    counts, ctx = run_ingest(spark, tmp_path, folder)
    assert counts["objects_new"] == 1 and counts["rows_written"] == 1
    rows = ctx.lake.read(catalog.bronze(ctx.config.dataset("trips"))).where(F.col("_source_key") == f"trips/{objects[0].key}")
    assert rows.where("_source_version = 2").select("trip_id").collect()[0].trip_id == "x-1"
    assert run_ingest(spark, tmp_path, folder)[0]["objects_new"] == 0


def test_a_file_changed_after_listing_fails_the_read_like_a_stale_etag(tmp_path):
    folder = tmp_path / "raw"
    (folder / "trips").mkdir(parents=True)
    (folder / "trips" / "a.csv").write_text("a,b\n1,2\n")
    [listed] = list_files(FolderSettings(), str(folder), "trips", "*.csv")
    (folder / "trips" / "a.csv").write_text("a,b\n1,3\n")
    for fast in (True, False):
        with pytest.raises(ClientError) as caught:
            list(read_object(FolderSettings().client(), str(folder), listed.key, listed.etag, "csv", ["a", "b"], fast=fast))
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412


def test_a_missing_folder_is_one_line(spark, tmp_path):
    with pytest.raises(SourceError, match=r"^cannot list file://.*/nowhere/: no such folder$"):
        run_ingest(spark, tmp_path, tmp_path / "nowhere")


def upload(tmp_path, *args):
    """./spark-submit.sh upload, as a person runs it (plain Python: no JVM)."""
    env = {**os.environ, "STRATA_PYTHON": sys.executable, "STRATA_LAKE__ROOT": str(tmp_path / "lake"),
           "STRATA_DATASETS__TRIPS__SOURCE__PATH": str(tmp_path / "raw" / "trips")}
    done = subprocess.run([str(REPO / "spark-submit.sh"), "upload", "--dataset", "trips", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_upload_puts_files_in_the_run_dates_folder_once(tmp_path, demo):
    objects, _ = demo
    files = []
    for obj in objects[:2]:
        files.append(tmp_path / obj.key.rsplit("/", 1)[-1])
        files[-1].write_bytes(obj.data)

    code, summary, _ = upload(tmp_path, "--run-date", "2024-03-07", *files)
    assert code == 0 and summary["status"] == "ok", summary
    assert summary["files_uploaded"] == 2 and summary["files_unchanged"] == 0
    placed = sorted(p.relative_to(tmp_path / "raw") for p in (tmp_path / "raw").rglob("*") if p.is_file())
    assert [str(p) for p in placed] == sorted(f"trips/2024/03/07/{f.name}" for f in files)
    assert [list_files(FolderSettings(), str(tmp_path / "raw"), "trips")[i].etag for i in range(2)] == \
        [hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(files, key=lambda f: f.name)]

    code, summary, _ = upload(tmp_path, "--run-date", "2024-03-07", *files)
    assert code == 0 and summary["files_uploaded"] == 0 and summary["files_unchanged"] == 2

    # another file of the same name: refused (its records would silently replace the first's)
    placed_before = (tmp_path / "raw" / "trips" / "2024" / "03" / "07" / files[0].name).read_bytes()
    files[0].write_bytes(objects[2].data)
    code, summary, _ = upload(tmp_path, "--run-date", "2024-03-07", *files)
    assert code == 1 and f"{files[0].name} already in" in summary["error"] and "--replace" in summary["error"]
    assert (tmp_path / "raw" / "trips" / "2024" / "03" / "07" / files[0].name).read_bytes() == placed_before
    code, summary, _ = upload(tmp_path, "--run-date", "2024-03-07", "--replace", *files)
    assert code == 0 and summary["files_replaced"] == 1 and summary["files_unchanged"] == 1
    assert (tmp_path / "raw" / "trips" / "2024" / "03" / "07" / files[0].name).read_bytes() == objects[2].data


def test_upload_refuses_bad_files_and_uploads_none(tmp_path):
    good = tmp_path / "ok.csv"
    good.write_text("a\n1\n")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".hidden.csv").write_text("a\n1\n")
    code, summary, stderr = upload(tmp_path, good, tmp_path / "notes.txt", tmp_path / "missing.csv",
                                   tmp_path / ".hidden.csv")
    assert code == 1 and summary["status"] == "failed"
    assert "nothing uploaded" in summary["error"] and "missing.csv: no such file" in summary["error"]
    assert "notes.txt: unsupported object type" in summary["error"]
    assert ".hidden.csv: a hidden name" in summary["error"]
    assert len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "raw").exists()
