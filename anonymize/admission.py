"""Default deny for public elements: kept only when the engine knows what they are.

The rules of the profile are rules by attribute and by VR; they can only be as good as the
engine's knowledge of both. Mutation fuzzing showed what escapes them: values under public
tags the data dictionary does not know (a renumbered tag), values declared with a VR that
contradicts the dictionary, and values whose length no longer fits (a value that swallowed the
next element). So, before any rule applies:

* a public tag the data dictionary does not know is removed; so is a retired attribute outside
  Table E.1-1 unless its VR holds nothing but numbers, UIDs, dates or items;
* an element whose VR contradicts the dictionary is removed (UN, and no VR at all, take the
  dictionary's VR);
* a value that cannot be what its VR says rejects the file when it is a sign of broken
  structure (control characters in text, binary numbers whose length is not a whole number of
  values or not the attribute's multiplicity), and is removed when it merely does not have the
  form its VR promises (CS, DS, IS, AS are kept as they are, or scrubbed only of this patient's
  identifiers, so each value must be a code, a number or an age: a UID or a phone number moved
  under a DS attribute is not one, nor a name under a CS one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from pydicom.datadict import get_entry
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.valuerep import VR

from anonymize.context import Context
from anonymize.outcome import Rejection

KNOWN_VRS = frozenset(str(vr) for vr in VR)
TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST",
                      "TM", "UC", "UI", "UR", "UT"})
NUMBER_SIZES = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "SV": 8, "UV": 8,
                "AT": 4}
WORD_SIZES = {**NUMBER_SIZES, "OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
# What a retired attribute outside the table may hold and still be kept: these are treated
# by VR without keeping any text (numbers kept, UIDs remapped, dates shifted, items walked).
SAFE_RETIRED_VRS = frozenset({*NUMBER_SIZES, "DS", "IS", "UI", "DA", "DT", "TM", "SQ"})
LONG_TEXT_VRS = frozenset({"UC", "UR", "UT"})  # with a 32-bit length field
SHORT_LENGTH_LIMIT = 0xFFFF
# Characters that text never holds (ESC, TAB, LF, FF and CR are the text's own): one of them
# inside a value is the header of another element, swallowed by a length that does not fit.
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f]")
# PS3.5 6.2: the form of each value, once padding around it is stripped: a code string, a
# decimal number, an integer, an age (longer than the standard allows is tolerated: writers
# that do so are common, and a long number is still a number; a UID, with its many dots, a
# phone number or a name is none of these).
_FORMS = {
    "CS": re.compile(rb"[A-Z0-9 _]+"),
    "DS": re.compile(rb"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?"),
    "IS": re.compile(rb"[+-]?[0-9]+"),
    "AS": re.compile(rb"[0-9]{3}[DWMY]"),
}
_VM = re.compile(r"(\d+)(?:-(\d+)?(n)?)?")


@dataclass(frozen=True)
class Entry:
    """What the data dictionary says about one public attribute."""

    vrs: tuple[str, ...]  # the first is the one used when the file gives none
    vm: tuple[int, int | None, int] | None  # minimum, maximum (None: any), step
    retired: bool


def _multiplicity(vm: str) -> tuple[int, int | None, int] | None:
    """'1' -> (1, 1, 1); '1-3' -> (1, 3, 1); '2-n' -> (2, None, 1); '2-2n' -> (2, None, 2)."""
    match = _VM.fullmatch(vm)
    if match is None:
        return None
    low, high, open_ended = match.groups()
    minimum = int(low)
    if open_ended:
        return minimum, None, int(high) if high else 1
    return minimum, int(high) if high else minimum, 1


@lru_cache(maxsize=8192)
def entry(tag: int) -> Entry | None:
    """The dictionary's entry for a public tag (repeating groups included), or None."""
    try:
        vr, vm, _name, retired, _keyword = get_entry(tag)
    except KeyError:
        return None
    return Entry(tuple(str(vr).split(" or ")), _multiplicity(vm), bool(retired))


