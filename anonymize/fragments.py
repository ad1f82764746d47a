"""Walking encapsulated Pixel Data: the item structure of PS3.5 A.4, checked as it is read.

An encapsulated Pixel Data value is the Basic Offset Table item, then one item per fragment of
compressed data, then a sequence delimiter. The walk reads item headers and the offset table
only, never the fragments, so a file of any size is checked in bounded memory (the fragments
are copied byte for byte later). It reports what the header's Number of Frames is then compared
with (``pixel_geometry``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pydicom.filebase import ReadableBuffer

from anonymize.outcome import Rejection

ITEM = 0xFFFEE000
SEQUENCE_DELIMITER = 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
MAX_FRAGMENTS = 1_000_000
OFFSET_BYTES = 4


@dataclass(frozen=True)
class Fragments:
    """What the walk found in one encapsulated Pixel Data element."""

    count: int  # fragments after the Basic Offset Table item
    table_frames: int  # entries of the Basic Offset Table; 0 when it is empty
    table_sound: bool  # entries start at 0, increase, and each is the first byte of a fragment


class _OffsetTable:
    """The Basic Offset Table's entries, matched against fragment starts as the walk meets them
    (both increase, so one pass over each suffices)."""

    def __init__(self, offsets: tuple[int, ...]) -> None:
        self.offsets = offsets
        self.next_entry = 0
        increasing = all(a < b for a, b in zip(offsets, offsets[1:], strict=False))
        self.sound = not offsets or (offsets[0] == 0 and increasing)

    def fragment_at(self, position: int) -> None:
        while self.next_entry < len(self.offsets) and self.offsets[self.next_entry] < position:
            self.sound = False  # an entry that points inside a fragment
            self.next_entry += 1
        if self.next_entry < len(self.offsets) and self.offsets[self.next_entry] == position:
            self.next_entry += 1

    def all_found(self) -> bool:
        """True when every entry was the start of a fragment (none points past the data)."""
        return self.sound and self.next_entry == len(self.offsets)


def _item_header(stream: ReadableBuffer, little: bool) -> tuple[int, int]:
    """Tag and length of the next item; a value that ends without its delimiter is not the
    structure A.4 prescribes."""
    head = stream.read(8)
    if len(head) < 8:
        raise Rejection("pixel_geometry")
    group, element, length = struct.unpack(("<" if little else ">") + "HHL", head)
    return (group << 16) | element, length


def _item_value_end(stream: ReadableBuffer, size: int, tag: int, length: int) -> int:
    if tag != ITEM or length == UNDEFINED:
        raise Rejection("pixel_geometry")
    end = stream.tell() + length
    if end > size:
        raise Rejection("truncated")
    return end


def _offset_table(stream: ReadableBuffer, size: int, little: bool) -> tuple[int, ...]:
    tag, length = _item_header(stream, little)
    end = _item_value_end(stream, size, tag, length)
    if length % OFFSET_BYTES or length > OFFSET_BYTES * MAX_FRAGMENTS:
        raise Rejection("pixel_geometry")
    count = length // OFFSET_BYTES
    data = stream.read(length)
    stream.seek(end)
    return struct.unpack(("<" if little else ">") + f"{count}L", data)


def walk_encapsulated(stream: ReadableBuffer, size: int, little: bool) -> Fragments:
    """Walk from just after the Pixel Data element's header to just after its delimiter.

    Raises :class:`Rejection`: ``truncated`` when an item runs past the end of the file,
    ``pixel_geometry`` when the structure is not Basic Offset Table item, fragment items,
    delimiter, and ``malformed`` beyond MAX_FRAGMENTS items.
    """
    table = _OffsetTable(_offset_table(stream, size, little))
    first_fragment = stream.tell()
    for count in range(MAX_FRAGMENTS):
        position = stream.tell() - first_fragment
        tag, length = _item_header(stream, little)
        if tag == SEQUENCE_DELIMITER:
            return Fragments(count, len(table.offsets), table.all_found())
        stream.seek(_item_value_end(stream, size, tag, length))
        table.fragment_at(position)
    raise Rejection("malformed")
