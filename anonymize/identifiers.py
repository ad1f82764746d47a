"""This patient's own identifiers, gathered from the header before anything is changed.

They are removed wherever they appear in text that is otherwise kept (descriptions, technical
strings, kept private values). Names are split into their parts; dates are added in the common
written forms.
"""

from __future__ import annotations

import re
import string

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

NAME_TAGS = (
    0x00100010,  # Patient's Name
    0x00101001,  # Other Patient Names
    0x00101005,  # Patient's Birth Name
    0x00101060,  # Patient's Mother's Birth Name
    0x00080090,  # Referring Physician's Name
    0x00081050,  # Performing Physician's Name
    0x00081060,  # Name of Physician(s) Reading Study
    0x00081070,  # Operators' Name
    0x00080092,  # Referring Physician's Address
    0x00081048,  # Physician(s) of Record
    0x00321032,  # Requesting Physician
    0x00101040,  # Patient's Address
    0x00102154,  # Patient's Telephone Numbers
    0x00380300,  # Current Patient Location
)
ID_TAGS = (
    0x00100020,  # Patient ID
    0x00101000,  # Other Patient IDs
    0x00080050,  # Accession Number
    0x00200010,  # Study ID
    0x00101090,  # Medical Record Locator
    0x00380010,  # Admission ID
    0x00401001,  # Requested Procedure ID
    0x00400253,  # Performed Procedure Step ID
    0x00400009,  # Scheduled Procedure Step ID
    0x00102155,  # Patient's Telecom Information
)
DATE_TAGS = (0x00100030,)  # Patient's Birth Date
MIN_PART = 2
_PADDING = string.whitespace + "\x00"  # a value padded with tabs or CR/LF is still this value
_SPLIT = re.compile(r"[\^=,\s\\]+")


def _strings(ds: Dataset, tag: int, simple_charset: bool) -> list[str]:
    elem = ds.get_item(tag, keep_deferred=True)
    if elem is None or elem.VR == "SQ":
        return []
    if simple_charset and isinstance(elem, RawDataElement) and isinstance(elem.value, bytes):
        # a single-byte character set: the raw bytes are the text, no conversion needed
        out = elem.value.decode("latin-1").split("\\")
    else:
        value = ds[tag].value
        if value is None:
            return []
        # Only a multi-valued element is a list: a PersonName is iterable too, but one value.
        values = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
        out = [v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in values]
    return [v for v in (text.strip(_PADDING) for text in out) if v]


def _useful_part(part: str) -> bool:
    """Name parts of two letters count; short numbers (house numbers) would hit too much."""
    if part.isdigit():
        return len(part) >= 4
    return len(part) >= MIN_PART


def _date_forms(value: str) -> list[str]:
    if not re.fullmatch(r"\d{8}", value):
        return [value]
    y, m, d = value[:4], value[4:6], value[6:]
    return [value, f"{y}-{m}-{d}", f"{d}/{m}/{y}", f"{m}/{d}/{y}", f"{d}.{m}.{y}", f"{y}/{m}/{d}"]


def collect(ds: Dataset, pseudonym: str, simple_charset: bool = False) -> tuple[str, ...]:
    """Identifiers of this patient (and the people and places named with them).

    ``simple_charset``: the dataset's character set is a single-byte one (ASCII or Latin-1),
    so raw values can be decoded directly."""
    found: set[str] = set()
    for tag in NAME_TAGS:
        for value in _strings(ds, tag, simple_charset):
            found.add(value.replace("^", " ").strip())
            found.update(part for part in _SPLIT.split(value) if _useful_part(part))
    for tag in ID_TAGS:
        found.update(_strings(ds, tag, simple_charset))
    for tag in DATE_TAGS:
        for value in _strings(ds, tag, simple_charset):
            found.update(_date_forms(value))
    found.discard(pseudonym)
    return tuple(sorted(v for v in found if len(v) >= MIN_PART))
