"""upload: local files -> a dataset's raw source, in the folder of the run date.

    ./spark-submit.sh upload --env ENV --dataset D [--run-date YYYY-MM-DD] FILE...

Each file goes to <source>/YYYY/MM/DD/<its name> (the layout `listing: dated` expects), in an S3
bucket or a local folder (source.path). Into a folder it is copied under a hidden name and then
renamed, so ingest never lists it half-written. A file already there with the same content is
left alone (a second upload changes nothing); one with other content is replaced, and the next
ingest takes it as the object's next version. Every file is checked before any is copied: a
missing file, a directory, a name the dataset's pattern or formats do not take, or two files of
the same name fail the run with nothing uploaded. Needs no Spark: spark-submit.sh runs it in
plain Python.
"""
from __future__ import annotations

import argparse
import fnmatch
import os
import shutil
from pathlib import Path

from strata.runner import JobContext


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="a dataset of conf/datasets/")
    parser.add_argument("files", nargs="+", metavar="FILE", help="files to put in the run date's folder")


def run(ctx: JobContext) -> dict:
    from strata.sources.parse import UnreadableObject, object_format

    source = ctx.config.dataset(ctx.args.dataset).source
    files = [Path(f) for f in ctx.args.files]
    problems = []
    for f in files:
        if not f.is_file():
            problems.append(f"{f}: {'a directory' if f.is_dir() else 'no such file'}")
        elif not fnmatch.fnmatch(f.name, source.pattern):
            problems.append(f"{f.name}: does not match the dataset's pattern {source.pattern!r}")
        else:
            try:
                object_format(f.name, source.format)
            except UnreadableObject as exc:
                problems.append(f"{f.name}: {exc}")
    names = [f.name for f in files]
    problems += [f"{name}: given twice" for name in sorted({n for n in names if names.count(n) > 1})]
    if problems:
        raise ValueError(f"nothing uploaded: {'; '.join(problems)}")
    folder = f"{source.key_prefix}/{ctx.run_date:%Y/%m/%d}"
    put = _put_file if source.is_local else _put_object(ctx.config, source)
    uploaded = unchanged = size = 0
    for f in files:
        if put(f, source.container, f"{folder}/{f.name}"):
            uploaded += 1
            size += f.stat().st_size
        else:
            unchanged += 1
    return {"dataset": ctx.args.dataset, "destination": source.object_uri(folder) + "/",
            "files_uploaded": uploaded, "files_unchanged": unchanged, "bytes_uploaded": size}


def _put_file(file: Path, folder: str, key: str) -> bool:
    """Copies file to folder/key whole (hidden name, then rename); False when it is there already."""
    from strata.sources.local import content_etag

    target = Path(folder) / key
    if target.is_file() and content_etag(target) == content_etag(file):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.uploading-{os.getpid()}")
    try:
        shutil.copyfile(file, partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return True


def _put_object(config, source):
    from botocore.exceptions import ClientError

    from strata.sources.local import content_etag
    from strata.sources.s3 import settings_for

    client = settings_for(config).client()

    def put(file: Path, bucket: str, key: str) -> bool:
        try:
            if client.head_object(Bucket=bucket, Key=key)["ETag"].strip('"') == content_etag(file):
                return False  # an ETag is the MD5 of an object put in one request, like this one
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
                raise
        with open(file, "rb") as body:
            client.put_object(Bucket=bucket, Key=key, Body=body)
        return True

    return put
