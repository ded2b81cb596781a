"""The declared stage graph: order from inputs and outputs, the catalog's names, the suites a
job needs. No Spark: the graph is read before a session starts."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from strata import catalog, preflight, stages
from strata.catalog import TableSpec
from strata.config import load_config

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(scope="module")
def trips():
    return load_config("local", CONF, environ={}).dataset("trips")


def test_the_pipeline_runs_ingest_silver_gold_in_the_order_their_tables_give(trips):
    assert [s.job for s in stages.in_order(trips)] == ["ingest", "silver", "gold", "anomalies"]
    # Declared backwards, each stage still runs after what it reads: it comes from inputs and
    # outputs (gold and anomalies both read silver only; between them, declaration order).
    assert [s.job for s in stages.in_order(trips, tuple(reversed(stages.STAGES)))] == [
        "ingest", "silver", "anomalies", "gold"]


def test_a_new_stage_is_one_declaration_and_runs_after_what_it_reads(trips):
    scored = TableSpec("gold", "trips_scored")
    score = stages.Stage("score", inputs=lambda d: [catalog.features(d)], outputs=lambda d: [scored])
    ordered = stages.in_order(trips, (score, *stages.STAGES))
    assert [s.job for s in ordered] == ["ingest", "silver", "gold", "anomalies", "score"]
    assert [s.job for s in stages.upstream(trips, score, (score, *stages.STAGES))] == ["gold"]


def test_a_cycle_between_stages_is_refused(trips):
    loop = stages.Stage("loop", inputs=lambda d: [catalog.features(d)], outputs=lambda d: [catalog.bronze(d)])
    with pytest.raises(ValueError, match="cycle"):
        stages.in_order(trips, (*stages.STAGES, loop))


def test_a_dataset_without_gold_has_no_gold_stage(trips):
    plain = dataclasses.replace(trips, gold=None)
    assert [s.job for s in stages.in_order(plain)] == ["ingest", "silver", "anomalies"]
    assert "features" not in catalog.dataset_tables(plain)


def test_the_suites_a_job_needs_follow_its_stages_gated_outputs():
    config = load_config("local", CONF, environ={})
    args = argparse.Namespace(dataset="trips")
    assert preflight.suites("gold", config, args) == [("gold", "trips_features"), ("gold", "trips_daily_zone")]
    assert preflight.suites("anomalies", config, args) == [("gold", "trips_flagged")]
    assert preflight.suites("pipeline", config, args) == [
        ("bronze", "trips"), ("silver", "trips"), ("gold", "trips_features"), ("gold", "trips_daily_zone"),
        ("gold", "trips_flagged"), ("gold", "tips_predictions"),  # the pipeline scores with the dataset's models
        ("monitoring", "tips_profile"), ("monitoring", "tips_drift"), ("monitoring", "tips_performance"),
        ("monitoring", "tips_decisions")]  # and monitors them
    assert preflight.suites("predict", config, argparse.Namespace(model="tips")) == [("gold", "tips_predictions")]
    assert preflight.suites("monitor", config, argparse.Namespace(model="tips")) == [
        ("monitoring", "tips_profile"), ("monitoring", "tips_drift"), ("monitoring", "tips_performance"),
        ("monitoring", "tips_decisions")]
    # a stage run alone (the orchestrator's steps) runs no model
    assert ("gold", "tips_predictions") not in preflight.suites("pipeline", config, argparse.Namespace(
        dataset=None, stages=["gold"]))
    gates_off = dataclasses.replace(config, quality=dataclasses.replace(config.quality, gates=False))
    assert preflight.suites("pipeline", gates_off, args) == [("bronze", "trips")]
    assert preflight.suites("lake_smoke", config, args) == []


@pytest.mark.parametrize("layer, name", [("Gold", "x"), ("gold", "x-y"), ("gold", ""), ("gold", "1x")])
def test_table_names_are_checked_where_tables_are_defined(layer, name):
    with pytest.raises(ValueError, match="not a valid name"):
        TableSpec(layer, name)
