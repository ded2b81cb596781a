"""The pipeline's run report: the page from small inputs (parsed back with html.parser), the
report of a run read from real Delta tables and a real sqlite MLflow registry, and a report that
fails without changing the run's outcome. The report of a whole pipeline run is checked in
tests/test_demo.py."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import uuid
from html.parser import HTMLParser
from pathlib import Path

import pytest

from strata import report

RUN_DATE = dt.date(2024, 1, 3)


class Page(HTMLParser):
    """What the tests read back: tables by id (rows of cell texts), figures by id (with whether
    they hold an svg and their caption), every tag, and every attribute value naming a resource."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[list[str]]] = {}
        self.figures: dict[str, dict] = {}
        self.tags: set[str] = set()
        self.resources: list[tuple[str, str, str]] = []
        self.text: list[str] = []
        self._table = self._row = self._cell = self._figure = None
        self._caption = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        attrs = dict(attrs)
        for name, value in attrs.items():
            if name in ("src", "href", "xlink:href", "srcset", "data", "action") and value is not None:
                self.resources.append((tag, name, value))
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id") or f"table{len(self.tables)}", [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "figure":
            self._figure = self.figures.setdefault(attrs.get("id"), {"svg": False, "caption": ""})
        elif tag == "svg" and self._figure is not None:
            self._figure["svg"] = True
        elif tag == "figcaption":
            self._caption = True

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr":
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "figure":
            self._figure = None
        elif tag == "figcaption":
            self._caption = False

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._caption and self._figure is not None:
            self._figure["caption"] += data

    def column(self, table_id: str, header: str) -> dict[str, str]:
        """{first cell: cell under header} of a table."""
        head, *rows = self.tables[table_id]
        return {row[0]: row[head.index(header)] for row in rows}


def assert_self_contained(page: Page, text: str) -> None:
    assert not {"script", "link", "img", "iframe", "object", "embed"} & page.tags
    # only references inside the page (markers and clip paths of the figures)
    assert all(value.startswith("#") for _tag, _name, value in page.resources), page.resources
    assert "url(http" not in text and "@import" not in text and "@font-face" not in text


EVALUATION = {"roc": {"fpr": [0.0, 0.1, 0.4, 1.0], "tpr": [0.0, 0.7, 0.9, 1.0]},
              "pr": {"recall": [0.0, 0.7, 0.9, 1.0], "precision": [1.0, 0.875, 0.6, 0.5]},
              "roc_auc": 0.871, "pr_auc": 0.802, "positive_rate": 0.5, "threshold": 0.437, "rows": 200,
              "confusion": {"tp": 70, "fp": 10, "tn": 90, "fn": 30}}


def small_run() -> tuple[dict, dict]:
    summary = {"job": "pipeline", "env": "local", "run_id": "20240103T010203Z-abc", "run_date": "2024-01-03",
               "status": "ok", "datasets": ["trips"],
               "stages": {"trips.ingest": {"rows_written": 12345, "objects_new": 3, "duration_seconds": 4.2},
                          "trips.silver": {"upserted": 12000, "quarantined": 345, "duration_seconds": 6.5},
                          "trips.gold": {"skipped": "no new data and already completed for this run date",
                                         "duration_seconds": 0.3},
                          "trips.predict.tips": {"predictions": {"rows": 900}, "duration_seconds": 2.0}},
               "tables": {"silver.trips": {"path": "/l/silver/trips", "version": 7, "rows": 12000},
                          "bronze.trips": {"path": "/l/bronze/trips", "version": 3, "rows": 12345},
                          "quality.results": {"path": "/l/quality/results", "version": 9, "rows": 4321}}}
    gathered = {
        "quality": {"rows": [
            {"job": "silver", "table": "silver.trips", "expectation_type": "expect_column_values_to_not_be_null",
             "column": "pickup_at", "severity": "error", "success": True, "element_count": 12345, "unexpected_count": 0},
            {"job": "silver", "table": "silver.trips", "expectation_type": "expect_column_values_to_be_between",
             "column": "fare_amount", "severity": "warn", "success": False, "element_count": 12345,
             "unexpected_count": 17}]},
        "datasets": [{"name": "trips",
                      "anomalies": {"table": "gold.trips_flagged", "x": "trip_distance", "y": "trip_duration_min",
                                    "rides": 500, "outliers": 2, "model_version": 4,
                                    "outlier_points": [(0.0, 95.0), (40.0, 1.0)],
                                    "other_points": [(1.5, 9.0), (3.2, 15.0), (-0.5, 4.0), (None, 3.0)]},
                      "models": [{"name": "tips", "champion": "2", "evaluation": EVALUATION,
                                  "scores": {"table": "gold.tips_predictions", "bins": 20, "counts": [
                                      ("champion", "2", 0.437, 3, 400), ("champion", "2", 0.437, 12, 500),
                                      ("shadow", "3", 0.5, 19, 900)]}}]}]}
    return summary, gathered


