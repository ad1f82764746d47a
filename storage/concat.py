"""One seekable stream over several readers laid end to end (an upload's encrypted parts).

A resumable upload arrives in pieces, each stored as an object of its own so that the offset
is durable after every piece. De-identification reads the file as one stream; this joins the
pieces' decrypting readers without copying them anywhere.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import BinaryIO

from .reader import seek_target


class ConcatenatedReader(io.RawIOBase):
    """Reads ``parts`` (readable, seekable, of the given sizes) as one stream; closes them."""

    def __init__(self, parts: Sequence[BinaryIO], sizes: Sequence[int]) -> None:
        super().__init__()
        if len(parts) != len(sizes):
            raise ValueError("one size per part")
        self._parts = list(parts)
        self._starts: list[int] = []
        total = 0
        for size in sizes:
            self._starts.append(total)
            total += size
        self._sizes = list(sizes)
        self._length = total
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._position = seek_target(self._position, self._length, offset, whence)
        return self._position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view) and self._position < self._length:
            index = self._part_at(self._position)
            part, start = self._parts[index], self._starts[index]
            inside = self._position - start
            want = min(len(view) - filled, self._sizes[index] - inside)
            part.seek(inside)
            data = part.read(want)
            if not data:
                raise OSError("a part ended before its recorded size")
            view[filled : filled + len(data)] = data
            filled += len(data)
            self._position += len(data)
        return filled

    def _part_at(self, position: int) -> int:
        for index in range(len(self._parts) - 1, -1, -1):
            if self._starts[index] <= position and self._sizes[index]:
                return index
        return 0

    def close(self) -> None:
        if not self.closed:
            for part in self._parts:
                part.close()
        super().close()
