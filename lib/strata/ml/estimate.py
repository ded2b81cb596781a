"""A training's cost from fits on growing samples: pure functions, no Spark.

Two models fitted by least squares on the samples' measurements, both of the form
a + b * rows^p (a, b >= 0; relative errors, so the small samples weigh as much as the large ones;
p = 1 by default, see LINEAR; fit_power can pick p from a grid of exponents):

- work: executor core-seconds. a is the work every fit does whatever its size (hundreds of small
  Spark jobs: folds x param maps, thresholds, bootstraps), b * rows^p the work that grows.
- serial: wall seconds no core count shortens, each sample's wall time minus its core-seconds
  spread over the cores it ran on (wall - core-seconds / cores): the driver planning, scheduling
  and running Python, and cores idle while a stage has fewer tasks than cores.

For the full table on N cores: wall = serial + work / N (Amdahl: what was serial on the samples'
cores stays serial); the executors' core-hours are work / 3600, the cluster's N x wall / 3600,
and the cost the cluster's core-hours at the price per core-hour.
"""
from __future__ import annotations

import math
from typing import Sequence

# Exponents fit_power may try: from sub-linear to quadratic.
EXPONENTS = tuple(round(0.5 + 0.01 * i, 2) for i in range(151))
# What the estimate fits: p = 1, fixed work plus work in proportion to the rows (what MLlib's
# passes over cached rows and the split's hashing do). A free exponent fits the noise of small
# samples on a busy machine: on bench/estimate.py's samples it came out 1.75 and predicted 843
# core-seconds where the training took 533, while their CPU time grew linearly.
LINEAR = (1.0,)
WORK_FORM = "core_seconds = a + b * rows^p"
SERIAL_FORM = "serial_seconds = a + b * rows^p, serial = wall - core_seconds / cores"


def _weighted_line(x: Sequence[float], y: Sequence[float], w: Sequence[float]) -> tuple[float, float]:
    """(intercept, slope) minimising sum w (intercept + slope x - y)^2, both >= 0."""
    sw = sum(w)
    mx = sum(wi * xi for wi, xi in zip(w, x)) / sw
    my = sum(wi * yi for wi, yi in zip(w, y)) / sw
    sxx = sum(wi * (xi - mx) ** 2 for wi, xi in zip(w, x))
    sxy = sum(wi * (xi - mx) * (yi - my) for wi, xi, yi in zip(w, x, y))
    slope = sxy / sxx if sxx > 0 else 0.0
    intercept = my - slope * mx
    if slope < 0:  # more rows never take less: a constant
        return max(my, 0.0), 0.0
    if intercept < 0:  # through the origin
        sxx0 = sum(wi * xi * xi for wi, xi in zip(w, x))
        return 0.0, (sum(wi * xi * yi for wi, xi, yi in zip(w, x, y)) / sxx0 if sxx0 > 0 else 0.0)
    return intercept, slope


def fit_power(rows: Sequence[float], values: Sequence[float], scale: Sequence[float] | None = None,
              exponents: Sequence[float] = EXPONENTS) -> dict:
    """values = a + b * rows^p by least squares of the errors relative to `scale` (default: the
    values): {"a", "b", "p", "relative_rmse"}."""
    if len(rows) != len(values) or len(rows) < 2:
        raise ValueError("a scaling model needs at least two samples")
    if len(set(rows)) < 2:
        raise ValueError("a scaling model needs samples of at least two sizes")
    scale = list(values if scale is None else scale)
    if any(r <= 0 for r in rows) or any(v <= 0 for v in scale):
        raise ValueError("samples must have rows and values above 0")
    weights = [1 / v ** 2 for v in scale]
    best = None
    for p in (exponents if len(rows) > 2 else (1.0,)):
        x = [r ** p for r in rows]
        a, b = _weighted_line(x, values, weights)
        error = _relative_rmse([a + b * xi for xi in x], values, scale)
        if best is None or error < best["relative_rmse"] - 1e-12:
            best = {"a": a, "b": b, "p": p, "relative_rmse": error}
    assert best is not None
    return best


