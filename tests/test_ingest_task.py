"""The executor side of ingest: the CSV fast path against the line parser, and an object's
rows written all or none, also when it is too large to hold in memory. Real objects in the
local S3 endpoint; the task function runs in this process (it is plain Python over Arrow)."""
from __future__ import annotations

import datetime as dt
import gzip
import io

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError

from strata_dev.demo_data import COLUMNS
from strata.lake.files import Location
from strata.sources.ingest_task import OBJECT_DEFERRED, OBJECT_FAILED, OBJECT_OK, IngestSpec, ingest_task
from strata.sources import parse
from strata.sources.parse import NeedsLineParser, UnreadableObject, object_format, read_object
from strata.sources.s3 import S3Settings

HEADER = ",".join(COLUMNS)


def trip_line(i: int) -> str:
    return f"t-{i},1,2024-01-01 10:00:00,2024-01-01 10:10:00,1,{i % 7}.5,1,10,20,1,9.5,0,2,0,11.5"


@pytest.fixture
def s3(s3_endpoint):
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


def put(s3, bucket: str, key: str, body: bytes) -> str:
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    return s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')


def parsed(s3_endpoint, s3, bucket: str, key: str, etag: str, fast: bool) -> pa.Table:
    batches = list(read_object(s3, bucket, key, etag,
                               object_format(key, "auto"), list(COLUMNS), fast=fast))
    return pa.Table.from_batches(batches)


@pytest.mark.parametrize("gzipped", [False, True])
def test_csv_fast_path_gives_exactly_the_line_parsers_records(s3_endpoint, s3_bucket, s3, gzipped):
    # blank lines, CRLF endings, empty fields and spaces: what plain splitting must get right
    lines = [HEADER, trip_line(1), "", trip_line(2).replace(",1,10,", ",,10,"), trip_line(3) + "\r",
             "t-4, 1 ,2024-01-01 10:00:00,,1,2.5,1,10,20,1,9.5,0,2,0,11.5", "", ""]
    body = "\n".join(lines).encode()
    key = "trips/clean.csv.gz" if gzipped else "trips/clean.csv"
    etag = put(s3, s3_bucket, key, gzip.compress(body) if gzipped else body)
    fast = parsed(s3_endpoint, s3, s3_bucket, key, etag, fast=True)
    reference = parsed(s3_endpoint, s3, s3_bucket, key, etag, fast=False)
    assert fast.num_rows == 4
    assert fast.equals(reference), (fast.to_pylist(), reference.to_pylist())


@pytest.mark.parametrize("problem, body", [
    ("quoted field", f'{HEADER}\n{trip_line(1)}\n"t-2",1,x,y,1,1,1,1,1,1,1,1,1,1,1\n'),
    ("wrong field count", f"{HEADER}\n{trip_line(1)}\nt-2,1,2\n"),
    ("broken quote", f'{HEADER}\n{trip_line(1)[:-4]}"11.5\n'),
    ("other header", f"{HEADER},extra\n{trip_line(1)},x\n"),
    ("not UTF-8", f"{HEADER}\n".encode() + b"\xff\xfe\x00garbage,1\n"),
])
def test_csv_fast_path_hands_what_it_cannot_vouch_for_to_the_line_parser(
        s3_endpoint, s3_bucket, s3, problem, body):
    etag = put(s3, s3_bucket, "trips/problem.csv", body if isinstance(body, bytes) else body.encode())
    with pytest.raises(NeedsLineParser):
        parsed(s3_endpoint, s3, s3_bucket, "trips/problem.csv", etag, fast=True)


def run_task(s3_endpoint, s3_bucket, location: Location, objects: list[tuple[str, str]], buffer_bytes: int):
    schema = pa.schema([(c, pa.string()) for c in COLUMNS] + [
        ("_source_key", pa.string()), ("_source_etag", pa.string()), ("_source_version", pa.int32()),
        ("_source_row", pa.int64()), ("_corrupt_record", pa.string()), ("_error", pa.string()),
        ("_ingested_at", pa.timestamp("us", "UTC")), ("_run_id", pa.string()), ("_ingest_date", pa.date32())])
    spec = IngestSpec(S3Settings(s3_endpoint, "us-east-1"), s3_bucket, tuple(COLUMNS), "auto", location, schema,
                      ("_ingest_date",), dt.datetime(2024, 1, 5, tzinfo=dt.timezone.utc), "run-1", dt.date(2024, 1, 5),
                      buffer_bytes=buffer_bytes)
    listing = pa.record_batch({"key": [k for k, _ in objects], "etag": [e for _, e in objects],
                               "version": pa.array([1] * len(objects), pa.int32())})
    return pa.Table.from_batches(list(ingest_task(spec)(iter([listing])))).to_pylist()


