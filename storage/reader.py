"""A readable, seekable stream that decrypts a stored Crypt4GH object on demand."""

from __future__ import annotations

import hashlib
import hmac
import io
import weakref
from typing import BinaryIO

from . import c4gh_format as fmt
from .errors import IntegrityError
from .lane import Lane

_LANE_THRESHOLD = 4 << 20


def seek_target(position: int, size: int, offset: int, whence: int) -> int:
    """Where a seek lands, as in io.BytesIO: a relative seek before the start stops at 0."""
    if whence == io.SEEK_SET:
        target = offset
    elif whence == io.SEEK_CUR:
        target = position + offset
    elif whence == io.SEEK_END:
        target = size + offset
    else:
        raise ValueError(f"invalid whence ({whence})")
    if target < 0:
        if whence == io.SEEK_SET:
            raise ValueError("negative seek position")
        target = 0
    return target


class DecryptingReader(io.RawIOBase):
    """Plaintext view of one object; decrypts (and authenticates) one segment at a time.

    Memory use is one 64 KiB segment whatever the object size.  Bytes read in
    order from the start are hashed; the read that reaches the end compares
    the size and SHA-256 with the recorded ones and raises IntegrityError
    instead of returning the final bytes if they differ (Crypt4GH itself does
    not authenticate segment order or count).  Random access (``seek``) still
    authenticates every segment it touches.  On long sequential reads the
    hashing runs in a background lane (see :mod:`storage.lane`).
    """

    def __init__(
        self,
        raw: BinaryIO,
        opener: fmt.SegmentOpener,
        data_offset: int,
        size: int,
        sha256: str,
        object_id: str,
    ) -> None:
        super().__init__()
        self._raw = raw
        self._opener = opener
        self._data_offset = data_offset
        self._size = size
        self._expected_sha256 = sha256
        self.object_id = object_id
        self._pos = 0
        self._segment_index = -1
        self._segment = b""
        self._hasher = hashlib.sha256()
        self._hashed_upto = 0
        self._verified = False
        self._lane: Lane | None = None

    @property
    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        self._pos = seek_target(self._pos, self._size, offset, whence)
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        self._check_open()
        if size is None or size < 0:
            size = max(self._size - self._pos, 0)
        pieces = []
        while size > 0 and self._pos < self._size:
            index, offset = divmod(self._pos, fmt.SEGMENT_SIZE)
            segment = self._load(index)
            piece = segment[offset : offset + size]
            self._hash(piece)
            pieces.append(piece)
            self._pos += len(piece)
            size -= len(piece)
        if self._pos >= self._size:
            self._check_digest()
        return b"".join(pieces)

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            if self._lane is not None:
                self._lane.stop()
            self._raw.close()
            self._segment = b""
        super().close()

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")

    def _load(self, index: int) -> bytes:
        if index == self._segment_index:
            return self._segment
        start = index * fmt.SEGMENT_SIZE
        expected = min(fmt.SEGMENT_SIZE, self._size - start)
        self._raw.seek(self._data_offset + index * fmt.CIPHER_SEGMENT_SIZE)
        sealed = fmt.read_full(self._raw, expected + fmt.CIPHER_DIFF)
        if len(sealed) != expected + fmt.CIPHER_DIFF:
            raise IntegrityError("truncated object", self.object_id)
        plain = self._opener.open(sealed, self.object_id)
        if len(plain) != expected:
            raise IntegrityError("segment of unexpected length", self.object_id)
        self._segment_index, self._segment = index, plain
        return plain

    def _hash(self, piece: bytes) -> None:
        start, end = self._pos, self._pos + len(piece)
        if start <= self._hashed_upto < end:
            fresh = memoryview(piece)[self._hashed_upto - start :]
            if self._lane is None and self._hashed_upto > _LANE_THRESHOLD:
                self._lane = Lane()
                weakref.finalize(self, self._lane.stop)
            if self._lane is None:
                self._hasher.update(fresh)
            else:
                self._lane.submit(self._hasher.update, fresh)
            self._hashed_upto = end

    def _check_digest(self) -> None:
        if self._verified or self._hashed_upto != self._size:
            return
        if self._lane is not None:
            self._lane.finish()
            self._lane = None
        if not hmac.compare_digest(self._hasher.hexdigest(), self._expected_sha256):
            raise IntegrityError("plaintext SHA-256 differs from the recorded one", self.object_id)
        self._verified = True

