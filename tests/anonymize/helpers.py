"""Building DICOM inputs in memory and de-identifying them (no database is needed)."""

from __future__ import annotations

import io
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian

from anonymize import Outcome, Profile, deidentify

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
PSEUDONYM = "DONOR-0001"
# The planted patient: every test that looks for leaks looks for these.
PATIENT_NAME = "Doe^Johnathan"
PATIENT_ID = "MRN7781234"
BIRTH_DATE = "19710203"
PIXELS = bytes(range(256)) * 2  # 16x16, 16 bit


def ct_dataset(**elements: object) -> Dataset:
    """A small, valid CT image with PHI in the usual places; ``elements`` by keyword."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.9.7781.3.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.9.7781.1"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.9.7781.2"
    ds.Modality = "CT"
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH_DATE
    ds.StudyDate = "20200314"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 16
    ds.Columns = 16
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.PixelData = PIXELS
    return ds


def part10(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    """``ds`` as a Part 10 file with a fresh file meta group (written element by element, so
    inputs may hold what ``dcmwrite`` refuses, such as command group elements)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", CTImageStorage)
    meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "1.2.3.4")
    meta.TransferSyntaxUID = transfer_syntax
    uid = UID(transfer_syntax)
    fp = DicomBytesIO()
    fp.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(fp, meta, enforce_standard=True)
    fp.is_implicit_VR = uid.is_implicit_VR
    fp.is_little_endian = uid.is_little_endian
    write_dataset(fp, ds)
    return fp.getvalue()


@dataclass
class Result:
    outcome: Outcome
    data: bytes

    @property
    def dataset(self) -> Dataset:
        return dcmread(io.BytesIO(self.data))


def run(data: bytes, *, key: bytes = KEY, profile: Profile | None = None,
        pseudonym: str = PSEUDONYM) -> Result:
    """De-identify ``data`` (bytes of a file) in memory."""
    out = io.BytesIO()
    outcome = deidentify(io.BytesIO(data), out, key=key, pseudonym=pseudonym, profile=profile)
    return Result(outcome, out.getvalue())
