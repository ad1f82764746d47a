"""Reading untrusted input safely: bounded, never forced, every failure a reason code.

pydicom is a parser, not a validator. Before and around it this module:

* checks the 128-byte preamble and ``DICM`` prefix itself (no ``force``), and parses the file
  meta group by hand with a size bound;
* accepts only listed transfer syntaxes and inflates the deflated one in bounded chunks;
* reads small files into memory (so an element declaring 4 GiB cannot make a read allocate it)
  and wraps larger sources so no read goes past the end of the file;
* reads only the header (``stop_before_pixels``); the pixel data element is located by walking
  its item structure with lengths checked against the file size (``fragments``), and later
  streamed; what the walk found is kept for the check against the header (``pixel_geometry``).
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO, cast

from pydicom import dcmread
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO, ReadableBuffer
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID

from anonymize.fragments import UNDEFINED, Fragments, walk_encapsulated
from anonymize.outcome import Rejection

SMALL_FILE = 64 * 1024 * 1024  # read into memory below this size
MAX_META = 64 * 1024
MAX_TAIL = 16 * 1024 * 1024
DEFER_SIZE = 4 * 1024 * 1024
MAX_INFLATED = 1024 * 1024 * 1024
INFLATE_RATIO = 100
MIN_INFLATE_ALLOWANCE = 64 * 1024 * 1024

DEFLATED = "1.2.840.10008.1.2.1.99"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
ACCEPTED_TRANSFER_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2",  # Implicit VR Little Endian
        EXPLICIT_LE,
        DEFLATED,
        "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
        "1.2.840.10008.1.2.1.98",  # Encapsulated Uncompressed Explicit VR Little Endian
        "1.2.840.10008.1.2.4.50",  # JPEG Baseline
        "1.2.840.10008.1.2.4.51",  # JPEG Extended
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
        "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
        "1.2.840.10008.1.2.4.91",  # JPEG 2000
        "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
        "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
        "1.2.840.10008.1.2.4.203",  # HTJ2K
        "1.2.840.10008.1.2.5",  # RLE Lossless
    }
)
PIXEL_VRS = {0x7FE00010: (b"OB", b"OW"), 0x7FE00008: (b"OF",), 0x7FE00009: (b"OD",)}
PIXEL_TAGS = frozenset(PIXEL_VRS)
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
             b"UT", b"UV"}


class CappedReader(io.RawIOBase):
    """A read-only view of a seekable stream that never reads past ``size``."""

    def __init__(self, raw: ReadableBuffer, size: int) -> None:
        super().__init__()
        self._raw = raw
        self._size = size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def read(self, n: int | None = -1) -> bytes:
        remaining = max(0, self._size - self._raw.tell())
        n = remaining if n is None or n < 0 else min(n, remaining)
        return self._raw.read(n)

    # bytearray or memoryview: it assigns a slice; io declares any writable buffer
    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@dataclass
class PixelExtent:
    """Which pixel data element (Pixel Data, Float or Double Float Pixel Data), where it lies in
    the source (tag to end of value), and what its value holds: a defined length (native) or
    fragments (encapsulated)."""

    tag: int
    start: int
    end: int
    length: int | None = None
    fragments: Fragments | None = None


@dataclass
class Parsed:
    """An input read far enough to de-identify it."""

    meta_sop_class: str
    transfer_syntax: UID
    dataset: Dataset
    stream: ReadableBuffer
    size: int
    pixels: list[PixelExtent]
    tail: Dataset | None
    implicit: bool
    little_endian: bool


def _size(src: ReadableBuffer) -> int:
    src.seek(0, io.SEEK_END)
    size = src.tell()
    src.seek(0)
    return size


def _read_meta(stream: ReadableBuffer, size: int) -> tuple[dict[int, bytes], int]:
    """Parse group 0002 (always Explicit VR Little Endian) with a size bound."""
    stream.seek(132)
    elements: dict[int, bytes] = {}
    limit = min(size, 132 + MAX_META)
    while stream.tell() + 8 <= limit:
        start = stream.tell()
        head = stream.read(8)
        group, element = struct.unpack("<HH", head[:4])
        if group != 0x0002:
            stream.seek(start)
            break
        vr = head[4:6]
        if vr in _LONG_VRS:
            extra = stream.read(4)
            if len(extra) < 4:
                raise Rejection("truncated")
            length = struct.unpack("<L", extra)[0]
        else:
            length = struct.unpack("<H", head[6:8])[0]
        if length == 0xFFFFFFFF or stream.tell() + length > limit:
            raise Rejection("truncated" if stream.tell() + length > size else "malformed")
        elements[(group << 16) | element] = stream.read(length)
    else:
        if stream.tell() + 8 > size and not elements:
            raise Rejection("truncated")
    return elements, stream.tell()


def _uid(value: bytes | None) -> str:
    return (value or b"").rstrip(b"\x00 ").decode("ascii", "replace")


def _inflate(stream: ReadableBuffer, offset: int, size: int) -> bytes:
    """Inflate a deflated dataset, refusing zip bombs before they consume memory or time."""
    allowance = min(MAX_INFLATED, max(MIN_INFLATE_ALLOWANCE, INFLATE_RATIO * (size - offset)))
    stream.seek(offset)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    while True:
        chunk = stream.read(1024 * 1024)
        if not chunk:
            break
        data = chunk
        while data:
            out += inflater.decompress(data, allowance + 1 - len(out))
            if len(out) > allowance:
                raise Rejection("inflation_limit")
            data = inflater.unconsumed_tail
        if inflater.eof:
            break
    try:
        out += inflater.flush()
    except zlib.error as exc:
        raise Rejection("malformed") from exc
    if len(out) > allowance:
        raise Rejection("inflation_limit")
    return bytes(out)


def _inflated_stream(meta_raw: dict[int, bytes], stream: ReadableBuffer, offset: int,
                     size: int) -> ReadableBuffer:
    """A Part 10 stream holding the inflated dataset as Explicit VR Little Endian."""
    inflated = _inflate(stream, offset, size)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(_uid(meta_raw.get(0x00020002)))
    meta.MediaStorageSOPInstanceUID = UID(_uid(meta_raw.get(0x00020003)))
    meta.TransferSyntaxUID = UID(EXPLICIT_LE)
    buffer = DicomBytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)
    buffer.write(inflated)
    return io.BytesIO(buffer.getvalue())


def _element_header(stream: ReadableBuffer, implicit: bool,
                    little: bool) -> tuple[int, int, bytes | None]:
    """Read one element header; return (tag, value length, VR or None if implicit)."""
    endian = "<" if little else ">"
    head = stream.read(8)
    if len(head) < 8:
        raise Rejection("truncated")
    group, element = struct.unpack(endian + "HH", head[:4])
    tag = (group << 16) | element
    if implicit or group == 0xFFFE or not head[4:6].isalpha():
        # pydicom reads an implicit element inside an explicit file; so must the extent walk
        return tag, struct.unpack(endian + "L", head[4:8])[0], None
    if head[4:6] in _LONG_VRS:
        extra = stream.read(4)
        if len(extra) < 4:
            raise Rejection("truncated")
        return tag, struct.unpack(endian + "L", extra)[0], head[4:6]
    return tag, struct.unpack(endian + "H", head[6:8])[0], head[4:6]


def _pixel_extent(stream: ReadableBuffer, size: int, implicit: bool, little: bool) -> PixelExtent:
    """Locate one pixel data element, checking every declared length against the file.

    It is copied as it is, header included, so a VR it has must be the one the dictionary
    gives it: any other would make the output unreadable (a header without one, as an
    implicit element in an explicit file, is read back as pydicom read it)."""
    start = stream.tell()
    tag, length, vr = _element_header(stream, implicit, little)
    if vr is not None and vr not in PIXEL_VRS[tag]:
        raise Rejection("malformed")
    if length != UNDEFINED:
        end = stream.tell() + length
        if end > size:
            raise Rejection("truncated")
        stream.seek(end)
        return PixelExtent(tag, start, end, length=length)
    found = walk_encapsulated(stream, size, little)
    return PixelExtent(tag, start, stream.tell(), fragments=found)


def _tail(stream: ReadableBuffer, size: int, implicit: bool, little: bool) -> Dataset | None:
    """Elements after the pixel data (rare: padding, signatures, private groups)."""
    remaining = size - stream.tell()
    if remaining <= 0:
        return None
    if remaining > MAX_TAIL:
        raise Rejection("header_too_large")
    data = stream.read(remaining)
    tail = read_dataset(io.BytesIO(data), implicit, little, remaining)
    return tail if len(tail) else None


def _at_pixels(tag: int, vr: str | None, length: int) -> bool:
    return tag in PIXEL_TAGS


def _read_header(stream: ReadableBuffer, offset: int, transfer_syntax: UID) -> FileDataset:
    """The dataset from ``offset`` (just after the file meta group) up to its pixel data.

    Read with pydicom's dataset reader directly: the file meta group is already parsed, and
    dcmread would parse it a second time. A file with command group elements (0000,xxxx),
    which pydicom reads in their own encoding, goes through dcmread.
    """
    stream.seek(offset)
    if stream.read(2) == b"\x00\x00":
        stream.seek(0)
        return _commands_first(dcmread(stream, stop_before_pixels=True, defer_size=DEFER_SIZE))
    stream.seek(offset)
    implicit, little = transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian
    # pydicom annotates read_dataset's fp as BinaryIO but uses only read, seek and tell
    # (ReadableBuffer, what dcmread takes); a CappedReader or the caller's stream is one
    dataset = read_dataset(cast(BinaryIO, stream), implicit, little, stop_when=_at_pixels,
                           defer_size=DEFER_SIZE)
    ds = FileDataset(stream, dataset, None, None, implicit, little)
    ds.set_original_encoding(implicit, little, dataset._character_set)
    return ds


def _commands_first(ds: FileDataset) -> FileDataset:
    """Put the command group back where the file had it, first: dcmread appends it, and the
    engine takes elements out of tag order for a sign of a damaged file."""
    for tag in [tag for tag in ds.keys() if tag >> 16]:  # noqa: SIM118 - raw, unconverted
        elem = ds.get_item(tag, keep_deferred=True)
        del ds[tag]
        ds[tag] = elem
    return ds


def open_source(src: ReadableBuffer) -> tuple[ReadableBuffer, int]:
    """Return a bounded, seekable stream over ``src`` and its size."""
    size = _size(src)
    if size == 0:
        raise Rejection("empty")
    if size <= SMALL_FILE:
        return io.BytesIO(src.read()), size
    # not wrapped in io.BufferedReader: pydicom would take that for a named file on disk
    return CappedReader(src, size), size


def parse(src: ReadableBuffer) -> Parsed:
    """Read an untrusted input up to its pixel data; raise :class:`Rejection` on any problem."""
    stream, size = open_source(src)
    if size < 132:
        raise Rejection("not_dicom")
    head = stream.read(132)
    if head[128:132] != b"DICM":
        raise Rejection("not_dicom")
    meta_raw, offset = _read_meta(stream, size)
    if 0x00020002 in meta_raw and _uid(meta_raw[0x00020002]) == "1.2.840.10008.1.3.10":
        raise Rejection("dicomdir")
    ts = _uid(meta_raw.get(0x00020010))
    if not ts:
        raise Rejection("missing_transfer_syntax")
    if ts not in ACCEPTED_TRANSFER_SYNTAXES:
        raise Rejection("unsupported_transfer_syntax")
    if ts == DEFLATED:
        stream = _inflated_stream(meta_raw, stream, offset, size)
        size = _size(stream)
        _, offset = _read_meta(stream, size)
        ts = EXPLICIT_LE
    transfer_syntax = UID(ts)
    try:
        dataset = _read_header(stream, offset, transfer_syntax)
    except RecursionError as exc:
        raise Rejection("too_deep") from exc
    except (EOFError, OSError) as exc:
        raise Rejection("truncated") from exc
    implicit = transfer_syntax.is_implicit_VR
    little = transfer_syntax.is_little_endian
    pixels: list[PixelExtent] = []
    position = stream.tell()
    while position + 8 <= size:
        tag, _, _ = _element_header(stream, implicit, little)
        stream.seek(position)
        if tag not in PIXEL_TAGS:
            break
        pixels.append(_pixel_extent(stream, size, implicit, little))
        position = stream.tell()
    stream.seek(position)
    try:
        tail = _tail(stream, size, implicit, little)
    except RecursionError as exc:
        raise Rejection("too_deep") from exc
    except (EOFError, OSError) as exc:
        raise Rejection("truncated") from exc
    return Parsed(_uid(meta_raw.get(0x00020002)), transfer_syntax, dataset, stream, size, pixels,
                  tail, implicit, little)