def test_the_page_holds_the_runs_numbers_and_figures_and_nothing_external():
    summary, gathered = small_run()
    text = report.render(summary, gathered, "2024-01-03 01:02:03 UTC")
    page = Page(text)
    assert_self_contained(page, text)
    assert text.startswith("<!DOCTYPE html>") and "<?xml" not in text
    # the stages with the outcome, duration and counts the run's JSON line has
    assert page.column("stages", "outcome") == {"trips.ingest": "ok", "trips.silver": "ok", "trips.gold": "skipped",
                                                "trips.predict.tips": "ok", "all stages": ""}
    assert page.column("stages", "seconds")["trips.silver"] == "6.5"
    assert page.column("stages", "seconds")["all stages"] == "13"
    assert "rows_written=12,345" in page.column("stages", "counts")["trips.ingest"]
    assert "predictions.rows=900" in page.column("stages", "counts")["trips.predict.tips"]
    assert page.column("stages", "result") == {
        "trips.ingest": "12,345 rows from 3 new object(s)", "trips.silver": "12,000 rows upserted, 345 quarantined",
        "trips.gold": "no new data and already completed for this run date",
        "trips.predict.tips": "900 predictions of 0 rows", "all stages": ""}
    # rows and versions per table, in layer order
    assert [row[1:] for row in page.tables["tables"][1:]] == [
        ["bronze.trips", "3", "12,345"], ["silver.trips", "7", "12,000"], ["quality.results", "9", "4,321"]]
    assert page.tables["quality"][1] == ["silver", "silver.trips", "2", "1", "0", "1"]
    assert page.tables["quality-failures"][1] == ["silver.trips", "expect_column_values_to_be_between",
                                                  "fare_amount", "warn", "17", "12,345"]
    assert page.tables["flags-trips"][1] == ["gold.trips_flagged", "500", "2", "0.40%", "4"]
    assert page.tables["evaluation-tips"][1] == ["2", "200", "0.871", "0.802", "0.5", "0.437", "70", "10", "90", "30"]
    scores = page.tables["scores-table-tips"]
    assert scores[0] == ["probability", "champion rows", "shadow rows"]
    assert scores[4] == ["0.15 to 0.20", "400", "0"] and scores[-1] == ["all", "900", "900"]
    # every figure inline, with its caption
    assert set(page.figures) == {"scatter-trips", "roc-tips", "pr-tips", "confusion-tips", "scores-tips"}
    assert all(f["svg"] and f["caption"] for f in page.figures.values())
    assert "ROC AUC 0.871" in page.figures["roc-tips"]["caption"]
    assert "all 2 outliers and 4 of 498 other rides" in page.figures["scatter-trips"]["caption"]
    assert "shadow: version 3, 900 rows, threshold 0.500" in page.figures["scores-tips"]["caption"]
    assert "ROC AUC 0.871" in "".join(page.text)  # the legend, as SVG text


def test_text_is_escaped_and_a_failed_run_shows_its_error():
    summary, gathered = small_run()
    summary.update(status="failed", error="ValueError: <script>alert(1)</script> & more")
    summary["stages"]["trips.silver"] = {"error": "ValueError: <b>bad</b>", "duration_seconds": 1.0}
    text = report.render(summary, gathered, "now")
    page = Page(text)
    assert "script" not in page.tags and "<b>bad" not in text and "&lt;b&gt;bad&lt;/b&gt;" in text
    assert "ValueError: <script>alert(1)</script> & more" in "".join(page.text)
    assert page.column("stages", "outcome")["trips.silver"] == "failed"
    assert page.column("stages", "result")["trips.silver"] == "ValueError: <b>bad</b>"


