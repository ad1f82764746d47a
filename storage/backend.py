"""Where the encrypted objects live: a small backend interface and the local filesystem.

A backend only ever sees ciphertext and random object IDs.  Besides the five
calls of the issue (put, open, delete, list, stat) it offers ``create``, a
push-style writer, because the upload path receives bytes as they arrive (an
S3 backend would implement it as a multipart upload), and ``modified``, the
time of the last write, so that :func:`storage.sweep_quarantine` can tell an
abandoned object from one being recorded right now.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from .errors import ObjectNotFound, StorageError, StorageFull

_OBJECT_ID = re.compile(r"[0-9a-f]{16,64}")
_SUFFIX = ".c4gh"
_SHARD = re.compile(r"[0-9a-f]{2}")
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
_SMALL_WRITE = 64 << 10  # smaller pieces are gathered into one write
_WRITEBACK_WINDOW = 8 << 20
_SYNC_FILE_RANGE_WRITE = 2
_IOV_MAX = 1024
_FULL_ERRNOS = {
    errno.ENOSPC: "no space left on the storage volume",
    errno.EDQUOT: "storage quota exceeded",
}


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


def put_through(writer: BackendWriter, chunks: Iterable[bytes]) -> int:
    """``Backend.put`` for a backend with a push-style ``create``: all chunks, or nothing."""
    try:
        for chunk in chunks:
            writer.write(chunk)
    except BaseException:
        writer.abort()
        raise
    return writer.commit()


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
    """Writes a temporary file once; commit = fsync + link into place + fsync of the folder.

    The bytes go straight from the caller's buffers to the file (``os.writev``,
    no copy in between; only small pieces, such as the Crypt4GH header, are
    gathered first).  Every ``_WRITEBACK_WINDOW`` bytes the kernel is asked to
    start writing them out (``sync_file_range``, where available), so the
    single ``fsync`` at commit finds little left to do: the disk works while
    the next bytes are encrypted.  That is a hint, not a sync; durability comes
    from the fsyncs at commit.

    A failing write, fsync or link removes the temporary file before raising:
    StorageFull for ENOSPC/EDQUOT, StorageError otherwise, naming the object
    only (the paths stay out of messages and tracebacks).
    """

    def __init__(self, final: Path, tmp_dir: Path, object_id: str) -> None:
        self._final = final
        self._object_id = object_id
        self._tmp = tmp_dir / f"{object_id}.{secrets.token_hex(8)}.part"
        try:
            self._fd: int | None = os.open(self._tmp, _CREATE_FLAGS, 0o600)
        except OSError as exc:
            raise _os_error(exc, "creating the temporary file", object_id) from None
        self._small = bytearray()
        self._size = 0
        self._on_disk = 0
        self._writeback_from = 0
        self._writeback = _sync_file_range is not None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writelines((data,))

    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        """Append the chunks in order (one ``writev`` for a batch of sealed segments)."""
        if self._fd is None:
            raise StorageError("write after commit or abort", self._object_id)
        pending: list[bytes | bytearray | memoryview] = []
        for chunk in chunks:
            length = len(chunk) if isinstance(chunk, bytes) else memoryview(chunk).nbytes
            if not length:
                continue
            self._size += length
            if length < _SMALL_WRITE:
                self._small += chunk
                if len(self._small) < _SMALL_WRITE:
                    continue
                pending.append(self._small)
                self._small = bytearray()
            else:
                if self._small:
                    pending.append(self._small)
                    self._small = bytearray()
                pending.append(chunk)
        if pending:
            self._write_out(pending)

    def commit(self) -> int:
        if self._fd is None:
            raise StorageError("commit after commit or abort", self._object_id)
        linked = False
        try:
            if self._small:
                small, self._small = self._small, bytearray()
                self._write_out([small])
            fd, self._fd = self._fd, None
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            new_folders = _make_folders(self._final.parent)
            try:
                os.link(self._tmp, self._final)  # atomic, and never replaces an object
            except FileExistsError:
                raise StorageError("object already exists", self._object_id) from None
            linked = True
            self._tmp.unlink()
            for folder in (self._final.parent, *new_folders):
                _fsync_directory(folder)
        except BaseException as exc:
            if linked:  # nothing half-done stays visible: the caller sees a failed put
                self._final.unlink(missing_ok=True)
            self.abort()
            if isinstance(exc, OSError):
                raise _os_error(exc, "committing", self._object_id) from None
            raise
        return self._size

    def abort(self) -> None:
        self._small = bytearray()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        self._tmp.unlink(missing_ok=True)

    def _write_out(self, chunks: list[bytes | bytearray | memoryview]) -> None:
        try:
            _write_all(self._fd, chunks)
        except OSError as exc:
            self.abort()
            raise _os_error(exc, "writing", self._object_id) from None
        self._on_disk += sum(memoryview(chunk).nbytes for chunk in chunks)
        if self._writeback and self._on_disk - self._writeback_from >= _WRITEBACK_WINDOW:
            self._start_writeback()

    def _start_writeback(self) -> None:
        assert self._fd is not None and _sync_file_range is not None
        length = self._on_disk - self._writeback_from
        if _sync_file_range(self._fd, self._writeback_from, length, _SYNC_FILE_RANGE_WRITE):
            error = ctypes.get_errno()
            if error in _FULL_ERRNOS:
                self.abort()
                raise StorageFull(_FULL_ERRNOS[error], self._object_id)
            self._writeback = False  # not supported here: the fsync at commit does it all
        self._writeback_from = self._on_disk


class LocalBackend:
    """Objects as ``<root>/ab/cd/<object_id>.c4gh``; partial writes in ``<root>/tmp``.

    Failures of the file system surface as :mod:`storage.errors` types naming
    the object only: ObjectNotFound, StorageFull (ENOSPC, EDQUOT), StorageError.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._tmp = self.root / "tmp"
        try:
            self._tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise _os_error(exc, "creating the storage folder", None) from None

    def path_of(self, object_id: str) -> Path:
        check_object_id(object_id)
        return self.root / object_id[:2] / object_id[2:4] / f"{object_id}{_SUFFIX}"

    def create(self, object_id: str) -> _LocalWriter:
        return _LocalWriter(self.path_of(object_id), self._tmp, object_id)

    def put(self, object_id: str, chunks: Iterable[bytes]) -> int:
        return put_through(self.create(object_id), chunks)

    def open(self, object_id: str) -> BinaryIO:
        path = self.path_of(object_id)
        try:
            return open(path, "rb")  # noqa: SIM115 - returned to the caller
        except FileNotFoundError:
            raise ObjectNotFound("not in the storage backend", object_id) from None
        except OSError as exc:
            raise _os_error(exc, "opening", object_id) from None

    def delete(self, object_id: str) -> None:
        path = self.path_of(object_id)
        try:
            path.unlink()
        except FileNotFoundError:
            raise ObjectNotFound("not in the storage backend", object_id) from None
        except OSError as exc:
            raise _os_error(exc, "deleting", object_id) from None

    def stat(self, object_id: str) -> int:
        return self._stat(object_id).st_size

    def modified(self, object_id: str) -> float:
        return self._stat(object_id).st_mtime

    def _stat(self, object_id: str) -> os.stat_result:
        path = self.path_of(object_id)
        try:
            return path.stat()
        except FileNotFoundError:
            raise ObjectNotFound("not in the storage backend", object_id) from None
        except OSError as exc:
            raise _os_error(exc, "reading the metadata", object_id) from None

    def list(self) -> Iterator[str]:
        try:
            yield from self._list()
        except OSError as exc:
            raise _os_error(exc, "listing the objects", None) from None

    def _list(self) -> Iterator[str]:
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
        try:
            for entry in self._tmp.iterdir():
                try:
                    if entry.name.endswith(".part") and entry.stat().st_mtime < limit:
                        entry.unlink()
                        removed += 1
                except FileNotFoundError:  # committed or aborted meanwhile
                    continue
        except OSError as exc:
            raise _os_error(exc, "removing stale temporary files", None) from None
        return removed


def _os_error(exc: OSError, doing: str, object_id: str | None) -> StorageError:
    """The typed error for a failed file operation: the errno's name, never the path."""
    if exc.errno in _FULL_ERRNOS:
        return StorageFull(_FULL_ERRNOS[exc.errno], object_id)
    name = errno.errorcode.get(exc.errno or 0, "unknown error")
    return StorageError(f"{doing} failed ({name})", object_id)


def _write_all(fd: int | None, chunks: list[bytes | bytearray | memoryview]) -> None:
    """``writev`` every byte of the chunks, resuming after short writes."""
    assert fd is not None
    views = [memoryview(chunk).cast("B") for chunk in chunks]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if written:
            views[0] = views[0][written:]


def _make_folders(folder: Path) -> list[Path]:
    """Create the shard folders as needed; return the parents whose entries changed."""
    changed: list[Path] = []
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        try:
            new.mkdir()
        except FileExistsError:  # another writer made it meanwhile
            continue
        changed.append(new.parent)
    return changed


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's ``sync_file_range`` (Linux), which the os module does not offer; else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_sync_file_range = _load_sync_file_range()
