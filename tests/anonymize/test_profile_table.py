"""Every row of PS3.15 Table E.1-1, at the top level and inside a nested sequence.

The expected action comes from the shipped data file; the check is on the output file: X ->
absent, Z -> present and empty, D -> present, not empty and not the original, U -> a new 2.25
UID, K -> unchanged, C -> cleaned (no planted identifier survives; imaging words do).
Compound actions (X/Z, X/D, X/Z/D, Z/D, X/Z/U*) pass if the effect is one of their parts.
"""

from __future__ import annotations

import json
from importlib import resources

import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from anonymize import Profile
from tests.anonymize.helpers import PATIENT_ID, PSEUDONYM, ct_dataset, part10, run

TABLE = json.loads(
    resources.files("anonymize").joinpath("data/confidentiality_profile.json").read_text()
)["attributes"]
ROWS = sorted(int(tag, 16) for tag in TABLE)
# A public sequence that is not in the table: its items are walked like the top level.
CONTAINER = 0x00409096  # Real World Value Mapping Sequence
NESTED_UID = "1.2.826.0.1.3680043.9.7781.9.9"
TEXT = f"HEAD CT Doe {PATIENT_ID} 19710203"
ORIGINAL: dict[str, object] = {
    "PN": "Doe^Johnathan", "LO": f"HEAD CT Doe {PATIENT_ID}", "SH": "HEAD Doe", "CS": "HEAD DOE",
    "ST": TEXT, "LT": TEXT, "UT": TEXT, "UC": TEXT, "DA": "19710203", "DT": "19710203101010",
    "TM": "101010", "UI": "1.2.826.0.1.3680043.9.7781.5.5", "AS": "045Y", "DS": "12.5",
    "IS": "42", "AE": "DOEAE", "UR": "http://doe.example/1", "US": 7, "OB": b"DOE1",
    "UN": b"DOE1",
}
# Kept (K) values must come out unchanged: they hold none of the patient's identifiers, which
# the engine removes even from kept text.
NEUTRAL: dict[str, object] = {"PN": "Brown^Alex", "LO": "HEAD CT 42", "SH": "HEAD 42",
                              "CS": "HEAD", "ST": "HEAD CT 42", "LT": "HEAD CT 42",
                              "UT": "HEAD CT 42", "UC": "HEAD CT 42"}
LEAKS = ("doe", PATIENT_ID.lower(), "19710203", "johnathan")
# Set by the engine after the walk, at the top level only (checked in test_identity).
SET_AT_TOP = {0x00100010: PSEUDONYM, 0x00100020: PSEUDONYM}
NOT_A_DATASET_ELEMENT = 0x0002  # file meta: rebuilt, never copied from the dataset


def assert_container_not_in_table() -> None:
    assert f"{CONTAINER:08X}" not in TABLE


def _vr(tag: int) -> str:
    return dictionary_VR(tag).split(" ")[0]


def _original(tag: int, vr: str, neutral: bool = False) -> object:
    if neutral and vr in NEUTRAL:
        return NEUTRAL[vr]
    if vr == "SQ":
        item = Dataset()
        item.PatientName = "Doe^Johnathan"
        item.ReferencedSOPInstanceUID = NESTED_UID
        return Sequence([item])
    return ORIGINAL[vr]


def _build(tag: int, neutral: bool) -> tuple[bytes, object]:
    vr = _vr(tag)
    ds = ct_dataset()
    if tag >> 16 != NOT_A_DATASET_ELEMENT:
        ds[tag] = DataElement(tag, vr, _original(tag, vr, neutral))
    item = Dataset()
    item[tag] = DataElement(tag, vr, _original(tag, vr, neutral))
    ds[CONTAINER] = DataElement(CONTAINER, "SQ", Sequence([item]))
    return part10(ds), _original(tag, vr, neutral)


def _empty(value: object) -> bool:
    return value is None or value == "" or value == b"" or (
        isinstance(value, Sequence) and len(value) == 0
    )


def _text_of(value: object) -> str:
    if isinstance(value, Sequence):
        return repr([repr(item) for item in value]).lower()
    if isinstance(value, bytes):
        return value.decode("latin-1").lower()
    return str(value).lower()


def _no_leak(value: object) -> bool:
    text = _text_of(value)
    return not any(leak in text for leak in LEAKS)


