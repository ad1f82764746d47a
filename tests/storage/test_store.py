import dataclasses
import gc
import hashlib
import io
import os
import threading
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import (
    SEGMENT_SIZE,
    IntegrityError,
    KeyUnavailable,
    LocalBackend,
    ObjectNotFound,
    ObjectStore,
)

FIXTURE_SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SIZES = st.one_of(
    st.integers(0, 3 * SEGMENT_SIZE + 7),
    st.sampled_from([SEGMENT_SIZE - 1, SEGMENT_SIZE, SEGMENT_SIZE + 1, 2 * SEGMENT_SIZE]),
)


def test_ensure_scope_is_idempotent_and_scopes_differ(store: ObjectStore) -> None:
    first = store.ensure_scope("a")
    assert len(first) == 32
    assert store.ensure_scope("a") == first
    assert store.ensure_scope("b") != first


@pytest.mark.local_only  # reads or writes the stored file directly
@FIXTURE_SETTINGS
@given(size=SIZES, cut=st.integers(1, 100_000), seed=st.binary(min_size=8, max_size=8))
def test_round_trip_any_size_any_write_pattern(
    store: ObjectStore, scope: str, size: int, cut: int, seed: bytes
) -> None:
    data = (hashlib.sha256(seed).digest() * (size // 32 + 1))[:size]
    with store.writer(scope) as writer:
        for start in range(0, size, cut):
            writer.write(data[start : start + cut])
        info = writer.commit()
    assert info.size == size and info.sha256 == hashlib.sha256(data).hexdigest()
    stored = store.backend.path_of(info.object_id).read_bytes()
    assert info.stored_size == len(stored)
    assert info.stored_sha256 == hashlib.sha256(stored).hexdigest()
    assert stored.startswith(b"crypt4gh\x01\x00\x00\x00")
    assert store.read_bytes(info) == data


@FIXTURE_SETTINGS
@given(
    size=SIZES,
    ops=st.lists(
        st.tuples(st.integers(-10, 4 * SEGMENT_SIZE), st.integers(-1, 70_000)), max_size=8
    ),
)
def test_open_is_a_seekable_file_equivalent_to_bytes(
    store: ObjectStore, scope: str, size: int, ops: list[tuple[int, int]]
) -> None:
    data = os.urandom(size)
    info = store.put(scope, io.BytesIO(data))
    expected = io.BytesIO(data)
    with store.open(info) as reader:
        assert reader.readable() and reader.seekable() and not reader.writable()
        for position, length in ops:
            if position < 0:
                assert reader.seek(position, io.SEEK_END) == expected.seek(position, io.SEEK_END)
            else:
                assert reader.seek(position) == expected.seek(position)
            assert reader.read(length) == expected.read(length)
            assert reader.tell() == expected.tell()


def test_pydicom_reads_through_the_decrypting_stream(store: ObjectStore, scope: str) -> None:
    path = pydicom.data.get_testdata_file("CT_small.dcm")
    original = pydicom.dcmread(path)
    with open(path, "rb") as f:
        info = store.put(scope, f)
    with store.open(info) as reader:
        dataset = pydicom.dcmread(reader)
    assert dataset.PatientName == original.PatientName
    assert dataset.PixelData == original.PixelData
    assert dataset == original


@pytest.mark.local_only  # inspects LocalBackend's folder
def test_no_plaintext_or_patient_name_on_disk(
    store: ObjectStore, scope: str, backend: LocalBackend
) -> None:
    path = pydicom.data.get_testdata_file("CT_small.dcm")
    name = str(pydicom.dcmread(path).PatientName).encode()
    with open(path, "rb") as f:
        store.put(scope, f)
    files = [p for p in Path(backend.root).rglob("*") if p.is_file()]
    assert files
    for p in files:
        content = p.read_bytes()
        assert b"DICM" not in content and name not in content
        assert name.decode() not in str(p)


def test_digest_mismatch_fails_the_full_read_without_returning_data(
    store: ObjectStore, scope: str
) -> None:
    data = os.urandom(3 * SEGMENT_SIZE)
    info = store.put(scope, io.BytesIO(data))
    wrong = dataclasses.replace(info, sha256=hashlib.sha256(b"other").hexdigest())
    with pytest.raises(IntegrityError) as err:
        store.read_bytes(wrong)
    assert err.value.object_id == info.object_id
    for authenticate_first in (True, False):  # the ciphertext is intact: the digest tells
        reader = store.open(wrong, authenticate_first=authenticate_first)
        with reader, pytest.raises(IntegrityError):
            while reader.read(10_000):
                pass


def test_recorded_size_mismatch_is_an_integrity_error(store: ObjectStore, scope: str) -> None:
    info = store.put(scope, io.BytesIO(os.urandom(1000)))
    for wrong in (
        dataclasses.replace(info, size=999),
        dataclasses.replace(info, stored_size=info.stored_size + 1),
    ):
        with pytest.raises(IntegrityError):
            store.read_bytes(wrong)


@pytest.mark.local_only  # inspects LocalBackend's folder
def test_exception_in_writer_block_leaves_nothing(
    store: ObjectStore, scope: str, backend: LocalBackend
) -> None:
    with pytest.raises(RuntimeError), store.writer(scope) as writer:
        writer.write(os.urandom(SEGMENT_SIZE * 2))
        raise RuntimeError("upload interrupted")
    assert list(backend.list()) == []
    assert list((backend.root / "tmp").iterdir()) == []


def test_abort_leaves_nothing_and_writer_refuses_more(
    store: ObjectStore, scope: str, backend: LocalBackend
) -> None:
    writer = store.writer(scope)
    writer.write(b"abc")
    writer.abort()
    assert list(backend.list()) == []
    with pytest.raises(Exception, match="aborted"):
        writer.write(b"more")


def test_writer_needs_an_existing_scope(store: ObjectStore) -> None:
    with pytest.raises(KeyUnavailable):
        store.writer("never-created")


def test_delete(store: ObjectStore, scope: str) -> None:
    info = store.put(scope, io.BytesIO(b"hello"))
    store.delete(info.object_id)
    with pytest.raises(ObjectNotFound) as err:
        store.read_bytes(info)
    assert err.value.object_id == info.object_id
    with pytest.raises(ObjectNotFound):
        store.delete(info.object_id)


def test_shred_scope_destroys_key_and_objects(store: ObjectStore) -> None:
    store.ensure_scope("keep")
    store.ensure_scope("gone")
    kept = store.put("keep", io.BytesIO(b"kept"))
    gone = [store.put("gone", io.BytesIO(os.urandom(100))) for _ in range(3)]
    store.delete(gone[0].object_id)
    store.shred_scope("gone", [g.object_id for g in gone])
    assert store.keystore.get("gone") is None
    assert list(store.backend.list()) == [kept.object_id]
    assert store.read_bytes(kept) == b"kept"
    with pytest.raises(KeyUnavailable):
        store.writer("gone")


def test_objects_of_one_scope_do_not_open_with_another_scopes_key(store: ObjectStore) -> None:
    store.ensure_scope("a")
    store.ensure_scope("b")
    info = store.put("a", io.BytesIO(b"secret"))
    with pytest.raises(KeyUnavailable) as err:
        store.read_bytes(dataclasses.replace(info, scope_id="b"))
    assert err.value.object_id == info.object_id


LARGE = 9 * 1024 * 1024 + 12345  # past the size where hashing/writing move to background lanes


def test_large_object_from_a_reused_mutable_buffer(store: ObjectStore, scope: str) -> None:
    """Callers may reuse their buffer after write() returns (readinto loops)."""
    data = os.urandom(LARGE)
    source = io.BytesIO(data)
    buffer = bytearray(100_003)
    with store.writer(scope) as writer:
        while n := source.readinto(buffer):
            writer.write(memoryview(buffer)[:n])
            buffer[:] = b"\xff" * len(buffer)
        info = writer.commit()
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert store.read_bytes(info) == data


def test_large_object_digest_mismatch_is_caught(store: ObjectStore, scope: str) -> None:
    info = store.put(scope, io.BytesIO(os.urandom(LARGE)))
    wrong = dataclasses.replace(info, sha256="0" * 64)
    with pytest.raises(IntegrityError):
        store.read_bytes(wrong)


class _FailingBackend(LocalBackend):
    """Local backend whose writes fail after a few MiB (disk full)."""

    def create(self, object_id: str):
        inner = super().create(object_id)
        written = [0]

        class Writer:
            def write(self, data) -> None:
                written[0] += len(data)
                if written[0] > 6 * 1024 * 1024:
                    raise OSError(28, "No space left on device")
                inner.write(data)

            def commit(self) -> int:
                return inner.commit()

            def abort(self) -> None:
                inner.abort()

        return Writer()


def test_backend_failure_during_a_large_write_surfaces_and_leaves_nothing(
    tmp_path: Path, keyring, keystore
) -> None:
    backend = _FailingBackend(tmp_path / "objects")
    store = ObjectStore(backend, keyring, keystore)
    store.ensure_scope("s")
    with pytest.raises(OSError, match="No space"):
        store.put("s", io.BytesIO(os.urandom(LARGE)))
    assert list(backend.list()) == []
    assert list((backend.root / "tmp").iterdir()) == []


def test_abandoned_large_reader_and_writer_end_their_threads(
    store: ObjectStore, scope: str
) -> None:
    baseline = threading.active_count()
    info = store.put(scope, io.BytesIO(os.urandom(LARGE)))
    reader = store.open(info)
    reader.read(LARGE // 2)
    writer = store.writer(scope)
    writer.write(os.urandom(LARGE))
    assert threading.active_count() > baseline
    lanes = [t for t in threading.enumerate() if t.name == "storage-lane"]
    del reader, writer
    gc.collect()
    for lane in lanes:  # work still queued when abandoned finishes first, then the lane ends
        lane.join(timeout=10)
    assert threading.active_count() == baseline