def test_a_section_without_its_data_is_one_line():
    summary, _ = small_run()
    summary.update(stages={"trips.anomalies": {"skipped": "no ride on 2024-01-03 in silver.trips"}}, tables={})
    gathered = {"quality": {"rows": []}, "datasets": [
        {"name": "trips", "anomalies": {"note": "gold.trips_flagged has no rides of 2024-01-03: no flags"},
         "models": [{"name": "tips", "evaluation_note": "model tips has no champion yet: no evaluation to show",
                     "scores": {"note": "gold.tips_predictions does not exist yet: no predictions"}}]},
        {"name": "sensors", "anomalies": {"note": "dataset sensors has no anomalies section: no flags"}, "models": []}]}
    text = report.render(summary, gathered, "now")
    page = Page(text)
    assert not page.figures and set(page.tables) == {"stages"}
    assert report.render({**summary, "stages": {}}, gathered, "now").count('<p class="note">no stage ran</p>') == 1
    for line in ("no table was recorded by this run", "no quality gate ran in this run",
                 "gold.trips_flagged has no rides of 2024-01-03: no flags (this run&#x27;s anomalies stage was "
                 "skipped: no ride on 2024-01-03 in silver.trips)",
                 "model tips has no champion yet: no evaluation to show",
                 "gold.tips_predictions does not exist yet: no predictions",
                 "dataset sensors has no anomalies section: no flags",
                 "no model is trained on sensors in this pipeline"):
        assert f'<p class="note">{line}</p>' in text, line


# --- from the lake and the registry ------------------------------------------------------------

