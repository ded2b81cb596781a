"""Gold features rows of trips and a tiny model config, shared by the training and scoring tests."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np

TINY_MODEL = """dataset: trips
algorithm: logistic_regression
numeric_features: [fare_per_mile, trip_distance, trip_duration_min]
categorical_features: [pickup_hour]
grid: {regParam: [0.01], maxIter: [15]}
split: {train: 0.6, validation: 0.2, test: 0.2}
seed: 11
folds: 2
parallelism: 2
bootstrap_replicates: 60
baseline_features: [trip_distance]
promotion: {tolerance: 0.02, baseline_margin: 0.02}
"""


def gold_rows(spark, n, seed, first_id=0, learnable=True, label_share=None):
    """Gold feature rows of trips: tips follow fare per mile and the evening hours (learnable), or
    are drawn independently of every feature."""
    rng = np.random.default_rng(seed)
    distance = rng.gamma(2.0, 1.5, n).round(2)
    minutes = (distance * rng.uniform(2.5, 5.0, n) + 2).round(2)
    fare = (3 + 2.5 * distance + 0.4 * minutes + rng.normal(0, 1, n)).round(2)
    hour = rng.integers(0, 24, n)
    per_mile = (fare / np.maximum(distance, 0.1)).round(2)
    if learnable:
        logit = -2.0 + 0.35 * per_mile + 1.2 * (hour >= 18) - 0.3 * distance
        label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    else:
        label = (rng.random(n) < (label_share or 0.4)).astype(int)
    rows = [(f"t{first_id + i:06d}", dt.date(2024, 1, 1 + i % 7), Decimal(f"{minutes[i]:.2f}"), float(distance[i]),
             float(distance[i] / max(minutes[i], 0.1) * 60), float(fare[i]), float(per_mile[i]), int(hour[i]),
             int(1 + i % 7), 132, 138, 1, 1, 1, int(label[i])) for i in range(n)]
    # the types of the real gold table (trip_duration_min is a decimal there)
    schema = ("trip_id string, event_date date, trip_duration_min decimal(24,2), trip_distance double, speed_mph double, "
              "fare_amount double, fare_per_mile double, pickup_hour int, pickup_weekday int, pickup_zone int, "
              "dropoff_zone int, passenger_count int, payment_type int, rate_code int, label int")
    return spark.createDataFrame(rows, schema)
