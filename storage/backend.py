"""Where the encrypted objects live: a small backend interface and the local filesystem.

A backend only ever sees ciphertext and random object IDs.  Besides the five
calls of the issue (put, open, delete, list, stat) it offers ``create``, a
push-style writer, because the upload path receives bytes as they arrive (an
S3 backend would implement it as a multipart upload), and ``modified``, the
time of the last write, so that :func:`storage.sweep_quarantine` can tell an
abandoned object from one being recorded right now.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from .errors import ObjectNotFound, StorageError

_OBJECT_ID = re.compile(r"[0-9a-f]{16,64}")
_SUFFIX = ".c4gh"
_SHARD = re.compile(r"[0-9a-f]{2}")
_WRITE_BUFFER = 4 << 20


def new_object_id() -> str:
    """A random object ID (128 bits, lowercase hex): no meaning, no PHI."""
    return secrets.token_hex(16)


def check_object_id(object_id: str) -> str:
    if not isinstance(object_id, str) or not _OBJECT_ID.fullmatch(object_id):
        raise StorageError("invalid object ID (expected 16-64 lowercase hex digits)")
    return object_id


@runtime_checkable
class BackendWriter(Protocol):
    def write(self, data: bytes | bytearray | memoryview) -> None: ...

    def commit(self) -> int:
        """Make the object visible atomically; return its size in bytes."""
        ...

    def abort(self) -> None:
        """Discard everything written; the object never becomes visible."""
        ...


@runtime_checkable
class Backend(Protocol):
    def put(self, object_id: str, chunks: Iterable[bytes]) -> int: ...

    def create(self, object_id: str) -> BackendWriter: ...

    def open(self, object_id: str) -> BinaryIO:
        """Readable, seekable stream of the stored bytes; ObjectNotFound if absent."""
        ...

    def delete(self, object_id: str) -> None: ...

    def list(self) -> Iterator[str]: ...

    def stat(self, object_id: str) -> int: ...

    def modified(self, object_id: str) -> float:
        """When the object was last written (Unix time); lets sweeps leave fresh objects alone."""
        ...


class _LocalWriter:
    """Writes to a temporary file; commit = fsync + rename + fsync of the folder."""

    def __init__(self, final: Path, tmp_dir: Path, object_id: str) -> None:
        self._final = final
        self._tmp = tmp_dir / f"{object_id}.{secrets.token_hex(8)}.part"
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file: BinaryIO | None = os.fdopen(fd, "wb", buffering=_WRITE_BUFFER)
        self._size = 0
        self._object_id = object_id

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._file is None:
            raise StorageError("write after commit or abort", self._object_id)
        self._file.write(data)
        self._size += len(data)

    def commit(self) -> int:
        if self._file is None:
            raise StorageError("commit after commit or abort", self._object_id)
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            self._final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(self._tmp, self._final)  # atomic, and never replaces an object
            except FileExistsError:
                raise StorageError("object already exists", self._object_id) from None
            self._tmp.unlink()
            _fsync_directory(self._final.parent)
        except BaseException:
            self.abort()
            raise
        return self._size

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._tmp.unlink(missing_ok=True)


class LocalBackend:
    """Objects as ``<root>/ab/cd/<object_id>.c4gh``; partial writes in ``<root>/tmp``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._tmp = self.root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path_of(self, object_id: str) -> Path:
        check_object_id(object_id)
        return self.root / object_id[:2] / object_id[2:4] / f"{object_id}{_SUFFIX}"

    def create(self, object_id: str) -> _LocalWriter:
        return _LocalWriter(self.path_of(object_id), self._tmp, object_id)

    def put(self, object_id: str, chunks: Iterable[bytes]) -> int:
        writer = self.create(object_id)
        try:
            for chunk in chunks:
                writer.write(chunk)
        except BaseException:
            writer.abort()
            raise
        return writer.commit()

    def open(self, object_id: str) -> BinaryIO:
        try:
            return open(self.path_of(object_id), "rb")  # noqa: SIM115 - returned to the caller
        except FileNotFoundError:
            raise ObjectNotFound("not in the storage backend", object_id) from None

    def delete(self, object_id: str) -> None:
        try:
            self.path_of(object_id).unlink()
        except FileNotFoundError:
            raise ObjectNotFound("not in the storage backend", object_id) from None

    def stat(self, object_id: str) -> int:
        try:
            return self.path_of(object_id).stat().st_size
        except FileNotFoundError:
            raise ObjectNotFound("not in the storage backend", object_id) from None

    def modified(self, object_id: str) -> float:
        try:
            return self.path_of(object_id).stat().st_mtime
        except FileNotFoundError:
            raise ObjectNotFound("not in the storage backend", object_id) from None

    def list(self) -> Iterator[str]:
        for first in sorted(self.root.iterdir()):
            if not (first.is_dir() and _SHARD.fullmatch(first.name)):
                continue
            for second in sorted(first.iterdir()):
                if not (second.is_dir() and _SHARD.fullmatch(second.name)):
                    continue
                for entry in sorted(second.iterdir()):
                    name = entry.name
                    if name.endswith(_SUFFIX) and _OBJECT_ID.fullmatch(name[: -len(_SUFFIX)]):
                        yield name[: -len(_SUFFIX)]

    def remove_stale_partials(self, older_than_seconds: float) -> int:
        """Delete temporary files left by crashed writes; returns how many."""
        limit = time.time() - older_than_seconds
        removed = 0
        for entry in self._tmp.iterdir():
            if entry.name.endswith(".part") and entry.stat().st_mtime < limit:
                entry.unlink(missing_ok=True)
                removed += 1
        return removed


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