@pytest.fixture
def run_context(spark, tmp_path):
    """A pipeline's context over a lake and an MLflow store of its own, with what a run of trips
    leaves behind: quality results, the run date's flags and predictions, a champion of tips."""
    import mlflow
    from pyspark.sql import functions as F

    from strata import catalog
    from strata.config import load_config
    from strata.quality.results import RESULTS_SCHEMA
    from strata.runner import JobContext
    from strata.tracking import CHAMPION, Tracking

    environ = {"STRATA_LAKE__ROOT": str(tmp_path / "lake"), "STRATA_QUALITY__DATA_DOCS_DIR": str(tmp_path / "docs"),
               "STRATA_MLFLOW__TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
               "STRATA_MLFLOW__ARTIFACT_LOCATION": str(tmp_path / "artifacts")}
    config = load_config("local", environ=environ)
    ctx = JobContext("pipeline", "local", f"run-{uuid.uuid4().hex[:8]}", RUN_DATE, config,
                     argparse.Namespace(dataset=["trips"]), _spark=spark)
    dataset = config.dataset("trips")
    date = dataset.anomalies.date_column

    quality = spark.createDataFrame(
        [(ctx.run_id, "silver", "silver", "silver.trips", 1, "expect_column_values_to_not_be_null", "pickup_at", "{}",
          "error", True, 100, 0, 0.0, None, dt.datetime(2024, 1, 3)),
         (ctx.run_id, "silver", "silver", "silver.trips", 1, "expect_column_values_to_be_between", "fare_amount", "{}",
          "warn", False, 100, 6, 6.0, None, dt.datetime(2024, 1, 3)),
         ("another-run", "silver", "silver", "silver.trips", 0, "expect_column_values_to_be_between", "fare_amount",
          "{}", "warn", False, 50, 1, 2.0, None, dt.datetime(2024, 1, 2))], RESULTS_SCHEMA)
    ctx.lake.append(catalog.QUALITY_RESULTS, quality)

    rides = [(f"r{i:04d}", RUN_DATE, 0.5 + i % 40 * 0.25, 3.0 + i % 30, i % 97 == 0, float(i % 97 == 0) * 9 + 1.0, 4)
             for i in range(3000)]
    flags = spark.createDataFrame(rides, f"trip_id string, {date} date, trip_distance double, "
                                         "trip_duration_min double, is_outlier boolean, outlier_score double, "
                                         "model_version int")
    ctx.lake.overwrite_partitions(catalog.flagged(dataset), flags, [{date: RUN_DATE}])

    predictions = spark.range(1000).select(
        F.concat(F.lit("t"), F.col("id").cast("string")).alias("trip_id"), F.lit(RUN_DATE).alias("event_date"),
        F.lit("champion").alias("role"), F.lit("1").alias("model_version"), F.lit(0.4).alias("threshold"),
        ((F.col("id") % 100) / 100.0).alias("probability"))
    ctx.lake.overwrite_partitions(catalog.predictions(config.model("tips"), dataset), predictions,
                                  [{"event_date": RUN_DATE}])

    tracking = Tracking.connect(config.mlflow)
    with mlflow.start_run() as run:
        mlflow.log_dict(EVALUATION, "evaluation/curves.json")
    tracking.client.create_registered_model("tips")
    version = tracking.client.create_model_version("tips", f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    tracking.set_alias("tips", CHAMPION, version.version)

    ctx.counts.update(datasets=["trips"], stages={
        "trips.ingest": {"rows_written": 3000, "duration_seconds": 2.5},
        "trips.silver": {"error": "ValueError: the silver stage broke", "duration_seconds": 1.5}})
    ctx.record_table(catalog.QUALITY_RESULTS)
    ctx.record_table(catalog.flagged(dataset))
    return ctx


def test_the_report_of_a_run_reads_the_lake_and_the_registry(run_context, tmp_path):
    from strata.jobs import pipeline

    ctx = run_context
    pipeline.write_report(ctx, ValueError("the silver stage broke"))
    assert "report_error" not in ctx.counts
    path = Path(ctx.counts["report"])
    assert path == tmp_path / "reports" / f"2024-01-03_{ctx.run_id}.html"  # beside the Data Docs by default
    text = path.read_text()
    page = Page(text)
    assert_self_contained(page, text)
    assert "FAILED" in "".join(page.text) and "ValueError: the silver stage broke" in "".join(page.text)
    assert page.column("stages", "outcome") == {"trips.ingest": "ok", "trips.silver": "failed", "all stages": ""}
    # the tables as the run's summary line has them
    assert page.column("tables", "rows") == {"quality": "3", "gold": "3,000"}
    assert {row[1]: row[3] for row in page.tables["tables"][1:]} == {
        name: f"{info['rows']:,}" for name, info in ctx.tables.items()}
    # only this run's quality results
    assert page.tables["quality"][1] == ["silver", "silver.trips", "2", "1", "0", "1"]
    # flags: every outlier (31 of 3,000 rides) and 2,000 of the others
    assert page.tables["flags-trips"][1][:3] == ["gold.trips_flagged", "3,000", "31"]
    assert "all 31 outliers and 2,000 of 2,969 other rides" in page.figures["scatter-trips"]["caption"]
    # the champion's curves from its training run's artifact; the run date's scores in 20 bins
    assert page.tables["evaluation-tips"][1][:4] == ["1", "200", "0.871", "0.802"]
    assert {"roc-tips", "pr-tips", "confusion-tips", "scores-tips"} <= set(page.figures)
    scores = page.tables["scores-table-tips"]
    assert scores[1] == ["0.00 to 0.05", "50"] and scores[-1] == ["all", "1,000"]


def test_a_report_that_fails_changes_neither_the_exit_code_nor_the_error(tmp_path, monkeypatch, capsys):
    from strata import runner
    from strata.errors import QualityGateBlocked
    from strata.jobs import pipeline

    for name, value in {"STRATA_LAKE__ROOT": str(tmp_path / "lake"),
                        "STRATA_QUALITY__DATA_DOCS_DIR": str(tmp_path / "docs")}.items():
        monkeypatch.setenv(name, value)

    def blocked(ctx):
        ctx.counts["stages"] = {"trips.ingest": {"error": "QualityGateBlocked: bronze.trips", "duration_seconds": 0.1}}
        raise QualityGateBlocked("bronze.trips: 1 error expectation failed")

    def broken(ctx, summary):
        raise OSError("disk full")

    monkeypatch.setattr(pipeline, "run_stages", blocked)
    monkeypatch.setattr(report, "write_run_report", broken)
    code = runner.run("pipeline", pipeline.run, ["--env", "local", "--run-date", "2024-01-03", "--dataset", "trips"],
                      pipeline.add_arguments)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == runner.EXIT_BLOCKED
    assert summary["status"] == "blocked" and summary["error"] == "bronze.trips: 1 error expectation failed"
    assert summary["report_error"] == "OSError: disk full" and "report" not in summary

    monkeypatch.setattr(pipeline, "run_stages", lambda ctx: {"datasets": [], "stages": {}})
    assert runner.run("pipeline", pipeline.run, ["--env", "local", "--run-date", "2024-01-03"],
                      pipeline.add_arguments) == runner.EXIT_OK
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["status"] == "ok"


def test_report_files_are_named_by_run_date_and_run_id(tmp_path):
    assert report.report_path(tmp_path, "2024-01-03", "a/b c") == tmp_path / "2024-01-03_a_b_c.html"
    written = report.write(tmp_path / "r" / "x.html", "<p>x</p>")
    assert written.read_text() == "<p>x</p>" and [p.name for p in written.parent.iterdir()] == ["x.html"]
