"""Every row of Table E.1-1 whose action is C lets no unknown word through, at any depth.

The rows come from the engine's own table under a profile holding every option that has a C
entry (so it includes Clean Descriptors). Made-up surnames in several scripts are planted in
each row at the top level, one sequence down and two sequences down; none of them may be left
anywhere in the output, while imaging words of the cleaner's allow-list must survive in text.
"""

from __future__ import annotations

import warnings

import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from anonymize import Profile, Verdict
from anonymize.descriptors import vocabulary
from anonymize.tables import effective_action, profile_rules
from tests.anonymize.helpers import ct_dataset, part10, run

RULES = profile_rules()
PROFILE = Profile(frozenset(
    option for rule in RULES.values() for option, action in rule.options.items() if action == "C"
))
C_ROWS = sorted(tag for tag, rule in RULES.items()
                if effective_action(tag, rule, PROFILE.options) == "C")
# Public sequences and text outside the table: the carriers of the planted rows.
CONTAINER = 0x00409096  # Real World Value Mapping Sequence
CODE_MEANING = 0x00080104
LUT_EXPLANATION = 0x00283003
KNOWN = ("HEAD", "AXIAL")
SURNAMES = ("Quarmbyshire", "Жукотринова", "Παπαδημόγλου", "鈴木山田", "Nguyễnhoa")
TEXT = f"{KNOWN[0]} {' '.join(SURNAMES)} {KNOWN[1]}"
# Values of the default character repertoire cannot hold other scripts.
ASCII_TEXT = f"{KNOWN[0]} {SURNAMES[0].upper()} {KNOWN[1]}"
TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC"})
ASCII_TEXT_VRS = frozenset({"CS", "AE"})
DATE_VRS = frozenset({"DA", "DT", "TM"})
BINARY_VRS = frozenset({"OB", "OW", "UN"})


def _vr(tag: int) -> str:
    return dictionary_VR(tag).split(" ")[0]


def _sequence_item() -> Dataset:
    """What a C sequence holds here: a code meaning, and text one sequence further down."""
    inner = Dataset()
    inner[LUT_EXPLANATION] = DataElement(LUT_EXPLANATION, "LO", TEXT)
    item = Dataset()
    item[CODE_MEANING] = DataElement(CODE_MEANING, "LO", TEXT)
    item[CONTAINER] = DataElement(CONTAINER, "SQ", Sequence([inner]))
    return item


def _planted(tag: int) -> DataElement:
    vr = _vr(tag)
    if vr in TEXT_VRS:
        return DataElement(tag, vr, TEXT)
    if vr in ASCII_TEXT_VRS:
        return DataElement(tag, vr, ASCII_TEXT)
    if vr in DATE_VRS:
        return DataElement(tag, vr, SURNAMES[0])
    if vr in BINARY_VRS:
        return DataElement(tag, vr, TEXT.encode())
    if vr == "SQ":
        return DataElement(tag, vr, Sequence([_sequence_item()]))
    raise AssertionError(f"no value to plant for a C row of VR {vr}")


def _with_row(item: Dataset, tag: int, inner: Dataset | None = None) -> Dataset:
    item[tag] = _planted(tag)
    if inner is not None:
        item[CONTAINER] = DataElement(CONTAINER, "SQ", Sequence([inner]))
    return item


def _source(tag: int) -> bytes:
    """The row at the top level, in a container's item, and in an item of that item."""
    two_down = _with_row(Dataset(), tag)
    one_down = _with_row(Dataset(), tag, two_down)
    ds = _with_row(ct_dataset(SpecificCharacterSet="ISO_IR 192"), tag, one_down)
    return part10(ds)


def _levels(ds: Dataset) -> list[Dataset]:
    levels = [ds]
    while CONTAINER in levels[-1] and len(levels) < 3:
        levels.append(levels[-1][CONTAINER].value[0])
    return levels


def _texts(ds: Dataset) -> list[str]:
    found = []
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                found.extend(_texts(item))
        elif isinstance(elem.value, bytes):
            found.append(elem.value.decode("utf-8", "replace"))
        elif elem.value is not None:
            found.append(str(elem.value))
    return found


def _leaks(data: bytes, out: Dataset) -> list[str]:
    """Planted names (or any letter of them outside ASCII) found in the output."""
    text = " ".join(_texts(out)).casefold()
    leaks = [name for name in SURNAMES
             if name.casefold() in text
             or any(form.encode() in data for form in (name, name.upper(), name.lower()))]
    letters = {char for name in SURNAMES for char in name.casefold() if not char.isascii()}
    return leaks + sorted(char for char in letters if char in text)


def _known_words_survive(elem: DataElement | None) -> bool:
    value = str(elem.value if elem is not None else "").upper()
    return all(word in value for word in KNOWN)


def test_the_rows_come_from_the_table_and_the_words_from_the_allow_list() -> None:
    assert "clean_descriptors" in PROFILE
    named_in_issue_15 = {0x300A0002, 0x300A0003, 0x300A0004, 0x300A00C3, 0x300A0016,
                         0x300A0072, 0x300A0196, 0x300A01A6, 0x300A01B2, 0x300A0608,
                         0x300A0619, 0x006A0005, 0x006A0006, 0x0018A003, 0x003A0329}
    assert named_in_issue_15 <= set(C_ROWS)
    assert len(C_ROWS) > 300
    assert all(word.lower() in vocabulary() for word in KNOWN)
    assert not any(name.casefold() in vocabulary() for name in SURNAMES)
    assert {CONTAINER, CODE_MEANING, LUT_EXPLANATION}.isdisjoint(RULES)


@pytest.mark.parametrize("tag", C_ROWS, ids=lambda t: f"{t:08X}")
def test_a_clean_row_keeps_no_unknown_word_at_any_depth(tag: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about a name planted in a date
        result = run(_source(tag), profile=PROFILE)
    assert result.outcome.verdict is Verdict.DEIDENTIFIED, result.outcome
    out = result.dataset
    assert _leaks(result.data, out) == []
    levels = _levels(out)
    assert len(levels) == 3
    vr = _vr(tag)
    for level in levels:
        if vr in TEXT_VRS | ASCII_TEXT_VRS:
            assert _known_words_survive(level.get(tag)), (level.get(tag), vr)
        elif vr == "SQ":  # cleaned through, not dropped
            assert _known_words_survive(level[tag].value[0].get(CODE_MEANING))
