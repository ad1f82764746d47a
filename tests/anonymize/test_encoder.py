"""The fast header encoder writes exactly the bytes pydicom writes."""

from __future__ import annotations

import io
import os
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.sequence import Sequence

from anonymize import Profile, writer
from anonymize.encoder import encode_dataset
from tests.anonymize.helpers import ct_dataset, part10, run
from tests.anonymize.test_pydicom_files import FILES


def pydicom_encoding(ds: Dataset, implicit: bool, little_endian: bool) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR = implicit
    fp.is_little_endian = little_endian
    write_dataset(fp, ds)
    return fp.getvalue()


def _read(path: str) -> Dataset | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - files pydicom cannot read are not this test's subject
            return None


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_a_dataset_as_read_encodes_as_pydicom_writes_it(path: str) -> None:
    ds = _read(path)
    if ds is None or None in ds.original_encoding:
        pytest.skip("pydicom cannot read this file")
    implicit, little = ds.original_encoding
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            expected = pydicom_encoding(ds, implicit, little)
        except Exception:  # noqa: BLE001 - pydicom refuses to write it; so must we
            with pytest.raises(Exception):  # noqa: B017, PT011
                encode_dataset(ds, implicit, little)
            return
        assert encode_dataset(ds, implicit, little) == expected


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
@pytest.mark.parametrize("profile", ["default", "basic"])
def test_a_deidentified_file_is_byte_identical_to_pydicoms_encoding(
        path: str, profile: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with open(path, "rb") as handle:
        source = handle.read()
    chosen = Profile.named(profile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = run(source, profile=chosen)
        monkeypatch.setattr(writer, "encode_dataset", pydicom_encoding)
        slow = run(source, profile=chosen)
    assert fast.outcome == slow.outcome
    assert fast.data == slow.data


ASCII = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="\\"),
                max_size=40)
LATIN = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\\"),
                max_size=40)
VALUES = {
    "AE": st.text("ABCDEFGHIJ_0123", max_size=16),
    "CS": st.lists(st.text("ABCDEFZ_ 019", max_size=16), max_size=3),
    "DA": st.sampled_from(["", "20200101", "19000101", "20231231"]),
    "TM": st.sampled_from(["", "101500", "101500.123", "0915"]),
    "UI": st.sampled_from(["", "1.2.3", "1.2.840.10008.5.1.4.1.1.2", "2.25.12345678901"]),
    "LO": st.lists(LATIN, max_size=3),
    "SH": ASCII.map(lambda s: s[:16]),
    "LT": LATIN,
    "UT": ASCII,
    "PN": st.sampled_from(["", "Doe^John", "ANON"]),
    "US": st.integers(0, 65535),
    "DS": st.sampled_from(["1.5", "0", "-1024"]),
}
# (tag, VR) pairs from the data dictionary, one per VR above
TAGS = {
    "AE": 0x00080054, "CS": 0x00080008, "DA": 0x00080020, "TM": 0x00080030, "UI": 0x00081155,
    "LO": 0x00081030, "SH": 0x00080050, "LT": 0x00204000, "UT": 0x00180010, "PN": 0x00080090,
    "US": 0x00280010, "DS": 0x00281050,
}


@st.composite
def datasets(draw: st.DrawFn, depth: int = 0) -> Dataset:
    ds = Dataset()
    if depth == 0 and draw(st.booleans()):
        ds.SpecificCharacterSet = draw(st.sampled_from(["ISO_IR 100", "ISO_IR 192", "ISO_IR 144"]))
    for vr in draw(st.lists(st.sampled_from(sorted(TAGS)), unique=True, max_size=8)):
        value = draw(VALUES[vr])
        ds.add_new(TAGS[vr], vr, value)
    if depth < 2 and draw(st.booleans()):
        ds.ReferencedImageSequence = Sequence(draw(st.lists(datasets(depth + 1), max_size=3)))
    return ds


@settings(max_examples=150, deadline=None)
@given(ds=datasets(), implicit=st.booleans(), little=st.booleans())
def test_generated_datasets_encode_as_pydicom_writes_them(ds: Dataset, implicit: bool,
                                                           little: bool) -> None:
    if implicit and not little:
        little = True  # implicit VR big endian is not a DICOM transfer syntax
    try:
        expected = pydicom_encoding(ds, implicit, little)
    except Exception:  # noqa: BLE001 - e.g. text the character set cannot encode
        with pytest.raises(Exception):  # noqa: B017, PT011
            encode_dataset(ds, implicit, little)
        return
    assert encode_dataset(ds, implicit, little) == expected


@settings(max_examples=100, deadline=None)
@given(ds=datasets())
def test_read_then_changed_datasets_encode_as_pydicom_writes_them(ds: Dataset) -> None:
    """Raw elements read from a file next to values set afterwards, as de-identification
    leaves them."""
    source = ct_dataset(StudyDescription="CT CHEST", ImageComments="kept as read")
    read = dcmread(io.BytesIO(part10(source)), stop_before_pixels=True)
    for elem in ds:
        read.add(elem)
    expected = pydicom_encoding(read, False, True)
    assert encode_dataset(read, False, True) == expected


UIDS = st.from_regex(r"\A[12](\.[1-9][0-9]{0,8}){1,6}\Z")  # at most 62 characters


@settings(max_examples=100, deadline=None)
@given(sop_class=UIDS, sop_instance=UIDS,
       transfer_syntax=st.sampled_from(["1.2.840.10008.1.2", "1.2.840.10008.1.2.1",
                                        "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.2"]))
def test_the_file_meta_group_is_encoded_as_pydicom_writes_it(
        sop_class: str, sop_instance: str, transfer_syntax: str) -> None:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = writer.IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = writer.IMPLEMENTATION_VERSION
    fp = DicomBytesIO()
    write_file_meta_info(fp, meta, enforce_standard=True)
    assert writer.file_meta(sop_class, sop_instance, transfer_syntax) == fp.getvalue()
