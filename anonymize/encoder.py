"""Encoding the de-identified header: the bytes pydicom writes, without its per-element cost.

pydicom's ``write_dataset`` spends about 10 microseconds on every element (a buffer per element,
VR dispatch, encoding checks), which is most of the time a header takes to write. Most elements
of a de-identified header are kept exactly as read, so here:

* an element still in its raw form (read from the input, not changed) is written as its bytes;
* a sequence recurses; its items are written with a defined length, as pydicom does;
* a changed string value in the default repertoire (AE, AS, CS, DA, DT, TM, UI, UR), or an
  ASCII text value under a single-byte or UTF-8 character set, is encoded here;
* everything else (numbers, person names, bytes, DS/IS, other character sets, values too long
  for a 16-bit length, any dataset pydicom would re-encode) is written by pydicom itself.

The result is byte for byte what ``pydicom.filewriter.write_dataset`` writes;
``tests/anonymize/test_encoder.py`` holds that on real files and on generated datasets.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR

ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI", "UR"})
TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UC", "UT"})
ASCII_TEXT_CODECS = frozenset({"iso8859", "latin_1", "UTF8"})  # pydicom's names
KNOWN_VRS = frozenset(str(vr) for vr in VR)
LONG_VRS = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)
UNDEFINED = 0xFFFFFFFF
ITEM_LE, ITEM_BE = b"\xfe\xff\x00\xe0", b"\xff\xfe\xe0\x00"
ITEM_END_LE, ITEM_END_BE = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00", b"\xff\xfe\xe0\x0d\x00\x00\x00\x00"
SEQ_END_LE, SEQ_END_BE = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00", b"\xff\xfe\xe0\xdd\x00\x00\x00\x00"


class _Encoder:
    """Encodes datasets for one transfer syntax (implicit or explicit VR, either byte order)."""

    def __init__(self, implicit: bool, little_endian: bool) -> None:
        self.implicit = implicit
        self.little = little_endian
        order = "<" if little_endian else ">"
        self.tag = struct.Struct(order + "HH").pack
        self.ul = struct.Struct(order + "L").pack
        self.us = struct.Struct(order + "H").pack
        self.item = ITEM_LE if little_endian else ITEM_BE
        self.item_end = ITEM_END_LE if little_endian else ITEM_END_BE
        self.seq_end = SEQ_END_LE if little_endian else SEQ_END_BE

    def header(self, tag: int, vr: str, length: int) -> bytes:
        """Tag, VR (explicit only) and length field of one element."""
        head = self.tag(tag >> 16, tag & 0xFFFF)
        if self.implicit:
            return head + self.ul(length)
        if vr in LONG_VRS:
            return head + vr.encode("ascii") + b"\x00\x00" + self.ul(length)
        return head + vr.encode("ascii") + self.us(length)

    def dataset(self, ds: Dataset, parent_encoding: str | list[str]) -> bytes:
        if self._pydicom_would_reencode(ds):
            return self._by_pydicom(ds, parent_encoding)
        encoding = ds.get("SpecificCharacterSet", parent_encoding)
        ascii_text = _ascii_text_charset(encoding)
        parts: list[bytes] = []
        for tag in sorted(ds.keys()):
            if tag & 0xFFFF == 0 and tag >> 16 > 6:
                continue  # retired group length (PS3.5 7.2), as pydicom skips it
            parts.append(self.element(ds.get_item(tag), encoding, ascii_text))
        return b"".join(parts)

    def element(self, elem: DataElement | RawDataElement, encoding: str | list[str],
                ascii_text: bool) -> bytes:
        if isinstance(elem, RawDataElement):  # is_raw: only a RawDataElement has it set
            raw_vr, raw = elem.VR, elem.value
            if (isinstance(raw, bytes) and elem.length != UNDEFINED
                    and (raw_vr in KNOWN_VRS or (raw_vr is None and self.implicit))
                    and (self.implicit or raw_vr in LONG_VRS or len(raw) <= 0xFFFF)):
                return self.header(elem.tag, raw_vr or "", len(raw)) + raw
            return self._element_by_pydicom(elem, encoding)
        vr = elem.VR
        if vr == "SQ":
            return self.sequence(elem, encoding)
        value = _fast_string(elem.value, vr, ascii_text)
        if value is None or (not self.implicit and vr not in LONG_VRS and len(value) > 0xFFFF):
            return self._element_by_pydicom(elem, encoding)
        return self.header(elem.tag, vr, len(value)) + value

    def sequence(self, elem: DataElement, encoding: str | list[str]) -> bytes:
        value = self.items(elem.value, encoding)
        if elem.is_undefined_length:
            return self.header(elem.tag, "SQ", UNDEFINED) + value + self.seq_end
        return self.header(elem.tag, "SQ", len(value)) + value

    def items(self, items: Iterable[Dataset], encoding: str | list[str]) -> bytes:
        encodings = convert_encodings(encoding)  # what pydicom hands to the items
        parts = []
        for item in items:
            body = self.dataset(item, encodings)
            if getattr(item, "is_undefined_length_sequence_item", False):
                parts.append(self.item + self.ul(UNDEFINED) + body + self.item_end)
            else:
                parts.append(self.item + self.ul(len(body)) + body)
        return b"".join(parts)

    def _pydicom_would_reencode(self, ds: Dataset) -> bool:
        """pydicom converts raw elements and corrects ambiguous VRs (recursively) when the
        dataset was read with another encoding or its character set changed."""
        if (ds.original_encoding == (self.implicit, self.little)
                and ds.original_character_set == ds._character_set):
            return False
        return _holds_raw_or_ambiguous(ds)

    def _fp(self) -> DicomBytesIO:
        fp = DicomBytesIO()
        fp.is_implicit_VR = self.implicit
        fp.is_little_endian = self.little
        return fp

    def _by_pydicom(self, ds: Dataset, parent_encoding: str | list[str]) -> bytes:
        fp = self._fp()
        write_dataset(fp, ds, parent_encoding)
        return fp.getvalue()

    def _element_by_pydicom(self, elem: DataElement | RawDataElement,
                            encoding: str | list[str]) -> bytes:
        fp = self._fp()
        write_data_element(fp, elem, encoding)
        return fp.getvalue()


def _ascii_text_charset(encoding: str | list[str]) -> bool:
    """True when ASCII text encodes as itself: one single-byte ISO 8859 charset or UTF-8."""
    codecs = convert_encodings(encoding)
    return len(codecs) == 1 and codecs[0] in ASCII_TEXT_CODECS


def _holds_raw_or_ambiguous(ds: Dataset) -> bool:
    for tag in ds.keys():  # noqa: SIM118 - iterating a Dataset converts its raw elements
        elem = ds.get_item(tag)
        if elem.is_raw or (elem.VR and " or " in elem.VR):
            return True
        if elem.VR == "SQ" and any(_holds_raw_or_ambiguous(item) for item in elem.value):
            return True
    return False


def _fast_string(value: object, vr: str, ascii_text: bool) -> bytes | None:
    """The encoded, padded value of a plain string element; None when pydicom must do it."""
    if vr in ASCII_VRS:
        text = _joined(value)
        if text is None:
            return None
        if len(text) % 2:
            text += "\0" if vr == "UI" else " "
        try:
            return text.encode("latin-1")
        except UnicodeEncodeError:
            return None
    if vr in TEXT_VRS and ascii_text:
        text = _joined(value)
        if text is None or not text.isascii():
            return None
        data = text.encode("ascii")
        return data + b" " if len(data) % 2 else data
    return None


def _joined(value: object) -> str | None:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, MultiValue | list | tuple) and all(isinstance(v, str) for v in value):
        return "\\".join(value)
    return None


_EXPLICIT_LE = _Encoder(False, True)


def explicit_le_element(tag: int, vr: str, value: str | bytes) -> bytes:
    """One element in Explicit VR Little Endian (the file meta encoding), padded as pydicom
    pads: UI with a NUL, other strings with a space, bytes with a NUL."""
    data = value if isinstance(value, bytes) else value.encode("latin-1")
    if len(data) % 2:
        data += b"\0" if vr == "UI" or isinstance(value, bytes) else b" "
    return _EXPLICIT_LE.header(tag, vr, len(data)) + data


def encode_dataset(ds: Dataset, implicit: bool, little_endian: bool) -> bytes:
    """The encoded dataset, as ``pydicom.filewriter.write_dataset`` would write it."""
    return _Encoder(implicit, little_endian).dataset(ds, "iso8859")


def encode_items(items: Iterable[Dataset], implicit: bool, little_endian: bool) -> bytes:
    """The value of a sequence element holding ``items`` (each with a defined length)."""
    return _Encoder(implicit, little_endian).items(items, "iso8859")
