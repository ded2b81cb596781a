"""What a job checks after its config loads and before Spark starts: the expectation suites it
will gate with parse (an unknown expectation type, a misspelt kwarg or a missing suite is found
in a second, not 30 s into a run).

runner.run calls check(job, config, args) for every job; jobs that gate nothing check nothing.
A job's suites follow its tables: ingest gates bronze/<dataset>; silver gates silver/<dataset>;
gold gates gold/<dataset>_features and gold/<analysis name>; pipeline runs all three for each of
its datasets. With quality.gates off, silver and gold validate nothing, so their suites are not
required; ingest's bronze gate always runs.
"""
from __future__ import annotations

import argparse

from strata.config import Config

# job -> the stages whose suites it uses
STAGES = {"ingest": ("ingest",), "silver": ("silver",), "gold": ("gold",),
          "pipeline": ("ingest", "silver", "gold")}


def suites(job: str, config: Config, args: argparse.Namespace) -> list[tuple[str, str]]:
    """(layer, table) of every suite `job` will load with these arguments, in run order."""
    stages = STAGES.get(job)
    if not stages:
        return []
    from strata import catalog

    selected = getattr(args, "dataset", None)
    names = [selected] if isinstance(selected, str) else (selected or sorted(config.datasets))
    wanted: list[tuple[str, str]] = []
    for name in names:
        dataset = config.dataset(name)  # an unknown dataset is a ConfigError here, before Spark
        for stage in stages:
            if stage == "ingest":
                wanted.append(catalog.suite_name(catalog.bronze(dataset)))
            elif not config.quality.gates:
                continue
            elif stage == "silver":
                wanted.append(catalog.suite_name(catalog.silver(dataset)))
            else:
                wanted.extend(catalog.suite_name(table) for table in catalog.gold_tables(dataset))
    return wanted


def check(job: str, config: Config, args: argparse.Namespace) -> None:
    """Load every suite the job will use; strata.quality.SuiteError (one line naming the file)
    for the first that cannot be used."""
    wanted = suites(job, config, args)
    if not wanted:
        return
    from strata.quality import load_suite

    for layer, table in wanted:
        load_suite(layer, table)
