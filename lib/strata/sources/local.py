"""Raw objects in a local folder: the same listing and executor path as S3.

A file is an object: its key is its path relative to the folder that holds the source folder
(so `<folder name>/YYYY/MM/DD/file.csv`, as `<prefix>/...` in a bucket), its ETag the MD5 of
its content (what S3 gives an object uploaded in one PUT), so a rewritten file is a new version
whatever its timestamps say. The executors read files through FolderClient, which answers like
boto3's S3 client (get_object with IfMatch), so parsing, retries, statuses and lineage are the
ingest task's, not a second implementation. Errors are botocore ClientErrors with S3's codes for
the same reason: a file that changed since it was listed is a 412, a vanished one a 404, an
unreadable one a 403.

Hidden files (a leading `.` or `_`, as Spark and Hadoop treat them) are not objects: copy a file
in under such a name and rename it to publish it whole (the upload job does). A file whose size
or modification time changes while it is hashed is being written: it is left for the next run.
A copy that stalls half-way cannot be told from a whole file, hence the rename.
"""
from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from strata.sources.s3 import RawObject, SourceError

HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class FolderSettings:
    """Picklable, like S3Settings: shipped to the executors, which build their own client."""
    # A shared filesystem (NFS) can fail a read transiently (EIO, ESTALE): read again, then defer.
    object_read_attempts: int = 3
    retry_backoff_seconds: float = 0.5

    def client(self) -> "FolderClient":
        return FolderClient()


def content_etag(path: str | Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def list_files(settings: FolderSettings, folder: str, prefix: str, pattern: str = "*",
               start_after: str | None = None, probe: bool = False, limit: int | None = None) -> list[RawObject]:
    """Every visible file under folder/prefix whose name matches pattern and that is not being
    written, in key order (S3's); start_after, probe and limit as s3.list_objects. Hashes only
    the files returned."""
    root = Path(folder) / prefix
    where = f"file://{root}/"
    if not root.is_dir():
        raise SourceError(f"cannot list {where}: no such folder")
    if not os.access(root, os.R_OK | os.X_OK):
        raise SourceError(f"cannot list {where}: permission denied")
    def unreadable(error: OSError) -> None:
        # os.walk skips a folder it cannot read; S3 would fail the listing, and so does this
        raise SourceError(f"cannot list {where}: {error.filename}: {error.strerror}")

    keys = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        dirnames[:] = [d for d in dirnames if not _hidden(d)]
        relative = Path(dirpath).relative_to(folder).as_posix()
        keys.extend(f"{relative}/{name}" for name in filenames
                    if not _hidden(name) and fnmatch.fnmatch(name, pattern))
    keys.sort()
    if start_after:
        keys = [k for k in keys if k > start_after]
    if probe:
        keys = keys[:1]
    elif limit:
        keys = keys[:limit]
    found = []
    for key in keys:
        path = Path(folder) / key
        try:
            before = path.stat()
            etag = content_etag(path)
            after = path.stat()
            if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
                continue  # being written: the next run lists it whole
            found.append(RawObject(key, etag, after.st_size,
                                   dt.datetime.fromtimestamp(after.st_mtime, dt.timezone.utc)))
        except FileNotFoundError:
            continue  # removed while listing: as if listed a moment later
        except PermissionError:
            raise SourceError(f"cannot read {path}: permission denied") from None
    return found


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


class FolderClient:
    """The part of boto3's S3 client the readers use, over files: Bucket is the folder keys are
    relative to."""

    def get_object(self, Bucket: str, Key: str, IfMatch: str | None = None) -> dict:  # noqa: N803 - boto3's names
        path = Path(Bucket) / Key
        try:
            body = open(path, "rb")
        except FileNotFoundError:
            raise _error(404, "NoSuchKey", f"no file {path}") from None
        except (PermissionError, IsADirectoryError) as exc:
            raise _error(403, "AccessDenied", f"{path}: {exc.strerror}") from None
        except OSError as exc:
            raise _error(503, "ServiceUnavailable", f"{path}: {exc.strerror}") from None
        return {"Body": _VerifiedBody(body, IfMatch, path)}


class _VerifiedBody(io.RawIOBase):
    """A file read to its end is checked against the listed MD5: a file rewritten since it was
    listed fails as S3 fails a GET with a stale IfMatch (412), after the reader took its rows, so
    the ingest task discards them. Readers read every object to its end before its rows count."""

    def __init__(self, file, expected: str | None, path: Path):
        super().__init__()
        self.file, self.expected, self.path = file, expected, path
        self.digest = hashlib.md5(usedforsecurity=False)
        self.checked = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            data = self.file.read(size)
        except OSError as exc:  # an I/O error is the filesystem's, not the format's: read again later
            raise _error(503, "ServiceUnavailable", f"{self.path}: {exc.strerror}") from None
        self.digest.update(data)
        if not data or size is None or size < 0:
            self._check()
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self.file.close()
        super().close()

    def _check(self) -> None:
        if self.checked or self.expected is None:
            return
        self.checked = True
        if self.digest.hexdigest() != self.expected:
            raise _error(412, "PreconditionFailed", f"{self.path} changed since it was listed")


def _error(status: int, code: str, message: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")
