"""Keyed UID remapping: consistent for a donor across files and runs, different across donors
and keys."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from anonymize.writer import IMPLEMENTATION_CLASS_UID
from tests.anonymize.helpers import KEY, OTHER_KEY, Result, ct_dataset, part10, run

STUDY = "1.2.826.0.1.3680043.9.7781.1"
SERIES = "1.2.826.0.1.3680043.9.7781.2"
FRAME = "1.2.826.0.1.3680043.9.7781.4"


def _study(count: int) -> list[bytes]:
    files = []
    for number in range(count):
        ds = ct_dataset(SOPInstanceUID=f"1.2.826.0.1.3680043.9.7781.3.{number}",
                        FrameOfReferenceUID=FRAME, InstanceNumber=number)
        if number:
            reference = Dataset()
            reference.ReferencedSOPClassUID = CTImageStorage
            reference.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.9.7781.3.0"
            ds.ReferencedImageSequence = Sequence([reference])
        files.append(part10(ds))
    return files


def test_a_study_keeps_its_structure_under_new_uids() -> None:
    outs = [run(data).dataset for data in _study(4)]
    assert len({out.StudyInstanceUID for out in outs}) == 1
    assert len({out.SeriesInstanceUID for out in outs}) == 1
    assert len({out.FrameOfReferenceUID for out in outs}) == 1
    assert len({out.SOPInstanceUID for out in outs}) == 4
    assert outs[0].StudyInstanceUID != STUDY and outs[0].StudyInstanceUID.startswith("2.25.")
    assert outs[0].SeriesInstanceUID != SERIES
    for out in outs[1:]:
        assert out.ReferencedImageSequence[0].ReferencedSOPInstanceUID == outs[0].SOPInstanceUID
        assert out.ReferencedImageSequence[0].ReferencedSOPClassUID == CTImageStorage
    assert all(len(out.SOPInstanceUID) <= 64 for out in outs)


def test_two_runs_with_the_same_key_agree_and_other_keys_differ() -> None:
    data = _study(2)
    first = [run(d, key=KEY) for d in data]
    second = [run(d, key=KEY) for d in data]
    other = [run(d, key=OTHER_KEY) for d in data]
    for a, b, c in zip(first, second, other, strict=True):
        assert a.data == b.data  # deterministic, byte for byte
        assert a.dataset.SOPInstanceUID == b.dataset.SOPInstanceUID
        assert a.dataset.SOPInstanceUID != c.dataset.SOPInstanceUID
        assert a.dataset.StudyInstanceUID != c.dataset.StudyInstanceUID


def test_registered_uids_are_kept() -> None:
    out = run(part10(ct_dataset())).dataset
    assert out.SOPClassUID == CTImageStorage
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out.file_meta.MediaStorageSOPClassUID == CTImageStorage


def _new_uids(result: Result) -> set[str]:
    """Every remapped UID of an output, file meta included (not the engine's own)."""
    out = result.dataset
    found = {str(elem.value) for elem in out.iterall() if elem.VR == "UI"}
    found |= {str(elem.value) for elem in out.file_meta if elem.VR == "UI"}
    return {uid for uid in found if uid.startswith("2.25.")} - {IMPLEMENTATION_CLASS_UID}


def _self_referencing() -> bytes:
    """A file whose items refer to its own instance, series and frame of reference."""
    ds = ct_dataset(FrameOfReferenceUID=FRAME)
    image = Dataset()
    image.ReferencedSOPClassUID = CTImageStorage
    image.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    ds.SourceImageSequence = Sequence([image])
    series = Dataset()
    series.SeriesInstanceUID = SERIES
    ds.ReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = FRAME
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    return part10(ds)


def test_two_donors_giving_the_same_study_get_different_uids_everywhere() -> None:
    for data in [*_study(2), _self_referencing()]:
        first, second = run(data, pseudonym="DONOR-A"), run(data, pseudonym="DONOR-B")
        assert len(_new_uids(first)) >= 4
        assert _new_uids(first).isdisjoint(_new_uids(second))


def test_a_donor_gets_the_same_uids_in_every_upload() -> None:
    for data in _study(2):
        first, again = run(data, pseudonym="DONOR-A"), run(data, pseudonym="DONOR-A")
        assert _new_uids(first) == _new_uids(again)
        assert first.data == again.data


def test_references_follow_the_donors_own_mapping() -> None:
    for pseudonym in ("DONOR-A", "DONOR-B"):
        outs = [run(data, pseudonym=pseudonym).dataset for data in _study(3)]
        for out in outs[1:]:
            reference = out.ReferencedImageSequence[0]
            assert reference.ReferencedSOPInstanceUID == outs[0].SOPInstanceUID
        own = run(_self_referencing(), pseudonym=pseudonym).dataset
        assert own.SourceImageSequence[0].ReferencedSOPInstanceUID == own.SOPInstanceUID
        assert own.ReferencedSeriesSequence[0].SeriesInstanceUID == own.SeriesInstanceUID
        frame = own.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
        assert frame == own.FrameOfReferenceUID
        assert own.file_meta.MediaStorageSOPInstanceUID == own.SOPInstanceUID
