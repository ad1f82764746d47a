"""The pseudonym, the recorded method, dates, file meta, private groups, overlays, verdicts."""

from __future__ import annotations

import datetime as dt

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    EncapsulatedPDFStorage,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
)

from anonymize import Profile, keys
from tests.anonymize.helpers import (
    BIRTH_DATE,
    KEY,
    PATIENT_ID,
    PIXELS,
    PSEUDONYM,
    ct_dataset,
    part10,
    run,
)


def test_pseudonym_replaces_name_and_id_and_birth_date_goes() -> None:
    out = run(part10(ct_dataset())).dataset
    assert out.PatientName == PSEUDONYM
    assert out.PatientID == PSEUDONYM
    assert not out.get("PatientBirthDate")
    assert out.PatientIdentityRemoved == "YES"


def test_default_profile_is_recorded_with_cid_7050_codes() -> None:
    out = run(part10(ct_dataset())).dataset
    codes = {item.CodeValue for item in out.DeidentificationMethodCodeSequence}
    assert codes == {"113100", "113107", "113108", "113105", "113111"}
    assert all(item.CodingSchemeDesignator == "DCM"
               for item in out.DeidentificationMethodCodeSequence)
    assert "Basic Application Confidentiality Profile" in out.DeidentificationMethod
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"


