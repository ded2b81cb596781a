"""The pipeline's run report: one self-contained HTML file per run,
<reports.dir>/<run_date>_<run_id>.html.

What it shows: the run (status, error, run id and date), each stage's outcome, counts and time,
rows and version of every table the run recorded (the numbers of the run's JSON line), the
quality results of the run, and per dataset the anomaly flags of the run date (a distance against
duration scatter, coloured by is_outlier) and per model the champion's test evaluation (ROC and
precision-recall curves, confusion matrix, from the evaluation/curves.json its training run
logged) with a histogram of the run date's prediction scores. A section whose data is absent
says so in one line.

Self-contained: figures are inline SVG (matplotlib, text as text), numbers are HTML tables, the
style sheet is inline; no script, no external file, font or image.

gather() reads what the report needs (Spark aggregates and small samples, never all rows; the
MLflow registry); render() is pure (data in, HTML out); write() puts the file in place.
"""
from __future__ import annotations

import datetime as dt
import html
import io
import logging
import math
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Prediction scores in this many equal bins of [0, 1].
SCORE_BINS = 20
# At most this many rides of each kind (outliers, the others) in the scatter.
SCATTER_SAMPLE = 2000
LAYERS = ("bronze", "silver", "gold", "quarantine", "ml", "monitoring", "ops", "quality")


# --- the file -------------------------------------------------------------------------------------

