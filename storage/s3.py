"""S3 (and S3-compatible: MinIO, Ceph RGW) as a :class:`~storage.backend.Backend`.

Objects are ``<prefix><id[:2]>/<id>.c4gh`` in one bucket.  The two-character
shard keeps listings readable and spreads keys over S3's partitions.

* Writes buffer up to ``part_size`` bytes: an object committed before the first
  part is full is one ``PutObject``, a larger one a multipart upload started
  with its first full part.  Both carry ``If-None-Match: *`` on the request
  that makes the object visible, so the server itself refuses to replace an
  object: two writers of one ID can never clobber each other (412 -> "object
  already exists"), without a read-then-write race.  moto (5.x, server mode)
  honours the condition on PutObject and on CompleteMultipartUpload.  (Should a
  retried request whose first attempt did succeed get the 412, the write fails
  and leaves an unrecorded object, which :func:`storage.sweep_quarantine` deletes.)
* Reads are ranged GETs through a read-ahead buffer; nothing touches local disk.
* Every boto3/botocore failure becomes a typed :mod:`storage.errors` error whose
  message names the operation and S3 error code only - never credentials, the
  endpoint, bucket contents or data.
"""

from __future__ import annotations

import contextlib
import io
import re
import time
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from .backend import check_object_id, put_through
from .errors import ObjectNotFound, StorageError, StorageFull, StorageUnavailable

MIN_PART_SIZE = 5 << 20  # S3's minimum for every part but the last
DEFAULT_PART_SIZE = 8 << 20
DEFAULT_READ_AHEAD = 4 << 20
_MAX_PARTS = 10_000  # S3's limit; 8 MiB parts allow objects up to ~78 GiB
_KEY = re.compile(r"([0-9a-f]{2})/([0-9a-f]{16,64})\.c4gh")
_SAFE_CODE = re.compile(r"[A-Za-z0-9.]{1,64}")
_NOT_FOUND = {"NoSuchKey", "NotFound", "404"}
_FULL = {  # quota and no-space codes of S3, MinIO and Ceph
    "QuotaExceeded",
    "XMinioStorageFull",
    "XMinioAdminBucketQuotaExceeded",
    "EntityTooLarge",
    "InsufficientStorage",
    "StorageFull",
}
_UNAVAILABLE = {  # throttling and server trouble: retrying later may succeed
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequests",
    "RequestTimeout",
    "ServiceUnavailable",
    "InternalError",
    "XMinioServerNotInitialized",
}
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}


def _mapped(exc: Exception, operation: str, object_id: str | None = None) -> StorageError:
    """The library's typed error for a boto3 failure, with a message safe to log.

    Only the operation, the S3 error code (when it looks like one) and the HTTP
    status are kept: botocore's own messages can carry the endpoint, key
    names or, for signature errors, the access key ID."""
    from botocore import exceptions as bx  # loaded already: a client raised this

    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, bx.ConnectionError | bx.HTTPClientError | bx.IncompleteReadError):
        return StorageUnavailable(f"S3 unreachable ({operation}: {type(exc).__name__})", object_id)
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return StorageError(f"S3 credentials missing or incomplete ({operation})", object_id)
    if not isinstance(exc, bx.ClientError):
        return StorageError(f"S3 client error ({operation}: {type(exc).__name__})", object_id)
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    detail = f"{operation}: {code if _SAFE_CODE.fullmatch(code) else 'error'}, HTTP {status}"
    if code == "NoSuchBucket":
        return StorageError(f"S3 bucket does not exist ({detail})", object_id)
    if code in _NOT_FOUND or status == 404:
        return ObjectNotFound("not in the storage backend", object_id)
    if code in _FULL or status == 507:
        return StorageFull(f"S3 has no room ({detail})", object_id)
    if code in _UNAVAILABLE or status == 429 or status >= 500:
        return StorageUnavailable(f"S3 unavailable ({detail})", object_id)
    if code in _DENIED or status == 403:
        return StorageError(
            f"S3 refused access, check credentials and policy ({detail})", object_id
        )
    return StorageError(f"S3 request failed ({detail})", object_id)