def test_selected_options_are_recorded_in_the_outcome() -> None:
    profile = Profile.named("basic").with_options("retain_device_id", "clean_graphics")
    result = run(part10(ct_dataset()), profile=profile)
    assert result.outcome.options == ("retain_device_id", "clean_graphics")
    assert result.dataset.LongitudinalTemporalInformationModified == "REMOVED"
    codes = [item.CodeValue for item in result.dataset.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113109", "113103"]


def test_modified_dates_shift_by_the_donors_keyed_offset() -> None:
    out = run(part10(ct_dataset(StudyDate="20200314", SeriesDate="20200315"))).dataset
    shift = keys.date_shift_days(KEY, PSEUDONYM)
    assert shift < 0
    expected = dt.date(2020, 3, 14) + dt.timedelta(days=shift)
    assert out.StudyDate == expected.strftime("%Y%m%d")
    study = dt.datetime.strptime(out.StudyDate, "%Y%m%d")
    series = dt.datetime.strptime(out.SeriesDate, "%Y%m%d")
    assert (series - study).days == 1  # intervals survive
    other = run(part10(ct_dataset(StudyDate="20200314")), pseudonym="DONOR-0002").dataset
    assert keys.date_shift_days(KEY, "DONOR-0002") != shift or other.StudyDate == out.StudyDate


def test_basic_profile_without_date_options_empties_dates() -> None:
    out = run(part10(ct_dataset()), profile=Profile.named("basic")).dataset
    assert "StudyDate" in out and not out.StudyDate


def test_file_meta_is_rebuilt_and_the_preamble_zeroed() -> None:
    ds = ct_dataset()
    data = bytearray(part10(ds))
    data[:128] = b"PHI:" + b"Doe^Johnathan".ljust(124, b"!")
    result = run(bytes(data))
    assert result.data[:128] == b"\x00" * 128
    meta = result.dataset.file_meta
    assert meta.MediaStorageSOPInstanceUID == result.dataset.SOPInstanceUID
    assert meta.ImplementationVersionName == "DONATE_DEID_1"
    assert "SourceApplicationEntityTitle" not in meta


def test_pixel_data_is_copied_byte_for_byte() -> None:
    result = run(part10(ct_dataset()))
    assert result.dataset.PixelData == PIXELS


def test_private_groups_are_removed_without_a_safe_signature() -> None:
    ds = ct_dataset()
    block = ds.private_block(0x0011, "ACME PHI STORE", create=True)
    block.add_new(0x01, "LO", "Doe^Johnathan MRN7781234")
    item = Dataset()
    item.private_block(0x0013, "ACME", create=True).add_new(0x10, "LO", PATIENT_ID)
    ds.ReferencedImageSequence = Sequence([item])
    result = run(part10(ds))
    assert b"ACME" not in result.data and PATIENT_ID.encode() not in result.data
    out = result.dataset
    assert not any(elem.tag.is_private for elem in out.iterall())


def test_safe_private_keeps_a_listed_element_and_drops_it_under_basic() -> None:
    ds = ct_dataset()
    ds.private_block(0x0009, "FDMS 1.0", create=True).add_new(0x08, "US", 3)
    kept = run(part10(ds)).dataset
    assert kept[0x00091008].value == 3  # 0009,fdms 1.0,08 is 'k' in the knowledge base
    dropped = run(part10(ds), profile=Profile.named("basic")).dataset
    assert 0x00091008 not in dropped and 0x00090010 not in dropped


def test_overlays_are_removed_unless_clean_graphics() -> None:
    ds = ct_dataset()
    ds.add_new(0x60000010, "US", 16)
    ds.add_new(0x60000011, "US", 16)
    ds.add_new(0x60004000, "LT", "Doe^Johnathan")
    ds.add_new(0x60003000, "OW", b"\x01" * 32)
    plain = run(part10(ds))
    assert not any(elem.tag.group == 0x6000 for elem in plain.dataset)
    graphics = run(part10(ds), profile=Profile.default().with_options("clean_graphics"))
    assert graphics.outcome.verdict == "needs_review"
    assert graphics.outcome.reason_code == "overlay_graphics"
    assert graphics.dataset[0x60003000].value == b"\x01" * 32


def test_curves_are_removed() -> None:
    ds = ct_dataset()
    ds.add_new(0x50003000, "OW", b"\x02" * 16)
    ds.add_new(0x50000005, "US", 2)
    out = run(part10(ds)).dataset
    assert not any(elem.tag.group == 0x5000 for elem in out)


@pytest.mark.parametrize(
    ("vr", "keyword_tag", "value"),
    [
        ("PN", 0x00111010, "Doe^Johnathan"),  # private-looking tags are covered elsewhere
        ("LO", 0x00189004, f"{PATIENT_ID} site"),
        ("LT", 0x00204000, f"patient {PATIENT_ID} born 03/02/1971 tel 555-123-4567"),
        ("DA", 0x00181202, BIRTH_DATE),
    ],
)
def test_unknown_identity_capable_values_are_treated_conservatively(
        vr: str, keyword_tag: int, value: str) -> None:
    ds = ct_dataset()
    if keyword_tag >> 16 & 1:
        ds.private_block(keyword_tag >> 16, "X", create=True).add_new(0x10, vr, value)
    else:
        ds.add_new(keyword_tag, vr, value)
    result = run(part10(ds))
    assert PATIENT_ID.encode() not in result.data
    assert b"555-123" not in result.data and BIRTH_DATE.encode() not in result.data
    assert b"Johnathan" not in result.data


def test_clean_descriptors_keep_imaging_words_and_drop_the_rest() -> None:
    descriptions = {
        "StudyDescription": ("Head CT", "Head CT"),
        "SeriesDescription": ("Axial T2 FLAIR", "Axial T2 FLAIR"),
        "ProtocolName": ("CT CHEST W CONTRAST", "CT CHEST W CONTRAST"),
        "ImageComments": ("Dr. Zbigniew Brzeczyszczykiewicz 0612345678 head CT", "head CT"),
    }
    ds = ct_dataset(**{k: v for k, (v, _) in descriptions.items()})
    ds.PerformedProcedureStepDescription = f"HEAD CT {PATIENT_ID} Johnathan j.doe@x.org"
    out = run(part10(ds)).dataset
    for keyword, (_, expected) in descriptions.items():
        assert out.get(keyword) == expected, keyword
    assert out.PerformedProcedureStepDescription == "HEAD CT"


def test_an_unknown_word_never_survives_a_clean() -> None:
    out = run(part10(ct_dataset(StudyDescription="Brain MRI Quuxlington"))).dataset
    assert out.StudyDescription == "Brain MRI"


@pytest.mark.parametrize(
    ("elements", "code"),
    [
        ({"BurnedInAnnotation": "YES"}, "burned_in_annotation"),
        ({"SOPClassUID": UltrasoundImageStorage, "Modality": "US"}, "ultrasound"),
        ({"SOPClassUID": SecondaryCaptureImageStorage, "Modality": "OT"}, "secondary_capture"),
        ({"RecognizableVisualFeatures": "YES"}, "recognizable_features"),
    ],
)
def test_risky_images_need_review_with_a_reason(elements: dict[str, str], code: str) -> None:
    result = run(part10(ct_dataset(**elements)))
    assert result.outcome.verdict == "needs_review"
    assert result.outcome.reason_code == code and result.outcome.reason
    assert result.dataset.PatientName == PSEUDONYM  # still de-identified


@pytest.mark.parametrize(
    ("sop_class", "code"),
    [
        (EncapsulatedPDFStorage, "encapsulated_document"),
        ("1.2.840.10008.5.1.4.1.1.88.11", "structured_report"),
        ("1.2.840.10008.5.1.4.1.1.66", "raw_data"),
    ],
)
def test_documents_reports_and_raw_data_are_rejected(sop_class: str, code: str) -> None:
    ds = ct_dataset(SOPClassUID=sop_class)
    del ds.PixelData
    result = run(part10(ds))
    assert result.outcome.verdict == "rejected"
    assert result.outcome.reason_code == code


@pytest.mark.parametrize("padding", ["\t", "\r\n", "\n", " \x00"])
def test_an_identifier_padded_with_whitespace_is_still_found_in_kept_text(padding: str) -> None:
    ds = ct_dataset(ImageType=["ORIGINAL", "PRIMARY", PATIENT_ID])  # CS: only own IDs go
    ds.PatientID = PATIENT_ID + padding
    result = run(part10(ds))
    assert PATIENT_ID.encode() not in result.data
