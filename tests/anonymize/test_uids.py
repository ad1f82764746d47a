"""Keyed UID remapping: consistent across files and runs, different across keys."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from tests.anonymize.helpers import KEY, OTHER_KEY, ct_dataset, part10, run

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
