"""EncryptedSpool: an upload spool file whose bytes are encrypted as they arrive.

It is the object the portal's Werkzeug ``stream_factory`` returns: the form
parser ``write()``s the upload into it, then calls ``seek(0)`` and hands it to
``FileStorage``.  Nothing plaintext ever reaches a disk: the bytes go straight
into an :class:`~storage.store.ObjectWriter` of the (quarantine) scope.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from .reader import DecryptingReader

if TYPE_CHECKING:
    from .store import ObjectInfo, ObjectStore


class EncryptedSpool(io.RawIOBase):
    """Write phase, then (from the first ``seek(0)``) a decrypting seekable read phase.

    * ``write()`` encrypts into a new object of the scope;
    * ``seek(0)`` (or :meth:`finalize`) commits the object; from then on
      ``read``/``seek``/``tell`` serve the plaintext through a
      :class:`DecryptingReader` and ``.info`` holds the :class:`ObjectInfo`;
    * ``close()`` before finalising discards the partial object; after
      finalising it closes the stream and keeps the object (the caller deletes
      it, and shreds the quarantine scope, when processing ends).

    It has no ``name`` attribute, like an anonymous temporary file.
    """

    def __init__(self, store: ObjectStore, scope_id: str) -> None:
        super().__init__()
        self._store = store
        self._writer = store.writer(scope_id)
        self.object_id = self._writer.object_id
        self.info: ObjectInfo | None = None
        self._reader: DecryptingReader | None = None

    # -- capabilities ----------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return self._reader is None and not self.closed

    def seekable(self) -> bool:
        return True

    # -- write phase -------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._check_open()
        if self._reader is not None:
            raise io.UnsupportedOperation("the spool is finalised; it is read-only now")
        return self._writer.write(data)

    def finalize(self) -> ObjectInfo:
        """Commit the encrypted object and switch to reading; idempotent."""
        self._check_open()
        if self.info is None:
            self.info = self._writer.commit()
            self._reader = self._store.open(self.info)
        return self.info

    # -- read phase --------------------------------------------------------------------

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        if self._reader is None:
            position = self._writer.bytes_written
            if whence == io.SEEK_SET and offset == 0:
                self.finalize()
            elif (whence, offset) in ((io.SEEK_CUR, 0), (io.SEEK_END, 0)) or (
                whence == io.SEEK_SET and offset == position
            ):
                return position
            else:
                raise io.UnsupportedOperation("while writing, only seek(0) is supported")
        assert self._reader is not None
        return self._reader.seek(offset, whence)

    def tell(self) -> int:
        self._check_open()
        if self._reader is None:
            return self._writer.bytes_written
        return self._reader.tell()

    def read(self, size: int | None = -1) -> bytes:
        return self._reading().read(size)

    def readall(self) -> bytes:
        return self._reading().read(-1)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        return self._reading().readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            if self._reader is None:
                self._writer.abort()
            else:
                self._reader.close()
        super().close()

    def _reading(self) -> DecryptingReader:
        self._check_open()
        if self._reader is None:
            raise io.UnsupportedOperation("seek(0) ends the write phase before reading")
        return self._reader

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed spool")

