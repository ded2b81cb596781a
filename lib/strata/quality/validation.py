"""Running a suite with Great Expectations on a Spark DataFrame (validate), in a fresh ephemeral
context, and building its Data Docs."""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import great_expectations as gx
from great_expectations.core import ExpectationSuite
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import (DataContextConfig,
                                                        InMemoryStoreBackendDefaults,
                                                        ProgressBarsConfig)
from great_expectations.data_context.types.resource_identifiers import (
    ExpectationSuiteIdentifier, ValidationResultIdentifier)
from pyspark.sql import DataFrame

from strata.quality.common import _one_line, _severity
from strata.quality.outcomes import ExpectationOutcome, GateResult

logger = logging.getLogger(__name__)

# Counts and percentages, no sample of unexpected values: a sample costs one more Spark job per
# column expectation (a filtered take), a count does not (GX bundles the aggregates).
RESULT_FORMAT: dict[str, Any] = {"result_format": "BASIC", "partial_unexpected_count": 0}

_DATASOURCE_NAME = "strata"
_BATCH_DEFINITION_NAME = "whole"
_DOCS_SITE_NAME = "strata"
# Under docs_dir: the JSON stores the site is built from (see _context).
_DOCS_STORE_DIR = "_gx"
# Validation pages listed on the index (newest first). GX reads each listed result's JSON back
# on every build, so this bounds the cost of building the index as history grows.
DOCS_INDEX_LIMIT = 200


def _context(docs_dir: Path | str | None = None) -> Any:
    """A fresh ephemeral context per validation: with its registrations it costs 40-120 ms
    (measured), against seconds for the validation, and without docs_dir no state (stored
    results) outlives it.
    get_context() also makes it GX's process-wide current context; every object used here is
    bound to it explicitly, so that does not matter to us.

    With docs_dir, the suites and validation results are kept as JSON under
    docs_dir/_gx and the Data Docs site is docs_dir itself. They have to persist: on every build
    GX's index builder deletes each page whose source (suite or result) is not in the context's
    stores, so with in-memory stores a site shared by the jobs would only ever hold the last
    validation."""
    if docs_dir is None:
        context = gx.get_context(mode="ephemeral")
    else:
        docs_dir = Path(docs_dir).resolve()
        defaults = InMemoryStoreBackendDefaults()
        for store_name, folder in ((defaults.expectations_store_name, "expectations"),
                                   (defaults.validation_results_store_name, "validations")):
            defaults.stores[store_name]["store_backend"] = {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir / _DOCS_STORE_DIR / folder),
            }
        defaults.data_docs_sites = {_DOCS_SITE_NAME: {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder",
                                   "validation_results_limit": DOCS_INDEX_LIMIT},
        }}
        context = gx.get_context(
            project_config=DataContextConfig(store_backend_defaults=defaults), mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _copy_suite(suite: ExpectationSuite) -> ExpectationSuite:
    """A copy to register in the context, leaving the caller's suite unbound and unchanged."""
    expectations = []
    for expectation in suite.expectations:
        configuration = expectation.configuration  # a new object on every access
        configuration.id = None
        expectations.append(configuration.to_domain_obj())
    return ExpectationSuite(
        name=suite.name,
        expectations=expectations,
        suite_parameters=dict(suite.suite_parameters or {}),
        meta=json.loads(json.dumps(suite.meta or {}, default=str)),
    )


def validate(df: DataFrame, suite: ExpectationSuite, layer: str, table: str,
             docs_dir: Path | str | None = None, *, run_id: str | None = None) -> GateResult:
    """Run the suite on df; GX launches its own Spark jobs, nothing else. GX reads df once per
    metric batch: the caller caches it when it is expensive to compute (cheap to re-read, like
    freshly written Parquet files, it need not be).

    docs_dir: also build GX Data Docs for this validation into that local folder (a filesystem
    site: docs_dir/index.html lists the validations, newest first) and set
    GateResult.docs_path to this validation's page. No Spark job; 0.25-0.5 s measured (the
    index re-reads up to DOCS_INDEX_LIMIT stored results), ~70 KB kept per validation (page +
    result JSON under docs_dir/_gx, pruned by the maintain job) plus 4 MB of static assets once.
    A failure to build them is logged and leaves docs_path None: docs never decide a gate.
    run_id: the run name on the Data Docs page (GX's default is none)."""
    for index, expectation in enumerate(suite.expectations):
        _severity(expectation.meta,
                  f"suite {suite.name}: expectations[{index}] ({expectation.expectation_type})")
    name = f"{layer}.{table}"
    context = None
    if docs_dir is not None:
        try:
            context = _context(docs_dir)  # creates docs_dir/_gx: fails on an unusable folder
        except Exception as exc:  # noqa: BLE001 - the docs are a report, never the gate
            logger.warning("%s: building Data Docs failed: %s", name, _one_line(exc))
            docs_dir = None
    if context is None:
        context = _context()
    # persist=False: callers cache the frame; GX would cache a second copy and never release it.
    batch_definition = (
        context.data_sources.add_spark(_DATASOURCE_NAME, persist=False)
        .add_dataframe_asset(name)
        .add_batch_definition_whole_dataframe(_BATCH_DEFINITION_NAME)
    )
    # add_or_update: with docs_dir the suite store is on disk and holds the previous run's copy.
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(
            name=name, data=batch_definition,
            suite=context.suites.add_or_update(_copy_suite(suite)),
        )
    )
    validated_at = datetime.now(timezone.utc)
    run_identifier = RunIdentifier(run_name=run_id, run_time=validated_at)
    run = definition.run(batch_parameters={"dataframe": df}, result_format=RESULT_FORMAT,
                         run_id=run_identifier)
    outcomes = [_outcome(r) for r in run.results]
    docs_path = None
    if docs_dir is not None:
        docs_path = _build_docs(context, suite.name, run_identifier, run.batch_id, name)
    return GateResult(layer=layer, table=table, suite_name=suite.name, outcomes=outcomes,
                      validated_at=validated_at, docs_path=docs_path)