def treated_vr(tag: int, declared: str | None, in_table: bool) -> str | None:
    """The VR by which a public element is treated, or None when it is to be removed.

    A declared VR that DICOM does not have is a malformed file, not one to guess at."""
    if declared and declared not in KNOWN_VRS:
        raise Rejection("malformed")
    known = entry(tag)
    if known is None:
        return None
    if known.retired and not in_table and not SAFE_RETIRED_VRS.issuperset(known.vrs):
        return None
    return _reconcile(declared, known.vrs)


def _reconcile(declared: str | None, known: tuple[str, ...]) -> str | None:
    """The VR an element is treated by, given the VRs its dictionary allows (the first is
    the one used when the file gives none, or UN); None when the two contradict each other.

    Even two text VRs are not reconciled: the declared one is evidence of what the value is
    (a name declared PN under a CS attribute), and either treatment alone could keep it."""
    if not declared or declared == "UN":
        return known[0]
    return declared if declared in known else None


def materialize(ds: Dataset, tag: int, elem: DataElement | RawDataElement,
                ctx: Context) -> DataElement | RawDataElement:
    """Check a raw element's declared length against what was read; read a deferred value
    (it is to be kept). Returns the element as it now is in ``ds``."""
    if not isinstance(elem, RawDataElement) or elem.length == 0xFFFFFFFF:
        return elem
    if elem.value is None:
        if elem.length and elem.value_tell + elem.length > ctx.size:
            raise Rejection("length_exceeds_file")
        stream = ctx.stream
        assert stream is not None, "a deferred value is only in a file read from a stream"
        position = stream.tell()
        stream.seek(elem.value_tell)
        value = stream.read(elem.length)
        stream.seek(position)
        if len(value) != elem.length:
            raise Rejection("truncated")
        elem = elem._replace(value=value)
        ds[tag] = elem
    elif len(elem.value) != elem.length:
        raise Rejection("length_exceeds_file")
    return elem


def _encoded(elem: DataElement | RawDataElement, vr: str) -> bytes | None:
    """The value as read, or as text when pydicom has already converted it; None for
    converted numbers and items, which pydicom checked as it converted them."""
    value = elem.value
    if isinstance(value, bytes):
        return value
    if vr not in TEXT_VRS:
        return None
    if value is None:
        return b""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value).encode("utf-8", "replace")
    return str(value).encode("utf-8", "replace")


def value_fits(vr: str, elem: DataElement | RawDataElement, known: Entry | None) -> bool:
    """Whether the value can be what ``vr`` says: False (remove it) for a CS, DS, IS or AS
    without its VR's form, or text too long for its VR's length field; raises
    :class:`Rejection` where the value's length does not fit its VR, or its text holds what
    text never does (the header of another element)."""
    data = _encoded(elem, vr)
    if data is None:
        return True
    if vr in TEXT_VRS:
        return _text_fits(vr, data)
    size = WORD_SIZES.get(vr)
    if size is None:
        return True
    if len(data) % size:
        raise Rejection("malformed")
    if data and vr in NUMBER_SIZES and known is not None and known.vm is not None:
        minimum, maximum, step = known.vm
        count = len(data) // size
        if count < minimum or (maximum is not None and count > maximum) or (
                count - minimum) % step:
            raise Rejection("malformed")
    return True


def _text_fits(vr: str, data: bytes) -> bool:
    if vr not in LONG_TEXT_VRS and len(data) > SHORT_LENGTH_LIMIT:
        return False
    text = data.rstrip(b"\x00 ")
    if _CONTROL.search(text):
        raise Rejection("malformed")
    pattern = _FORMS.get(vr)
    if pattern is None:
        return True
    values = (value.strip(b" \x00") for value in text.split(b"\\"))
    return all(pattern.fullmatch(value) for value in values if value)


def declare_vr(ds: Dataset, tag: int, vr: str) -> None:
    """Give a kept raw element read without a VR (implicit VR data in an explicit file) the
    VR it was treated by, so it can be written as explicit VR."""
    kept = ds.get_item(tag, keep_deferred=True)
    if isinstance(kept, RawDataElement) and kept.VR is None:
        ds[tag] = kept._replace(VR=vr)
