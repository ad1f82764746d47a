"""Applying the confidentiality profile to a dataset, recursively.

Rules, in order, for every element at every depth:

1. Elements must come in ascending tag order, and no item tag may stand where an element
   should: otherwise a length or a tag was damaged, and the file is rejected.
2. File meta (0002,xxxx) and group length (gggg,0000) elements are dropped from the dataset.
3. Private elements (odd groups) are removed, unless Retain Safe Private is selected, the
   element's block has a valid creator (``private``) and TCIA's knowledge base lists the
   element's (creator, element) signature, including its position inside private or public
   sequences, as safe; private creators survive only for kept blocks.
4. Curves (50xx) and overlays (60xx) follow the table's masked rows; when removed, the whole
   group goes (the overlay's rows/columns without data would be inconsistent).
5. Default deny (``admission``): a public attribute the data dictionary does not know, a
   retired one outside the table that could hold text, and one whose VR contradicts the
   dictionary are removed; so is a DS, IS or AS that is not a number or an age; a value whose
   length does not fit its VR rejects the file.
6. Attributes of Table E.1-1 get their Basic Profile action, overridden by a selected option's
   entry (C wins over K when several apply). Compound actions: see ``tables.resolve_compound``.
   A kept (K) text value still loses this patient's own identifiers (names, IDs, birth date)
   where it holds them: a stricter reading of K that only ever removes this patient's values.
   C (clean) keeps only allow-listed words of text, shifts dates, keeps times only if they are
   times, and removes opaque bytes. A C sequence is cleaned through: inside it, at any depth,
   LO/SH text outside the table is cleaned like a description too (code values and CS terms
   excepted: they name entries of public vocabularies and the structure of the content).
7. Anything else is treated by its VR, conservatively:
   PN -> emptied; ST/LT/UT/UC free text -> cleaned against the imaging allow-list;
   LO/SH -> this patient's identifiers and generic identifying patterns removed;
   CS -> this patient's identifiers removed; DA/DT -> shifted (Modified Dates), kept (Full
   Dates) or emptied; TM -> kept with a date option (with Modified Dates only if it is a time
   of day), else emptied; AE -> emptied unless Retain Device Identity; UR -> emptied; UI ->
   remapped with the donor's key unless registered; UN (where the dictionary itself gives no
   VR) -> removed; SQ -> recursed; numbers and binary values -> kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from anonymize import admission, descriptors, private, tables, values
from anonymize.context import Context
from anonymize.outcome import Rejection

MAX_DEPTH = 64
TEXT_FREE = frozenset({"ST", "LT", "UT", "UC"})
TEXT_SHORT = frozenset({"LO", "SH"})
KEPT_TEXT = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "CS", "PN"})
STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST",
                        "TM", "UC", "UI", "UR", "UT"})
DATE_VRS = frozenset({"DA", "DT", "TM"})
# Identifiers of public vocabularies: kept apart from this patient's identifiers.
CODE_TAGS = frozenset({0x00080100, 0x00080102, 0x00080103, 0x00080105, 0x0008010F, 0x00080119,
                       0x00080120})
PUBLIC_OID_TAGS = frozenset({0x0008010C, 0x00080117, 0x00080118, 0x0008010D})
ITEM_GROUP = 0xFFFE  # items and delimiters: never an element of a dataset


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

    def walk(self, ds: Dataset, depth: int = 0, path: str = "", after: int = -1) -> None:
        """Apply the rules to ``ds`` and, through its sequences, to every item below it.

        Elements come in ascending tag order (PS3.5 7.1), each after ``after``; one that does
        not, or an item tag where an element should be, is a sign that a length or a tag was
        damaged, and what was read after it cannot be trusted: the file is rejected."""
        if depth > MAX_DEPTH:
            raise Rejection("too_deep")
        kept_private_blocks: set[int] = set()
        creators: list[int] = []
        removed_groups: set[int] = set()
        # the keys themselves (BaseTag), not ints: a dict lookup by the identical key object
        # skips BaseTag.__eq__, a Python call, and every element is looked up several times
        for tag in list(ds.keys()):
            group = tag >> 16
            if tag <= after or group == ITEM_GROUP:
                raise Rejection("malformed")
            after = tag
            if group in removed_groups:
                continue  # the whole curve/overlay group went with its first element
            if group == 0x0002 or tag & 0xFFFF == 0:
                del ds[tag]
            elif group & 1:
                if private.is_creator_slot(tag):
                    creators.append(tag)
                elif self._private(ds, tag, depth, path):
                    kept_private_blocks.add((group << 16) | ((tag & 0xFFFF) >> 8))
            elif (0x5000 <= group <= 0x501E or 0x6000 <= group <= 0x601E) and not (
                    self._graphics(tag, group)):
                removed_groups.add(group)
                for other in [t for t in list(ds.keys()) if t >> 16 == group]:
                    del ds[other]
            else:
                self._public(ds, tag, depth, path)
        for creator in creators:
            if creator not in kept_private_blocks:
                del ds[creator]

    def _public(self, ds: Dataset, tag: int, depth: int, path: str) -> None:
        """Default deny first (``admission``), then the table's action or the rule by VR."""
        elem: DataElement | RawDataElement = ds.get_item(tag, keep_deferred=True)
        action = self.action_for(tag)
        declared = None if elem.VR and " or " in elem.VR else elem.VR
        vr = admission.treated_vr(tag, declared, action is not None)
        if vr is None:
            del ds[tag]
            return
        elem = admission.materialize(ds, tag, elem, self.ctx)
        if not admission.value_fits(vr, elem, admission.entry(tag)):
            del ds[tag]
            return
        admission.declare_vr(ds, tag, vr)
        elem = ds.get_item(tag, keep_deferred=True)
        if action is None:
            self._by_vr(ds, tag, elem, vr, depth, path)
        else:
            self._apply(ds, tag, elem, vr, action, depth, path)

    def _graphics(self, tag: int, group: int) -> bool:
        """Return True if the curve/overlay group is kept (Clean Graphics, then reviewed);
        its elements are then treated like any other public element."""
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
            values.empty(ds, tag, vr)
        elif action == "D":
            values.dummy(ds, tag, vr, self.ctx)
        elif action == "U":
            if vr == "UI":
                values.remap(ds, tag, self.ctx)
            else:
                values.dummy(ds, tag, vr, self.ctx)
        elif action in ("K", "R"):
            if vr == "SQ":
                self._recurse(ds, tag, depth, path)
            elif vr == "UI" and action == "R":
                values.remap(ds, tag, self.ctx)
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
        text = values.text(ds, tag, elem, self.simple)
        values.replace_text(ds, tag, vr, text,
                      descriptors.scrub_identifiers(text, self.ctx.identifiers, False))

    def _clean(self, ds: Dataset, tag: int, elem: DataElement | RawDataElement, vr: str,
               depth: int, path: str) -> None:
        if vr == "SQ":
            with self._cleaning():
                self._recurse(ds, tag, depth, path)
        elif vr in DATE_VRS:
            values.shift_dates(ds, tag, vr, self.ctx)
        elif vr == "PN":
            values.empty(ds, tag, vr)
        elif vr == "UI":
            values.remap(ds, tag, self.ctx)
        elif vr in STRING_VRS:
            text = values.text(ds, tag, elem, self.simple)
            values.replace_text(ds, tag, vr, text,
                          descriptors.clean_free_text(text, self.ctx.identifiers))
        elif vr in ("UN", "OB", "OW"):
            del ds[tag]

    def _by_vr(self, ds: Dataset, tag: int, elem: DataElement | RawDataElement, vr: str,
               depth: int, path: str) -> None:
        ctx = self.ctx
        if vr == "SQ":
            self._recurse(ds, tag, depth, path)
        elif vr == "PN":
            if values.text(ds, tag, elem, self.simple):
                values.empty(ds, tag, vr)
        elif vr in TEXT_FREE:
            text = values.text(ds, tag, elem, self.simple)
            cleaned = descriptors.clean_free_text(text, ctx.identifiers)
            values.replace_text(ds, tag, vr, text, cleaned)
        elif vr in TEXT_SHORT or vr == "CS":
            generic = vr != "CS" and tag not in CODE_TAGS
            self._text_outside_table(ds, tag, elem, vr, generic)
        elif vr in DATE_VRS:
            values.shift_dates(ds, tag, vr, ctx)
        elif vr == "UI":
            values.remap(ds, tag, ctx, public_oids=tag in PUBLIC_OID_TAGS)
        elif vr == "AE":
            if "retain_device_id" not in ctx.options:
                values.empty(ds, tag, vr)
        elif vr == "UR":
            values.empty(ds, tag, vr)
        elif vr == "UN":
            del ds[tag]

    def _text_outside_table(self, ds: Dataset, tag: int, elem: DataElement | RawDataElement,
                            vr: str, generic: bool) -> None:
        """Text outside the table: identifying patterns (if ``generic``) and this patient's
        identifiers are removed; inside a C sequence only allow-listed words stay, except in
        CS values and code values, which name entries of public vocabularies."""
        text = values.text(ds, tag, elem, self.simple)
        if self.cleaning and vr != "CS" and tag not in CODE_TAGS:
            cleaned = descriptors.clean_free_text(text, self.ctx.identifiers)
        else:
            cleaned = descriptors.scrub_identifiers(text, self.ctx.identifiers, generic)
        values.replace_text(ds, tag, vr, text, cleaned)

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
        creator = private.creator_of(ds, tag)
        if "retain_safe_private" not in ctx.options or creator is None:
            del ds[tag]
            return False
        component = f"{tag >> 16:04x},{creator.lower()},{tag & 0xFF:02x}"
        signature = f"{path}/{component}" if path else component
        disposition = self.safe_private.get(signature)
        if disposition is None:
            del ds[tag]
            return False
        elem = admission.materialize(ds, tag, ds.get_item(tag, keep_deferred=True), ctx)
        if elem.VR and elem.VR not in admission.KNOWN_VRS:
            raise Rejection("malformed")
        vr = elem.VR or private.dictionary_vr(tag, creator)
        if not admission.value_fits(vr, elem, None):
            del ds[tag]
            return False
        admission.declare_vr(ds, tag, vr)
        if vr == "PN":
            del ds[tag]
            return False
        if disposition == "h":
            if vr != "UI":
                del ds[tag]
                return False
            values.remap(ds, tag, ctx)
            return True
        if disposition == "o":
            if vr not in ("DA", "DT") or not (ctx.modified_dates or ctx.full_dates):
                del ds[tag]
                return False
            values.shift_dates(ds, tag, vr, ctx)
            return True
        if vr == "SQ":
            self._recurse(ds, tag, depth, path, component)
        elif vr == "UI":
            values.remap(ds, tag, ctx)
        elif vr in TEXT_FREE or vr in TEXT_SHORT or vr == "CS":
            self._text_outside_table(ds, tag, ds[tag], vr, True)
        elif vr in DATE_VRS:
            values.shift_dates(ds, tag, vr, ctx)
        return True