def _code(exc: BaseException) -> str:
    """The S3 error code of a botocore ClientError, else ''."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


class S3Backend:
    """Objects in an S3 bucket under ``prefix``; see the module docstring.

    Pass a ready boto3 S3 ``client`` (tests, custom sessions), or let the
    backend build one from ``endpoint_url``/``region_name``/credentials (none
    given: boto3's usual chain - environment, profile, instance role).  The
    credentials are handed to boto3 and not kept here.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        read_ahead: int = DEFAULT_READ_AHEAD,
    ) -> None:
        if not bucket:
            raise StorageError("an S3 bucket name is required")
        if prefix and (not prefix.endswith("/") or prefix.startswith("/")):
            raise StorageError("the S3 key prefix must end, and not start, with '/'")
        if part_size < MIN_PART_SIZE:
            raise StorageError("the S3 part size must be at least 5 MiB")
        if read_ahead < 64 << 10:
            raise StorageError("the S3 read-ahead must be at least 64 KiB")
        if client is not None and (endpoint_url or access_key_id or secret_access_key):
            raise StorageError("pass either an S3 client or the settings to build one")
        if client is None:
            import boto3  # here, not at module level: `import storage` stays light (~0.25 s)
            from botocore.config import Config

            session = boto3.session.Session(
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                aws_session_token=session_token,
                region_name=region_name,
            )
            config = Config(
                retries={"mode": "standard", "max_attempts": 4},
                connect_timeout=10,
                read_timeout=60,
            )
            client = session.client("s3", endpoint_url=endpoint_url, config=config)
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = part_size
        self.read_ahead = read_ahead

    def __repr__(self) -> str:
        return f"S3Backend(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def key_of(self, object_id: str) -> str:
        check_object_id(object_id)
        return f"{self.prefix}{object_id[:2]}/{object_id}.c4gh"

    def create(self, object_id: str) -> _S3Writer:
        return _S3Writer(self, self.key_of(object_id), object_id)

    def put(self, object_id: str, chunks: Iterable[bytes]) -> int:
        return put_through(self.create(object_id), chunks)

    def open(self, object_id: str) -> BinaryIO:
        """A buffered reader over ranged GETs; the buffer is the read-ahead.

        Each GET is pinned to the ETag seen at open (``If-Match``), so a reader
        never mixes the bytes of two versions of a key."""
        head = self._head(object_id)
        raw = _RangeReader(
            self, self.key_of(object_id), object_id, int(head["ContentLength"]), head.get("ETag")
        )
        return io.BufferedReader(raw, buffer_size=self.read_ahead)

    def delete(self, object_id: str) -> None:
        """Like LocalBackend: a missing object is ObjectNotFound (S3's DELETE would
        succeed silently, so ask first; a race with another delete is harmless)."""
        self._head(object_id)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key_of(object_id))
        except Exception as exc:
            raise _mapped(exc, "DeleteObject", object_id) from None

    def stat(self, object_id: str) -> int:
        return int(self._head(object_id)["ContentLength"])

    def modified(self, object_id: str) -> float:
        return float(self._head(object_id)["LastModified"].timestamp())

    def list(self) -> Iterator[str]:
        """Object IDs under the prefix; keys of any other shape are not ours and skipped."""
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            for page in pages:
                for entry in page.get("Contents", ()):
                    object_id = self._id_of(entry["Key"])
                    if object_id is not None:
                        yield object_id
        except Exception as exc:
            raise _mapped(exc, "ListObjectsV2") from None

    def remove_stale_partials(self, older_than_seconds: float) -> int:
        """Abort multipart uploads of ours initiated before the limit; returns how many.

        These are writes whose process died before commit or abort; their parts
        are invisible but billed.  (A bucket lifecycle rule
        ``AbortIncompleteMultipartUpload`` does the same server-side.)"""
        limit = time.time() - older_than_seconds
        aborted = 0
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            stale = [
                (upload["Key"], upload["UploadId"])
                for page in pages
                for upload in page.get("Uploads", ())
                if self._id_of(upload["Key"]) is not None
                and upload["Initiated"].timestamp() < limit
            ]
        except Exception as exc:
            raise _mapped(exc, "ListMultipartUploads") from None
        for key, upload_id in stale:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except Exception as exc:
                if _code(exc) == "NoSuchUpload":  # completed or aborted meanwhile
                    continue
                raise _mapped(exc, "AbortMultipartUpload", self._id_of(key)) from None
            aborted += 1
        return aborted

    def _id_of(self, key: str) -> str | None:
        if not key.startswith(self.prefix):
            return None
        match = _KEY.fullmatch(key[len(self.prefix) :])
        if match is None or not match.group(2).startswith(match.group(1)):
            return None
        return match.group(2)

    def _head(self, object_id: str) -> dict[str, Any]:
        """HeadObject; a 404 is told apart from a missing bucket (HEAD has no error body)."""
        try:
            head: dict[str, Any] = self.client.head_object(
                Bucket=self.bucket, Key=self.key_of(object_id)
            )
            return head
        except Exception as exc:
            error = _mapped(exc, "HeadObject", object_id)
        if isinstance(error, ObjectNotFound):
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except Exception as exc:
                error = _mapped(exc, "HeadBucket", object_id)
                if isinstance(error, ObjectNotFound):
                    error = StorageError("S3 bucket does not exist (HeadBucket)", object_id)
        raise error


