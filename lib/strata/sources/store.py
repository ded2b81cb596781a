"""A dataset's raw source, S3 or a local folder, behind one pair of calls: the settings its
executors build clients from, and the listing of its objects."""
from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from strata.config import Config, RawSourceConfig
from strata.sources import local, s3
from strata.sources.s3 import RawObject, SourceError

NOT_FOUND = ("NoSuchKey", "NoSuchBucket", "404", "NotFound")


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


def manifest_key(prefix: str) -> str:
    """Where a generator of test data leaves the manifest of what it planted under `prefix`
    (strata_dev.demo_data): beside the prefix, not in it, so no listing takes it for data; a
    leading _ hides it from a local folder's listing too."""
    return f"_manifests/{prefix.strip('/')}.json"


def read_manifest(config: Config, source: RawSourceConfig) -> dict[str, Any] | None:
    """The source's manifest (manifest_key of its prefix, in its bucket or beside its folder),
    None when there is none; SourceError when the source cannot be read or the manifest is not
    JSON."""
    uri = source.object_uri(manifest_key(source.key_prefix))
    try:
        body = settings_for(config, source).client().get_object(
            Bucket=source.container, Key=manifest_key(source.key_prefix))["Body"]
        return json.loads(body.read())
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code"))
        if code in NOT_FOUND:
            return None
        raise SourceError(f"cannot read {uri}: {code}: {exc.response.get('Error', {}).get('Message')}") from None
    except BotoCoreError as exc:
        raise SourceError(f"cannot read {uri}: {exc}") from None
    except ValueError as exc:
        raise SourceError(f"{uri} is not JSON: {exc}") from None