def report_path(folder: str | Path, run_date: str, run_id: str) -> Path:
    """<folder>/<run_date>_<run_id>.html, with the run id made safe for a file name."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    return Path(folder) / f"{run_date}_{safe}.html"


def write(path: Path, text: str) -> Path:
    """The report in place at once (a hidden temporary name, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
    return path


# --- reading what the report shows (I/O) ----------------------------------------------------------

def _unavailable(what: str, exc: BaseException) -> dict:
    log.warning("run report: %s could not be read", what, exc_info=True)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return {"note": f"{what} could not be read: {type(exc).__name__}: {text}"[:300]}


def gather(ctx, summary: dict) -> dict:
    """Everything render() needs besides the summary: quality results of the run, and per dataset
    its anomaly flags and models. A part that cannot be read becomes a one-line note."""
    from strata import catalog

    try:
        quality = {"rows": quality_results(ctx.lake, ctx.run_id)}
    except Exception as exc:  # noqa: BLE001 - the report shows what it could read
        quality = _unavailable("quality/results", exc)
    datasets = []
    for name in summary.get("datasets") or []:
        entry: dict[str, Any] = {"name": name, "models": []}
        datasets.append(entry)
        if name not in ctx.config.datasets:
            entry["anomalies"] = {"note": f"no dataset {name} is configured"}
            continue
        dataset = ctx.config.dataset(name)
        if dataset.anomalies is None:
            entry["anomalies"] = {"note": f"dataset {name} has no anomalies section: no flags"}
        else:
            try:
                entry["anomalies"] = flag_sample(ctx.lake, dataset, ctx.run_date)
            except Exception as exc:  # noqa: BLE001
                entry["anomalies"] = _unavailable(catalog.flagged(dataset).qualified_name, exc)
        if ctx.config.pipeline.models:
            for model in ctx.config.models_of(name):
                entry["models"].append(model_section(ctx, dataset, model))
    return {"quality": quality, "datasets": datasets}


def quality_results(lake, run_id: str) -> list[dict]:
    """The run's rows of quality/results (one per expectation of each gate it ran)."""
    from pyspark.sql import functions as F

    from strata.catalog import QUALITY_RESULTS

    if not lake.exists(QUALITY_RESULTS):
        return []
    columns = ["job", "table", "expectation_type", "column", "severity", "success", "element_count",
               "unexpected_count"]
    rows = lake.read(QUALITY_RESULTS).where(F.col("run_id") == run_id).select(*columns).collect()
    return [r.asDict() for r in rows]


def flag_sample(lake, dataset, run_date: dt.date) -> dict:
    """The run date's flags: rides per flag, and a bounded sample for the scatter (the most
    outlying outliers and a fixed pseudo-random set of the others, up to SCATTER_SAMPLE each)."""
    from pyspark.sql import functions as F

    from strata import catalog

    table, config = catalog.flagged(dataset), dataset.anomalies
    x, y = list(config.features)[:2]
    if not lake.exists(table):
        return {"note": f"{table.qualified_name} does not exist yet: no flags"}
    frame = lake.read(table, partitions=[{config.date_column: run_date}])
    sizes = frame.agg(F.count(F.lit(1)).alias("rides"), F.count(F.when(F.col("is_outlier"), 1)).alias("outliers"),
                      F.max("model_version").alias("model_version")).first()
    if not sizes["rides"]:
        return {"note": f"{table.qualified_name} has no rides of {run_date}: no flags"}
    outliers = frame.where(F.col("is_outlier")).orderBy(F.desc("outlier_score")).limit(SCATTER_SAMPLE)
    others = frame.where(~F.col("is_outlier")).orderBy(F.xxhash64(*dataset.keys)).limit(SCATTER_SAMPLE)
    points = outliers.select(x, y, "is_outlier").unionByName(others.select(x, y, "is_outlier")).collect()
    return {"table": table.qualified_name, "x": x, "y": y, "rides": sizes["rides"], "outliers": sizes["outliers"],
            "model_version": sizes["model_version"],
            "outlier_points": [(float_or_none(r[0]), float_or_none(r[1])) for r in points if r[2]],
            "other_points": [(float_or_none(r[0]), float_or_none(r[1])) for r in points if not r[2]]}


def float_or_none(value: Any) -> float | None:
    """A number of the lake (a decimal too) as a float for a figure."""
    return None if value is None else float(value)


def model_section(ctx, dataset, model) -> dict:
    """The champion's test evaluation (from its training run's evaluation/curves.json) and the
    histogram of the run date's prediction scores."""
    section: dict[str, Any] = {"name": model.name}
    try:
        section.update(champion_evaluation(ctx.config.mlflow, model.name))
    except Exception as exc:  # noqa: BLE001
        section["evaluation_note"] = _unavailable(f"the champion of {model.name}", exc)["note"]
    try:
        section["scores"] = score_histogram(ctx.lake, dataset, model, ctx.run_date)
    except Exception as exc:  # noqa: BLE001
        section["scores"] = _unavailable(f"the predictions of {model.name}", exc)
    return section


def champion_evaluation(mlflow_config, name: str) -> dict:
    import mlflow
    from mlflow.exceptions import MlflowException

    from strata.ml.plots import CURVES_ARTIFACT
    from strata.tracking import CHAMPION, Tracking

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bar on stderr for one file
    champion = Tracking.connect(mlflow_config).version_by_alias(name, CHAMPION)
    if champion is None:
        return {"evaluation_note": f"model {name} has no champion yet: no evaluation to show"}
    try:
        record = mlflow.artifacts.load_dict(f"runs:/{champion.run_id}/{CURVES_ARTIFACT}")
    except (MlflowException, OSError) as exc:
        log.info("run report: %s version %s: no %s (%s)", name, champion.version, CURVES_ARTIFACT, exc)
        return {"champion": str(champion.version),
                "evaluation_note": f"champion version {champion.version} has no {CURVES_ARTIFACT} in its "
                                   "training run (trained before train logged it): no curves to show"}
    return {"champion": str(champion.version), "evaluation": record}


def score_histogram(lake, dataset, model, run_date: dt.date) -> dict:
    """Predictions of the partitions scored for the run date, counted per role and score bin."""
    from pyspark.sql import functions as F

    from strata import catalog

    table = catalog.predictions(model, dataset)
    if not lake.exists(table):
        return {"note": f"{table.qualified_name} does not exist yet: no predictions"}
    partitions = lake.changed_partitions(table, run_date.isoformat())
    if partitions == []:
        return {"note": f"no predictions were written for {run_date}"}
    score_bin = F.least(F.floor(F.col("probability") * SCORE_BINS), F.lit(SCORE_BINS - 1)).cast("int")
    rows = (lake.read(table, partitions=partitions)
            .groupBy("role", "model_version", "threshold", score_bin.alias("bin")).count().collect())
    return {"table": table.qualified_name, "bins": SCORE_BINS,
            "counts": [(r["role"], r["model_version"], r["threshold"], r["bin"], r["count"]) for r in rows]}


# --- figures --------------------------------------------------------------------------------------

def svg(fig) -> str:
    """The figure as an inline <svg> element: text as text, no XML prolog, no metadata."""
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    try:
        fig.tight_layout()
        with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "strata"}):
            fig.savefig(buffer, format="svg", bbox_inches="tight",
                        metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    finally:
        plt.close(fig)
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    # the metadata element names RDF vocabularies by URL: not needed in a page
    start, end = text.find("<metadata>"), text.find("</metadata>")
    if 0 <= start < end:
        text = text[:start] + text[end + len("</metadata>"):]
    return text


def histogram_figure(bins: int, per_role: dict[str, list[int]], thresholds: dict[str, float], title: str):
    from strata.ml.plots import _figure

    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 1.0 / bins
    lefts = [i * width for i in range(bins)]
    for role, counts in per_role.items():
        if role == "champion":
            ax.bar(lefts, counts, width=width, align="edge", color="#4c78a8", edgecolor="white", label="champion")
        else:
            ax.step([*lefts, 1.0], [*counts, counts[-1]], where="post", color="#e45756", label=role)
    for role, threshold in thresholds.items():
        ax.axvline(threshold, linestyle="--", color="black" if role == "champion" else "#e45756", linewidth=0.9,
                   label=f"{role} threshold {threshold:.3f}")
    ax.set(xlabel="predicted probability of class 1", ylabel="rows", xlim=(0, 1), title=f"{title}: scores")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    return fig


def scatter_figure(outliers: list[tuple], others: list[tuple], x: str, y: str, title: str):
    from strata.ml.plots import _figure

    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.4, 4.8))

    def finite(points):
        return [(a, b) for a, b in points if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]

    for points, colour, label, size in ((finite(others), "#9ecae1", "not flagged", 6),
                                        (finite(outliers), "#d62728", "outlier", 14)):
        if points:
            ax.scatter([p[0] for p in points], [p[1] for p in points], s=size, c=colour, label=label,
                       linewidths=0, alpha=0.8)
    # log axes that also hold zero and negative values (symmetric log, linear within +-0.1)
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set(xlabel=f"{x} (symmetric log)", ylabel=f"{y} (symmetric log)", title=f"{title}: {x} vs {y}")
    ax.grid(True, linewidth=0.3, alpha=0.5)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small", markerscale=2)
    return fig


