"""Writing the de-identified file: zeroed preamble, rebuilt meta, header, streamed pixels."""

from __future__ import annotations

from typing import BinaryIO

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_dataset, write_file_meta_info

from anonymize.reader import PixelExtent

IMPLEMENTATION_CLASS_UID = "2.25.254780237312539180926425063926536317462"
IMPLEMENTATION_VERSION = "DONATE_DEID_1"
CHUNK = 1024 * 1024


def build_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> FileMetaDataset:
    """File meta rebuilt from scratch: no source AE title, no source implementation."""
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    return meta


def copy_range(src: BinaryIO, dst: BinaryIO, start: int, end: int) -> None:
    """Copy bytes [start, end) of ``src`` to ``dst`` in bounded chunks."""
    if hasattr(src, "getbuffer"):
        with src.getbuffer() as buffer:
            dst.write(buffer[start:end])
        return
    src.seek(start)
    remaining = end - start
    while remaining > 0:
        chunk = src.read(min(CHUNK, remaining))
        if not chunk:
            raise OSError("source ended early")
        dst.write(chunk)
        remaining -= len(chunk)


def write_file(dst: BinaryIO, meta: FileMetaDataset, header: Dataset, src: BinaryIO,
               pixels: list[PixelExtent], tail: Dataset | None, implicit: bool,
               little_endian: bool) -> None:
    """Write a Part 10 file; pixel data elements are copied byte for byte from ``src``."""
    fp = DicomFileLike(dst)
    fp.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(fp, meta, enforce_standard=True)
    fp.is_implicit_VR = implicit
    fp.is_little_endian = little_endian
    write_dataset(fp, header)
    for extent in pixels:
        copy_range(src, dst, extent.start, extent.end)
    if tail is not None and len(tail):
        write_dataset(fp, tail)
