"""Hostile and broken inputs: each one a REJECTED outcome with a reason, never an exception."""

from __future__ import annotations

import functools
import io
import struct
import zlib
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
)

from anonymize import Verdict, deidentify
from tests.anonymize.helpers import ct_dataset, part10, run

EXPLICIT = ExplicitVRLittleEndian


def _meta_only(transfer_syntax: str, sop_class: str = CTImageStorage) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    meta.TransferSyntaxUID = transfer_syntax
    fp = DicomBytesIO()
    fp.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(fp, meta, enforce_standard=True)
    return fp.getvalue()


def _element(group: int, element: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    size = len(value) if length is None else length
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
        return struct.pack("<HH2sHL", group, element, vr, 0, size) + value
    return struct.pack("<HH2sH", group, element, vr, size) + value


@functools.cache
def zip_bomb() -> bytes:
    """A deflated dataset: a few hundred kB that inflate to 512 MiB of zeros in an OB value
    (more than the 64 MiB floor of the inflation allowance, over 1000 times its own size)."""
    head = _element(0x0008, 0x0016, b"UI", CTImageStorage.encode() + b"\x00")
    size = 512 * 1024**2
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = [compressor.compress(head + _element(0x0009, 0x1010, b"OB", b"", size))]
    block = b"\x00" * (16 * 1024 * 1024)
    for _ in range(size // len(block)):
        body.append(compressor.compress(block))
    body.append(compressor.flush())
    return _meta_only(DeflatedExplicitVRLittleEndian) + b"".join(body)


def deep_nesting(depth: int = 400) -> bytes:
    """``depth`` sequences nested inside each other (undefined lengths)."""
    start = b""
    end = b""
    for _ in range(depth):
        start += struct.pack("<HH2sHL", 0x0008, 0x1140, b"SQ", 0, 0xFFFFFFFF)
        start += struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
        end = struct.pack("<HHL", 0xFFFE, 0xE00D, 0) + struct.pack(
            "<HHL", 0xFFFE, 0xE0DD, 0) + end
    return _meta_only(EXPLICIT) + _element(0x0008, 0x0016, b"UI",
                                           CTImageStorage.encode() + b"\x00") + start + end


def undelimited_sequence() -> bytes:
    """A sequence of undefined length whose delimiter never comes."""
    ds = ct_dataset()
    data = part10(ds)
    sq = struct.pack("<HH2sHL", 0x0040, 0x9096, b"SQ", 0, 0xFFFFFFFF)
    item = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF) + _element(0x0010, 0x0010, b"PN",
                                                                      b"Doe^John")
    cut = data.index(struct.pack("<HH", 0x0010, 0x0010))
    return data[:cut] + sq + item


def four_gib_claim() -> bytes:
    """An element declaring 0xFFFFFFFE bytes of value, followed by a handful."""
    ds = ct_dataset()
    del ds.PixelData
    return part10(ds) + _element(0x0009, 0x1010, b"OB", b"tiny", 0xFFFFFFFE)


def four_gib_text() -> bytes:
    ds = ct_dataset()
    data = part10(ds)
    cut = data.index(struct.pack("<HH", 0x0010, 0x0010))
    return data[:cut] + _element(0x0010, 0x4000, b"LT", b"few", 0xFFFE) + data[cut:]


def dicomdir() -> bytes:
    ds = Dataset()
    ds.FileSetID = "CD"
    ds.DirectoryRecordSequence = Sequence([])
    fp = DicomBytesIO()
    fp.write(_meta_only(EXPLICIT, MediaStorageDirectoryStorage))
    return fp.getvalue() + _element(0x0004, 0x1130, b"CS", b"CD")


def truncated() -> bytes:
    data = part10(ct_dataset())
    return data[: len(data) - 100]


def truncated_in_header() -> bytes:
    data = part10(ct_dataset())
    cut = data.index(struct.pack("<HH", 0x0010, 0x0010))
    return data[: cut + 5]


def unsupported_syntax() -> bytes:
    return _meta_only("1.2.840.10008.1.2.4.100") + b"\x08\x00\x16\x00UI\x02\x001\x00"


def bad_deflate() -> bytes:
    return _meta_only(DeflatedExplicitVRLittleEndian) + b"\xff\xfe\xfd not deflate at all"


def _with_vr(data: bytes, tag: tuple[int, int], vr: bytes, bogus: bytes) -> bytes:
    at = data.index(struct.pack("<HH", *tag) + vr)
    return data[: at + 4] + bogus + data[at + 6 :]


def bogus_vr_removed() -> bytes:
    """An element the profile empties, declared with a VR DICOM does not have."""
    return _with_vr(part10(ct_dataset(AccessionNumber="ACC123")), (0x0008, 0x0050), b"SH", b"SX")


def bogus_vr_text() -> bytes:
    """Text outside the table under a made-up VR would escape the rules by VR."""
    source = ct_dataset(ManufacturerModelName="Scanner of Johnathan Doe")
    return _with_vr(part10(source), (0x0008, 0x1090), b"LO", b"LX")


def bogus_vr_binary() -> bytes:
    return _with_vr(part10(ct_dataset()), (0x0028, 0x0002), b"US", b"U\x99")


CASES = {
    "zip_bomb": (zip_bomb, {"inflation_limit"}),
    "deep_nesting": (deep_nesting, {"too_deep"}),
    "undelimited_sequence": (undelimited_sequence, {"truncated", "malformed"}),
    "four_gib_claim": (four_gib_claim, {"length_exceeds_file", "truncated"}),
    "four_gib_text": (four_gib_text, {"length_exceeds_file", "truncated", "malformed"}),
    "text_file": (lambda: b"Patient: John Doe\nDOB 1971-02-03\n" * 20, {"not_dicom"}),
    "zero_length": (lambda: b"", {"empty"}),
    "only_preamble": (lambda: b"\x00" * 128 + b"DICM", {"truncated", "malformed"}),
    "truncated_pixels": (truncated, {"truncated"}),
    "truncated_header": (truncated_in_header, {"truncated", "malformed"}),
    "dicomdir": (dicomdir, {"dicomdir"}),
    "bogus_vr_removed": (bogus_vr_removed, {"malformed"}),
    "bogus_vr_text": (bogus_vr_text, {"malformed"}),
    "bogus_vr_binary": (bogus_vr_binary, {"malformed"}),
    "unsupported_transfer_syntax": (unsupported_syntax, {"unsupported_transfer_syntax"}),
    "missing_transfer_syntax": (lambda: _no_ts(), {"missing_transfer_syntax"}),
    "bad_deflate": (bad_deflate, {"malformed", "truncated"}),
}


def _no_ts() -> bytes:
    data = _meta_only(EXPLICIT)
    marker = struct.pack("<HH", 0x0002, 0x0010)
    cut = data.index(marker)
    return data[:cut]  # meta without (0002,0010), then nothing


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_rejected_with_a_reason(name: str) -> None:
    build, codes = CASES[name]
    result = run(build())
    assert result.outcome.verdict is Verdict.REJECTED
    assert result.outcome.reason_code in codes, result.outcome.reason_code
    assert result.outcome.reason


def test_the_next_file_is_processed_normally_after_each_bad_one() -> None:
    good = part10(ct_dataset())
    for name in sorted(CASES):
        assert run(CASES[name][0]()).outcome.verdict is Verdict.REJECTED, name
        assert run(good).outcome.verdict is Verdict.DEIDENTIFIED, name


def test_forcing_is_never_used_on_a_file_without_preamble() -> None:
    ds = ct_dataset()
    data = part10(ds)[132:]  # a bare dataset, which pydicom would read with force=True
    assert run(data).outcome.reason_code == "not_dicom"


def test_the_zip_bomb_is_small_on_disk() -> None:
    data = zip_bomb()
    assert len(data) < 2 * 1024 * 1024
    assert len(data) * 100 < 512 * 1024**2  # beyond the ratio bound, not just the floor


def test_a_path_that_cannot_be_read_is_reported(tmp_path: Path) -> None:
    outcome = deidentify(tmp_path / "missing.dcm", io.BytesIO(), key=bytes(32),
                         pseudonym="P")
    assert outcome.verdict is Verdict.REJECTED and outcome.reason_code == "unreadable"