# --- the page (pure) ------------------------------------------------------------------------------

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:1.5rem 2rem;color:#222;
max-width:1400px}
h1{font-size:1.5rem;margin-bottom:.3rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
h3{font-size:1.05rem;margin-top:1.4rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.85rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1a7f37;font-weight:600}.failed,.blocked{color:#c62828;font-weight:600}.skipped{color:#777}
.note{color:#555;font-style:italic}.counts{font-size:.78rem;color:#444}
.error{background:#fdecea;border:1px solid #f5c2c0;padding:.5rem;white-space:pre-wrap}
figure{display:inline-block;margin:.5rem 1rem .5rem 0;vertical-align:top}
details summary{cursor:pointer;color:#555}
figure svg{max-width:100%;height:auto}figcaption{font-size:.8rem;color:#555;max-width:36rem}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return _e(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return _e(value)


def _table(table_id: str, headers: list[str], rows: list[list[Any]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="num">{_number(c)}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<table id="{_e(table_id)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _figure_html(figure_id: str, svg_text: str, caption: str) -> str:
    return f'<figure id="{_e(figure_id)}">{svg_text}<figcaption>{_e(caption)}</figcaption></figure>'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower())


def stage_outcome(counts: dict) -> str:
    if counts.get("error"):
        return "failed"
    if counts.get("skipped"):
        return "skipped"
    if counts.get("no_new_data"):
        return "no new data"
    return "ok"


def scalar_counts(counts: dict) -> list[tuple[str, Any]]:
    """A stage's counts as (name, value) pairs: scalars, and the scalars of nested dicts one
    level down (name.sub); lists and deeper values are left out. Not the error, the reason a
    stage was skipped or its duration, which have their own columns."""
    pairs = []
    for key, value in counts.items():
        if key in ("error", "skipped", "duration_seconds"):
            continue
        if isinstance(value, dict):
            pairs += [(f"{key}.{k}", v) for k, v in value.items()
                      if isinstance(v, (int, float, str, bool)) or v is None]
        elif isinstance(value, (int, float, str, bool)):
            pairs.append((key, value))
    return pairs


def stage_result(job: str, counts: dict) -> str:
    """A few words on what a stage did: its error, why it was skipped, or its main numbers."""
    if counts.get("error"):
        return str(counts["error"])
    if counts.get("skipped"):
        return str(counts["skipped"])

    def count(*path):
        value: Any = counts
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        return _number(value if value is not None else 0)

    if job == "ingest":
        return f"{count('rows_written')} rows from {count('objects_new')} new object(s)"
    if job == "silver":
        return f"{count('upserted')} rows upserted, {count('quarantined')} quarantined"
    if job == "gold":
        return f"{count('features', 'rows')} feature rows, {count('partitions')} partition(s)"
    if job == "anomalies":
        return f"{count('flagged', 'rows')} rides scored, {count('outliers')} outlier(s)"
    if job == "monitor":
        if counts.get("no_new_data"):
            return "nothing scored on the date"
        retrain = counts.get("retrain") or {}
        if retrain.get("triggered"):
            return "retrain: " + "; ".join(retrain.get("reasons") or [])
        return f"no retrain; {len(counts.get('drifted_features') or [])} feature(s) drifted"
    if job in ("train", "retrain"):
        promotion = counts.get("promotion") or {}
        return (f"version {counts.get('model_version')} "
                f"{'promoted' if promotion.get('promoted') else 'not promoted'}: {promotion.get('reason', '')}")
    if job == "predict":
        return f"{count('predictions', 'rows')} predictions of {count('rows_scored')} rows"
    return ""


def _stages_html(stages: dict) -> str:
    if not stages:
        return _note("no stage ran")
    rows = []
    total = 0.0
    for key, counts in stages.items():
        outcome = stage_outcome(counts)
        seconds = counts.get("duration_seconds")
        total += seconds or 0.0
        job = key.split(".")[1] if "." in key else key
        shown = ", ".join(f"{_e(k)}={_number(v)}" for k, v in scalar_counts(counts))
        rows.append([_e(key), f'<span class="{_slug(outcome)}">{_e(outcome)}</span>', seconds,
                     _e(stage_result(job, counts)),
                     f'<details><summary>all</summary><span class="counts">{shown}</span></details>' if shown else ""])
    rows.append(["<b>all stages</b>", "", round(total, 1), "", ""])
    return _table("stages", ["stage", "outcome", "seconds", "result", "counts"], rows, numeric={2})


def _tables_html(tables: dict) -> str:
    if not tables:
        return _note("no table was recorded by this run")

    def order(name):
        layer = name.split(".")[0]
        return (LAYERS.index(layer) if layer in LAYERS else len(LAYERS), name)

    rows = [[_e(name.split(".")[0]), _e(name), info.get("version"), info.get("rows")]
            for name, info in sorted(tables.items(), key=lambda kv: order(kv[0]))]
    return _table("tables", ["layer", "table", "version", "rows"], rows, numeric={2, 3})


def _quality_html(quality: dict) -> str:
    if "note" in quality:
        return _note(quality["note"])
    results = quality.get("rows") or []
    if not results:
        return _note("no quality gate ran in this run")
    per_table: dict[tuple, dict] = {}
    for r in results:
        entry = per_table.setdefault((r["job"], r["table"]), {"expectations": 0, "passed": 0, "error": 0, "warn": 0})
        entry["expectations"] += 1
        if r["success"]:
            entry["passed"] += 1
        else:
            entry["error" if r["severity"] == "error" else "warn"] += 1
    rows = [[_e(job), _e(table), e["expectations"], e["passed"], e["error"], e["warn"]]
            for (job, table), e in sorted(per_table.items())]
    passed = sum(1 for r in results if r["success"])
    parts = [f"<p>{len(results):,} expectation results, {passed:,} passed.</p>",
             _table("quality", ["job", "table", "expectations", "passed", "failed (error)", "failed (warn)"],
                    rows, numeric={2, 3, 4, 5})]
    failures = [r for r in results if not r["success"]]
    if failures:
        parts.append("<h3>Failed expectations</h3>")
        parts.append(_table("quality-failures", ["table", "expectation", "column", "severity", "unexpected", "of"],
                            [[_e(r["table"]), _e(r["expectation_type"]), _e(r["column"]), _e(r["severity"]),
                              r["unexpected_count"], r["element_count"]] for r in failures], numeric={4, 5}))
    return "".join(parts)


def _anomalies_html(name: str, flags: dict) -> str:
    if "note" in flags:
        return _note(flags["note"])
    figure_id = f"scatter-{_slug(name)}"
    shown = (f"all {len(flags['outlier_points']):,} outliers" if len(flags["outlier_points"]) == flags["outliers"]
             else f"the {len(flags['outlier_points']):,} highest-scoring of {flags['outliers']:,} outliers")
    others = flags["rides"] - flags["outliers"]
    caption = (f"{flags['x']} against {flags['y']} of the run date's rides in {flags['table']}, symmetric log axes; "
               f"{shown} and {len(flags['other_points']):,} of {others:,} other rides (a fixed sample by key hash).")
    share = f"{flags['outliers'] / flags['rides']:.2%}" if flags["rides"] else ""
    table = _table(f"flags-{_slug(name)}", ["table", "rides", "outliers", "outlier share", "model version"],
                   [[_e(flags["table"]), flags["rides"], flags["outliers"], share, _e(flags["model_version"])]],
                   numeric={1, 2, 3})
    figure = svg(scatter_figure(flags["outlier_points"], flags["other_points"], flags["x"], flags["y"], name))
    return table + _figure_html(figure_id, figure, caption)


def _evaluation_html(model: dict) -> str:
    name = model["name"]
    slug = _slug(name)
    record = model.get("evaluation")
    if record is None:
        return _note(model.get("evaluation_note") or f"no evaluation of {name}")
    from strata.ml import plots

    curves = {**record["roc"], **record["pr"]}
    auc = {k: record[k] for k in ("roc_auc", "pr_auc", "positive_rate")}
    confusion = record["confusion"]
    title = f"{name} v{model['champion']}"
    numbers = _table(f"evaluation-{slug}", ["champion version", "test rows", "ROC AUC", "PR AUC", "positive rate",
                                             "threshold", "tp", "fp", "tn", "fn"],
                     [[_e(model["champion"]), record.get("rows"), record["roc_auc"], record["pr_auc"],
                       record["positive_rate"], record["threshold"], confusion["tp"], confusion["fp"],
                       confusion["tn"], confusion["fn"]]], numeric=set(range(1, 10)))
    return numbers + "".join([
        _figure_html(f"roc-{slug}", svg(plots.roc_figure(curves, auc, title)),
                     f"ROC curve of champion version {model['champion']} on its test rows (ROC AUC "
                     f"{record['roc_auc']:.3f})."),
        _figure_html(f"pr-{slug}", svg(plots.pr_figure(curves, auc, title)),
                     f"Precision-recall curve of champion version {model['champion']} on its test rows (PR AUC "
                     f"{record['pr_auc']:.3f}; dashed: the positive rate {record['positive_rate']:.3f})."),
        _figure_html(f"confusion-{slug}", svg(plots.confusion_figure(confusion, title)),
                     f"Confusion matrix of champion version {model['champion']} on its test rows at threshold "
                     f"{record['threshold']:.3f}."),
    ])


def _scores_html(model: dict) -> str:
    name, scores = model["name"], model.get("scores") or {"note": "no predictions"}
    if "note" in scores:
        return _note(scores["note"])
    bins = scores["bins"]
    per_role: dict[str, list[int]] = {}
    thresholds: dict[str, float] = {}
    versions: dict[str, set] = {}
    for role, version, threshold, index, count in scores["counts"]:
        per_role.setdefault(role, [0] * bins)[index] += count
        thresholds[role] = threshold
        versions.setdefault(role, set()).add(str(version))
    if not per_role:
        return _note(f"{scores['table']} holds no rows for the run date")
    roles = sorted(per_role, key=lambda r: (r != "champion", r))
    per_role = {role: per_role[role] for role in roles}
    rows = [[f"{i / bins:.2f} to {(i + 1) / bins:.2f}", *[per_role[role][i] for role in roles]] for i in range(bins)]
    rows.append(["<b>all</b>", *[sum(per_role[role]) for role in roles]])
    caption = (f"Predicted probabilities of the run date's rows in {scores['table']}, in {bins} bins; "
               + "; ".join(f"{role}: version {', '.join(sorted(versions[role]))}, "
                           f"{sum(per_role[role]):,} rows, threshold {thresholds[role]:.3f}" for role in roles) + ".")
    figure = svg(histogram_figure(bins, per_role, thresholds, name))
    table = _table(f"scores-table-{_slug(name)}", ["probability", *[f"{role} rows" for role in roles]], rows,
                   numeric=set(range(1, len(roles) + 1)))
    return (_figure_html(f"scores-{_slug(name)}", figure, caption)
            + f"<details><summary>Rows per bin</summary>{table}</details>")


def render(summary: dict, gathered: dict, generated_at: str) -> str:
    """The page: summary is what the run's JSON line says (run_id, run_date, env, status, error,
    tables, stages, datasets); gathered what gather() read."""
    status = summary.get("status") or "unknown"
    title = f"Strata run {summary.get('run_date')} {summary.get('run_id')}"
    head = [
        f"<h1>{_e(title)}</h1>",
        f'<p>Status: <span id="status" class="{_slug(status)}">{_e(status.upper())}</span> &middot; '
        f"environment {_e(summary.get('env'))} &middot; datasets {_e(', '.join(summary.get('datasets') or []))}"
        f" &middot; run id {_e(summary.get('run_id'))} &middot; run date {_e(summary.get('run_date'))}"
        f" &middot; report written {_e(generated_at)}</p>",
    ]
    if summary.get("error"):
        head.append(f'<div class="error" id="error">{_e(summary["error"])}</div>')
    body = [*head,
            "<h2>Stages</h2>", _stages_html(summary.get("stages") or {}),
            "<h2>Tables</h2>", "<p>Rows and Delta version of every table the run recorded, as the run left them.</p>",
            _tables_html(summary.get("tables") or {}),
            "<h2>Quality results</h2>", _quality_html(gathered.get("quality") or {"rows": []})]
    for dataset in gathered.get("datasets") or []:
        name = dataset["name"]
        flags = dataset.get("anomalies") or {}
        skipped = ((summary.get("stages") or {}).get(f"{name}.anomalies") or {}).get("skipped")
        if "note" in flags and skipped:
            flags = {"note": f"{flags['note']} (this run's anomalies stage was skipped: {skipped})"}
        body += [f"<h2>Anomaly flags: {_e(name)}</h2>", _anomalies_html(name, flags)]
        if not dataset.get("models"):
            body.append(f"<h2>Models: {_e(name)}</h2>" + _note(f"no model is trained on {name} in this pipeline"))
        for model in dataset.get("models") or []:
            body += [f"<h2>Model {_e(model['name'])}</h2>", "<h3>Champion's test evaluation</h3>",
                     _evaluation_html(model), "<h3>Prediction scores of the run date</h3>", _scores_html(model)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


# --- the pipeline's entry point -------------------------------------------------------------------

def write_run_report(ctx, summary: dict) -> Path:
    """Gathers, renders and writes the run's report; returns its path. Raises on any error (the
    pipeline logs it and carries on: a report never changes a run's outcome)."""
    gathered = gather(ctx, summary)
    generated_at = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    text = render(summary, gathered, generated_at)
    return write(report_path(ctx.config.reports.dir, summary["run_date"], summary["run_id"]), text)
