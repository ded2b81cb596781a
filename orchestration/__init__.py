"""Dagster definitions over spark-submit.sh (`make orchestrator`; README, "Orchestration (Dagster)").

orchestration.definitions holds `defs` (and build_definitions for other settings);
orchestration.submit the one helper that runs a job and maps its exit code and summary line.
lib/strata does not import this package, nor Dagster.
"""
