"""The demo data generator: deterministic bytes, and a manifest that agrees with what is in them.

Every object is parsed back independently (csv module line by line, json, pyarrow) and the planted
problems are re-discovered from the bytes, then compared with the manifest.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import re
import subprocess
import sys
import zlib
from collections import Counter
from datetime import date, datetime

import boto3
import numpy as np
import pyarrow.parquet as pq
import pytest

from strata_dev.demo_data import COLUMNS, DemoDataSpec, RawObject, generate, manifest_key, upload

SPEC = DemoDataSpec(start_date=date(2024, 1, 15), days=2, objects_per_day=4, rows_per_object=1_000, seed=7)
INTS = {"vendor_id", "passenger_count", "rate_code", "pickup_zone", "dropoff_zone", "payment_type"}
TIMES = {"pickup_at", "dropoff_at"}
KEY = re.compile(r"^\d{4}/\d{2}/\d{2}/trips-\d{4}\.(csv|csv\.gz|jsonl|parquet)$")


def parse(obj: RawObject) -> tuple[list[dict], list[tuple[int, str]]]:
    """Typed records and (1-based data line, raw line) of malformed lines, read as Spark would:
    a CSV line at a time, so a broken quote spoils only its own line."""
    if obj.format == "parquet":
        return pq.read_table(io.BytesIO(obj.data)).to_pylist(), []
    text = (gzip.decompress(obj.data) if obj.format == "csv.gz" else obj.data).decode()
    if obj.format == "jsonl":
        return [typed(json.loads(line)) for line in text.splitlines()], []
    header, *lines = text.splitlines()
    assert header.split(",") == list(COLUMNS)
    records, malformed = [], []
    for number, line in enumerate(lines, start=1):
        try:
            fields = next(csv.reader([line], strict=True))
        except csv.Error:
            fields = []
        if len(fields) == len(COLUMNS):
            records.append(typed(dict(zip(COLUMNS, [f or None for f in fields]))))
        else:
            malformed.append((number, line))
    return records, malformed


def typed(record: dict[str, str | None]) -> dict:
    def convert(name: str, value: str | None):
        if value is None or name == "trip_id":
            return value
        if name in INTS:
            return int(value)
        if name in TIMES:
            return datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
        return float(value)
    return {name: convert(name, record[name]) for name in COLUMNS}


def mph(r: dict) -> float:
    return r["trip_distance"] / ((r["dropoff_at"] - r["pickup_at"]).total_seconds() / 3600)


@pytest.fixture(scope="module")
def generated():
    return generate(SPEC)


@pytest.fixture(scope="module")
def parsed(generated):
    """key -> (records, malformed lines) for every readable object."""
    objects, manifest = generated
    unreadable = {u.key for u in manifest.unreadable_objects}
    return {o.key: parse(o) for o in objects if o.key not in unreadable}


@pytest.fixture(scope="module")
def records(parsed):
    return [(key, r) for key, (rows, _) in parsed.items() for r in rows]


@pytest.fixture(scope="module")
def clean(generated, records):
    """Trips with no planted problem, first copy only."""
    _, m = generated
    flagged = {*m.anomalies, *m.negative_distance, *m.bad_zones, *(n.trip_id for n in m.nulls)}
    seen, out = set(), []
    for _, r in records:
        if r["trip_id"] not in flagged and r["trip_id"] not in seen:
            seen.add(r["trip_id"])
            out.append(r)
    return out


def test_same_seed_same_bytes_other_seed_other_bytes(generated):
    objects, manifest = generated
    again, manifest_again = generate(SPEC)
    assert again == objects and manifest_again == manifest
    other, _ = generate(DemoDataSpec(**{**SPEC.__dict__, "seed": 8}))
    assert [o.key for o in other] == [o.key for o in objects]
    assert all(a.data != b.data for a, b in zip(other, objects) if a.data)


def test_layout_rotates_formats_over_days(generated):
    objects, manifest = generated
    assert all(KEY.match(o.key) for o in objects)
    assert [o.key for o in objects] == [e.key for e in manifest.objects]
    data = [o for o in objects if o.key.endswith(("-0000.csv", "-0001.csv.gz", "-0002.jsonl", "-0003.parquet"))]
    assert len(data) == SPEC.days * SPEC.objects_per_day
    assert {o.key[:10] for o in objects} == {"2024/01/15", "2024/01/16"}
    assert len(objects) == len(data) + SPEC.truncated_gzip_objects + SPEC.empty_objects


def test_manifest_is_json_and_totals_add_up(generated):
    _, manifest = generated
    doc = json.loads(manifest.to_json())
    assert doc["totals"] == manifest.totals
    assert {"spec", "objects", "anomalies", "nulls", "negative_distance", "bad_zones", "duplicates",
            "malformed_lines", "unreadable_objects", "totals"} <= doc.keys()
    t = manifest.totals
    assert t["trips"] == SPEC.days * SPEC.objects_per_day * SPEC.rows_per_object
    assert t["data_rows"] == t["trips"] + t["duplicates"] + t["malformed_lines"]
    assert min(t["anomalies"], t["nulls"], t["negative_distance"], t["bad_zones"], t["duplicates"],
               t["malformed_lines"]) > 0


def test_row_and_malformed_counts_match_the_bytes(generated, parsed):
    _, manifest = generated
    planted = {(m.key, m.line): m.kind for m in manifest.malformed_lines}
    found = {}
    for entry in manifest.objects:
        if entry.unreadable:
            continue
        rows, malformed = parsed[entry.key]
        assert len(rows) + len(malformed) == entry.rows
        assert len(malformed) == entry.malformed_lines
        found |= {(entry.key, number): line for number, line in malformed}
    assert found.keys() == planted.keys()
    for where, line in found.items():
        assert ('"' in line) == (planted[where] == "unterminated_quote")
    assert all(k.endswith((".csv", ".csv.gz")) for k, _ in planted)


def test_planted_row_problems_are_exactly_what_the_bytes_hold(generated, records):
    _, manifest = generated
    rows = [r for _, r in records]
    nulls = {(r["trip_id"], c) for r in rows for c in COLUMNS if r[c] is None}
    assert nulls == {(n.trip_id, n.column) for n in manifest.nulls}
    negative = {r["trip_id"] for r in rows if r["trip_id"] and (r["trip_distance"] or 0) < 0}
    assert negative == set(manifest.negative_distance)
    bad_zone = {r["trip_id"] for r in rows if not (1 <= r["pickup_zone"] <= 265 and 1 <= r["dropoff_zone"] <= 265)}
    assert bad_zone == set(manifest.bad_zones)
    assert len(manifest.anomalies) == len(set(manifest.anomalies)) == manifest.totals["anomalies"]


def test_duplicates_are_exact_copies_in_a_later_object(generated, records):
    _, manifest = generated
    by_id: dict[str, list[tuple[str, dict]]] = {}
    for key, r in records:
        by_id.setdefault(r["trip_id"], []).append((key, r))
    extra = Counter({t: len(copies) - 1 for t, copies in by_id.items() if len(copies) > 1})
    assert extra == Counter(manifest.duplicates)
    assert len(by_id) == manifest.totals["trips"]
    for trip_id in manifest.duplicates:
        (first_key, first), (copy_key, copy) = by_id[trip_id]
        assert first_key < copy_key and first == copy


def test_anomalies_and_only_they_have_impossible_speeds(generated, records):
    _, manifest = generated
    measurable = [r for _, r in records if None not in (r["pickup_at"], r["dropoff_at"], r["trip_distance"])
                  and r["trip_distance"] > 0]
    impossible = {r["trip_id"] for r in measurable if not 1 <= mph(r) <= 100}
    assert impossible == set(manifest.anomalies)
    assert all(3 <= mph(r) <= 45 for r in measurable if r["trip_id"] not in impossible)


def test_unreadable_objects_really_are(generated):
    objects, manifest = generated
    by_key = {o.key: o for o in objects}
    reasons = {u.reason: u for u in manifest.unreadable_objects}
    assert set(reasons) == {"truncated_gzip", "empty"}
    truncated = by_key[reasons["truncated_gzip"].key]
    assert truncated.key.endswith(".csv.gz") and reasons["truncated_gzip"].rows_intended == SPEC.rows_per_object
    with pytest.raises((EOFError, OSError, zlib.error)):
        gzip.decompress(truncated.data)
    assert by_key[reasons["empty"].key].data == b""
    assert manifest.totals["rows_lost"] == SPEC.rows_per_object


def test_trips_look_like_taxi_trips(clean):
    miles = np.array([r["trip_distance"] for r in clean])
    assert 1.0 < np.median(miles) < 3.0 and miles.max() <= 30
    assert np.mean((miles >= 0.5) & (miles <= 5)) > 0.8
    hours = Counter(r["pickup_at"].hour for r in clean)
    assert hours[18] > 3 * hours[4]
    for r in clean:
        parts = r["fare_amount"] + r["extra"] + r["tip_amount"] + r["tolls_amount"]
        assert r["total_amount"] == pytest.approx(parts, abs=0.005)


def test_card_trips_tip_and_more_so_on_bigger_fares(clean):
    card = [r for r in clean if r["payment_type"] == 1]
    cash = [r for r in clean if r["payment_type"] == 2]
    tipped = np.array([r["tip_amount"] > 0 for r in card])
    assert sum(r["tip_amount"] > 0 for r in cash) == 0 and len(cash) > 500
    assert 0.5 < tipped.mean() < 0.95
    fares = np.array([r["fare_amount"] for r in card])
    low, high = np.quantile(fares, [0.25, 0.75])
    assert tipped[fares >= high].mean() - tipped[fares <= low].mean() > 0.1
    shares = [r["tip_amount"] / r["fare_amount"] for r in card if r["tip_amount"] > 0]
    assert 0.09 <= min(shares) and max(shares) <= 0.26


def test_small_specs_still_plant_every_problem():
    _, manifest = generate(DemoDataSpec(days=1, objects_per_day=2, rows_per_object=20, formats=("csv",)))
    assert all(v > 0 for v in manifest.totals.values())


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match="formats"):
        DemoDataSpec(formats=("xml",))
    with pytest.raises(ValueError, match="rates"):
        DemoDataSpec(anomaly_rate=0.6)


def test_upload_to_local_endpoint(s3_endpoint, s3_bucket):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    spec = DemoDataSpec(days=2, objects_per_day=3, rows_per_object=50)
    bucket = f"{s3_bucket}-created"  # upload makes a missing bucket
    manifest = upload(spec, s3, bucket, "raw/trips")
    listed = {o["Key"]: o["Size"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix="raw/trips/") for o in page.get("Contents", [])}
    assert set(listed) == {e.key for e in manifest.objects}
    assert all(re.match(r"^raw/trips/\d{4}/\d{2}/\d{2}/trips-\d{4}\.", k) for k in listed)
    objects, _ = generate(spec)
    assert sorted(listed.values()) == sorted(len(o.data) for o in objects)
    body = s3.get_object(Bucket=bucket, Key=manifest_key("raw/trips"))["Body"].read()
    assert json.loads(body) == json.loads(manifest.to_json())
    assert all(m.key.startswith("raw/trips/") for m in manifest.malformed_lines)


def test_cli_uploads_and_prints_a_json_summary(s3_endpoint, s3_bucket, tmp_path):
    out = tmp_path / "manifest.json"
    result = subprocess.run(
        [sys.executable, "-m", "strata_dev.demo_data", "--endpoint-url", s3_endpoint, "--bucket", s3_bucket,
         "--prefix", "trips", "--days", "1", "--objects-per-day", "4", "--rows-per-object", "100",
         "--seed", "3", "--manifest-out", str(out)],
        capture_output=True, text=True, timeout=120, check=True)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["bucket"] == s3_bucket and summary["trips"] == 400
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    listed = s3.list_objects_v2(Bucket=s3_bucket, Prefix="trips/")["Contents"]
    assert len(listed) == summary["objects"]
    assert json.loads(out.read_text())["totals"] == {k: summary[k] for k in json.loads(out.read_text())["totals"]}
