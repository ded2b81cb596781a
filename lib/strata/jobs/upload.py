"""upload: local files -> a dataset's raw source, in the folder of the run date.

    ./spark-submit.sh upload --env ENV --dataset D [--run-date YYYY-MM-DD] FILE...

Each file goes to <source>/YYYY/MM/DD/<its name> (the layout `listing: dated` expects), in an S3
bucket or a local folder (source.path). Into a folder it is copied under a hidden name and then
renamed, so ingest never lists it half-written. A file already there with the same content is
left alone (a second upload changes nothing); one with other content is refused unless
--replace (the next ingest then takes it as the object's next version, and silver retracts the
old one's records). Every file is checked before any is copied: a missing file, a directory, a
hidden name, a name the dataset's pattern or formats do not take, two files of the same name or
a refused replacement fail the run with nothing uploaded. Needs no Spark: spark-submit.sh runs
it in plain Python.
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
    parser.add_argument("--replace", action="store_true",
                        help="replace a file of the same name and other content (ingest then takes it as that "
                             "object's next version, and silver retracts the records of the old one)")
    parser.add_argument("files", nargs="+", metavar="FILE", help="files to put in the run date's folder")


def run(ctx: JobContext) -> dict:
    from strata.sources.local import content_etag
    from strata.sources.parse import UnreadableObject, object_format

    source = ctx.config.dataset(ctx.args.dataset).source
    files = [Path(f) for f in ctx.args.files]
    problems = []
    for f in files:
        if not f.is_file():
            problems.append(f"{f}: {'a directory' if f.is_dir() else 'no such file'}")
        elif f.name.startswith((".", "_")):
            problems.append(f"{f.name}: a hidden name (a leading . or _) is never listed by ingest")
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
    store = _Folder(source.container) if source.is_local else _Bucket(ctx.config, source.container)
    # Every destination is looked at before anything is written: all or nothing on a refusal.
    present = {f: store.etag(f"{folder}/{f.name}") for f in files}
    fresh = {f: content_etag(f) for f in files}
    clashing = [f.name for f in files if present[f] not in (None, fresh[f])]
    if clashing and not ctx.args.replace:
        raise ValueError(f"nothing uploaded: {', '.join(clashing)} already in {source.object_uri(folder)}/ with other "
                         "content; --replace to replace (the old file's records then leave silver)")
    counts = {"dataset": ctx.args.dataset, "destination": source.object_uri(folder) + "/",
              "files_uploaded": 0, "files_replaced": 0, "files_unchanged": 0, "bytes_uploaded": 0}
    for f in files:
        if present[f] == fresh[f]:
            counts["files_unchanged"] += 1
            continue
        store.put(f, f"{folder}/{f.name}")
        counts["files_replaced" if present[f] else "files_uploaded"] += 1
        counts["bytes_uploaded"] += f.stat().st_size
    return counts


class _Folder:
    def __init__(self, folder: str):
        self.folder = Path(folder)

    def etag(self, key: str) -> str | None:
        from strata.sources.local import content_etag
        target = self.folder / key
        return content_etag(target) if target.is_file() else None

    def put(self, file: Path, key: str) -> None:
        """Whole or not at all: copied under a hidden name, then renamed."""
        target = self.folder / key
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.uploading-{os.getpid()}")
        try:
            shutil.copyfile(file, partial)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)


class _Bucket:
    def __init__(self, config, bucket: str):
        from strata.sources.s3 import settings_for
        self.client, self.bucket = settings_for(config).client(), bucket

    def etag(self, key: str) -> str | None:
        """The object's ETag: the MD5 of an object put in one request, as this job puts them (not
        with SSE-KMS, where every upload then counts as a new version)."""
        from botocore.exceptions import ClientError
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)["ETag"].strip('"')
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise

    def put(self, file: Path, key: str) -> None:
        with open(file, "rb") as body:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body)
