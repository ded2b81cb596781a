"""Lake upkeep: compact small files, vacuum, prune old Data Docs.

For every table of the selected datasets (catalog.dataset_tables) and of their models
(catalog.model_tables: predictions, learnt rows, monitoring), plus the shared ones
(catalog.shared_tables: quality results and the ops tables, which grow by tiny appends):
  1. compact: each partition's small files become files of about lake.maintenance.target_file_size_mb,
     in one commit per table that changes no row and records no changed partition;
  2. vacuum: files removed by commits go after lake.maintenance.vacuum_retention_hours; files no
     commit references (a crashed writer's) after orphan_grace_hours, and never while an in-flight
     marker of a running writer covers them (see DeltaRsLake.vacuum).
Then Data Docs validation pages older than quality.data_docs_max_age_days are deleted.

A table that fails (e.g. a compaction that lost to a concurrent commit) is reported and the others
are still maintained; the run then exits 1 ("re-run").
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import shutil
from pathlib import Path
from typing import Any

from strata import catalog
from strata.catalog import TableSpec
from strata.runner import JobContext

log = logging.getLogger(__name__)

# GX's run-time folder names under <docs>/validations and <docs>/_gx/validations:
# <layer>/<table>/<run name>/<run time>/
RUN_TIME_FORMAT = "%Y%m%dT%H%M%S.%fZ"
VALIDATION_TREES = ("validations", "_gx/validations")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", help="maintain only this dataset's tables (and the shared ones)")


def selected_tables(config, dataset: str | None) -> list[TableSpec]:
    """The dataset's tables (or every configured dataset's) and its models' tables, plus the
    shared ones, each once."""
    names = [dataset] if dataset else sorted(config.datasets)
    tables: dict[str, TableSpec] = {}
    for name in names:
        config_of = config.dataset(name)
        for table in catalog.dataset_tables(config_of).values():
            tables.setdefault(table.qualified_name, table)
        for model in config.models_of(name):
            for table in catalog.model_tables(model, config_of).values():
                tables.setdefault(table.qualified_name, table)
    for table in catalog.shared_tables():
        tables.setdefault(table.qualified_name, table)
    return list(tables.values())


def prune_data_docs(docs_dir: str | Path, max_age_days: int, now: dt.datetime | None = None) -> int:
    """Delete validation pages and their stored results whose run time is older than max_age_days.
    The site's index drops them at its next build (GX lists only results still stored).
    Returns the validations deleted (pages and results counted once)."""
    docs_dir = Path(docs_dir)
    cutoff = (now or dt.datetime.now(dt.timezone.utc)) - dt.timedelta(days=max_age_days)
    pruned: set[tuple[str, ...]] = set()
    for tree in VALIDATION_TREES:
        base = docs_dir / tree
        if not base.is_dir():
            continue
        for run_time in base.glob("*/*/*/*"):
            try:
                when = dt.datetime.strptime(run_time.name, RUN_TIME_FORMAT).replace(tzinfo=dt.timezone.utc)
            except ValueError:
                continue  # not a GX run folder: never ours to delete
            if run_time.is_dir() and when < cutoff:
                shutil.rmtree(run_time)
                pruned.add(run_time.relative_to(base).parts)
                _remove_empty_parents(run_time.parent, base)
    return len(pruned)


def _remove_empty_parents(folder: Path, stop: Path) -> None:
    while folder != stop and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def maintain_table(lake, table: TableSpec, settings) -> dict[str, Any]:
    storage_files, storage_bytes = lake.storage_usage(table)
    report: dict[str, Any] = {"version_before": lake.version(table),
                              "storage_files_before": storage_files, "storage_bytes_before": storage_bytes}
    compacted = lake.compact(table, settings.target_file_size_mb * 1024 * 1024)
    report.update(files_before=compacted.files_before, files_after=compacted.files_after,
                  bytes_before=compacted.bytes_before, bytes_after=compacted.bytes_after,
                  compacted=compacted.version != compacted.version_before)
    deleted = lake.vacuum(table, retention_hours=settings.vacuum_retention_hours,
                          orphan_grace_hours=settings.orphan_grace_hours,
                          inflight_ttl_hours=settings.inflight_ttl_hours)
    storage_files, storage_bytes = lake.storage_usage(table)
    report.update(files_vacuumed=len(deleted), storage_files_after=storage_files, storage_bytes_after=storage_bytes,
                  bytes_reclaimed=report["storage_bytes_before"] - storage_bytes, version_after=lake.version(table))
    return report


def run(ctx: JobContext) -> dict:
    config = ctx.config
    settings = config.lake.maintenance
    tables = selected_tables(config, ctx.args.dataset)  # an unknown dataset fails here, before Spark
    counts = ctx.counts
    reports: dict[str, dict[str, Any]] = counts.setdefault("maintained", {})
    totals = counts.setdefault("totals", {"tables": 0, "tables_compacted": 0, "tables_missing": 0,
                                          "tables_failed": 0, "files_before": 0, "files_after": 0,
                                          "files_vacuumed": 0, "bytes_reclaimed": 0})
    lake = ctx.lake
    for table in tables:
        name = table.qualified_name
        totals["tables"] += 1
        if not lake.exists(table):
            reports[name] = {"skipped": "does not exist"}
            totals["tables_missing"] += 1
            continue
        try:
            report = maintain_table(lake, table, settings)
        except Exception as exc:  # noqa: BLE001 - one table's failure must not stop the others' upkeep
            log.warning("maintain: %s failed: %s", name, exc)
            reports[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
            totals["tables_failed"] += 1
            ctx.record_table(table)
            continue
        reports[name] = report
        totals["tables_compacted"] += report["compacted"]
        for key in ("files_before", "files_after", "files_vacuumed", "bytes_reclaimed"):
            totals[key] += report[key]
        ctx.record_table(table)
    counts["data_docs_pruned"] = prune_data_docs(config.quality.data_docs_dir, config.quality.data_docs_max_age_days)
    if totals["tables_failed"]:
        failed = [name for name, report in reports.items() if "error" in report]
        raise RuntimeError(f"{len(failed)} table(s) not maintained ({', '.join(failed)}): "
                           f"{reports[failed[0]]['error']}; re-run")
    return counts
