"""The S3 adapter: the only module that talks to S3.

SDK errors become domain errors here: throttling and server errors are retryable
(:class:`StorageUnavailable`), a missing bucket or a denied access is a configuration
problem that retrying cannot fix.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from kpi_pipeline import aws
from kpi_pipeline.errors import (
    ConfigurationError,
    CorruptObject,
    ObjectArchived,
    StorageUnavailable,
)

_TRANSIENT = {
    "SlowDown",
    "ServiceUnavailable",
    "InternalError",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "Throttling",
    "ThrottlingException",
}
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_CHANGED = {"PreconditionFailed", "412"}
_CHUNK = 8 * 1024 * 1024


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    etag: str
    size: int
    last_modified: dt.datetime = EPOCH
    storage_class: str = "STANDARD"


MoveOutcome = Literal["moved", "already_moved", "changed", "missing"]


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _translate(exc: Exception, what: str) -> Exception:
    """Map an SDK error to a domain error (or return it unchanged when it is neither)."""
    if isinstance(exc, BotoCoreError):
        return StorageUnavailable(f"S3 unreachable while {what}: {exc}")
    if isinstance(exc, ClientError):
        code = _code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _TRANSIENT or status >= 500:
            return StorageUnavailable(f"S3 {code} while {what}")
        # HEAD requests carry no error body: a denied one is just "403".
        if code in {
            "NoSuchBucket",
            "AccessDenied",
            "AllAccessDisabled",
            "InvalidAccessKeyId",
            "403",
        }:
            return ConfigurationError(
                f"S3 {code} while {what}: check the bucket name and the function's role"
            )
    return exc


class Storage:
    """Small, typed operations on S3 objects."""

    def __init__(self, s3_client: Any | None = None) -> None:
        self._s3 = s3_client or aws.client("s3")

    # --- JSON documents -----------------------------------------------------------------
    def put_json(self, bucket: str, key: str, document: Any) -> None:
        self._call("writing", bucket, key, self._s3.put_object, Body=_dumps(document))

    def put_json_if_absent(self, bucket: str, key: str, document: Any) -> bool:
        """Create the object only if no object has that key; False when one already does."""
        try:
            self._s3.put_object(Bucket=bucket, Key=key, Body=_dumps(document), IfNoneMatch="*")
        except ClientError as exc:
            if _code(exc) in _CHANGED | {"ConditionalRequestConflict"}:
                return False
            raise _translate(exc, f"writing s3://{bucket}/{key}") from exc
        except BotoCoreError as exc:
            raise _translate(exc, f"writing s3://{bucket}/{key}") from exc
        return True

    def get_json(self, bucket: str, key: str) -> Any | None:
        """The parsed document, or None when the object does not exist."""
        try:
            body = self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return None
            raise _translate(exc, f"reading s3://{bucket}/{key}") from exc
        except BotoCoreError as exc:
            raise _translate(exc, f"reading s3://{bucket}/{key}") from exc
        try:
            return json.loads(body)
        except ValueError as exc:  # also UnicodeDecodeError
            raise CorruptObject(
                f"s3://{bucket}/{key} is not a readable JSON document ({exc}): "
                + CorruptObject.RESTORE
            ) from exc

    # --- files ------------------------------------------------------------------------------
    def upload_file(self, path: Path, bucket: str, key: str) -> None:
        self._call_transfer("uploading", bucket, key, self._s3.upload_file, str(path))

    def download_file(self, bucket: str, key: str, path: Path) -> bool:
        """Download to ``path``; False when the object is gone (no exception)."""
        return self.download_and_hash(bucket, key, path) is not None

    def download_and_hash(
        self, bucket: str, key: str, path: Path, etag: str | None = None
    ) -> str | None:
        """Stream the object to ``path`` and return the SHA-256 of its bytes.

        With ``etag``, only the version that has that ETag is read; None when the object is
        gone or was replaced (the caller decides what that means).
        """
        extra = {"IfMatch": f'"{etag}"'} if etag else {}
        digest = hashlib.sha256()
        try:
            body = self._s3.get_object(Bucket=bucket, Key=key, **extra)["Body"]
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as out:
                for chunk in body.iter_chunks(chunk_size=_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND | _CHANGED:
                return None
            if _code(exc) == "InvalidObjectState":
                raise ObjectArchived(f"s3://{bucket}/{key} is in an archive storage class") from exc
            raise _translate(exc, f"downloading s3://{bucket}/{key}") from exc
        except BotoCoreError as exc:
            raise _translate(exc, f"downloading s3://{bucket}/{key}") from exc
        return digest.hexdigest()

    # --- listing ------------------------------------------------------------------------------
    def list_objects(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self._s3.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        item["Key"],
                        item["ETag"].strip('"'),
                        int(item["Size"]),
                        item["LastModified"],
                        item.get("StorageClass", "STANDARD"),
                    )
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"listing s3://{bucket}/{prefix}") from exc

    def read_head(self, bucket: str, key: str, length: int = 1) -> bytes:
        """The object's first ``length`` bytes (a read the bucket's key must decrypt)."""
        response = self._call(
            "reading", bucket, key, self._s3.get_object, Range=f"bytes=0-{length - 1}"
        )
        return bytes(response["Body"].read())

    def exists(self, bucket: str, key: str) -> bool:
        return self.size(bucket, key) is not None

    def size(self, bucket: str, key: str) -> int | None:
        """The object's size in bytes (None: no such object)."""
        try:
            head = self._s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return None
            raise _translate(exc, f"checking s3://{bucket}/{key}") from exc
        except BotoCoreError as exc:
            raise _translate(exc, f"checking s3://{bucket}/{key}") from exc
        return int(head["ContentLength"])

    def delete(self, bucket: str, key: str) -> None:
        self._call("deleting", bucket, key, self._s3.delete_object)

    def copy(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str) -> None:
        """Server-side copy (multipart for large objects)."""
        source = {"Bucket": src_bucket, "Key": src_key}
        try:
            self._s3.copy(source, dst_bucket, dst_key)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"copying s3://{src_bucket}/{src_key}") from exc

    # --- moving -------------------------------------------------------------------------------
    def move(
        self, src_bucket: str, src_key: str, etag: str, dst_bucket: str, dst_key: str
    ) -> MoveOutcome:
        """Move one object, but only the exact version the manifest froze (by ETag).

        The copy and the delete both carry the ETag as a precondition, so an object that
        was replaced after the manifest was taken is never archived nor deleted: it waits
        for the next run. Moving twice is harmless (``already_moved``).
        """
        source = {"Bucket": src_bucket, "Key": src_key}
        try:
            self._s3.copy(source, dst_bucket, dst_key, ExtraArgs={"CopySourceIfMatch": f'"{etag}"'})
        except ClientError as exc:
            code = _code(exc)
            if code in _NOT_FOUND:
                return "already_moved" if self.exists(dst_bucket, dst_key) else "missing"
            if code in _CHANGED:
                return "changed"
            raise _translate(exc, f"copying s3://{src_bucket}/{src_key}") from exc
        except BotoCoreError as exc:
            raise _translate(exc, f"copying s3://{src_bucket}/{src_key}") from exc
        try:
            self._s3.delete_object(Bucket=src_bucket, Key=src_key, IfMatch=f'"{etag}"')
        except ClientError as exc:
            if _code(exc) in _CHANGED:
                return "changed"  # replaced between copy and delete: keep the new one
            if _code(exc) in _NOT_FOUND:
                return "moved"
            raise _translate(exc, f"deleting s3://{src_bucket}/{src_key}") from exc
        except BotoCoreError as exc:
            raise _translate(exc, f"deleting s3://{src_bucket}/{src_key}") from exc
        return "moved"

    # --- helpers --------------------------------------------------------------------------------
    def _call(self, what: str, bucket: str, key: str, method: Any, **kwargs: Any) -> Any:
        try:
            return method(Bucket=bucket, Key=key, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"{what} s3://{bucket}/{key}") from exc

    def _call_transfer(self, what: str, bucket: str, key: str, method: Any, path: str) -> None:
        try:
            method(path, bucket, key)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"{what} s3://{bucket}/{key}") from exc


def _dumps(document: Any) -> bytes:
    return json.dumps(document, indent=2, sort_keys=True, default=str).encode()
