"""Writing the de-identified file: zeroed preamble, rebuilt meta, header, streamed pixels."""

from __future__ import annotations

import struct

from pydicom.dataset import Dataset
from pydicom.filebase import ReadableBuffer, WriteableBuffer

from anonymize.encoder import encode_dataset, explicit_le_element
from anonymize.reader import PixelExtent

IMPLEMENTATION_CLASS_UID = "2.25.254780237312539180926425063926536317462"
IMPLEMENTATION_VERSION = "DONATE_DEID_1"
CHUNK = 1024 * 1024
PREAMBLE = b"\x00" * 128 + b"DICM"


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """The file meta group rebuilt from scratch (no source AE title, no source implementation),
    encoded as Explicit VR Little Endian with its group length, as PS3.10 7.1 requires."""
    body = b"".join([
        explicit_le_element(0x00020001, "OB", b"\x00\x01"),
        explicit_le_element(0x00020002, "UI", sop_class_uid),
        explicit_le_element(0x00020003, "UI", sop_instance_uid),
        explicit_le_element(0x00020010, "UI", transfer_syntax),
        explicit_le_element(0x00020012, "UI", IMPLEMENTATION_CLASS_UID),
        explicit_le_element(0x00020013, "SH", IMPLEMENTATION_VERSION),
    ])
    return explicit_le_element(0x00020000, "UL", struct.pack("<L", len(body))) + body


def copy_range(src: ReadableBuffer, dst: WriteableBuffer, start: int, end: int) -> None:
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


def write_file(dst: WriteableBuffer, meta: bytes, header: Dataset, src: ReadableBuffer,
               pixels: list[PixelExtent], tail: Dataset | None, implicit: bool,
               little_endian: bool) -> None:
    """Write a Part 10 file with a zeroed preamble (a preamble can hide an executable:
    CVE-2019-11687); pixel data elements are copied byte for byte from ``src``."""
    dst.write(PREAMBLE + meta)
    dst.write(encode_dataset(header, implicit, little_endian))
    for extent in pixels:
        copy_range(src, dst, extent.start, extent.end)
    if tail is not None and len(tail):
        dst.write(encode_dataset(tail, implicit, little_endian))
