"""Real files (pydicom's test data) carrying one invented patient's identifiers.

The identifiers are planted where the profile removes them by rule (replaced, emptied,
removed, cleaned against the allow-list, remapped), at the top level, in sequence items and
in a private block of an unknown creator; :data:`FORBIDDEN` is what must never come out.
"""

from __future__ import annotations

import functools
import io
import warnings

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage

# Explicit and Implicit VR Little Endian, Explicit VR Big Endian, encapsulated JPEG 2000.
SOURCES = ("CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm")
FAMILY, GIVEN = "Zebedee", "Quirinius"
PATIENT_ID = "QZ90412787"
BIRTH_DATE = "19610817"
PHONE = "+44 20 7946 0321"
EMAIL = "quirinius@zebedee-clinic.org"
UID_ROOT = "1.2.826.0.1.3680043.9.90412787"
# Other people and places, unrelated to the patient's name: only rules remove them.
PHYSICIAN = ("Wrexford", "Ottoline")
STREET = "Pemberley"
INSTITUTION = "Ashcombe"
REQUEST_ID = "RQ55832914"
FORBIDDEN = [
    form(value).encode()
    for value in (FAMILY, GIVEN, PATIENT_ID, BIRTH_DATE, "17/08/1961", "7946 0321", EMAIL,
                  UID_ROOT, *PHYSICIAN, STREET, INSTITUTION, REQUEST_ID)
    for form in (str.upper, str.lower, str.title)
]


def _item(**elements: object) -> Dataset:
    item = Dataset()
    for keyword, value in elements.items():
        setattr(item, keyword, value)
    return item


def plant(ds: Dataset) -> None:
    """Write the patient into ``ds``."""
    ds.PatientName = f"{FAMILY}^{GIVEN}"
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH_DATE
    ds.PatientAddress = f"12 {STREET} Lane"
    ds.PatientTelephoneNumbers = PHONE
    ds.OtherPatientIDs = f"{PATIENT_ID}B"
    ds.ReferringPhysicianName = "^".join(PHYSICIAN)
    ds.InstitutionName = f"{INSTITUTION} Infirmary"
    ds.AccessionNumber = PATIENT_ID
    ds.StudyID = PATIENT_ID[:16]
    ds.StudyDescription = f"Head CT for Dr {PHYSICIAN[0]}"
    ds.ImageComments = f"call {PHONE} or {EMAIL}, born 17/08/1961"
    ds.StudyInstanceUID = f"{UID_ROOT}.1"
    ds.SeriesInstanceUID = f"{UID_ROOT}.2"
    ds.SOPInstanceUID = f"{UID_ROOT}.3"
    ds.FrameOfReferenceUID = f"{UID_ROOT}.4"
    ds.ReferencedStudySequence = Sequence([
        _item(ReferencedSOPClassUID=CTImageStorage, ReferencedSOPInstanceUID=f"{UID_ROOT}.1")])
    ds.OtherPatientIDsSequence = Sequence([
        _item(PatientID=PATIENT_ID, IssuerOfPatientID=f"{INSTITUTION} Infirmary")])
    ds.RequestAttributesSequence = Sequence([
        _item(RequestedProcedureID=REQUEST_ID, ScheduledProcedureStepID=REQUEST_ID,
              ScheduledProcedureStepDescription=f"{STREET} outpatients")])
    block = ds.private_block(0x0013, f"{INSTITUTION} PACS", create=True)
    block.add_new(0x10, "LO", f"{STREET} ward, {PHYSICIAN[1]}")
    block.add_new(0x11, "UN", f"{PATIENT_ID} {EMAIL}".encode())


@functools.cache
def planted_file(name: str) -> bytes:
    """The shipped file ``name`` with the patient planted, in its own transfer syntax."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(get_testdata_file(name))
        plant(ds)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
