"""Every bad input of issue 4 gives a typed error naming the object, never data."""

import dataclasses
import io
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import (
    SEGMENT_SIZE,
    IntegrityError,
    KeyRing,
    KeyUnavailable,
    LocalBackend,
    MemoryKeyStore,
    ObjectInfo,
    ObjectStore,
    StorageError,
    WrappedKey,
)
from storage.c4gh_format import CIPHER_SEGMENT_SIZE

FIXTURE_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _stored(store: ObjectStore, info: ObjectInfo) -> Path:
    return store.backend.path_of(info.object_id)


def _assert_refused(store: ObjectStore, info: ObjectInfo, error=IntegrityError) -> None:
    with pytest.raises(error) as err:
        store.read_bytes(info)
    assert err.value.object_id == info.object_id
    assert info.object_id in str(err.value)


@pytest.mark.local_only  # reads or writes the stored file directly
def test_every_single_byte_flip_of_a_small_object_is_caught(
    store: ObjectStore, scope: str
) -> None:
    data = os.urandom(700)
    info = store.put(scope, io.BytesIO(data))
    path = _stored(store, info)
    original = path.read_bytes()
    for position in range(len(original)):
        tampered = bytearray(original)
        tampered[position] ^= 0x01
        path.write_bytes(tampered)
        _assert_refused(store, info)
    path.write_bytes(original)
    assert store.read_bytes(info) == data


@pytest.mark.local_only  # reads or writes the stored file directly
@FIXTURE_SETTINGS
@given(position=st.integers(0, 10**9), bit=st.integers(0, 7))
def test_a_flipped_bit_anywhere_in_a_multi_segment_object_is_caught(
    store: ObjectStore, scope: str, position: int, bit: int
) -> None:
    info = store.put(scope, io.BytesIO(b"\x00" * (2 * SEGMENT_SIZE + 10)))
    path = _stored(store, info)
    tampered = bytearray(path.read_bytes())
    tampered[position % len(tampered)] ^= 1 << bit
    path.write_bytes(tampered)
    _assert_refused(store, info)


@pytest.mark.local_only  # reads or writes the stored file directly
@FIXTURE_SETTINGS
@given(keep=st.integers(0, 10**9))
def test_a_truncated_object_is_caught_at_any_length(
    store: ObjectStore, scope: str, keep: int
) -> None:
    info = store.put(scope, io.BytesIO(os.urandom(2 * SEGMENT_SIZE + 10)))
    path = _stored(store, info)
    content = path.read_bytes()
    path.write_bytes(content[: keep % len(content)])
    _assert_refused(store, info)


@pytest.mark.local_only  # reads or writes the stored file directly
def test_truncation_at_a_segment_boundary_with_forged_records_is_caught(
    store: ObjectStore, scope: str
) -> None:
    """Dropping the last whole segment yields a valid Crypt4GH file; only the
    recorded digest tells, even if the recorded sizes were forged to match."""
    info = store.put(scope, io.BytesIO(os.urandom(2 * SEGMENT_SIZE)))
    path = _stored(store, info)
    shorter = path.read_bytes()[:-CIPHER_SEGMENT_SIZE]
    path.write_bytes(shorter)
    forged = dataclasses.replace(info, size=SEGMENT_SIZE, stored_size=len(shorter))
    _assert_refused(store, forged)


@pytest.mark.local_only  # reads or writes the stored file directly
def test_reordered_segments_are_caught_on_full_read(store: ObjectStore, scope: str) -> None:
    data = os.urandom(3 * SEGMENT_SIZE)
    info = store.put(scope, io.BytesIO(data))
    path = _stored(store, info)
    content = path.read_bytes()
    header = len(content) - 3 * CIPHER_SEGMENT_SIZE
    segments = [
        content[header + i * CIPHER_SEGMENT_SIZE : header + (i + 1) * CIPHER_SEGMENT_SIZE]
        for i in range(3)
    ]
    path.write_bytes(content[:header] + segments[1] + segments[0] + segments[2])
    _assert_refused(store, info)
    with pytest.raises(IntegrityError):
        store.open(info)
    reader = store.open(info, authenticate_first=False)
    with reader, pytest.raises(IntegrityError):
        while reader.read(SEGMENT_SIZE):
            pass


def test_wrong_scope_key_is_key_unavailable(
    backend: LocalBackend, keyring: KeyRing, keystore: MemoryKeyStore
) -> None:
    store = ObjectStore(backend, keyring, keystore)
    store.ensure_scope("s")
    info = store.put("s", io.BytesIO(b"payload"))
    keystore.destroy("s")
    store.ensure_scope("s")  # a new, different key pair under the same scope ID
    _assert_refused(store, info, KeyUnavailable)


def test_destroyed_scope_key_is_key_unavailable(store: ObjectStore, scope: str) -> None:
    info = store.put(scope, io.BytesIO(b"payload"))
    store.keystore.destroy(scope)
    _assert_refused(store, info, KeyUnavailable)


def test_kek_version_gone_is_key_unavailable(store: ObjectStore, scope: str) -> None:
    info = store.put(scope, io.BytesIO(b"payload"))
    store.keyring.add_version()
    store.keyring.retire(1)
    _assert_refused(store, info, KeyUnavailable)


def test_wrong_kek_is_key_unavailable(
    backend: LocalBackend, keystore: MemoryKeyStore, keyring: KeyRing
) -> None:
    ObjectStore(backend, keyring, keystore).ensure_scope("s")
    info = ObjectStore(backend, keyring, keystore).put("s", io.BytesIO(b"payload"))
    _assert_refused(ObjectStore(backend, KeyRing.generate(), keystore), info, KeyUnavailable)


def test_wrapped_key_moved_to_another_scope_does_not_unwrap(
    store: ObjectStore, keystore: MemoryKeyStore
) -> None:
    store.ensure_scope("a")
    info = store.put("a", io.BytesIO(b"payload"))
    stolen = keystore.get("a")
    keystore.destroy("a")
    keystore.add(WrappedKey("a", stolen.public_key, stolen.wrapped_private_key[:-1] + b"\0", 1))
    _assert_refused(store, info, KeyUnavailable)
    keystore.destroy("a")
    keystore.add(stolen)
    keystore.add(dataclasses.replace(stolen, scope_id="b"))
    with pytest.raises(KeyUnavailable):
        store.read_bytes(dataclasses.replace(info, scope_id="b"))


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyUnavailable):
        KeyRing.load(tmp_path / "instance" / "kek.json")


@pytest.mark.local_only  # reads or writes the stored file directly
def test_not_a_crypt4gh_object(store: ObjectStore, scope: str) -> None:
    info = store.put(scope, io.BytesIO(b"payload"))
    path = _stored(store, info)
    path.write_bytes(b"x" * info.stored_size)
    _assert_refused(store, info)


@pytest.mark.local_only  # reads or writes the stored file directly
def test_errors_never_carry_content_or_keys(store: ObjectStore, scope: str) -> None:
    secret = b"PatientName^Secret"
    info = store.put(scope, io.BytesIO(secret * 100))
    path = _stored(store, info)
    tampered = bytearray(path.read_bytes())
    tampered[-1] ^= 1
    path.write_bytes(tampered)
    with pytest.raises(StorageError) as err:
        store.read_bytes(info)
    private = store.export_private_key(scope)
    text = str(err.value) + repr(err.value.args)
    assert "Secret" not in text
    assert private.hex() not in text
    assert store.keystore.get(scope).wrapped_private_key.hex() not in text