def _build_docs(context: Any, suite_name: str, run_identifier: RunIdentifier, batch_id: str,
                label: str) -> str | None:
    """Render this validation's page (and its suite's) and the index; the page's local path.

    ValidationDefinition.run (GX 1.x) stores its result in the context's results store, which is
    what a Checkpoint's UpdateDataDocsAction builds from; here build_data_docs is called directly
    with the same identifiers, without a Checkpoint."""
    started = time.perf_counter()
    suite_id = ExpectationSuiteIdentifier(name=suite_name)
    result_id = ValidationResultIdentifier(expectation_suite_identifier=suite_id,
                                           run_id=run_identifier, batch_identifier=batch_id)
    try:
        context.build_data_docs(site_names=[_DOCS_SITE_NAME],
                                resource_identifiers=[result_id, suite_id])
        [site] = context.get_docs_sites_urls(resource_identifier=result_id,
                                             site_names=[_DOCS_SITE_NAME])
        path = _url_to_path(site["site_url"])
    except Exception as exc:  # noqa: BLE001 - the docs are a report, never the gate
        logger.warning("%s: building Data Docs failed: %s", label, _one_line(exc))
        return None
    logger.info("%s: Data Docs built in %.2f s: %s", label, time.perf_counter() - started, path)
    return path


def _url_to_path(url: str | None) -> str:
    if not url:
        raise FileNotFoundError("GX returned no URL for the validation page")
    parsed = urlparse(url)
    path = unquote(parsed.path) if parsed.scheme == "file" else url
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: not written")
    return path


def _outcome(validation_result: Any) -> ExpectationOutcome:
    configuration = validation_result.expectation_config
    kwargs = {k: v for k, v in configuration.kwargs.items() if k != "batch_id"}
    result = validation_result.result or {}
    return ExpectationOutcome(
        expectation_type=configuration.type,
        column=kwargs.get("column"),
        kwargs=kwargs,
        severity=_severity(configuration.meta, configuration.type),
        success=bool(validation_result.success),
        element_count=result.get("element_count"),
        unexpected_count=result.get("unexpected_count"),
        unexpected_percent=result.get("unexpected_percent"),
        observed_value=result.get("observed_value"),
        exception_message=_exception_message(validation_result.exception_info or {}),
    )


def _exception_message(info: dict) -> str | None:
    """GX reports an expectation's own exception flat, a failed metric's keyed by metric id."""
    if "raised_exception" in info:
        infos = [info]
    else:
        infos = [value for value in info.values() if isinstance(value, dict)]
    messages = [
        _one_line(i.get("exception_message") or "exception")
        for i in infos if i.get("raised_exception")
    ]
    return "; ".join(dict.fromkeys(messages)) or None
