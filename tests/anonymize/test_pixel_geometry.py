"""Pixel Data that does not match the header's geometry is rejected as ``pixel_geometry``.

Native data must be Rows x Columns x Samples x Bits Allocated / 8 x Frames bytes (plus one pad
byte when odd); encapsulated data must be offset table item, fragment items, delimiter, with a
frame count the fragments and the offset table agree with.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Callable

import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless, SpatialRegistrationStorage

from anonymize import Profile, Verdict, reader
from anonymize.outcome import REASONS
from tests.anonymize.helpers import PIXELS, Result, ct_dataset, part10, run

FRAME = PIXELS  # 16 x 16, 16 bits: 512 bytes
ITEM, DELIMITER = 0xE000, 0xE0DD
UNDEFINED = 0xFFFFFFFF

# Correct files shipped with pydicom, one for each way of laying out pixels.
CORRECT_FILES = {
    "CT_small.dcm": "native, explicit little endian",
    "MR_small_bigendian.dcm": "native, big endian",
    "MR_small_implicit.dcm": "native, implicit VR",
    "image_dfl.dcm": "native, deflated",
    "SC_rgb_small_odd.dcm": "3 x 3 RGB: 27 bytes and one pad byte",
    "SC_ybr_full_422_uncompressed.dcm": "YBR_FULL_422: chroma once per two pixels",
    "liver_1frame.dcm": "1 bit per pixel, packed",
    "rtdose.dcm": "15 frames of 32 bits",
    "MR_small_RLE.dcm": "RLE, offset table of one frame",
    "SC_rgb_rle_2frame.dcm": "RLE, offset table of two frames",
    "examples_ybr_color.dcm": "JPEG, 30 frames",
    "JPEG2000.dcm": "JPEG 2000, empty offset table",
}
# Files shipped with pydicom whose pixel data does not match their header.
MISMATCHED_FILES = {
    "MR_small_padded.dcm": "128 bytes after the pixels the header declares",
    "badVR.dcm": "Number of Frames '1A'",
}


def _element(tag: int, length: int) -> bytes:
    return struct.pack("<HH2sHL", tag >> 16, tag & 0xFFFF, b"OB", 0, length)


def _item(value: bytes, element: int = ITEM, length: int | None = None) -> bytes:
    size = len(value) if length is None else length
    return struct.pack("<HHL", 0xFFFE, element, size) + value


def _with_pixel_items(items: bytes, frames: int = 1, delimiter: bool = True,
                      transfer_syntax: str = RLELossless) -> bytes:
    """A CT header in ``transfer_syntax`` followed by encapsulated Pixel Data of ``items``."""
    ds = ct_dataset(NumberOfFrames=frames)
    del ds.PixelData
    end = _item(b"", DELIMITER) if delimiter else b""
    return part10(ds, transfer_syntax) + _element(0x7FE00010, UNDEFINED) + items + end


def _encapsulated(frames: int, fragments: int = 1, table: bool = True,
                  declared: int | None = None) -> bytes:
    """Valid encapsulation of ``frames`` made-up compressed frames; ``declared`` frames in the
    header (the same number unless given)."""
    data = encapsulate([bytes([n]) * 64 for n in range(frames)], fragments, table)
    ds = ct_dataset(NumberOfFrames=frames if declared is None else declared)
    ds.PixelData = data
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return part10(ds, RLELossless)


def _table(*offsets: int) -> bytes:
    return _item(struct.pack(f"<{len(offsets)}L", *offsets))


def _native(frames: int = 1, pixels: bytes = FRAME, **elements: object) -> bytes:
    ds = ct_dataset(**elements)
    if frames != 1:
        ds.NumberOfFrames = frames
    ds.PixelData = pixels
    return part10(ds)


def _without(keyword: str) -> bytes:
    ds = ct_dataset()
    ds["PixelData"].VR = "OW"  # pydicom would look at Bits Allocated to choose
    delattr(ds, keyword)
    return part10(ds)


def _frames_not_a_number() -> bytes:
    """Number of Frames '2A' (pydicom refuses to write it, so it is patched in)."""
    data = _native(frames=22, pixels=FRAME * 22)
    patched = data.replace(b"IS\x02\x0022", b"IS\x02\x002A")
    assert patched != data
    return patched


def _small(rows: int, columns: int, bits: int, size: int) -> bytes:
    """An 8- or 1-bit image of ``size`` bytes of pixel data."""
    ds = ct_dataset(Rows=rows, Columns=columns, BitsAllocated=bits, BitsStored=bits,
                    HighBit=bits - 1)
    ds.PixelData = bytes(size)
    return part10(ds)


FRAGMENT = _item(b"\x01" * 64)
MISMATCHED: dict[str, Callable[[], bytes]] = {
    "native_too_short": lambda: _native(pixels=FRAME[:-2]),
    "native_too_long": lambda: _native(pixels=FRAME + b"\0\0"),
    "native_hidden_second_frame": lambda: _native(pixels=FRAME * 2),
    "native_rows_wrong": lambda: _native(Rows=17),
    "native_columns_wrong": lambda: _native(Columns=15),
    "native_frames_wrong": lambda: _native(frames=3, pixels=FRAME * 2),
    "native_frames_not_a_number": _frames_not_a_number,
    "native_frames_zero": lambda: _native(frames=1, NumberOfFrames=0),
    "native_samples_wrong": lambda: _native(SamplesPerPixel=3),
    "native_bits_not_whole_bytes": lambda: _native(BitsAllocated=12),
    "native_rows_missing": lambda: _without("Rows"),
    "native_bits_missing": lambda: _without("BitsAllocated"),
    "native_1_bit_too_long": lambda: _small(5, 5, 1, 6),  # 25 bits need 4 bytes
    "native_undefined_length": lambda: _with_pixel_items(
        _item(b"") + FRAGMENT, transfer_syntax="1.2.840.10008.1.2.1"),
    "encapsulated_fewer_fragments_than_frames": lambda: _encapsulated(2, table=False,
                                                                      declared=3),
    "encapsulated_table_fewer_frames": lambda: _encapsulated(2, declared=3),
    "encapsulated_table_more_frames": lambda: _encapsulated(3, declared=2),
    "encapsulated_table_inside_a_fragment": lambda: _with_pixel_items(
        _table(0, 40) + FRAGMENT + FRAGMENT, frames=2),
    "encapsulated_table_past_the_data": lambda: _with_pixel_items(
        _table(0, 72, 144) + FRAGMENT + FRAGMENT, frames=3),
    "encapsulated_table_not_from_zero": lambda: _with_pixel_items(
        _table(72) + FRAGMENT + FRAGMENT, frames=1),
    "encapsulated_table_not_whole_entries": lambda: _with_pixel_items(
        _item(b"\0" * 6) + FRAGMENT),
    "encapsulated_no_offset_table_item": lambda: _with_pixel_items(
        _element(0x00081030, 4) + b"HEAD" + FRAGMENT),
    "encapsulated_no_fragment": lambda: _with_pixel_items(_item(b"")),
    "encapsulated_item_of_undefined_length": lambda: _with_pixel_items(
        _item(b"") + _item(b"\x01" * 64, length=UNDEFINED)),
    "encapsulated_not_an_item": lambda: _with_pixel_items(
        _item(b"") + FRAGMENT + _item(b"\x01" * 8, element=0xE00D)),
    "encapsulated_no_delimiter": lambda: _with_pixel_items(_item(b"") + FRAGMENT,
                                                           delimiter=False),
    "encapsulated_syntax_with_defined_length": lambda: _native_in(RLELossless),
}
MATCHING: dict[str, Callable[[], bytes]] = {
    "native_exact": lambda: _native(),
    "native_three_frames": lambda: _native(frames=3, pixels=FRAME * 3),
    "native_odd_length_padded": lambda: _small(3, 3, 8, 10),  # 9 bytes and one pad byte
    "native_1_bit_packed": lambda: _small(5, 5, 1, 4),
    "encapsulated_one_frame_many_fragments": lambda: _encapsulated(1, fragments=3,
                                                                   table=False),
    "encapsulated_frames_in_two_fragments_each": lambda: _encapsulated(2, fragments=2),
    "encapsulated_table_of_three_frames": lambda: _encapsulated(3),
    "encapsulated_more_fragments_than_frames": lambda: _with_pixel_items(
        _item(b"") + FRAGMENT * 3, frames=2),
}


def _native_in(transfer_syntax: str) -> bytes:
    """Pixel Data of defined length in a transfer syntax that requires encapsulation."""
    ds = ct_dataset()
    return part10(ds, transfer_syntax)


def _run(data: bytes) -> Result:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values planted
        return run(data)


@pytest.mark.parametrize("name", sorted(MISMATCHED))
def test_pixel_data_not_matching_the_header_is_rejected(name: str) -> None:
    result = _run(MISMATCHED[name]())
    assert result.outcome.verdict is Verdict.REJECTED
    assert result.outcome.reason_code == "pixel_geometry", result.outcome.reason_code
    assert result.outcome.reason == REASONS["pixel_geometry"]


@pytest.mark.parametrize("name", sorted(MISMATCHED))
def test_a_mismatch_is_rejected_the_same_way_when_streamed(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "SMALL_FILE", 0)
    assert _run(MISMATCHED[name]()).outcome.reason_code == "pixel_geometry"


@pytest.mark.parametrize("name", sorted(MATCHING))
def test_pixel_data_matching_the_header_is_deidentified(name: str) -> None:
    source = MATCHING[name]()
    result = _run(source)
    assert result.outcome.verdict is Verdict.DEIDENTIFIED, result.outcome.reason_code
    pixel_data = _element(0x7FE00010, UNDEFINED)
    if pixel_data in source:  # encapsulated: copied byte for byte, delimiter included
        assert result.data.endswith(source[source.index(pixel_data):])


@pytest.mark.parametrize("name", sorted(CORRECT_FILES))
def test_correct_files_shipped_with_pydicom_pass(name: str) -> None:
    with open(get_testdata_file(name), "rb") as handle:
        outcome = _run(handle.read()).outcome
    assert outcome.verdict is not Verdict.REJECTED, (CORRECT_FILES[name], outcome.reason_code)


@pytest.mark.parametrize("name", sorted(MISMATCHED_FILES))
def test_mismatched_files_shipped_with_pydicom_are_rejected(name: str) -> None:
    with open(get_testdata_file(name), "rb") as handle:
        outcome = _run(handle.read()).outcome
    assert outcome.reason_code == "pixel_geometry", MISMATCHED_FILES[name]


def test_a_file_without_pixel_data_is_not_checked() -> None:
    ds = ct_dataset(SOPClassUID=SpatialRegistrationStorage, Modality="REG", Rows=999)
    del ds.PixelData
    assert _run(part10(ds)).outcome.verdict is Verdict.DEIDENTIFIED


def test_a_report_without_pixel_data_is_not_checked() -> None:
    ds = ct_dataset(SOPClassUID="1.2.840.10008.5.1.4.1.1.88.11", Modality="SR")
    del ds.PixelData
    for keyword in ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel"):
        delattr(ds, keyword)
    profile = Profile.default().with_options("clean_structured_content")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcome = run(part10(ds), profile=profile).outcome
    assert outcome.reason_code == "structured_content"


def test_the_reason_is_plain_and_holds_nothing_of_the_file() -> None:
    reason = REASONS["pixel_geometry"]
    assert "picture" in reason and "damaged" in reason
    assert not any(word in reason for word in ("Rows", "Pixel Data", "fragment", "offset"))
