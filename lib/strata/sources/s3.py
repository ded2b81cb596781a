"""Raw objects in S3: listing on the driver (keys and ETags only), clients for the executors.

Endpoint and region come from config; credentials from the standard AWS chain. Connection
problems fail fast (bounded timeouts and retries) with one line, not a stack trace wall.
"""
from __future__ import annotations

import datetime as dt
import fnmatch
from dataclasses import dataclass

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

# What to do when an env with s3.embedded (local) has no endpoint to talk to.
START_LOCAL_S3 = "start one with `make s3` and export the lines it prints"


class SourceError(RuntimeError):
    """The raw source cannot be read at all (endpoint, bucket, credentials)."""


@dataclass(frozen=True)
class S3Settings:
    """Picklable: shipped to the executors, which build their own clients."""
    endpoint_url: str | None
    region: str
    connect_timeout: int = 5
    max_attempts: int = 3
    object_read_attempts: int = 3
    retry_backoff_seconds: float = 0.5
    # The env expects a local endpoint (s3.embedded): failing to reach it names `make s3`.
    local: bool = False

    def client(self):
        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region,
            config=BotoConfig(connect_timeout=self.connect_timeout, read_timeout=60,
                              retries={"max_attempts": self.max_attempts, "mode": "standard"}))


def settings_for(config) -> S3Settings:
    """The S3 settings of a config. SourceError when the env wants a local endpoint
    (s3.embedded) and none is set: without one boto3 would go to AWS itself and fail on
    credentials ("Unable to locate credentials"), which says nothing about the real mistake.
    `make demo` sets STRATA_S3__ENDPOINT_URL for the jobs it runs; a job run on its own needs
    it exported."""
    s3 = config.s3
    if s3.embedded and not s3.endpoint_url:
        raise SourceError(f"env {config.env} reads raw data from a local S3 endpoint (s3.embedded) but "
                          f"STRATA_S3__ENDPOINT_URL is not set: {START_LOCAL_S3}")
    return S3Settings(s3.endpoint_url, s3.region, s3.connect_timeout_seconds, s3.max_attempts,
                      s3.object_read_attempts, s3.retry_backoff_seconds, local=s3.embedded)


@dataclass(frozen=True)
class RawObject:
    key: str
    etag: str
    size: int
    last_modified: dt.datetime


def list_objects(settings: S3Settings, bucket: str, prefix: str, pattern: str = "*",
                 start_after: str | None = None, probe: bool = False,
                 limit: int | None = None) -> list[RawObject]:
    """Every object under prefix whose file name matches pattern (paginated); with start_after,
    only the keys after it in S3's (lexicographic) order. probe: one key at most, only to check
    that the source can be listed. limit: list at most this many keys (before the pattern)."""
    client = settings.client()
    found = []
    kwargs = {"Bucket": bucket, "Prefix": prefix.rstrip("/") + "/"}
    if start_after:
        kwargs["StartAfter"] = start_after
    if probe:
        kwargs["PaginationConfig"] = {"MaxItems": 1, "PageSize": 1}
    elif limit:
        kwargs["PaginationConfig"] = {"MaxItems": limit}
    try:
        for page in client.get_paginator("list_objects_v2").paginate(**kwargs):
            for item in page.get("Contents", []):
                key = item["Key"]
                if key.endswith("/") or not fnmatch.fnmatch(key.rsplit("/", 1)[-1], pattern):
                    continue
                found.append(RawObject(key, item["ETag"].strip('"'), item["Size"], item["LastModified"]))
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise SourceError(f"cannot list s3://{bucket}/{prefix}: {error.get('Code')}: {error.get('Message')}") from None
    except EndpointConnectionError:
        if settings.local:
            raise SourceError(f"cannot list s3://{bucket}/{prefix}: no S3 endpoint at {settings.endpoint_url}: "
                              f"{START_LOCAL_S3}") from None
        raise SourceError(f"cannot list s3://{bucket}/{prefix}: no S3 endpoint answers at "
                          f"{settings.endpoint_url or 'the AWS default'}") from None
    except BotoCoreError as exc:
        raise SourceError(f"cannot list s3://{bucket}/{prefix}: {exc}") from None
    return found
