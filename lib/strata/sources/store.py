"""A dataset's raw source, S3 or a local folder, behind one pair of calls: the settings its
executors build clients from, and the listing of its objects."""
from __future__ import annotations

from strata.config import Config, RawSourceConfig
from strata.sources import local, s3
from strata.sources.s3 import RawObject


def settings_for(config: Config, source: RawSourceConfig) -> s3.S3Settings | local.FolderSettings:
    """Picklable settings whose .client() reads the source's objects (get_object with IfMatch)."""
    return local.FolderSettings() if source.is_local else s3.settings_for(config)


def list_objects(settings: s3.S3Settings | local.FolderSettings, source: RawSourceConfig,
                 start_after: str | None = None, probe: bool = False,
                 limit: int | None = None) -> list[RawObject]:
    """The source's objects matching its pattern, in key order; SourceError if it cannot be listed."""
    lister = local.list_files if source.is_local else s3.list_objects  # as settings_for decides
    return lister(settings, source.container, source.key_prefix, source.pattern,
                  start_after=start_after, probe=probe, limit=limit)
