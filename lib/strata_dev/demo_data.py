"""Synthetic NYC-style yellow-taxi trips as raw S3 objects, with planted problems and a manifest.

The demo and the pipeline tests need raw data that looks like the real thing (skewed distances,
rush-hour speeds, a learnable tipping signal) and that breaks in the ways real feeds break, with
a manifest saying exactly what was broken so a test can check the pipeline recovered all of it.

    objects, manifest = generate(DemoDataSpec(seed=7))        # pure: bytes + manifest
    manifest = upload(spec, boto3.client("s3"), "strata-raw", "trips")
    python -m strata_dev.demo_data --endpoint-url URL --bucket strata-raw --prefix trips

Everything is drawn from one seeded numpy Generator, so a spec always yields byte-identical
objects. Text objects hold no quoted fields, so a line-by-line reader (Spark's CSV default,
multiLine=false) confines a planted broken quote to its own line.
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import io
import json
import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

# Where the manifest goes, beside the prefix: the anomalies job looks for it there.
from strata.sources.store import manifest_key  # noqa: F401 - part of this module's interface

FORMATS = ("csv", "csv.gz", "jsonl", "parquet")
COLUMNS = (
    "trip_id", "vendor_id", "pickup_at", "dropoff_at", "passenger_count", "trip_distance",
    "rate_code", "pickup_zone", "dropoff_zone", "payment_type", "fare_amount", "extra",
    "tip_amount", "tolls_amount", "total_amount",
)
INT_COLUMNS = ("vendor_id", "passenger_count", "rate_code", "pickup_zone", "dropoff_zone", "payment_type")
TIME_COLUMNS = ("pickup_at", "dropoff_at")
# Stored as integer hundredths (cents, or hundredths of a mile) so text and Parquet agree exactly.
HUNDREDTHS_COLUMNS = ("trip_distance", "fare_amount", "extra", "tip_amount", "tolls_amount", "total_amount")
NULLABLE_REQUIRED = ("pickup_at", "dropoff_at", "trip_distance", "fare_amount")
N_ZONES = 265
BAD_ZONES = (0, 300, 999)
JFK_ZONE = 132
CARD = 1
MALFORMED_KINDS = ("wrong_column_count", "unterminated_quote")
SHIFTS = ("longer_trips", "tipping")
SHIFT_DISTANCE = 1.8
# Share of pickups by hour of day: quiet before dawn, an evening peak.
HOURLY_SHARE = np.array([3.0, 2.0, 1.3, 0.9, 0.7, 0.8, 1.8, 3.3, 4.2, 4.4, 4.5, 4.7,
                         5.0, 5.1, 5.5, 5.6, 5.5, 6.2, 6.8, 6.3, 5.6, 5.4, 5.0, 4.0])
# Typical door-to-door mph by hour: free-flowing at night, crawling in the rush hours.
HOURLY_MPH = np.array([18, 19, 20, 20, 19, 17, 14, 10, 9, 9, 11, 11,
                       11, 11, 11, 10, 9, 9, 9, 10, 12, 13, 14, 16], dtype=float)
# Card-tipping log-odds by hour: generous late at night, tight in the morning commute.
HOURLY_TIP_EFFECT = np.array([0.5, 0.5, 0.5, 0.5, 0.2, 0.0, -0.4, -0.4, -0.4, -0.4, 0.0, 0.0,
                              0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.2, 0.2, 0.5, 0.5])


@dataclass(frozen=True)
class DemoDataSpec:
    """What to generate. Rates are fractions of trip rows; the last two are object counts."""

    start_date: date = date(2024, 1, 1)
    days: int = 3
    objects_per_day: int = 4
    rows_per_object: int = 2_500
    seed: int = 42
    formats: tuple[str, ...] = FORMATS
    anomaly_rate: float = 0.01
    null_rate: float = 0.005
    negative_distance_rate: float = 0.002
    bad_zone_rate: float = 0.002
    duplicate_rate: float = 0.005
    malformed_line_rate: float = 0.002
    truncated_gzip_objects: int = 1
    empty_objects: int = 1
    # From this day on the trips change (the monitor must notice): longer_trips makes every trip
    # SHIFT_DISTANCE times as long (distance, duration, fare); tipping turns the tipping habit
    # around (cheap fares and morning rides tip now). The days before are the same as without it.
    shift_from: date | None = None
    shift: tuple[str, ...] = SHIFTS

    def __post_init__(self) -> None:
        if min(self.days, self.objects_per_day, self.rows_per_object) < 1:
            raise ValueError("days, objects_per_day and rows_per_object must be at least 1")
        if not self.formats or set(self.formats) - set(FORMATS):
            raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {self.formats}")
        rates = (self.anomaly_rate, self.null_rate, self.negative_distance_rate, self.bad_zone_rate,
                 self.duplicate_rate, self.malformed_line_rate)
        if min(rates) < 0 or sum(rates) > 0.5:
            raise ValueError("problem rates must be non-negative and sum to at most 0.5")
        if min(self.truncated_gzip_objects, self.empty_objects) < 0:
            raise ValueError("truncated_gzip_objects and empty_objects must be non-negative")
        if set(self.shift) - set(SHIFTS):
            raise ValueError(f"shift must be a subset of {SHIFTS}, got {self.shift}")


@dataclass(frozen=True)
class RawObject:
    key: str  # relative to the upload prefix: YYYY/MM/DD/trips-NNNN.<format>
    format: str
    data: bytes


@dataclass(frozen=True)
class ObjectEntry:
    key: str
    format: str
    rows: int  # readable data lines/records, malformed lines and duplicates included
    malformed_lines: int
    unreadable: str | None  # None, "truncated_gzip" or "empty"


@dataclass(frozen=True)
class NullField:
    trip_id: str
    column: str


@dataclass(frozen=True)
class MalformedLine:
    key: str
    line: int  # 1-based, counting data lines only (the header is line 0)
    kind: str  # one of MALFORMED_KINDS


@dataclass(frozen=True)
class UnreadableObject:
    key: str
    reason: str
    rows_intended: int


@dataclass(frozen=True)
class Manifest:
    """Every planted problem, so a test can check the pipeline found each one."""

    spec: dict[str, Any]
    objects: tuple[ObjectEntry, ...]
    anomalies: tuple[str, ...]
    nulls: tuple[NullField, ...]
    negative_distance: tuple[str, ...]
    bad_zones: tuple[str, ...]
    duplicates: tuple[str, ...]  # one entry per extra copy
    malformed_lines: tuple[MalformedLine, ...]
    unreadable_objects: tuple[UnreadableObject, ...]

    @property
    def totals(self) -> dict[str, int]:
        data_rows = sum(o.rows for o in self.objects)
        trips = data_rows - len(self.malformed_lines) - len(self.duplicates)
        flagged = len(self.anomalies) + len(self.nulls) + len(self.negative_distance) + len(self.bad_zones)
        return {
            "objects": len(self.objects),
            "unreadable_objects": len(self.unreadable_objects),
            "data_rows": data_rows,
            "trips": trips,  # distinct trip_ids in readable objects
            "clean_trips": trips - flagged,
            "anomalies": len(self.anomalies),
            "nulls": len(self.nulls),
            "negative_distance": len(self.negative_distance),
            "bad_zones": len(self.bad_zones),
            "duplicates": len(self.duplicates),
            "malformed_lines": len(self.malformed_lines),
            "rows_lost": sum(u.rows_intended for u in self.unreadable_objects),
        }

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "totals": self.totals}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def with_prefix(self, prefix: str) -> Manifest:
        """The same manifest with full object keys, as uploaded under `prefix`."""
        full = lambda entry: dataclasses.replace(entry, key=f"{prefix}/{entry.key}")  # noqa: E731
        return dataclasses.replace(
            self,
            objects=tuple(map(full, self.objects)),
            malformed_lines=tuple(map(full, self.malformed_lines)),
            unreadable_objects=tuple(map(full, self.unreadable_objects)),
        )


@dataclass(frozen=True)
class _Slot:
    """One object to write. Data slots come first, then unreadable ones, in generation order."""

    key: str
    format: str
    day: date
    index: int  # within the day
    unreadable: str | None

    @property
    def id_stem(self) -> str:
        """Trip ids are <yyyymmdd>-<object>-<row>: unique per trip and stable for a given layout."""
        return f"{self.day:%Y%m%d}-{self.index:04d}-"


def generate(spec: DemoDataSpec) -> tuple[list[RawObject], Manifest]:
    """All objects (sorted by key) and their manifest; pure, deterministic by spec."""
    rng = np.random.default_rng(spec.seed)
    slots = _plan(spec)
    data = [s for s in slots if s.unreadable is None]
    R = spec.rows_per_object
    n_data_rows = len(data) * R

    order = rng.permutation(n_data_rows)  # disjoint rows for each row-level problem
    counts = [_count(rate, n_data_rows) for rate in
              (spec.anomaly_rate, spec.null_rate, spec.negative_distance_rate, spec.bad_zone_rate)]
    anomaly_rows, null_rows, negative_rows, bad_zone_rows, spare = np.split(order, np.cumsum(counts))

    # Every slot gets R trips in slot order; the truncated object's are real but lost, the empty one's unused.
    shifted = _shifted(spec, [s.day for s in slots], R)
    cols = _simulate(rng, [s.day for s in slots], R, anomaly_rows, shifted)
    cols["trip_id"] = _trip_ids(slots, R)
    masks = _plant_row_problems(rng, cols, null_rows, negative_rows, bad_zone_rows)
    typed, text = _typed_table(cols, masks), _text_table(cols, masks)

    sources, targets = _pick_duplicates(rng, spare, spec.duplicate_rate, len(data), R)
    typed_copies, text_copies = typed.take(sources), text.take(sources)  # one gather, not one per object
    malformed_per_object = _malformed_per_object(rng, spec, data)

    objects, entries, malformed = [], [], []
    for i, slot in enumerate(data):
        own, copies = (typed, typed_copies) if slot.format == "parquet" else (text, text_copies)
        extra = np.flatnonzero(targets == i)
        rows = _object_rows(own.slice(i * R, R), copies.take(extra), _scatter(rng, R, len(extra)))
        body, bad = _render(rng, slot, rows, int(malformed_per_object[i]), R)
        objects.append(RawObject(slot.key, slot.format, body))
        entries.append(ObjectEntry(slot.key, slot.format, rows.num_rows + len(bad), len(bad), None))
        malformed += bad
    unreadable = [_unreadable(slot, text.slice(i * R, R)) for i, slot in enumerate(slots) if slot.unreadable]
    objects += [obj for obj, _ in unreadable]
    entries += [ObjectEntry(u.key, obj.format, 0, 0, u.reason) for obj, u in unreadable]

    trip_id = cols["trip_id"]
    manifest = Manifest(
        spec=_spec_dict(spec),
        objects=tuple(sorted(entries, key=lambda e: e.key)),
        anomalies=_ids(trip_id, anomaly_rows),
        nulls=tuple(NullField(str(trip_id[r]), next(c for c in NULLABLE_REQUIRED if masks[c][r]))
                    for r in np.sort(null_rows)),
        negative_distance=_ids(trip_id, negative_rows),
        bad_zones=_ids(trip_id, bad_zone_rows),
        duplicates=_ids(trip_id, sources),
        malformed_lines=tuple(malformed),
        unreadable_objects=tuple(u for _, u in unreadable),
    )
    return sorted(objects, key=lambda o: o.key), manifest


def upload(spec: DemoDataSpec, s3_client: Any, bucket: str, prefix: str, day: date | None = None) -> Manifest:
    """Generate and put every object under `prefix` (only the objects of `day`, when given: a
    night's delivery); the manifest of all days goes to `_manifests/<prefix>.json`, outside the
    data prefix so a reader of the prefix never mistakes it for data."""
    prefix = prefix.strip("/")
    if not prefix:
        raise ValueError("prefix must not be empty")
    objects, manifest = generate(spec)
    _ensure_bucket(s3_client, bucket)
    for obj in objects:
        if day is None or obj.key.startswith(f"{day:%Y/%m/%d}/"):
            s3_client.put_object(Bucket=bucket, Key=f"{prefix}/{obj.key}", Body=obj.data)
    manifest = manifest.with_prefix(prefix)
    s3_client.put_object(Bucket=bucket, Key=manifest_key(prefix), Body=manifest.to_json().encode(),
                         ContentType="application/json")
    return manifest


# --- layout -------------------------------------------------------------------------------------

def _plan(spec: DemoDataSpec) -> list[_Slot]:
    """N days x M data objects with rotating formats, then the unreadable ones spread over days."""
    days = [spec.start_date + timedelta(days=d) for d in range(spec.days)]
    data = [_slot(day, j, spec.formats[(d * spec.objects_per_day + j) % len(spec.formats)], None)
            for d, day in enumerate(days) for j in range(spec.objects_per_day)]
    kinds = [("csv.gz", "truncated_gzip")] * spec.truncated_gzip_objects + [("csv", "empty")] * spec.empty_objects
    extra = [_slot(days[e % spec.days], spec.objects_per_day + e // spec.days, fmt, reason)
             for e, (fmt, reason) in enumerate(kinds)]
    return data + extra


def _slot(day: date, index: int, fmt: str, unreadable: str | None) -> _Slot:
    return _Slot(f"{day:%Y/%m/%d}/trips-{index:04d}.{fmt}", fmt, day, index, unreadable)


def _count(rate: float, n: int) -> int:
    """round(rate * n), but at least one when the rate is non-zero so small specs still plant it."""
    return 0 if rate <= 0 or n == 0 else max(1, round(rate * n))


def _trip_ids(slots: list[_Slot], rows_per_object: int) -> np.ndarray:
    stems = [s.id_stem for s in slots]
    rows = np.char.zfill(np.arange(rows_per_object).astype(str), 6)
    return np.char.add(np.repeat(np.array(stems), rows_per_object), np.tile(rows, len(slots)))


# --- trips --------------------------------------------------------------------------------------

def _shifted(spec: DemoDataSpec, days: list[date], R: int) -> dict[str, np.ndarray]:
    """Per kind of shift, the rows it changes (the rows of shift_from and later days)."""
    later = np.repeat(np.array([spec.shift_from is not None and day >= spec.shift_from for day in days]), R)
    return {kind: later if kind in spec.shift else np.zeros_like(later) for kind in SHIFTS}


def _simulate(rng: np.random.Generator, days: list[date], R: int, anomaly_rows: np.ndarray,
              shifted: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Clean trips, R per object, each object sorted by pickup time like a real hourly drop. A
    shift changes values after they are drawn: the draws, and so the other rows, stay the same."""
    n = len(days) * R
    offsets = np.sort(rng.choice(24, size=(len(days), R), p=HOURLY_SHARE / HOURLY_SHARE.sum()) * 3600
                      + rng.integers(0, 3600, size=(len(days), R)), axis=1).ravel()
    hour = offsets // 3600
    pickup = np.repeat(np.array(days, dtype="datetime64[s]"), R) + offsets.astype("timedelta64[s]")
    rate_code = rng.choice(np.arange(1, 7), size=n, p=[0.95, 0.025, 0.005, 0.003, 0.015, 0.002])
    miles = np.where(rate_code == 2, rng.normal(17.5, 1.5, n), rng.lognormal(np.log(1.8), 0.75, n))
    miles = np.clip(np.where(shifted["longer_trips"], miles * SHIFT_DISTANCE, miles), 0.1, 30.0)
    mph = np.clip(HOURLY_MPH[hour] * (miles / 2) ** 0.25 * rng.lognormal(0, 0.2, n), 4, 40)
    seconds = np.maximum(60, np.round(miles / mph * 3600)).astype(np.int64)
    miles, seconds = _plant_anomalies(rng, miles, seconds, anomaly_rows)

    zone_weight = rng.lognormal(0, 1.5, N_ZONES)
    pickup_zone = rng.choice(np.arange(1, N_ZONES + 1), size=n, p=zone_weight / zone_weight.sum())
    dropoff_zone = rng.choice(np.arange(1, N_ZONES + 1), size=n, p=zone_weight / zone_weight.sum())
    dropoff_zone = np.where(rate_code == 2, JFK_ZONE, dropoff_zone)

    distance_c = np.round(miles * 100).astype(np.int64)
    fare_c = np.where(rate_code == 2, 7000, np.round(300 + 2.5 * distance_c + 50 * seconds / 60)).astype(np.int64)
    extra_c = np.select([(hour >= 16) & (hour < 20), (hour >= 20) | (hour < 6)], [250, 100], 0)
    tolls_c = np.where((miles >= 10) & (rng.random(n) < 0.5), 694, 0)
    payment = rng.choice([1, 2, 3, 4], size=n, p=[0.70, 0.27, 0.02, 0.01])
    tip_c = _tips(rng, fare_c, hour, pickup_zone, dropoff_zone, payment, shifted["tipping"])
    return {
        "vendor_id": rng.choice([1, 2], size=n, p=[0.3, 0.7]),
        "pickup_at": pickup,
        "dropoff_at": pickup + seconds.astype("timedelta64[s]"),
        "passenger_count": rng.choice(np.arange(1, 7), size=n, p=[0.72, 0.14, 0.04, 0.02, 0.05, 0.03]),
        "trip_distance": distance_c,
        "rate_code": rate_code,
        "pickup_zone": pickup_zone,
        "dropoff_zone": dropoff_zone,
        "payment_type": payment,
        "fare_amount": fare_c,
        "extra": extra_c,
        "tip_amount": tip_c,
        "tolls_amount": tolls_c,
        "total_amount": fare_c + extra_c + tip_c + tolls_c,
    }


def _plant_anomalies(rng: np.random.Generator, miles: np.ndarray, seconds: np.ndarray,
                     rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Impossible speeds: half long trips done in a minute or two, half short ones taking hours."""
    miles, seconds = miles.copy(), seconds.copy()
    fast = rng.random(len(rows)) < 0.5
    miles[rows] = np.where(fast, rng.uniform(15, 30, len(rows)), rng.uniform(0.1, 0.5, len(rows)))
    seconds[rows] = np.where(fast, rng.integers(30, 120, len(rows)), rng.integers(2 * 3600, 4 * 3600, len(rows)))
    return miles, seconds


def _tips(rng: np.random.Generator, fare_c: np.ndarray, hour: np.ndarray, pickup_zone: np.ndarray,
          dropoff_zone: np.ndarray, payment: np.ndarray, turned: np.ndarray) -> np.ndarray:
    """Only card tips are recorded; whether a card trip tips is logistic in fare, hour and zones,
    so a classifier has a real signal to learn. Tipped amounts are 10-25% of the fare. Rows
    `turned` tip by the opposite habit: the fare and hour effects change sign."""
    zone_effect = rng.normal(0, 0.8, N_ZONES + 1)
    habit = np.where(turned, -1.0, 1.0)
    logit = (1.0 + habit * (1.2 * np.log(np.maximum(fare_c, 1) / 1500) + HOURLY_TIP_EFFECT[hour])
             + zone_effect[pickup_zone] + 0.5 * zone_effect[dropoff_zone])
    tipped = (payment == CARD) & (rng.random(len(fare_c)) < 1 / (1 + np.exp(-logit)))
    share = np.clip(rng.normal(0.18, 0.04, len(fare_c)), 0.10, 0.25)
    return np.where(tipped, np.round(fare_c * share), 0).astype(np.int64)


def _plant_row_problems(rng: np.random.Generator, cols: dict[str, np.ndarray], null_rows: np.ndarray,
                        negative_rows: np.ndarray, bad_zone_rows: np.ndarray) -> dict[str, np.ndarray]:
    """Negative distances and out-of-range zones in place; returns the null mask per column."""
    n = len(cols["trip_id"])
    null_column = rng.choice(len(NULLABLE_REQUIRED), len(null_rows))
    masks = {c: np.zeros(n, dtype=bool) for c in NULLABLE_REQUIRED}
    for i, c in enumerate(NULLABLE_REQUIRED):
        masks[c][null_rows[null_column == i]] = True
    cols["trip_distance"][negative_rows] *= -1
    on_pickup = rng.random(len(bad_zone_rows)) < 0.5
    bad_values = rng.choice(BAD_ZONES, len(bad_zone_rows))
    cols["pickup_zone"][bad_zone_rows[on_pickup]] = bad_values[on_pickup]
    cols["dropoff_zone"][bad_zone_rows[~on_pickup]] = bad_values[~on_pickup]
    return masks


def _typed_table(cols: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> pa.Table:
    """Parquet's view: ints, naive timestamps (like the TLC files) and doubles."""
    def typed(name: str) -> pa.Array:
        values = cols[name]
        if name in INT_COLUMNS:
            values = values.astype(np.int32)
        elif name in TIME_COLUMNS:
            values = values.astype("datetime64[us]")
        elif name in HUNDREDTHS_COLUMNS:
            values = values / 100
        return pa.array(values, mask=masks.get(name))
    return pa.table({name: typed(name) for name in COLUMNS})


def _text_table(cols: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> pa.Table:
    """CSV/JSON's view: every value a string, amounts with two decimals, nulls stay null."""
    def text(name: str) -> pa.Array:
        values, mask = cols[name], masks.get(name)
        if name in HUNDREDTHS_COLUMNS:
            return _hundredths_text(values, mask)
        return pc.cast(pa.array(values, mask=mask), pa.string())
    return pa.table({name: text(name) for name in COLUMNS})


def _hundredths_text(values: np.ndarray, mask: np.ndarray | None) -> pa.Array:
    """-123 -> "-1.23", vectorised (string formatting per row would dominate the run time)."""
    magnitude = np.abs(values)
    whole = pc.cast(pa.array(magnitude // 100, mask=mask), pa.string())
    cents = pc.utf8_lpad(pc.cast(pa.array(magnitude % 100), pa.string()), 2, "0")
    unsigned = pc.binary_join_element_wise(whole, cents, ".")
    return pc.if_else(pa.array(values < 0), pc.binary_join_element_wise("-", unsigned, ""), unsigned)


def _pick_duplicates(rng: np.random.Generator, spare: np.ndarray, rate: float, n_objects: int,
                     R: int) -> tuple[np.ndarray, np.ndarray]:
    """Clean rows to copy, each into a random later data object (the last one has no later one)."""
    sources = np.sort(spare[spare < (n_objects - 1) * R][:_count(rate, n_objects * R)])
    return sources, rng.integers(sources // R + 1, n_objects)


def _malformed_per_object(rng: np.random.Generator, spec: DemoDataSpec, data: list[_Slot]) -> np.ndarray:
    """How many malformed lines each data object gets; only CSV text can hold one."""
    csv_objects = np.array([i for i, s in enumerate(data) if s.format in ("csv", "csv.gz")], dtype=np.int64)
    n = _count(spec.malformed_line_rate, len(csv_objects) * spec.rows_per_object)
    return np.bincount(rng.choice(csv_objects, n), minlength=len(data))


# --- objects ------------------------------------------------------------------------------------

def _unreadable(slot: _Slot, text: pa.Table) -> tuple[RawObject, UnreadableObject]:
    """A gzip CSV of real trips cut mid-stream, or a 0-byte object."""
    if slot.unreadable == "truncated_gzip":
        full = _gzip(_csv_bytes(text, []))
        return RawObject(slot.key, slot.format, full[: len(full) // 2]), \
            UnreadableObject(slot.key, slot.unreadable, text.num_rows)
    return RawObject(slot.key, slot.format, b""), UnreadableObject(slot.key, "empty", 0)


def _scatter(rng: np.random.Generator, n_base: int, n_extra: int) -> np.ndarray:
    """A mask over n_base + n_extra positions marking where the extras go, at random."""
    at = np.zeros(n_base + n_extra, dtype=bool)
    at[rng.choice(n_base + n_extra, n_extra, replace=False)] = True
    return at


def _object_rows(own: pa.Table, copies: pa.Table, copy_at: np.ndarray) -> pa.Table:
    """The object's own rows in order, with the copied rows at the `copy_at` positions."""
    if not copies.num_rows:
        return own
    order = np.empty(len(copy_at), dtype=np.int64)
    order[copy_at], order[~copy_at] = own.num_rows + np.arange(copies.num_rows), np.arange(own.num_rows)
    return pa.concat_tables([own, copies]).take(order)


def _render(rng: np.random.Generator, slot: _Slot, rows: pa.Table, n_malformed: int,
            R: int) -> tuple[bytes, list[MalformedLine]]:
    """One data object's bytes from its typed (Parquet) or text rows, plus the malformed lines
    planted in it (text CSV formats only)."""
    if slot.format == "parquet":
        sink = io.BytesIO()
        pq.write_table(rows, sink)
        return sink.getvalue(), []
    if slot.format == "jsonl":
        return rows.to_pandas().to_json(orient="records", lines=True).encode(), []
    bad_at = _scatter(rng, rows.num_rows, n_malformed)
    kinds = rng.choice(MALFORMED_KINDS, n_malformed)
    # Ghost ids continue past the object's last real row, so they name no trip.
    lines = [_malformed_line(rng, rows, k, f"{slot.id_stem}{R + m:06d}") for m, k in enumerate(kinds)]
    body = _csv_bytes(rows, list(zip(np.flatnonzero(bad_at).tolist(), lines)))
    malformed = [MalformedLine(slot.key, int(p) + 1, str(k)) for p, k in zip(np.flatnonzero(bad_at), kinds)]
    return (_gzip(body) if slot.format == "csv.gz" else body), malformed


def _malformed_line(rng: np.random.Generator, rows: pa.Table, kind: str, ghost_id: str) -> str:
    """A row-like line that is not a trip: a fresh id that names no real trip, broken structure."""
    row = rows.slice(int(rng.integers(rows.num_rows)), 1).to_pylist()[0]
    fields = [ghost_id] + ["" if row[c] is None else row[c] for c in COLUMNS[1:]]
    if kind == "wrong_column_count":
        return ",".join(fields[:-3] if rng.random() < 0.5 else fields + ["0.00"])
    i = int(rng.integers(1, len(fields) - 1))
    return ",".join(fields[:i] + ['"' + fields[i]] + fields[i + 1:])


def _csv_bytes(text: pa.Table, inserts: list[tuple[int, str]]) -> bytes:
    """Header plus unquoted rows (no value needs quoting); `inserts` are (0-based data line, line)."""
    sink = io.BytesIO()
    pacsv.write_csv(text, sink, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    rows = sink.getvalue().decode().splitlines()
    for position, line in inserts:  # ascending, so each position is already final
        rows.insert(position, line)
    return "\n".join([",".join(COLUMNS), *rows, ""]).encode()


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)  # mtime=0: same bytes on every run


def _ids(trip_id: np.ndarray, rows: np.ndarray) -> tuple[str, ...]:
    return tuple(str(t) for t in trip_id[np.sort(rows)])


def _spec_dict(spec: DemoDataSpec) -> dict[str, Any]:
    return {**dataclasses.asdict(spec), "start_date": spec.start_date.isoformat(), "formats": list(spec.formats),
            "shift_from": spec.shift_from.isoformat() if spec.shift_from else None, "shift": list(spec.shift)}


def _ensure_bucket(s3_client: Any, bucket: str) -> None:
    from botocore.exceptions import ClientError

    try:
        s3_client.head_bucket(Bucket=bucket)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
        region = s3_client.meta.region_name
        extra = {} if region in (None, "us-east-1") else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        s3_client.create_bucket(Bucket=bucket, **extra)


# --- CLI ----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Upload synthetic taxi trips (with planted problems) to S3.")
    parser.add_argument("--endpoint-url", help="S3 endpoint, e.g. a local moto server; default: AWS")
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--start-date", type=date.fromisoformat, default=DemoDataSpec.start_date)
    parser.add_argument("--days", type=int, default=DemoDataSpec.days)
    parser.add_argument("--objects-per-day", type=int, default=DemoDataSpec.objects_per_day)
    parser.add_argument("--rows-per-object", type=int, default=DemoDataSpec.rows_per_object)
    parser.add_argument("--seed", type=int, default=DemoDataSpec.seed)
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated, rotated over objects")
    parser.add_argument("--manifest-out", help="also write the manifest JSON to this file")
    parser.add_argument("--shift-from", type=date.fromisoformat, default=None,
                        help="change the trips from this day on (see --shift)")
    parser.add_argument("--shift", default=",".join(SHIFTS),
                        help=f"comma-separated kinds of change with --shift-from: {', '.join(SHIFTS)}")
    args = parser.parse_args(argv)

    import boto3

    if args.endpoint_url and urlparse(args.endpoint_url).hostname in ("127.0.0.1", "localhost"):
        from strata_dev.local_s3 import use_local_credentials

        use_local_credentials()  # a local endpoint takes any credentials; never overrides real ones
    spec = DemoDataSpec(start_date=args.start_date, days=args.days, objects_per_day=args.objects_per_day,
                        rows_per_object=args.rows_per_object, seed=args.seed,
                        formats=tuple(f.strip() for f in args.formats.split(",")), shift_from=args.shift_from,
                        shift=tuple(k.strip() for k in args.shift.split(",") if k.strip()))
    started = time.monotonic()
    manifest = upload(spec, boto3.client("s3", endpoint_url=args.endpoint_url), args.bucket, args.prefix)
    if args.manifest_out:
        with open(args.manifest_out, "w") as f:
            f.write(manifest.to_json())
    summary = {"bucket": args.bucket, "prefix": args.prefix.strip("/"),
               "manifest_key": manifest_key(args.prefix), **manifest.totals,
               "seconds": round(time.monotonic() - started, 2)}
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
