import io
import os
import tempfile
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from werkzeug.datastructures import FileStorage
from werkzeug.formparser import parse_form_data
from werkzeug.test import EnvironBuilder

from storage import SEGMENT_SIZE, EncryptedSpool, LocalBackend, ObjectStore


def test_spool_encrypts_on_write_then_reads_back_seekably(store: ObjectStore, scope: str) -> None:
    data = os.urandom(3 * SEGMENT_SIZE + 5)
    spool = store.spool(scope)
    assert spool.writable() and spool.readable() and spool.seekable()
    assert not hasattr(spool, "name")
    for start in range(0, len(data), 10_000):
        spool.write(data[start : start + 10_000])
    assert spool.tell() == len(data)
    assert spool.info is None
    assert spool.seek(0) == 0
    assert not spool.writable()
    assert spool.info is not None and spool.info.size == len(data)
    assert spool.read() == data
    spool.seek(SEGMENT_SIZE - 3)
    assert spool.read(6) == data[SEGMENT_SIZE - 3 : SEGMENT_SIZE + 3]
    assert spool.tell() == SEGMENT_SIZE + 3
    with pytest.raises(io.UnsupportedOperation):
        spool.write(b"late")
    spool.close()
    assert store.read_bytes(spool.info) == data


@pytest.mark.local_only  # inspects LocalBackend's folder
def test_spool_closed_before_seek_leaves_nothing(
    store: ObjectStore, scope: str, backend: LocalBackend
) -> None:
    with store.spool(scope) as spool:
        spool.write(os.urandom(1000))
    assert list(backend.list()) == []
    assert list((backend.root / "tmp").iterdir()) == []


def test_reading_before_seek_is_refused(store: ObjectStore, scope: str) -> None:
    with store.spool(scope) as spool:
        spool.write(b"abc")
        with pytest.raises(io.UnsupportedOperation):
            spool.read()


def _large_dicom(name: str) -> bytes:
    source = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    source.PatientName = name
    block = source.private_block(0x0011, "storage-test", create=True)
    block.add_new(0x01, "OB", os.urandom(3 * 1024 * 1024))
    out = io.BytesIO()
    source.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _files_containing(roots: list[Path], needles: list[bytes]) -> list[Path]:
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                content = path.read_bytes()
                if any(n in content or n.decode() in str(path) for n in needles):
                    found.append(path)
    return found


def test_scan_helper_finds_plaintext(tmp_path: Path) -> None:
    (tmp_path / "leak").write_bytes(b"xxDICMxx")
    assert _files_containing([tmp_path], [b"DICM"]) == [tmp_path / "leak"]


@pytest.mark.local_only  # inspects LocalBackend's folder
def test_werkzeug_upload_is_never_plaintext_on_disk(
    store: ObjectStore, scope: str, backend: LocalBackend, tmp_path: Path, monkeypatch
) -> None:
    name = "Doe^Unforgettable"
    upload = _large_dicom(name)
    spool_dir = tmp_path / "werkzeug-tmp"
    spool_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool_dir))
    spools: list[EncryptedSpool] = []

    def stream_factory(total_content_length, content_type, filename, content_length=None):
        spools.append(store.spool(scope))
        return spools[-1]

    builder = EnvironBuilder(
        method="POST", data={"file": (io.BytesIO(upload), "scan.dcm", "application/dicom")}
    )
    environ = builder.get_environ()
    _, _, files = parse_form_data(environ, stream_factory=stream_factory)
    stored: FileStorage = files["file"]
    assert len(spools) == 1 and stored.stream is spools[0]

    leaks = _files_containing([spool_dir, backend.root], [b"DICM", name.encode()])
    assert leaks == []
    assert list(backend.list()) == [spools[0].info.object_id]

    dataset = pydicom.dcmread(stored.stream)
    assert str(dataset.PatientName) == name
    stored.stream.seek(0)
    copy = io.BytesIO()
    stored.save(copy)
    assert copy.getvalue() == upload
    stored.close()
    assert store.read_bytes(spools[0].info) == upload


def test_dataset_written_straight_into_a_spool(store: ObjectStore, scope: str) -> None:
    ds = Dataset()
    ds.PatientName = "Straight^Through"
    spool = store.spool(scope)
    ds.save_as(spool, implicit_vr=True, little_endian=True)
    spool.seek(0)
    assert str(pydicom.dcmread(spool, force=True).PatientName) == "Straight^Through"
