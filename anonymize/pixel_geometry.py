"""Pixel Data must be exactly what the header declares (PS3.3 C.7.6.3, PS3.5 8.1.1 and A.4).

Why reject a mismatch instead of copying the bytes as they are: bytes beyond what
Rows x Columns x Samples per Pixel x Bits Allocated x Number of Frames account for are shown by
no viewer, so a steward reviewing the image never sees them, yet they would be shared (a hidden
frame, a screenshot); too few bytes, or frames the offset table cannot find, make a damaged file
that nobody can use. Nothing is decoded: the header and the item structure found by the reader
are enough.

* Native (uncompressed) Pixel Data has a defined length of Rows x Columns x Samples per Pixel x
  Bits Allocated / 8 x Number of Frames bytes (1-bit data packed eight pixels to a byte,
  YBR_FULL_422 storing two chroma samples per two pixels), plus one pad byte when that is odd.
* Integer Pixel Data needs its Pixel Representation (0 unsigned, 1 signed): without it neither
  the pixels nor the header's US-or-SS values (smallest and largest pixel value, ...) can be
  read, and an Implicit VR output could not be read back.
* Encapsulated Pixel Data is a Basic Offset Table item, fragment items and a delimiter
  (``fragments``). Each frame needs at least one fragment of its own, so there are at least as
  many fragments as frames; a non-empty offset table has one entry per frame, each entry the
  start of a fragment.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset

from anonymize.fragments import Fragments
from anonymize.outcome import Rejection
from anonymize.reader import PixelExtent

ROWS, COLUMNS = 0x00280010, 0x00280011
SAMPLES_PER_PIXEL, BITS_ALLOCATED = 0x00280002, 0x00280100
NUMBER_OF_FRAMES, PHOTOMETRIC_INTERPRETATION = 0x00280008, 0x00280004
PIXEL_DATA, PIXEL_REPRESENTATION = 0x7FE00010, 0x00280103


@dataclass(frozen=True)
class Geometry:
    """The image size the header declares."""

    rows: int
    columns: int
    samples: int
    bits_allocated: int
    frames: int
    chroma_subsampled: bool  # YBR_FULL_422: Cb and Cr once per two pixels

    def native_bytes(self) -> int:
        """The length of native Pixel Data for this geometry, before even-length padding."""
        values = self.rows * self.columns * self.samples * self.frames
        if self.bits_allocated == 1:
            return (values + 7) // 8
        size = values * (self.bits_allocated // 8)
        return size // 3 * 2 if self.chroma_subsampled else size


def _value(ds: Dataset, tag: int) -> object:
    """An element's value, converted without changing the dataset (a raw element stays raw,
    so it is written back as the bytes it was read as)."""
    elem = ds.get_item(tag)
    if elem is None:
        return None
    if isinstance(elem, RawDataElement):
        elem = convert_raw_data_element(elem, ds=ds)
    return elem.value


def _positive(ds: Dataset, tag: int, default: int | None = None) -> int:
    """A positive whole number from the header; anything else means the size is unknown."""
    value = _value(ds, tag)
    if value is None or value == "":
        if default is None:
            raise Rejection("pixel_geometry")
        return default
    try:
        number = int(str(value).strip())
    except ValueError:
        raise Rejection("pixel_geometry") from None
    if number < 1:
        raise Rejection("pixel_geometry")
    return number


def _declared_geometry(ds: Dataset) -> Geometry:
    """The declared geometry; a missing, malformed or impossible value is a rejection."""
    bits = _positive(ds, BITS_ALLOCATED)
    if bits != 1 and bits % 8:
        raise Rejection("pixel_geometry")  # neither packed bits nor whole bytes
    samples = _positive(ds, SAMPLES_PER_PIXEL)
    photometric = str(_value(ds, PHOTOMETRIC_INTERPRETATION) or "").strip().upper()
    return Geometry(
        rows=_positive(ds, ROWS),
        columns=_positive(ds, COLUMNS),
        samples=samples,
        bits_allocated=bits,
        frames=_positive(ds, NUMBER_OF_FRAMES, default=1),
        chroma_subsampled=samples == 3 and photometric == "YBR_FULL_422",
    )


def _native_fits(length: int, declared: Geometry) -> bool:
    expected = declared.native_bytes()
    return length in (expected, expected + expected % 2)


def _fragments_fit(found: Fragments, frames: int) -> bool:
    if found.table_frames:
        return found.table_sound and found.table_frames == frames
    return found.count >= frames


def check(ds: Dataset, encapsulated: bool, pixels: list[PixelExtent]) -> None:
    """Raise ``Rejection('pixel_geometry')`` unless every Pixel Data element matches the
    header; a file without Pixel Data (a structured report, a registration) is not affected."""
    if not pixels:
        return
    declared = _declared_geometry(ds)
    if any(extent.tag == PIXEL_DATA for extent in pixels) and _value(
            ds, PIXEL_REPRESENTATION) not in (0, 1):
        raise Rejection("pixel_geometry")
    for extent in pixels:
        if extent.fragments is None:
            fits = not encapsulated and _native_fits(extent.length or 0, declared)
        else:
            fits = encapsulated and _fragments_fit(extent.fragments, declared.frames)
        if not fits:
            raise Rejection("pixel_geometry")