def _effect_ok(action: str, vr: str, present: bool, value: object, original: object) -> bool:
    """Whether the observed element satisfies one plain action."""
    if action == "X":
        return not present
    if not present:
        return False
    if action == "Z":
        return _empty(value)
    if action == "K":
        if vr == "SQ":
            return len(value) == len(original) and _no_leak(value)  # type: ignore[arg-type]
        return value == original
    if action == "U":
        return str(value).startswith("2.25.") and value != original
    if action == "D":
        if vr == "SQ":
            return _no_leak(value)
        if vr == "UI":
            return str(value).startswith("2.25.") and value != original
        return not _empty(value) and value != original and _no_leak(value)
    if action == "C":
        return _clean_ok(vr, value, original)
    raise AssertionError(f"unexpected action {action}")


def _clean_ok(vr: str, value: object, original: object) -> bool:
    if vr == "SQ":
        return _no_leak(value)
    if vr == "UI":
        return str(value).startswith("2.25.")
    if vr == "TM":
        return _empty(value) or value == original
    if vr in ("DA", "DT"):
        return not _empty(value) and value != original
    if vr in ("OB", "OW", "UN"):
        return True  # present binary: only a removal or a dummy can be checked; see below
    if not _no_leak(value):
        return False
    if vr in ("LO", "SH", "ST", "LT", "UT", "UC", "CS"):
        return "head" in _text_of(value)  # imaging words survive a clean
    return True


def _alternatives(action: str, vr: str) -> tuple[str, ...]:
    if action == "C" and vr in ("OB", "OW", "UN"):
        # Opaque bytes cannot be cleaned word by word: removing them is the conservative clean.
        return ("X", "Z", "D")
    if action == "X/Z/U*":
        return ("X", "Z", "U", "K")  # K: a sequence whose UIDs were remapped inside
    return tuple(action.split("/"))


def _observe(ds: Dataset, tag: int) -> tuple[bool, object]:
    if tag not in ds:
        return False, None
    return True, ds[tag].value


def _check(action: str, vr: str, where: Dataset, tag: int, original: object) -> None:
    present, value = _observe(where, tag)
    alternatives = _alternatives(action, vr)
    assert any(_effect_ok(a, vr, present, value, original) for a in alternatives), (
        f"{tag:08X} {vr}: expected {action}, got present={present} value={value!r}"
    )
    if present and vr == "UI" and "U" in alternatives and not _empty(value):
        assert str(value).startswith("2.25.")


def _nested(ds: Dataset) -> Dataset:
    container = ds[CONTAINER].value
    assert len(container) == 1
    return container[0]


def _run_row(tag: int, profile: Profile, action: str) -> None:
    assert_container_not_in_table()
    data, original = _build(tag, neutral=action == "K")
    result = run(data, profile=profile)
    assert result.outcome.verdict == "deidentified", result.outcome
    out = result.dataset
    vr = _vr(tag)
    if tag >> 16 == NOT_A_DATASET_ELEMENT:
        uid = str(out.file_meta[tag].value)
        assert action != "U" or (uid.startswith("2.25.") and uid == out.SOPInstanceUID)
        assert tag not in _nested(out)
        return
    if tag in SET_AT_TOP:
        assert out[tag].value == SET_AT_TOP[tag]
    else:
        _check(action, vr, out, tag, original)
    _check(action, vr, _nested(out), tag, original)


@pytest.mark.parametrize("tag", ROWS, ids=lambda t: f"{t:08X}")
def test_basic_profile_row(tag: int) -> None:
    _run_row(tag, Profile.named("basic"), TABLE[f"{tag:08X}"]["basic"])


OPTION_ROWS = [
    (tag, option, action)
    for tag in ROWS
    for option, action in TABLE[f"{tag:08X}"]["options"].items()
    if option != "retain_uids" or _vr(tag) == "UI"
]


@pytest.mark.parametrize(("tag", "option", "action"), OPTION_ROWS,
                         ids=lambda v: f"{v:08X}" if isinstance(v, int) else str(v))
def test_option_overrides_row(tag: int, option: str, action: str) -> None:
    _run_row(tag, Profile(frozenset({option})), action)


def test_every_row_is_tested() -> None:
    assert len(ROWS) == len(TABLE) > 600
    assert {option for _, option, _ in OPTION_ROWS} >= {
        "retain_long_full_dates", "retain_long_modified_dates", "retain_patient_chars",
        "retain_device_id", "retain_institution_id", "clean_descriptors", "retain_uids",
    }
