"""Property: identifying values planted anywhere never survive into the output bytes.

Each example invents a patient (name parts, an ID, a birth date, a phone number, an e-mail and
instance UIDs), writes them into the usual patient attributes, then plants them in random
public attributes, in items of random nested sequences and in private groups (with unknown and
with safe-listed creators), in Explicit or Implicit VR. The output bytes, upper- and
lower-cased, must contain none of them.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.datadict import DicomDictionary
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from anonymize import Profile
from tests.anonymize.helpers import ct_dataset, part10, run

TEXT_VRS = ("PN", "LO", "SH", "ST", "LT", "UT", "CS", "DA", "DT", "UI")
# Attributes the engine reads to classify the object or decode text: planting there changes
# what kind of object it is, which other tests cover.
# The patient's own identity attributes are not overwritten: they define what must not leak.
STRUCTURAL = {0x00080005, 0x00080016, 0x00280301, 0x00282110, 0x00080008, 0x00080060,
              0x00280004, 0x00620021, 0x00100010, 0x00100020, 0x00100030, 0x00102154}
PUBLIC_TAGS = sorted(
    tag for tag, (vr, vm, _name, retired, _kw) in DicomDictionary.items()
    if vr in TEXT_VRS and vm == "1" and not retired and tag >> 16 not in (0x0000, 0x0002)
    and tag not in STRUCTURAL and not 0x50000000 <= tag < 0x61000000
)
SEQUENCE_TAGS = sorted(
    tag for tag, (vr, _vm, _name, retired, _kw) in DicomDictionary.items()
    if vr == "SQ" and not retired and tag >> 16 not in (0x0000, 0x0002, 0x0040)
)
SAFE_PRIVATE = [  # (group, creator, element byte, VR) listed as 'k' in the knowledge base
    (0x0009, "FDMS 1.0", 0x90, "ST"),
    (0x0009, "FDMS 1.0", 0x92, "SH"),
    (0x0009, "GEMS_IDEN_01", 0x01, "LO"),
    (0x0009, "GEMS_PETD_01", 0x03, "SH"),
]

letters = st.text("ABCDEFGHJKLMNPQRSTUVWXYZ", min_size=6, max_size=10)


@st.composite
def patients(draw: st.DrawFn) -> dict[str, str]:
    year = draw(st.integers(1920, 2010))
    month = draw(st.integers(1, 12))
    day = draw(st.integers(1, 28))
    root = "1.2.826.0.1.3680043.9." + ".".join(
        str(draw(st.integers(1000, 99999))) for _ in range(2))
    return {
        "family": draw(letters).title(),
        "given": draw(letters).title(),
        "id": draw(st.text("ABCDEFGHJKLMNPQRSTUVWXYZ", min_size=2, max_size=3))
        + str(draw(st.integers(100000, 99999999))),
        "birth": f"{year:04d}{month:02d}{day:02d}",
        "phone": f"+44 20 {draw(st.integers(1000, 9999))} {draw(st.integers(1000, 9999))}",
        "email": f"{draw(letters).lower()}@{draw(letters).lower()}.org",
        "uid": root + ".1",
    }


def _value(vr: str, patient: dict[str, str], form: int) -> str:
    """One planted value valid for ``vr``."""
    name = f"{patient['family']}^{patient['given']}"
    if vr == "PN":
        return name
    if vr == "DA":
        return patient["birth"]
    if vr == "DT":
        return patient["birth"] + "1200"
    if vr == "UI":
        return patient["uid"]
    if vr in ("CS", "SH"):
        return patient["id"][:16]
    texts = [
        f"{patient['family']} {patient['given']}",
        f"MRN {patient['id']}",
        f"call {patient['phone']} or {patient['email']}",
        f"born {patient['birth'][6:]}/{patient['birth'][4:6]}/{patient['birth'][:4]}",
        f"Mrs {patient['given']} {patient['family']} head CT",
    ]
    text = texts[form % len(texts)]
    return text[:64] if vr == "LO" else text


def _forbidden(patient: dict[str, str]) -> list[bytes]:
    birth = patient["birth"]
    values = [patient["family"], patient["given"], patient["id"], birth, patient["email"],
              patient["phone"], patient["phone"].replace(" ", ""), patient["uid"],
              f"{birth[6:]}/{birth[4:6]}/{birth[:4]}"]
    return [case(v).encode() for v in values for case in (str.upper, str.lower, str.title)]


plants = st.lists(st.tuples(st.sampled_from(PUBLIC_TAGS), st.integers(0, 4)), max_size=12)
private_plants = st.lists(
    st.one_of(
        st.tuples(st.just("safe"), st.sampled_from(SAFE_PRIVATE), st.integers(0, 4)),
        st.tuples(st.just("unknown"), st.sampled_from([0x0011, 0x0029, 0x7FE1, 0x4001]),
                  st.integers(0, 4)),
    ),
    max_size=4,
)


def _plant(ds: Dataset, chosen: list[tuple[int, int]], patient: dict[str, str]) -> None:
    for tag, form in chosen:
        vr = DicomDictionary[tag][0]
        ds[tag] = DataElement(tag, vr, _value(vr, patient, form))


def _plant_private(ds: Dataset, chosen: list, patient: dict[str, str]) -> None:
    for kind, where, form in chosen:
        if kind == "safe":
            group, creator, element, vr = where
            block = ds.private_block(group, creator, create=True)
            block.add_new(element, vr, _value(vr, patient, form)[:16 if vr == "SH" else 64])
        else:
            block = ds.private_block(where, patient["family"].upper(), create=True)
            block.add_new(0x10, "LO", _value("LO", patient, form))
            block.add_new(0x11, "UN", _value("LT", patient, form).encode())


@st.composite
def datasets(draw: st.DrawFn) -> tuple[Dataset, dict[str, str]]:
    patient = draw(patients())
    ds = ct_dataset(
        PatientName=f"{patient['family']}^{patient['given']}",
        PatientID=patient["id"],
        PatientBirthDate=patient["birth"],
        PatientTelephoneNumbers=patient["phone"],
        StudyInstanceUID=patient["uid"],
    )
    _plant(ds, draw(plants), patient)
    _plant_private(ds, draw(private_plants), patient)
    parent = ds
    for _ in range(draw(st.integers(0, 3))):
        item = Dataset()
        _plant(item, draw(plants), patient)
        _plant_private(item, draw(private_plants), patient)
        tag = draw(st.sampled_from(SEQUENCE_TAGS))
        parent[tag] = DataElement(tag, "SQ", Sequence([item]))
        parent = item
    return ds, patient


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(example=datasets(), implicit=st.booleans(), basic=st.booleans())
def test_planted_identifiers_never_survive(example: tuple[Dataset, dict[str, str]],
                                           implicit: bool, basic: bool) -> None:
    ds, patient = example
    syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    profile = Profile.named("basic") if basic else Profile.default()
    result = run(part10(ds, syntax), profile=profile)
    assert result.outcome.verdict != "rejected", result.outcome.reason_code
    for value in _forbidden(patient):
        assert value not in result.data, value
