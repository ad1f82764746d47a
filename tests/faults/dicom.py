"""Generated multi-frame DICOM files of a chosen size (a CT header with PHI, random pixels).

Written frame by frame, so a file of hundreds of MiB never sits in memory.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import BinaryIO

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import EnhancedCTImageStorage, ExplicitVRLittleEndian

ROOT = "1.2.826.0.1.3680043.9.7781"


def _header(rows: int, columns: int, frames: int, number: int) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = f"{ROOT}.3.{number}"
    ds.StudyInstanceUID = f"{ROOT}.1.{number}"
    ds.SeriesInstanceUID = f"{ROOT}.2.{number}"
    ds.StudyDate = ds.ContentDate = "20230412"
    ds.Modality = "CT"
    ds.PatientName = "Doe^Johnathan"
    ds.PatientID = "MRN7781234"
    ds.PatientBirthDate = "19710203"
    ds.PatientSex = "M"
    ds.InstitutionName = "St. Example Hospital"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.NumberOfFrames = frames
    return ds


def write_multiframe(
    out: BinaryIO, mib: float, *, number: int = 1, rows: int = 256, columns: int = 256
) -> int:
    """Write a Part 10 file of about ``mib`` MiB to ``out``; returns its size."""
    frame_bytes = rows * columns * 2
    frames = max(1, int(mib * 2**20) // frame_bytes)
    ds = _header(rows, columns, frames, number)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    start = out.tell()
    fp = DicomFileLike(out)
    fp.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(fp, meta, enforce_standard=True)
    fp.is_implicit_VR, fp.is_little_endian = False, True
    write_dataset(fp, ds)
    length = frames * frame_bytes
    out.write(b"\xe0\x7f\x10\x00OW\x00\x00" + length.to_bytes(4, "little"))
    chunk = bytearray(os.urandom(frame_bytes))
    for index in range(frames):
        chunk[:4] = index.to_bytes(4, "little")  # every frame differs a little
        out.write(chunk)
    return out.tell() - start


def multiframe_bytes(mib: float, *, number: int = 1) -> bytes:
    buffer = io.BytesIO()
    write_multiframe(buffer, mib, number=number)
    return buffer.getvalue()


def multiframe_file(path: Path, mib: float, *, number: int = 1) -> tuple[int, str]:
    """Write the file; returns its size and SHA-256."""
    with open(path, "wb") as handle:
        size = write_multiframe(handle, mib, number=number, rows=512, columns=512)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return size, digest.hexdigest()
