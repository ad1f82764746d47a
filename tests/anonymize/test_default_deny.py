"""Default deny: what the engine does not recognise is removed, what it cannot trust rejected.

Each input is a valid file with one thing changed the way damage or a fuzzer changes it (a tag
the dictionary does not know, a VR that contradicts it, a length that swallows the next
element, an element out of order), carrying a value that must not come out.
"""

from __future__ import annotations

import struct

import pytest
from pydicom.dataelem import DataElement
from pydicom.uid import ImplicitVRLittleEndian

from anonymize import Profile, Verdict
from tests.anonymize.helpers import PIXELS, ct_dataset, part10, run

SECRET = "Ashcombe Infirmary"
SECRET_BYTES = SECRET.encode()


def _element(group: int, element: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    """One Explicit VR Little Endian element, with its true length unless told otherwise."""
    size = len(value) if length is None else length
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"UC", b"UR"):
        return struct.pack("<HH2sHL", group, element, vr, 0, size) + value
    return struct.pack("<HH2sH", group, element, vr, size) + value


def _insert_before(data: bytes, tag: tuple[int, int], extra: bytes) -> bytes:
    """``extra`` placed just before the element ``tag`` of an Explicit VR LE file."""
    at = data.index(struct.pack("<HH", *tag))
    return data[:at] + extra + data[at:]


def _kept(data: bytes) -> bytes:
    result = run(data)
    assert result.outcome.verdict is not Verdict.REJECTED, result.outcome.reason_code
    return result.data


def _rejected(data: bytes) -> str | None:
    result = run(data)
    assert result.outcome.verdict is Verdict.REJECTED
    return result.outcome.reason_code


@pytest.mark.parametrize("tag", [0x001069F2, 0x00106BE0, 0x00320050, 0x0040F069, 0x4000D512])
def test_an_unknown_public_tag_is_removed(tag: int) -> None:
    ds = ct_dataset()
    ds[tag] = DataElement(tag, "LO", SECRET)
    result = run(part10(ds))
    assert tag not in result.dataset
    assert SECRET_BYTES not in result.data


def test_an_unknown_public_tag_after_the_pixel_data_is_removed() -> None:
    data = part10(ct_dataset()) + _element(0x7FE0, 0x1030, b"LO", SECRET_BYTES)
    assert SECRET_BYTES not in _kept(data)


def test_a_retired_attribute_that_can_hold_text_is_removed_and_one_of_numbers_kept() -> None:
    ds = ct_dataset()
    ds.add_new(0x00181017, "LO", SECRET)  # Hardcopy Device Manufacturer (retired)
    ds.add_new(0x00280005, "US", 2)  # Image Dimensions (retired)
    out = run(part10(ds)).dataset
    assert 0x00181017 not in out
    assert out[0x00280005].value == 2


def test_a_private_element_without_a_creator_is_removed() -> None:
    ds = ct_dataset()
    ds.add_new(0x00091001, "LO", SECRET)  # GEMS_IDEN_01's safe 0x01, but no creator slot
    assert SECRET_BYTES not in _kept(part10(ds))


@pytest.mark.parametrize("creator", [SECRET, "GEMS_IDEN_01\\Zebedee", ""])
def test_a_creator_slot_holding_anything_but_a_known_creator_is_removed(creator: str) -> None:
    ds = ct_dataset()
    ds.add_new(0x00090010, "LO", creator)
    ds.add_new(0x00091001, "LO", "FULL FIDELITY")
    out = run(part10(ds)).dataset
    assert 0x00090010 not in out and 0x00091001 not in out
    assert b"Zebedee" not in part10(out) and SECRET_BYTES not in part10(out)


def test_a_known_safe_creator_keeps_its_listed_element() -> None:
    ds = ct_dataset()
    ds.private_block(0x0009, "GEMS_IDEN_01", create=True).add_new(0x01, "LO", "FULL FIDELITY")
    out = run(part10(ds)).dataset
    assert out[0x00090010].value == "GEMS_IDEN_01"
    assert out[0x00091001].value == "FULL FIDELITY"


def test_text_declared_as_bytes_where_the_dictionary_says_text_is_removed() -> None:
    ds = ct_dataset()
    ds[0x00081090] = DataElement(0x00081090, "OB", SECRET_BYTES)  # Manufacturer's Model Name
    result = run(part10(ds))
    assert 0x00081090 not in result.dataset
    assert SECRET_BYTES not in result.data


def test_text_declared_where_the_dictionary_says_numbers_is_removed() -> None:
    ds = ct_dataset()
    ds[0x00189087] = DataElement(0x00189087, "LO", SECRET)  # Diffusion b-value, FD
    result = run(part10(ds))
    assert 0x00189087 not in result.dataset
    assert SECRET_BYTES not in result.data


@pytest.mark.parametrize(("tag", "vr", "value"), [
    (0x00080060, "PN", "Wrexford^Ottoline"),  # Modality, CS: a name is not a code
    (0x00541001, "SH", "RQ55832914"),  # Units, CS
    (0x00180050, "LO", SECRET),  # Slice Thickness, DS
])
def test_text_declared_with_another_text_vr_is_removed(tag: int, vr: str, value: str) -> None:
    ds = ct_dataset()
    ds[tag] = DataElement(tag, vr, value)
    result = run(part10(ds))
    assert tag not in result.dataset
    assert value.encode() not in result.data