class _S3Writer:
    """Buffers one part; PutObject or multipart upload on commit, both If-None-Match: *."""

    def __init__(self, backend: S3Backend, key: str, object_id: str) -> None:
        self._backend = backend
        self._key = key
        self._object_id = object_id
        self._buffer = bytearray()
        self._size = 0
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._open = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._open:
            raise StorageError("write after commit, abort or a failed write", self._object_id)
        self._buffer += data
        self._size += memoryview(data).nbytes
        part_size = self._backend.part_size
        while len(self._buffer) >= part_size:
            part = bytes(self._buffer[:part_size])
            del self._buffer[:part_size]
            try:
                self._upload_part(part)
            except BaseException:
                self.abort()  # a part is lost: this writer must never commit
                raise

    def commit(self) -> int:
        if not self._open:
            raise StorageError("commit after commit, abort or a failed write", self._object_id)
        self._open = False
        client, bucket = self._backend.client, self._backend.bucket
        try:
            if self._upload_id is None:
                operation = "PutObject"
                client.put_object(
                    Bucket=bucket, Key=self._key, Body=bytes(self._buffer), IfNoneMatch="*"
                )
            else:
                operation = "CompleteMultipartUpload"
                if self._buffer:  # the last part may be smaller than the minimum
                    self._upload_part(bytes(self._buffer))
                client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                    IfNoneMatch="*",
                )
                self._upload_id = None
        except BaseException as exc:
            self._buffer = bytearray()
            self._abort_upload()
            if _code(exc) in {"PreconditionFailed", "ConditionalRequestConflict"}:
                raise StorageError("object already exists", self._object_id) from None
            if isinstance(exc, Exception):
                raise _mapped(exc, operation, self._object_id) from None
            raise
        self._buffer = bytearray()
        return self._size

    def abort(self) -> None:
        """Best effort: an upload that cannot be aborted now (network down) is never
        visible, and :meth:`S3Backend.remove_stale_partials` collects it later."""
        self._open = False
        self._buffer = bytearray()
        self._abort_upload()

    def _upload_part(self, part: bytes) -> None:
        client, bucket = self._backend.client, self._backend.bucket
        operation = "UploadPart"
        try:
            if self._upload_id is None:
                operation = "CreateMultipartUpload"
                created = client.create_multipart_upload(Bucket=bucket, Key=self._key)
                self._upload_id = str(created["UploadId"])
                operation = "UploadPart"
            number = len(self._parts) + 1
            if number > _MAX_PARTS:
                raise StorageFull("object exceeds S3's 10,000 parts", self._object_id)
            done = client.upload_part(
                Bucket=bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=part
            )
        except Exception as exc:
            raise _mapped(exc, operation, self._object_id) from None
        self._parts.append({"ETag": done["ETag"], "PartNumber": number})

    def _abort_upload(self) -> None:
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is None:
            return
        with contextlib.suppress(Exception):  # else remove_stale_partials collects it
            self._backend.client.abort_multipart_upload(
                Bucket=self._backend.bucket, Key=self._key, UploadId=upload_id
            )


class _RangeReader(io.RawIOBase):
    """Seekable raw stream: each ``readinto`` is one ranged GET of the requested size.

    Wrapped in an :class:`io.BufferedReader` by :meth:`S3Backend.open`, whose
    buffer turns small reads into read-ahead-sized requests and serves seeks
    within it without a request; it also checks for use after close."""

    def __init__(
        self, backend: S3Backend, key: str, object_id: str, size: int, etag: str | None
    ) -> None:
        super().__init__()
        self._backend = backend
        self._key = key
        self._object_id = object_id
        self._size = size
        self._etag = etag
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence ({whence})")
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        count = min(len(view), self._size - self._pos)
        if count <= 0:
            return 0
        data = self._get(self._pos, count)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def readall(self) -> bytes:
        """The rest of the object in read-ahead-sized GETs (RawIOBase would use 8 KiB)."""
        pieces = []
        while piece := self.read(self._backend.read_ahead):
            pieces.append(piece)
        return b"".join(pieces)

    def _get(self, start: int, count: int) -> bytes:
        extra = {"IfMatch": self._etag} if self._etag else {}
        try:
            response = self._backend.client.get_object(
                Bucket=self._backend.bucket,
                Key=self._key,
                Range=f"bytes={start}-{start + count - 1}",
                **extra,
            )
            with response["Body"] as body:
                data = body.read()
        except Exception as exc:
            if _code(exc) == "PreconditionFailed":
                raise StorageError("object replaced while being read", self._object_id) from None
            raise _mapped(exc, "GetObject", self._object_id) from None
        if not data or len(data) > count:
            raise StorageUnavailable("S3 returned an unexpected range (GetObject)", self._object_id)
        return bytes(data)
