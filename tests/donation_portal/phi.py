"""The identifying values of pydicom's bundled files, to look for where they must not be."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file


@dataclass(frozen=True)
class RealFile:
    name: str
    content: bytes
    identifiers: tuple[str, ...]


def real_file(name: str) -> RealFile:
    path = Path(get_testdata_file(name))
    ds = dcmread(path)
    patient_name = str(ds.get("PatientName", ""))
    values = {patient_name, *patient_name.split("^"), str(ds.get("PatientID", ""))}
    values |= {
        str(ds.get(uid, "")) for uid in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    }
    values.add(str(ds.get("PatientBirthDate", "")))
    return RealFile(name, path.read_bytes(), tuple(v for v in values if len(v) >= 4))