def test_a_value_declared_unknown_takes_the_dictionarys_vr() -> None:
    data = _insert_before(part10(ct_dataset()), (0x0020, 0x000D),
                          _element(0x0018, 0x9087, b"UN", struct.pack("<d", 1000.0)))
    assert run(data).dataset[0x00189087].value == 1000.0  # Diffusion b-value, FD


@pytest.mark.parametrize(("tag", "vr", "value", "before"), [
    ((0x0020, 0x0050), b"DS", b"1.2.826.0.1.3680043.9.7781.5 ", (0x0028, 0x0002)),  # Location
    ((0x0020, 0x0050), b"DS", b"+44 20 7946 0321", (0x0028, 0x0002)),
    ((0x0008, 0x0064), b"CS", b"Wrexford^Ottoline ", (0x0010, 0x0010)),  # Conversion Type
])
def test_a_value_without_the_form_of_its_vr_is_removed(
        tag: tuple[int, int], vr: bytes, value: bytes, before: tuple[int, int]) -> None:
    data = _insert_before(part10(ct_dataset()), before, _element(*tag, vr, value))
    result = run(data)
    assert (tag[0] << 16 | tag[1]) not in result.dataset
    assert value.strip() not in result.data


def test_codes_numbers_and_ages_are_kept_as_they_are() -> None:
    ds = ct_dataset(PatientAge="045Y", SliceThickness="1.25", PixelSpacing=["0.5", "-.5E-1"],
                    ImageType=["ORIGINAL", "PRIMARY", "AXIAL_2"])
    out = run(part10(ds)).dataset
    assert (out.PatientAge, out.SliceThickness) == ("045Y", 1.25)
    assert out.ImageType == ["ORIGINAL", "PRIMARY", "AXIAL_2"]
    assert out.PixelSpacing == [0.5, -0.05]


def test_a_text_whose_length_swallows_the_next_element_rejects_the_file() -> None:
    ds = ct_dataset(InstitutionName=SECRET, Manufacturer="ACME")
    data = part10(ds)
    manufacturer = data.index(struct.pack("<HH", 0x0008, 0x0070) + b"LO")
    swallowed = len(_element(0x0008, 0x0080, b"LO", b"Ashcombe Infirmary"))
    length = struct.pack("<H", len(b"ACME") + swallowed)
    data = data[:manufacturer + 6] + length + data[manufacturer + 8:]
    assert _rejected(data) == "malformed"


def test_binary_numbers_whose_length_is_not_whole_values_reject_the_file() -> None:
    data = _insert_before(part10(ct_dataset()), (0x0028, 0x0002),
                          _element(0x0018, 0x9087, b"FD", b"\x00" * 10))
    assert _rejected(data) == "malformed"


def test_binary_numbers_beyond_their_multiplicity_reject_the_file() -> None:
    data = _insert_before(part10(ct_dataset()), (0x0028, 0x0002),
                          _element(0x0018, 0x9087, b"FD", b"\x00" * 16))  # VM 1
    assert _rejected(data) == "malformed"


def test_an_element_out_of_tag_order_rejects_the_file() -> None:
    data = _insert_before(part10(ct_dataset()), (0x0028, 0x0002),
                          _element(0x0018, 0x1000, b"LO", SECRET_BYTES))
    ordered = _insert_before(part10(ct_dataset()), (0x0020, 0x000D),
                             _element(0x0018, 0x1000, b"LO", SECRET_BYTES))
    assert _rejected(data) == "malformed"
    assert run(ordered).outcome.verdict is Verdict.DEIDENTIFIED


def test_an_element_after_the_pixel_data_with_a_lower_tag_rejects_the_file() -> None:
    data = part10(ct_dataset()) + _element(0x0010, 0x1040, b"LO", SECRET_BYTES)
    assert _rejected(data) == "malformed"


def test_an_item_where_an_element_should_be_rejects_the_file() -> None:
    data = part10(ct_dataset(), ImplicitVRLittleEndian)
    at = data.index(struct.pack("<HH", 0x0028, 0x0002))
    item = struct.pack("<HHL", 0xFFFE, 0xE000, len(SECRET_BYTES)) + SECRET_BYTES
    assert _rejected(data[:at] + item + data[at:]) == "malformed"


def test_pixel_data_with_a_vr_it_cannot_have_rejects_the_file() -> None:
    data = part10(ct_dataset())
    at = data.index(struct.pack("<HH", 0x7FE0, 0x0010) + b"OW")
    assert _rejected(data[:at + 4] + b"UV" + data[at + 6:]) == "malformed"


def test_pixel_data_without_its_pixel_representation_is_rejected() -> None:
    ds = ct_dataset()
    ds.add_new(0x00280106, "US", 0)  # Smallest Image Pixel Value: US or SS, by the latter
    del ds.PixelRepresentation
    result = run(part10(ds, ImplicitVRLittleEndian))
    assert result.outcome.reason_code == "pixel_geometry"


def test_an_unknown_overlay_element_is_removed_even_with_clean_graphics() -> None:
    ds = ct_dataset()
    ds.add_new(0x60000010, "US", 16)
    ds.add_new(0x60000011, "US", 16)
    ds.add_new(0x60001234, "LO", SECRET)
    ds.add_new(0x60003000, "OW", b"\x01" * 32)
    result = run(part10(ds), profile=Profile.default().with_options("clean_graphics"))
    assert 0x60001234 not in result.dataset
    assert result.dataset[0x60003000].value == b"\x01" * 32
    assert SECRET_BYTES not in result.data and result.dataset.PixelData == PIXELS
