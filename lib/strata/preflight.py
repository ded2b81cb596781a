"""What a job checks after its config loads and before Spark starts: the expectation suites it
will gate with parse (an unknown expectation type, a misspelt kwarg or a missing suite is found
in a second, not 30 s into a run).

runner.run calls check(job, config, args) for every job; jobs that gate nothing check nothing.
A job's suites follow the gated outputs of its stage (strata.stages): ingest gates
bronze/<dataset>; silver gates silver/<dataset>; gold gates gold/<dataset>_features and
gold/<analysis name>; anomalies gates gold/<dataset>_flagged; predict gates gold/<model>_predictions
and monitor the model's monitoring tables; pipeline runs every stage for each of its datasets,
then predict and monitor for their models. With quality.gates off, only the stages gated always
(ingest's bronze gate) need their suites. A job that trains checks its models' grids too.
"""
from __future__ import annotations

import argparse

from strata.config import Config


def suites(job: str, config: Config, args: argparse.Namespace) -> list[tuple[str, str]]:
    """(layer, table) of every suite `job` will load with these arguments, in run order."""
    from strata import catalog, stages

    declared = stages.STAGES if job == "pipeline" else tuple(s for s in [stages.stage(job)] if s)
    wanted: list[tuple[str, str]] = []
    if declared:
        for name in _datasets(config, args):
            dataset = config.dataset(name)  # an unknown dataset is a ConfigError here, before Spark
            for stage in stages.in_order(dataset, declared):
                if stage.always_gated or config.quality.gates:
                    wanted.extend(catalog.suite_name(table) for table in stage.gated(dataset))
    if config.quality.gates and job in ("predict", "monitor", "pipeline"):
        for name in models(job, config, args):
            model = config.model(name)
            if job != "monitor":
                wanted.append(catalog.suite_name(catalog.predictions(model, config.dataset(model.dataset))))
            if job != "predict":
                wanted.extend(catalog.suite_name(catalog.monitoring(name, kind)) for kind in catalog.MONITORING_TABLES)
    return wanted


def models(job: str, config: Config, args: argparse.Namespace) -> list[str]:
    """The models `job` will train: its --model, or for the pipeline (with pipeline.models) every
    model of its datasets."""
    if isinstance(getattr(args, "model", None), str):
        return [args.model]
    if job != "pipeline" or not config.pipeline.models or getattr(args, "stages", None):
        return []  # `pipeline --stage` runs no model
    return [m.name for name in _datasets(config, args) for m in config.models_of(name)]


def _datasets(config: Config, args: argparse.Namespace) -> list[str]:
    selected = getattr(args, "dataset", None)
    return [selected] if isinstance(selected, str) else (selected or sorted(config.datasets))


def check(job: str, config: Config, args: argparse.Namespace) -> None:
    """Load every suite the job will use; strata.quality.SuiteError (one line naming the file)
    for the first that cannot be used."""
    from strata.config import check_model_grid
    for model in models(job, config, args):
        check_model_grid(config, model)
    wanted = suites(job, config, args)
    if not wanted:
        return
    from strata.quality import load_suite

    for layer, table in wanted:
        load_suite(layer, table)