def fit_work(rows: Sequence[float], core_seconds: Sequence[float],
             exponents: Sequence[float] = LINEAR) -> dict:
    """core-seconds = a + b * rows^p fitted on the samples: {"form", "a", "b", "p",
    "relative_rmse"} (the fit's root-mean-square relative error on the samples)."""
    if any(c <= 0 for c in core_seconds):
        raise ValueError("samples must have core-seconds above 0")
    return {"form": WORK_FORM, **fit_power(rows, core_seconds, exponents=exponents)}


def fit_serial(rows: Sequence[float], wall_seconds: Sequence[float], core_seconds: Sequence[float], cores: int,
               exponents: Sequence[float] = LINEAR) -> dict:
    """The serial wall seconds (wall - core-seconds / cores, at least 0) = a + b * rows^p, errors
    relative to each sample's wall time: {"form", "a", "b", "p", "relative_rmse", "cores"}."""
    if cores < 1:
        raise ValueError("cores must be at least 1")
    serial = [max(w - c / cores, 0.0) for w, c in zip(wall_seconds, core_seconds)]
    return {"form": SERIAL_FORM, **fit_power(rows, serial, scale=wall_seconds, exponents=exponents), "cores": cores}


def _relative_rmse(predicted: Sequence[float], actual: Sequence[float], scale: Sequence[float]) -> float:
    return math.sqrt(sum(((p - a) / s) ** 2 for p, a, s in zip(predicted, actual, scale)) / len(actual))


def at(model: dict, rows: float) -> float:
    """A fitted a + b * rows^p at `rows`."""
    return model["a"] + model["b"] * rows ** model["p"]


def predict(work: dict, serial: dict, rows: int, cores: int, price_per_core_hour: float) -> dict:
    """The full table on `cores` cores: rows, core-seconds, wall seconds, the executors' busy
    core-hours, the cluster's core-hours (cores held for the wall time), their cost, and the
    efficiency (core-seconds / (cores x wall))."""
    if cores < 1:
        raise ValueError("cores must be at least 1")
    core_seconds = at(work, rows)
    wall_seconds = at(serial, rows) + core_seconds / cores
    cluster_core_hours = cores * wall_seconds / 3600
    return {"rows": rows, "cores": cores, "core_seconds": core_seconds, "wall_seconds": wall_seconds,
            "core_hours": core_seconds / 3600, "cluster_core_hours": cluster_core_hours,
            "efficiency": core_seconds / (cores * wall_seconds) if wall_seconds > 0 else None,
            "price_per_core_hour": price_per_core_hour, "cost": cluster_core_hours * price_per_core_hour}


def smallest_trainable(fractions: Sequence[float], per_class: dict, train_share: float, folds: int,
                       margin: float = 2.0) -> list[float]:
    """The fractions whose expected sample has, in its smallest class's training share, at least
    `margin` x folds rows (room for the sample's randomness): the sizes that can train."""
    smallest = min(per_class.values())
    return [f for f in fractions if smallest * f * train_share >= margin * folds]


def readable(samples: Sequence[dict], work: dict, serial: dict, prediction: dict) -> str:
    """The samples, the models and the prediction as a short text table."""
    lines = [f"{'sample':>8}  {'rows':>12}  {'wall s':>9}  {'core-s':>9}  {'model wall s':>12}  {'model core-s':>12}"]
    for s in samples:
        lines.append(f"{s['fraction']:>8.2%}  {s['rows']:>12,}  {s['wall_seconds']:>9.1f}  {s['core_seconds']:>9.1f}"
                     f"  {at(serial, s['rows']) + at(work, s['rows']) / serial['cores']:>12.1f}"
                     f"  {at(work, s['rows']):>12.1f}")
    p = prediction
    lines += [f"work: core-s = {work['a']:.3g} + {work['b']:.3g} x rows^{work['p']:.2f} "
              f"(relative error {work['relative_rmse']:.1%}); serial: {serial['a']:.3g} + {serial['b']:.3g} x "
              f"rows^{serial['p']:.2f} s (relative error {serial['relative_rmse']:.1%} of wall)",
              f"full table: {p['rows']:,} rows on {p['cores']} cores: {p['wall_seconds']:,.0f} s wall, "
              f"{p['core_hours']:.3f} executor core-hours, {p['cluster_core_hours']:.3f} cluster core-hours, "
              f"cost {p['cost']:.4f} at {p['price_per_core_hour']:g} per core-hour"]
    return "\n".join(lines)
