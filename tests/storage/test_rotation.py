import copy
import io
import os
from pathlib import Path

import pytest

from storage import (
    KeyRing,
    KeyUnavailable,
    LocalBackend,
    MemoryKeyStore,
    ObjectStore,
    StorageError,
    key_status,
    retire_kek_version,
    rotate_keys,
)


def _populate(store: ObjectStore, scopes: int = 4):
    infos = []
    for n in range(scopes):
        scope = f"consent-{n}"
        store.ensure_scope(scope)
        infos.append(store.put(scope, io.BytesIO(os.urandom(100 + n))))
    return infos


def _snapshot(backend: LocalBackend) -> dict[str, tuple[bytes, int]]:
    snap = {}
    for object_id in backend.list():
        path = backend.path_of(object_id)
        snap[object_id] = (path.read_bytes(), path.stat().st_mtime_ns)
    return snap


@pytest.mark.local_only  # reads or writes the stored file directly
def test_rotation_rewraps_every_key_and_touches_no_data_file(store: ObjectStore) -> None:
    infos = _populate(store)
    contents = {info.object_id: store.read_bytes(info) for info in infos}
    before_files = _snapshot(store.backend)
    before_keys = {k.scope_id: k for k in store.keystore.all()}

    assert rotate_keys(store.keyring, store.keystore) == len(infos)

    assert store.keyring.current_version == 2
    assert _snapshot(store.backend) == before_files
    for key in store.keystore.all():
        old = before_keys[key.scope_id]
        assert key.kek_version == 2 and key.public_key == old.public_key
        assert key.wrapped_private_key != old.wrapped_private_key
    assert key_status(store.keyring, store.keystore) == {1: 0, 2: len(infos)}
    retire_kek_version(store.keyring, store.keystore, 1)
    assert store.keyring.versions() == [2]
    for info in infos:
        assert store.read_bytes(info) == contents[info.object_id]


def test_retiring_a_version_in_use_is_refused(store: ObjectStore) -> None:
    _populate(store, 2)
    store.keyring.add_version()
    with pytest.raises(StorageError, match="still wraps 2"):
        retire_kek_version(store.keyring, store.keystore, 1)
    assert store.keyring.versions() == [1, 2]


def test_crash_safe_order_both_outcomes_stay_readable(
    tmp_path: Path, backend: LocalBackend
) -> None:
    """With save_to, the key file holds the new version before any re-wrapped key
    could be committed: a rollback and a commit both leave every object readable."""
    key_file = tmp_path / "kek.json"
    KeyRing.create_file(key_file)
    keystore = MemoryKeyStore()
    store = ObjectStore(backend, KeyRing.load(key_file), keystore)
    infos = _populate(store, 3)
    rolled_back = copy.deepcopy(keystore)

    rotate_keys(store.keyring, keystore, save_to=key_file)

    reloaded = KeyRing.load(key_file)
    assert reloaded.versions() == [1, 2] and reloaded.current_version == 2
    for candidate in (keystore, rolled_back):
        reader = ObjectStore(backend, reloaded, candidate)
        for info in infos:
            assert reader.read_bytes(info)


def test_rotation_with_a_ring_that_lost_a_version_fails_loudly(store: ObjectStore) -> None:
    _populate(store, 1)
    store.keyring.add_version()
    store.keyring.retire(1)
    with pytest.raises(KeyUnavailable):
        rotate_keys(store.keyring, store.keystore)


def test_key_status_lists_versions_without_keys(keyring: KeyRing) -> None:
    keyring.add_version()
    assert key_status(keyring, MemoryKeyStore()) == {1: 0, 2: 0}
