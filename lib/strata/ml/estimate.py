"""A training's cost from fits on growing samples: pure functions, no Spark.

Two models, both fitted by least squares on the samples' measurements:

- work: executor core-seconds = a + b * rows^p (a, b >= 0). a is the work every fit does whatever
  its size (hundreds of small Spark jobs: folds x param maps, thresholds, bootstraps); b * rows^p
  the work that grows with the rows. p is the exponent of the grid EXPONENTS that fits best
  (relative errors: the small samples weigh as much as the large ones); with two samples, p = 1.
- wall: wall seconds = serial + per_core_second * core-seconds. serial is the time no executor
  works (the driver: planning, scheduling, Python); per_core_second is 1 / (cores x efficiency)
  on the cores the samples ran on, so the parallel efficiency is 1 / (per_core_second x cores).

For the full table on N cores: wall = serial + work / (N x efficiency), efficiency capped at 1
(N cores only help as far as the work has tasks for them; the samples' efficiency is assumed);
the cluster's core-hours are N x wall and cost that times the price per core-hour.
"""
from __future__ import annotations

import math
from typing import Sequence

# Exponents tried for the work model: from sub-linear (cached, sampled steps) to quadratic.
EXPONENTS = tuple(round(0.5 + 0.01 * i, 2) for i in range(151))


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


def fit_work(rows: Sequence[float], core_seconds: Sequence[float],
             exponents: Sequence[float] = EXPONENTS) -> dict:
    """core-seconds = a + b * rows^p fitted on the samples: {"form", "a", "b", "p",
    "relative_rmse"} (the fit's root-mean-square relative error on the samples)."""
    if len(rows) != len(core_seconds) or len(rows) < 2:
        raise ValueError("the work model needs at least two samples (rows, core-seconds)")
    if len(set(rows)) < 2:
        raise ValueError("the work model needs samples of at least two sizes")
    if any(r <= 0 for r in rows) or any(c <= 0 for c in core_seconds):
        raise ValueError("samples must have rows and core-seconds above 0")
    weights = [1 / c ** 2 for c in core_seconds]  # relative errors
    best = None
    for p in (exponents if len(rows) > 2 else (1.0,)):
        x = [r ** p for r in rows]
        a, b = _weighted_line(x, core_seconds, weights)
        error = _relative_rmse([a + b * xi for xi in x], core_seconds)
        if best is None or error < best["relative_rmse"] - 1e-12:
            best = {"a": a, "b": b, "p": p, "relative_rmse": error}
    assert best is not None
    return {"form": "core_seconds = a + b * rows^p", **best}


def fit_wall(core_seconds: Sequence[float], wall_seconds: Sequence[float]) -> dict:
    """wall = serial + per_core_second * core-seconds fitted on the samples (relative errors):
    {"form", "serial_seconds", "per_core_second", "relative_rmse"}."""
    if len(core_seconds) != len(wall_seconds) or len(core_seconds) < 2:
        raise ValueError("the wall model needs at least two samples (core-seconds, wall seconds)")
    if any(w <= 0 for w in wall_seconds):
        raise ValueError("samples must have wall seconds above 0")
    serial, slope = _weighted_line(core_seconds, wall_seconds, [1 / w ** 2 for w in wall_seconds])
    if slope == 0:  # no growth seen: all of it serial would never shrink with cores; assume full use
        serial, slope = 0.0, sum(wall_seconds) / sum(core_seconds)
    fitted = [serial + slope * c for c in core_seconds]
    return {"form": "wall_seconds = serial + per_core_second * core_seconds", "serial_seconds": serial,
            "per_core_second": slope, "relative_rmse": _relative_rmse(fitted, wall_seconds)}


def _relative_rmse(predicted: Sequence[float], actual: Sequence[float]) -> float:
    return math.sqrt(sum(((p - a) / a) ** 2 for p, a in zip(predicted, actual)) / len(actual))


def work_at(work: dict, rows: float) -> float:
    return work["a"] + work["b"] * rows ** work["p"]


def efficiency(wall: dict, measured_cores: int) -> float:
    """The samples' parallel efficiency: executor core-seconds per second of the parallel part,
    per core (at most 1)."""
    return min(1.0, 1 / (wall["per_core_second"] * measured_cores))


def predict(work: dict, wall: dict, rows: int, cores: int, measured_cores: int,
            price_per_core_hour: float) -> dict:
    """The full table on `cores` cores: rows, core-seconds, wall seconds, the executors' busy
    core-hours, the cluster's core-hours (cores held for the wall time) and their cost."""
    if cores < 1 or measured_cores < 1:
        raise ValueError("cores must be at least 1")
    core_seconds = work_at(work, rows)
    used = efficiency(wall, measured_cores)
    wall_seconds = wall["serial_seconds"] + core_seconds / (cores * used)
    cluster_core_hours = cores * wall_seconds / 3600
    return {"rows": rows, "cores": cores, "core_seconds": core_seconds, "wall_seconds": wall_seconds,
            "core_hours": core_seconds / 3600, "cluster_core_hours": cluster_core_hours,
            "efficiency": used, "price_per_core_hour": price_per_core_hour,
            "cost": cluster_core_hours * price_per_core_hour}


def smallest_trainable(fractions: Sequence[float], per_class: dict, train_share: float, folds: int,
                       margin: float = 2.0) -> list[float]:
    """The fractions whose expected sample has, in its smallest class's training share, at least
    `margin` x folds rows (room for the sample's randomness): the sizes that can train."""
    smallest = min(per_class.values())
    return [f for f in fractions if smallest * f * train_share >= margin * folds]


def readable(samples: Sequence[dict], work: dict, wall: dict, prediction: dict) -> str:
    """The samples, the models and the prediction as a short text table."""
    lines = [f"{'sample':>8}  {'rows':>12}  {'wall s':>9}  {'core-s':>9}  {'model core-s':>12}"]
    for s in samples:
        lines.append(f"{s['fraction']:>8.2%}  {s['rows']:>12,}  {s['wall_seconds']:>9.1f}  {s['core_seconds']:>9.1f}"
                     f"  {work_at(work, s['rows']):>12.1f}")
    p = prediction
    lines += [f"work: core-s = {work['a']:.3g} + {work['b']:.3g} x rows^{work['p']:.2f} "
              f"(relative error {work['relative_rmse']:.1%}); wall: {wall['serial_seconds']:.1f} s serial + "
              f"{wall['per_core_second']:.3g} s per core-s (efficiency {p['efficiency']:.0%})",
              f"full table: {p['rows']:,} rows on {p['cores']} cores: {p['wall_seconds']:,.0f} s wall, "
              f"{p['core_hours']:.3f} executor core-hours, {p['cluster_core_hours']:.3f} cluster core-hours, "
              f"cost {p['cost']:.4f} at {p['price_per_core_hour']:g} per core-hour"]
    return "\n".join(lines)
