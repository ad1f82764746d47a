"""Reading and replacing element values: emptied, dummy, cleaned text, remapped UIDs, dates.

Values in the default repertoire (UI, DA, DT, TM, CS of the engine's own) are read from and
stored as their raw bytes: converting an element through pydicom costs more than the rest of
its handling.
"""

from __future__ import annotations

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from anonymize import dates, keys
from anonymize.context import Context

TEXT_SHORT = frozenset({"LO", "SH"})
SINGLE_VALUED = frozenset({"ST", "LT", "UT", "UR"})
DUMMY_TEXT = "ANONYMIZED"
DUMMY: dict[str, object] = {
    "AE": "ANONYMOUS", "AS": "000Y", "CS": DUMMY_TEXT, "DA": "19000101",
    "DT": "19000101000000", "TM": "000000", "DS": "0", "IS": "0", "FL": 0.0, "FD": 0.0,
    "SL": 0, "SS": 0, "UL": 0, "US": 0, "SV": 0, "UV": 0, "LO": DUMMY_TEXT, "SH": DUMMY_TEXT,
    "ST": DUMMY_TEXT, "LT": DUMMY_TEXT, "UT": DUMMY_TEXT, "UC": DUMMY_TEXT, "PN": DUMMY_TEXT,
}
BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
MAX_DUMMY_BYTES = 4096
DUMMY_URI = "urn:anonymized"


def set_value(ds: Dataset, tag: int, vr: str, value: object) -> None:
    ds[tag] = DataElement(tag, vr, value)


def empty(ds: Dataset, tag: int, vr: str) -> None:
    """A zero-length value (Z), stored raw: empty is empty in every VR and encoding."""
    ds[tag] = RawDataElement(Tag(tag), vr, 0, b"", 0, False, True)


def dummy(ds: Dataset, tag: int, vr: str, ctx: Context) -> None:
    """A dummy value (D) of the VR: a UID is remapped, a sequence emptied."""
    if vr == "SQ":
        set_value(ds, tag, vr, Sequence([]))
    elif vr == "UI":
        remap(ds, tag, ctx)
    elif vr in DUMMY and isinstance(DUMMY[vr], str) and vr != "PN":
        set_ascii(ds, tag, vr, [str(DUMMY[vr])])
    elif vr in DUMMY:
        set_value(ds, tag, vr, DUMMY[vr])
    elif vr in BINARY_VRS:
        set_value(ds, tag, vr, _zeros_like(ds[tag].value))
    elif vr == "UR":
        set_value(ds, tag, vr, DUMMY_URI)
    else:
        empty(ds, tag, vr)


def _zeros_like(value: object) -> bytes:
    """A dummy binary value: zeros of the original length (even, 2 to MAX_DUMMY_BYTES)."""
    size = len(value) if isinstance(value, bytes | bytearray) else 0
    size = min(MAX_DUMMY_BYTES, max(2, size + (size & 1)))
    return b"\x00" * size


def text(ds: Dataset, tag: int, elem: DataElement | RawDataElement, simple_charset: bool) -> str:
    """The element's text, several values joined by a backslash."""
    if isinstance(elem, RawDataElement) and simple_charset:
        return (elem.value or b"").decode("latin-1").rstrip("\x00 ")
    value = ds[tag].value
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def replace_text(ds: Dataset, tag: int, vr: str, original: str, cleaned: str) -> None:
    """Store ``cleaned`` if it differs from ``original``, split into values and cut to the
    VR's length."""
    if cleaned == original:
        return
    if vr == "PN" or not cleaned:
        set_value(ds, tag, vr, cleaned or None)
        return
    values = [cleaned] if vr in SINGLE_VALUED else [v.strip() for v in cleaned.split("\\")]
    if vr in TEXT_SHORT or vr == "CS" or vr == "AE":
        limit = {"SH": 16, "CS": 16, "AE": 16}.get(vr, 64)
        values = [v[:limit].strip() for v in values]
    set_value(ds, tag, vr, values[0] if len(values) == 1 else values)


def ascii_values(ds: Dataset, tag: int) -> list[str]:
    """The values of a default-repertoire element (UI, DA, DT, TM), read from its raw bytes
    when it is still raw: these VRs are ASCII under every character set."""
    elem = ds.get_item(tag, keep_deferred=True)
    if elem is None:
        return []
    if isinstance(elem, RawDataElement) and isinstance(elem.value, bytes):
        decoded = elem.value.decode("latin-1")
        values = [v.strip(" \x00") for v in decoded.split("\\")]
        return values if any(values) else []
    value = ds[tag].value
    if not value:
        return []
    return [str(v) for v in value] if not isinstance(value, str) else [value]


def set_ascii(ds: Dataset, tag: int, vr: str, values: list[str] | tuple[str, ...]) -> None:
    """Store a new default-repertoire value as its encoded bytes (a raw element), padded as
    PS3.5 6.2 requires; it is written as it is and read back like any other raw element."""
    data = "\\".join(values).encode("latin-1", "replace")
    if len(data) % 2:
        data += b"\x00" if vr == "UI" else b" "
    ds[tag] = RawDataElement(Tag(tag), vr, len(data), data, 0, False, True)


def remap(ds: Dataset, tag: int, ctx: Context, public_oids: bool = False) -> None:
    """Replace the element's UIDs by the donor's keyed UIDs (unless Retain UIDs); registered
    UIDs (and, with ``public_oids``, coding scheme OIDs) are kept."""
    if "retain_uids" in ctx.options:
        return
    values = ascii_values(ds, tag)
    if not values:
        return
    mapped = [
        v if (public_oids and keys.is_public_oid(v)) else keys.remap_uid(ctx.uid_key, v)
        for v in values
    ]
    if mapped != values:
        set_ascii(ds, tag, "UI", mapped)


def shift_dates(ds: Dataset, tag: int, vr: str, ctx: Context) -> None:
    """DA/DT/TM under the date options: shifted (Modified Dates), kept (Full Dates) or
    emptied."""
    if ctx.full_dates:
        return
    if not ctx.modified_dates:
        empty(ds, tag, vr)
        return
    values = ascii_values(ds, tag)
    if not values:
        return
    shifted = dates.shift_values(values, vr, ctx.shift_days)
    if shifted != values:
        set_ascii(ds, tag, vr, shifted)
