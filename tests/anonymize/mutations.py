"""Mutating encoded DICOM files the way damage and fuzzers do, element header by header.

A mutation is applied to the bytes of a Part 10 file: a byte flipped, a tag renumbered, a VR
changed, a length rewritten, a range cut out, or the file truncated. Tag, VR and length
mutations aim at element headers, found by :func:`headers` (at every depth, in either byte
order, in Explicit or Implicit VR); the others aim anywhere in the header after the file meta
group.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR

UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
            b"UV"}
VRS = sorted(LONG_VRS | {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS",
                         b"LO", b"LT", b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL",
                         b"US"})
KINDS = ("flip", "tag", "vr", "length", "cut", "truncate")


@dataclass(frozen=True)
class Header:
    """Where one element header lies: its tag, VR (explicit only) and length fields."""

    offset: int
    vr_offset: int | None
    length_offset: int
    length_size: int


@dataclass(frozen=True)
class Encoding:
    dataset_start: int
    implicit: bool
    little: bool

    @property
    def order(self) -> str:
        return "<" if self.little else ">"


def _is_sequence(tag: int, vr: bytes | None) -> bool:
    if vr is not None:
        return vr == b"SQ"
    try:
        return bool(dictionary_VR(tag) == "SQ")
    except KeyError:
        return False


class _Scanner:
    """A lenient walk over element headers: it stops where the structure stops making sense."""

    def __init__(self, data: bytes, encoding: Encoding) -> None:
        self.data = data
        self.enc = encoding
        self.found: list[Header] = []

    def unpack(self, fmt: str, at: int) -> tuple[int, ...]:
        return struct.unpack_from(self.enc.order + fmt, self.data, at)

    def dataset(self, pos: int, end: int, depth: int = 0) -> int:
        """Walk elements from ``pos`` up to ``end`` or an item delimiter; return where it
        stopped."""
        end = min(end, len(self.data))
        while pos + 8 <= end and depth < 16:
            group, element = self.unpack("HH", pos)
            tag = (group << 16) | element
            if tag in (ITEM_END, SEQUENCE_END):
                return pos + 8
            vr = None if self.enc.implicit else self.data[pos + 4:pos + 6]
            if vr is not None and vr not in VRS:
                return end
            if vr is None:
                header = Header(pos, None, pos + 4, 4)
            elif vr in LONG_VRS:
                if pos + 12 > end:
                    return end
                header = Header(pos, pos + 4, pos + 8, 4)
            else:
                header = Header(pos, pos + 4, pos + 6, 2)
            self.found.append(header)
            (length,) = self.unpack("L" if header.length_size == 4 else "H",
                                    header.length_offset)
            value = header.length_offset + header.length_size
            if _is_sequence(tag, vr):
                pos = self.items(value, end if length == UNDEFINED else value + length, depth)
            elif length == UNDEFINED:
                return end  # encapsulated pixel data: nothing more to aim at
            else:
                pos = value + length
        return pos

    def items(self, pos: int, end: int, depth: int) -> int:
        end = min(end, len(self.data))
        while pos + 8 <= end:
            group, element, length = self.unpack("HHL", pos)
            tag = (group << 16) | element
            if tag == SEQUENCE_END:
                return pos + 8
            if tag != ITEM:
                return end
            start = pos + 8
            stop = end if length == UNDEFINED else min(end, start + length)
            after = self.dataset(start, stop, depth + 1)
            pos = after if length == UNDEFINED else start + length
        return pos


def encoding_of(data: bytes) -> Encoding:
    """Where the dataset starts and how it is encoded, from the file meta group."""
    pos = 132
    syntax = ""
    while pos + 8 <= len(data) and data[pos:pos + 2] == b"\x02\x00":
        element = struct.unpack_from("<H", data, pos + 2)[0]
        vr = data[pos + 4:pos + 6]
        if vr in LONG_VRS:
            length = struct.unpack_from("<L", data, pos + 8)[0]
            value = pos + 12
        else:
            length = struct.unpack_from("<H", data, pos + 6)[0]
            value = pos + 8
        if element == 0x0010:
            syntax = data[value:value + length].rstrip(b"\x00 ").decode("ascii")
        pos = value + length
    return Encoding(pos, syntax == "1.2.840.10008.1.2", syntax != "1.2.840.10008.1.2.2")


def headers(data: bytes) -> list[Header]:
    """The element headers of the dataset (not the file meta group), in file order."""
    encoding = encoding_of(data)
    scanner = _Scanner(data, encoding)
    scanner.dataset(encoding.dataset_start, len(data))
    return scanner.found


def _replace(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new):]


def mutate(data: bytes, kind: str, where: int, value: int) -> bytes:
    """Apply one mutation. ``where`` picks the header (modulo their number) or the offset
    (modulo the dataset's size); ``value`` is the byte to XOR, what is added to the element
    number (to the group if bit 16 is set) or to the length, the VR's index, or the cut's
    size."""
    encoding = encoding_of(data)
    start = encoding.dataset_start
    found = headers(data)
    # flips and cuts aim at the header, where they change what the engine reads
    span = max(1, (found[-1].length_offset + 4 if found else len(data)) - start)
    if kind in ("tag", "vr", "length") and found:
        header = found[where % len(found)]
        if kind == "tag":
            at = header.offset + (0 if value & 0x10000 else 2)
            (number,) = struct.unpack_from(encoding.order + "H", data, at)
            new = (number + value) & 0xFFFF
            return _replace(data, at, struct.pack(encoding.order + "H", new))
        if kind == "vr" and header.vr_offset is not None:
            return _replace(data, header.vr_offset, VRS[value % len(VRS)])
        fmt = encoding.order + ("L" if header.length_size == 4 else "H")
        (length,) = struct.unpack_from(fmt, data, header.length_offset)
        new = (length + value) % (1 << (8 * header.length_size))
        return _replace(data, header.length_offset, struct.pack(fmt, new))
    at = start + where % span
    if kind == "cut":
        return data[:at] + data[at + 1 + value % 64:]
    if kind == "truncate":
        return data[:at]
    flipped = data[at] ^ (1 + value % 255) if at < len(data) else 0
    return _replace(data, at, bytes([flipped]))