def test_object_too_large_to_buffer_streams_to_its_own_files_and_a_failure_deletes_them(
        s3_endpoint, s3_bucket, s3, tmp_path):
    rows = 30_000  # several batches on both parsers
    body = ("\n".join([HEADER, *(trip_line(i) for i in range(rows))]) + "\n").encode()
    good = ("trips/big.csv", put(s3, s3_bucket, "trips/big.csv", body))
    truncated_gz = gzip.compress(body)
    bad = ("trips/big-truncated.csv.gz",
           put(s3, s3_bucket, "trips/big-truncated.csv.gz", truncated_gz[: len(truncated_gz) * 3 // 4]))
    location = Location(str(tmp_path / "staged"))

    results = run_task(s3_endpoint, s3_bucket, location, [bad, good], buffer_bytes=64 << 10)

    statuses = {r["key"]: r for r in results if r["kind"] == "object"}
    assert statuses[bad[0]]["status"] == OBJECT_FAILED
    assert statuses[bad[0]]["records"] > 8192  # it failed after rows had been written...
    assert "truncated" in statuses[bad[0]]["reason"]
    assert statuses[good[0]]["status"] == OBJECT_OK and statuses[good[0]]["records"] == rows
    files = [r for r in results if r["kind"] == "file"]
    on_disk = sorted(p.relative_to(location.uri).as_posix() for p in (tmp_path / "staged").rglob("*.parquet"))
    assert on_disk == sorted(f["path"] for f in files)  # ...and none of them is left
    table = pa.concat_tables(pq.read_table(tmp_path / "staged" / f["path"]) for f in files)
    assert set(table.column("_source_key").to_pylist()) == {good[0]}
    assert sorted(table.column("_source_row").to_pylist()) == list(range(1, rows + 1))
    assert sum(f["num_records"] for f in files) == rows


def test_small_objects_share_the_tasks_files(s3_endpoint, s3_bucket, s3, tmp_path):
    objects = [(f"trips/small-{i}.csv", put(s3, s3_bucket, f"trips/small-{i}.csv",
                                            "\n".join([HEADER, trip_line(i), trip_line(i + 100)]).encode()))
               for i in range(5)]
    results = run_task(s3_endpoint, s3_bucket, Location(str(tmp_path / "staged")), objects, buffer_bytes=64 << 20)
    files = [r for r in results if r["kind"] == "file"]
    assert len(files) == 1 and files[0]["num_records"] == 10
    assert files[0]["path"].startswith("_ingest_date=2024-01-05/")


def test_failed_object_reports_the_records_read_before_the_failure(s3_endpoint, s3_bucket, s3, tmp_path):
    body = ("\n".join([HEADER, *(trip_line(i) for i in range(3000))]) + "\n").encode()
    compressed = gzip.compress(body)
    key = "trips/small-truncated.csv.gz"
    etag = put(s3, s3_bucket, key, compressed[: len(compressed) // 2])
    results = run_task(s3_endpoint, s3_bucket, Location(str(tmp_path / "staged")), [(key, etag)],
                       buffer_bytes=64 << 20)
    assert [r["kind"] for r in results] == ["object"]
    assert results[0]["status"] == OBJECT_FAILED and 0 < results[0]["records"] < 3000
    assert not list((tmp_path / "staged").rglob("*.parquet"))


def parquet_object(trips: range, row_group_size: int | None = None) -> bytes:
    rows = [trip_line(i).split(",") for i in trips]
    table = pa.table({c: pa.array([r[j] for r in rows], pa.string()) for j, c in enumerate(COLUMNS)})
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=row_group_size)
    return sink.getvalue()


def test_parquet_is_read_at_the_listed_etag(s3_endpoint, s3_bucket, s3, tmp_path):
    key = "trips/replaced.parquet"
    listed = put(s3, s3_bucket, key, parquet_object(range(3)))
    current = put(s3, s3_bucket, key, parquet_object(range(100, 105)))  # replaced after the listing
    assert listed != current
    with pytest.raises(ClientError) as raised:  # as CSV and JSON: the version listed, or no read
        parsed(s3_endpoint, s3, s3_bucket, key, listed, fast=True)
    assert raised.value.response["Error"]["Code"] in ("PreconditionFailed", "412")
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    [result] = run_task(s3_endpoint, s3_bucket, Location(str(tmp_path / "staged")), [(key, listed)],
                        buffer_bytes=64 << 20)
    # not recorded as unreadable: the next run lists the new version and reads that
    assert result["status"] == OBJECT_DEFERRED and "changed since it was listed" in result["reason"]
    assert not list((tmp_path / "staged").rglob("*.parquet"))

    table = parsed(s3_endpoint, s3, s3_bucket, key, current, fast=True)
    assert table.column("trip_id").to_pylist() == [f"t-{i}" for i in range(100, 105)]
    assert table.column("_source_row").to_pylist() == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("spool_bytes", [64 << 20, 1 << 10])  # in memory; in a temporary file
def test_parquet_reads_batch_by_batch_from_the_spool(s3_endpoint, s3_bucket, s3, monkeypatch, spool_bytes):
    monkeypatch.setattr(parse, "PARQUET_SPOOL_BYTES", spool_bytes, raising=False)
    rows = 20_000  # three batches, five row groups
    key = "trips/big.parquet"
    etag = put(s3, s3_bucket, key, parquet_object(range(rows), row_group_size=4096))
    batches = list(read_object(s3, s3_bucket, key, etag, "parquet",
                               list(COLUMNS)))
    assert len(batches) > 1 and all(b.num_rows <= parse.BATCH_ROWS for b in batches)
    table = pa.Table.from_batches(batches)
    assert table.column("trip_id").to_pylist() == [f"t-{i}" for i in range(rows)]
    assert table.column("_source_row").to_pylist() == list(range(1, rows + 1))
    assert table.column("_corrupt_record").null_count == rows


@pytest.mark.parametrize("problem", ["truncated", "not parquet", "other columns"])
def test_unreadable_parquet_is_named(s3_endpoint, s3_bucket, s3, problem):
    data = parquet_object(range(10))
    body = {"truncated": data[: len(data) // 2], "not parquet": b"PAR1 no footer here",
            "other columns": pq_other_columns()}[problem]
    etag = put(s3, s3_bucket, "trips/bad.parquet", body)
    with pytest.raises(UnreadableObject) as raised:
        parsed(s3_endpoint, s3, s3_bucket, "trips/bad.parquet", etag, fast=True)
    expected = "wrong columns" if problem == "other columns" else "not a readable Parquet file"
    assert str(raised.value).startswith(expected), str(raised.value)


def pq_other_columns() -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table({"trip_id": ["t-1"], "surprise": ["x"]}), sink)
    return sink.getvalue()
