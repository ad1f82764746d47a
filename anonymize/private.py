"""Private blocks: which creator a private element belongs to, if any (PS3.5 7.8.1).

A private data element (gggg,xxyy), gggg odd and xx from 10 to FF, belongs to the block that
the creator in slot (gggg,00xx) reserved. Retain Safe Private keeps an element only when the
knowledge base lists its (creator, element) signature, so everything hangs on the creator;
default deny makes that strict. An element has no creator, and is removed, when it lies
outside any block ((gggg,0001-0FFF)), in a group PS3.5 does not allow to be private (0001,
0003, 0005, 0007, FFFF), or when its creator slot is missing or holds anything but one short
line of text. The slots themselves are removed unless an element of their block is kept,
which only a creator the knowledge base knows allows. The file's VR of a kept element is
taken as it is (vendors' dictionaries disagree with each other too often to overrule it);
only an element read without one gets pydicom's private dictionary's.
"""

from __future__ import annotations

from pydicom.datadict import private_dictionary_VR
from pydicom.dataset import Dataset

NOT_PRIVATE_GROUPS = frozenset({0x0001, 0x0003, 0x0005, 0x0007, 0xFFFF})
FIRST_BLOCK, LAST_SLOT = 0x1000, 0x00FF
MAX_CREATOR = 64  # an LO value
CREATOR_VRS = (None, "LO", "UN")


def is_creator_slot(tag: int) -> bool:
    """(gggg,0010-00FF) of an odd group: where creators are named."""
    return 0x0010 <= tag & 0xFFFF <= LAST_SLOT


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, str):
        return value
    return None


def creator_of(ds: Dataset, tag: int) -> str | None:
    """The creator (stripped of padding) of the block the private data element ``tag``
    belongs to; None when it belongs to no block with a valid creator."""
    group, element = tag >> 16, tag & 0xFFFF
    if group in NOT_PRIVATE_GROUPS or element < FIRST_BLOCK:
        return None
    slot = ds.get_item((group << 16) | (element >> 8), keep_deferred=True)
    if slot is None or slot.VR not in CREATOR_VRS:
        return None
    text = _text(slot.value)
    if text is None:
        return None
    name = text.strip(" \x00")
    if not name or len(name) > MAX_CREATOR or "\\" in name or not name.isprintable():
        return None
    return name


def dictionary_vr(tag: int, creator: str) -> str:
    """The VR of a private element read without one (Implicit VR): pydicom's private
    dictionary's, or UN (opaque bytes) when it knows none."""
    try:
        return str(private_dictionary_VR(tag, creator)).split(" or ")[0]
    except KeyError:
        return "UN"
