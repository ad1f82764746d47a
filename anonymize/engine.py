"""Applying the confidentiality profile to a dataset, recursively.

Rules, in order, for every element at every depth:

1. File meta (0002,xxxx) and group length (gggg,0000) elements are dropped from the dataset.
2. Private elements (odd groups) are removed, unless Retain Safe Private is selected and TCIA's
   knowledge base lists the element's (creator, element) signature, including its position
   inside private or public sequences, as safe; private creators survive only for kept blocks.
3. Curves (50xx) and overlays (60xx) follow the table's masked rows; when removed, the whole
   group goes (the overlay's rows/columns without data would be inconsistent).
4. Attributes of Table E.1-1 get their Basic Profile action, overridden by a selected option's
   entry (C wins over K when several apply). Compound actions: see ``tables.resolve_compound``.
   A kept (K) text value still loses this patient's own identifiers (names, IDs, birth date)
   where it holds them: a stricter reading of K that only ever removes this patient's values.
   C (clean) keeps only allow-listed words of text, shifts dates, keeps times only if they are
   times, and removes opaque bytes. A C sequence is cleaned through: inside it, at any depth,
   LO/SH text outside the table is cleaned like a description too (code values and CS terms
   excepted: they name entries of public vocabularies and the structure of the content).
5. Anything else is treated by its VR, conservatively:
   PN -> emptied; ST/LT/UT/UC free text -> cleaned against the imaging allow-list;
   LO/SH -> this patient's identifiers and generic identifying patterns removed;
   CS -> this patient's identifiers removed; DA/DT -> shifted (Modified Dates), kept (Full
   Dates) or emptied; TM -> kept with a date option (with Modified Dates only if it is a time
   of day), else emptied; AE -> emptied unless Retain Device Identity; UR -> emptied; UI ->
   remapped unless registered; UN of an unknown public tag -> removed; SQ -> recursed; numbers
   and binary values -> kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.valuerep import VR

from anonymize import dates, descriptors, keys, tables
from anonymize.outcome import Rejection

MAX_DEPTH = 64
TEXT_FREE = frozenset({"ST", "LT", "UT", "UC"})
TEXT_SHORT = frozenset({"LO", "SH"})
KEPT_TEXT = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "CS", "PN"})
STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST",
                        "TM", "UC", "UI", "UR", "UT"})
SINGLE_VALUED = frozenset({"ST", "LT", "UT", "UR"})
DATE_VRS = frozenset({"DA", "DT", "TM"})
# Identifiers of public vocabularies: kept apart from this patient's identifiers.
CODE_TAGS = frozenset({0x00080100, 0x00080102, 0x00080103, 0x00080105, 0x0008010F, 0x00080119,
                       0x00080120})
PUBLIC_OID_TAGS = frozenset({0x0008010C, 0x00080117, 0x00080118, 0x0008010D})
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
KNOWN_VRS = frozenset(str(vr) for vr in VR)
SIMPLE_CHARSETS = frozenset({"", "ISO_IR 6", "ISO_IR 100", "ISO 2022 IR 6"})


@dataclass
class Context:
    """Everything the walk needs about this run and this file."""

    key: bytes
    options: frozenset[str]
    shift_days: int
    identifiers: tuple[str, ...] = ()
    size: int = 0
    stream: object = None
    review: set[str] = field(default_factory=set)

    @property
    def modified_dates(self) -> bool:
        return "retain_long_modified_dates" in self.options

    @property
    def full_dates(self) -> bool:
        return "retain_long_full_dates" in self.options


def _vr_of(tag: int, elem: DataElement | RawDataElement) -> str:
    """The element's VR; a VR that is not DICOM's is a malformed file, not one to guess at
    (its value would escape the rules by VR, and could not be written back)."""
    vr = elem.VR
    if vr and vr not in KNOWN_VRS:
        raise Rejection("malformed")
    if vr and vr != "UN":
        return str(vr)
    if tag & 0x10000:
        return vr or "UN"
    try:
        return str(dictionary_VR(tag)).split(" ")[0]
    except KeyError:
        return "UN"


def _materialize(ds: Dataset, tag: int, elem: DataElement | RawDataElement,
                 ctx: Context) -> DataElement | RawDataElement:
    """Check a raw element's declared length; read a deferred value if it is to be kept.
    Returns the element as it now is in ``ds``."""
    if not isinstance(elem, RawDataElement) or elem.length == 0xFFFFFFFF:
        return elem
    if elem.value is None:
        if elem.length and elem.value_tell + elem.length > ctx.size:
            raise Rejection("length_exceeds_file")
        stream = ctx.stream
        position = stream.tell()  # type: ignore[attr-defined]
        stream.seek(elem.value_tell)  # type: ignore[attr-defined]
        value = stream.read(elem.length)  # type: ignore[attr-defined]
        stream.seek(position)  # type: ignore[attr-defined]
        if len(value) != elem.length:
            raise Rejection("truncated")
        elem = elem._replace(value=value)
        ds[tag] = elem  # type: ignore[index]
    elif len(elem.value) != elem.length:
        raise Rejection("length_exceeds_file")
    return elem


def _declare_vr(ds: Dataset, tag: int, vr: str) -> None:
    """Give a kept raw element read without a VR (implicit VR data in an explicit file) its
    dictionary VR, so it can be written as explicit VR."""
    kept = ds.get_item(tag, keep_deferred=True)
    if isinstance(kept, RawDataElement) and kept.VR is None:
        ds[tag] = kept._replace(VR=vr)  # type: ignore[index]


def _set(ds: Dataset, tag: int, vr: str, value: object) -> None:
    ds[tag] = DataElement(tag, vr, value)


def _empty(ds: Dataset, tag: int, vr: str) -> None:
    """A zero-length value (Z), stored raw: empty is empty in every VR and encoding."""
    ds[tag] = RawDataElement(Tag(tag), vr, 0, b"", 0, False, True)


def _dummy(ds: Dataset, tag: int, vr: str, ctx: Context) -> None:
    if vr == "SQ":
        _set(ds, tag, vr, Sequence([]))
    elif vr == "UI":
        _remap(ds, tag, ctx)
    elif vr in DUMMY and isinstance(DUMMY[vr], str) and vr != "PN":
        set_ascii(ds, tag, vr, [str(DUMMY[vr])])
    elif vr in DUMMY:
        _set(ds, tag, vr, DUMMY[vr])
    elif vr in BINARY_VRS:
        _set(ds, tag, vr, _zeros_like(ds[tag].value))
    elif vr == "UR":
        _set(ds, tag, vr, DUMMY_URI)
    else:
        _empty(ds, tag, vr)


def _zeros_like(value: object) -> bytes:
    """A dummy binary value: zeros of the original length (even, 2 to MAX_DUMMY_BYTES)."""
    size = len(value) if isinstance(value, bytes | bytearray) else 0
    size = min(MAX_DUMMY_BYTES, max(2, size + (size & 1)))
    return b"\x00" * size


def _text(ds: Dataset, tag: int, elem: DataElement | RawDataElement,
          simple_charset: bool) -> str:
    if isinstance(elem, RawDataElement) and simple_charset:
        return (elem.value or b"").decode("latin-1").rstrip("\x00 ")
    value = ds[tag].value
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _replace_text(ds: Dataset, tag: int, vr: str, original: str, cleaned: str) -> None:
    if cleaned == original:
        return
    if vr == "PN" or not cleaned:
        _set(ds, tag, vr, cleaned or None)
        return
    values = [cleaned] if vr in SINGLE_VALUED else [v.strip() for v in cleaned.split("\\")]
    if vr in TEXT_SHORT or vr == "CS" or vr == "AE":
        limit = {"SH": 16, "CS": 16, "AE": 16}.get(vr, 64)
        values = [v[:limit].strip() for v in values]
    _set(ds, tag, vr, values[0] if len(values) == 1 else values)


def ascii_values(ds: Dataset, tag: int) -> list[str]:
    """The values of a default-repertoire element (UI, DA, DT, TM), read from its raw bytes
    when it is still raw: these VRs are ASCII under every character set, and converting the
    element through pydicom costs more than the rest of its handling."""
    elem = ds.get_item(tag, keep_deferred=True)
    if elem is None:
        return []
    if isinstance(elem, RawDataElement) and isinstance(elem.value, bytes):
        text = elem.value.decode("latin-1")
        values = [v.strip(" \x00") for v in text.split("\\")]
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


def _remap(ds: Dataset, tag: int, ctx: Context, public_oids: bool = False) -> None:
    if "retain_uids" in ctx.options:
        return
    values = ascii_values(ds, tag)
    if not values:
        return
    mapped = [
        v if (public_oids and keys.is_public_oid(v)) else keys.remap_uid(ctx.key, v)
        for v in values
    ]
    if mapped != values:
        set_ascii(ds, tag, "UI", mapped)


def _dates(ds: Dataset, tag: int, vr: str, ctx: Context) -> None:
    if ctx.full_dates:
        return
    if not ctx.modified_dates:
        _empty(ds, tag, vr)
        return
    values = ascii_values(ds, tag)
    if not values:
        return
    shifted = dates.shift_values(values, vr, ctx.shift_days)
    if shifted != values:
        set_ascii(ds, tag, vr, shifted)


_ACTIONS: dict[frozenset[str], dict[int, str]] = {}


class Walker:
    """Applies the rules to one dataset tree."""

    def __init__(self, ctx: Context, simple_charset: bool) -> None:
        self.ctx = ctx
        self.simple = simple_charset
        self.rules = tables.profile_rules()
        self.patterns = tables.pattern_rules()
        self.safe_private = tables.safe_private()
        self._actions = _ACTIONS.setdefault(ctx.options, {})
        self.cleaning = False  # inside a sequence whose action is C

    @contextmanager
    def _cleaning(self) -> Iterator[None]:
        """Walk a C sequence's items: a C never lets an unknown word through, at any depth."""
        outer, self.cleaning = self.cleaning, True
        try:
            yield
        finally:
            self.cleaning = outer

    def action_for(self, tag: int) -> str | None:
        """The table action for a public tag under this run's options (cached per options)."""
        action = self._actions.get(tag)
        if action is None:
            rule = self.rules.get(tag)
            action = "" if rule is None else tables.effective_action(tag, rule, self.ctx.options)
            self._actions[tag] = action
        return action or None

    def walk(self, ds: Dataset, depth: int = 0, path: str = "") -> None:
        if depth > MAX_DEPTH:
            raise Rejection("too_deep")
        kept_private_blocks: set[int] = set()
        creators: list[int] = []
        removed_groups: set[int] = set()
        # the keys themselves (BaseTag), not ints: a dict lookup by the identical key object
        # skips BaseTag.__eq__, a Python call, and every element is looked up several times
        for tag in list(ds.keys()):
            group = tag >> 16
            element = tag & 0xFFFF
            if group in removed_groups:
                continue  # the whole curve/overlay group went with its first element
            if group == 0x0002 or element == 0:
                del ds[tag]
                continue
            if group & 1:
                if 0x0010 <= element <= 0x00FF:
                    creators.append(tag)
                    continue
                if self._private(ds, tag, depth, path):
                    kept_private_blocks.add((group << 16) | (element >> 8))
                continue
            elem = ds.get_item(tag, keep_deferred=True)
            if 0x5000 <= group <= 0x501E or 0x6000 <= group <= 0x601E:
                if self._graphics(ds, tag, group, element):
                    continue
                removed_groups.add(group)
                for other in [t for t in list(ds.keys()) if t >> 16 == group]:
                    del ds[other]
                continue
            elem = _materialize(ds, tag, elem, self.ctx)
            vr = _vr_of(tag, elem)
            action = self.action_for(tag)
            if action is None:
                self._by_vr(ds, tag, elem, vr, depth, path)
            else:
                self._apply(ds, tag, elem, vr, action, depth, path)
            if elem.VR is None:
                _declare_vr(ds, tag, vr)
        for creator in creators:
            if creator not in kept_private_blocks:
                del ds[creator]

    def _graphics(self, ds: Dataset, tag: int, group: int, element: int) -> bool:
        """Return True if the curve/overlay group is kept (Clean Graphics, then reviewed)."""
        rule = self.patterns["50XXXXXX"] if group < 0x6000 else self.patterns["60XX3000"]
        action = tables.effective_action(tag, rule, self.ctx.options)
        if action == "C":
            self.ctx.review.add("overlay_graphics")
            return True
        return False

    def _apply(self, ds: Dataset, tag: int, elem: DataElement | RawDataElement, vr: str,
               action: str, depth: int, path: str) -> None:
        if action == "X":
            del ds[tag]
        elif action == "Z":
            _empty(ds, tag, vr)
        elif action == "D":
            _dummy(ds, tag, vr, self.ctx)
        elif action == "U":
            if vr == "UI":
                _remap(ds, tag, self.ctx)
            else:
                _dummy(ds, tag, vr, self.ctx)
        elif action in ("K", "R"):
            if vr == "SQ":
                self._recurse(ds, tag, depth, path)
            elif vr == "UI" and action == "R":
                _remap(ds, tag, self.ctx)
            elif vr in KEPT_TEXT:
                self._scrub_own(ds, tag, elem, vr)
        elif action == "C":
            self._clean(ds, tag, elem, vr, depth, path)
        else:
            del ds[tag]

    def _scrub_own(self, ds: Dataset, tag: int, elem: DataElement | RawDataElement,
                   vr: str) -> None:
        """A kept (K) text value still loses this patient's own identifiers, if it holds any."""
        if not self.ctx.identifiers:
            return
        text = _text(ds, tag, elem, self.simple)
        _replace_text(ds, tag, vr, text,
                      descriptors.scrub_identifiers(text, self.ctx.identifiers, False))

    def _clean(self, ds: Dataset, tag: int, elem: DataElement | RawDataElement, vr: str,
               depth: int, path: str) -> None:
        if vr == "SQ":
            with self._cleaning():
                self._recurse(ds, tag, depth, path)
        elif vr in DATE_VRS:
            _dates(ds, tag, vr, self.ctx)
        elif vr == "PN":
            _empty(ds, tag, vr)
        elif vr == "UI":
            _remap(ds, tag, self.ctx)
        elif vr in STRING_VRS:
            text = _text(ds, tag, elem, self.simple)
            _replace_text(ds, tag, vr, text,
                          descriptors.clean_free_text(text, self.ctx.identifiers))
        elif vr in ("UN", "OB", "OW"):
            del ds[tag]

    def _by_vr(self, ds: Dataset, tag: int, elem: DataElement | RawDataElement, vr: str,
               depth: int, path: str) -> None:
        ctx = self.ctx
        if vr == "SQ":
            self._recurse(ds, tag, depth, path)
        elif vr == "PN":
            if _text(ds, tag, elem, self.simple):
                _empty(ds, tag, vr)
        elif vr in TEXT_FREE:
            text = _text(ds, tag, elem, self.simple)
            _replace_text(ds, tag, vr, text, descriptors.clean_free_text(text, ctx.identifiers))
        elif vr in TEXT_SHORT or vr == "CS":
            generic = vr != "CS" and tag not in CODE_TAGS
            self._text_outside_table(ds, tag, elem, vr, generic)
        elif vr in DATE_VRS:
            _dates(ds, tag, vr, ctx)
        elif vr == "UI":
            _remap(ds, tag, ctx, public_oids=tag in PUBLIC_OID_TAGS)
        elif vr == "AE":
            if "retain_device_id" not in ctx.options:
                _empty(ds, tag, vr)
        elif vr == "UR":
            _empty(ds, tag, vr)
        elif vr == "UN":
            del ds[tag]

    def _text_outside_table(self, ds: Dataset, tag: int, elem: DataElement | RawDataElement,
                            vr: str, generic: bool) -> None:
        """Text outside the table: identifying patterns (if ``generic``) and this patient's
        identifiers are removed; inside a C sequence only allow-listed words stay, except in
        CS values and code values, which name entries of public vocabularies."""
        text = _text(ds, tag, elem, self.simple)
        if self.cleaning and vr != "CS" and tag not in CODE_TAGS:
            cleaned = descriptors.clean_free_text(text, self.ctx.identifiers)
        else:
            cleaned = descriptors.scrub_identifiers(text, self.ctx.identifiers, generic)
        _replace_text(ds, tag, vr, text, cleaned)

    def _recurse(self, ds: Dataset, tag: int, depth: int, path: str, component: str = "") -> None:
        value = ds[tag].value
        if not isinstance(value, Sequence):
            del ds[tag]
            return
        component = component or f"{tag >> 16:04x},{tag & 0xFFFF:04x}"
        child_path = f"{path}/{component}" if path else component
        for item in value:
            self.walk(item, depth + 1, child_path)

    def _private(self, ds: Dataset, tag: int, depth: int, path: str) -> bool:
        """Apply Retain Safe Private to one private element; return True if it is kept."""
        ctx = self.ctx
        if "retain_safe_private" not in ctx.options or (tag & 0xFFFF) < 0x0010:
            del ds[tag]
            return False
        group = tag >> 16
        creator_tag = (group << 16) | ((tag & 0xFFFF) >> 8)
        creator_elem = ds.get_item(creator_tag)
        if creator_elem is None:
            del ds[tag]
            return False
        creator_value = ds[creator_tag].value
        creator = str(creator_value or "").strip().lower()
        component = f"{group:04x},{creator},{tag & 0xFF:02x}"
        signature = f"{path}/{component}" if path else component
        disposition = self.safe_private.get(signature)
        if disposition is None:
            del ds[tag]
            return False
        _materialize(ds, tag, ds.get_item(tag, keep_deferred=True), ctx)
        vr = str(ds[tag].VR)
        if vr == "PN":
            del ds[tag]
            return False
        if disposition == "h":
            if vr != "UI":
                del ds[tag]
                return False
            _remap(ds, tag, ctx)
            return True
        if disposition == "o":
            if vr not in ("DA", "DT") or not (ctx.modified_dates or ctx.full_dates):
                del ds[tag]
                return False
            _dates(ds, tag, vr, ctx)
            return True
        if vr == "SQ":
            self._recurse(ds, tag, depth, path, component)
        elif vr == "UI":
            _remap(ds, tag, ctx)
        elif vr in TEXT_FREE or vr in TEXT_SHORT or vr == "CS":
            self._text_outside_table(ds, tag, ds[tag], vr, True)
        elif vr in DATE_VRS:
            _dates(ds, tag, vr, ctx)
        return True
