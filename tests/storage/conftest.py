from pathlib import Path

import pytest

from storage import KeyRing, LocalBackend, MemoryKeyStore, ObjectStore


@pytest.fixture
def keyring() -> KeyRing:
    return KeyRing.generate()


@pytest.fixture
def keystore() -> MemoryKeyStore:
    return MemoryKeyStore()


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    return LocalBackend(tmp_path / "objects")


@pytest.fixture
def store(backend: LocalBackend, keyring: KeyRing, keystore: MemoryKeyStore) -> ObjectStore:
    return ObjectStore(backend, keyring, keystore)


@pytest.fixture
def scope(store: ObjectStore) -> str:
    store.ensure_scope("consent-1")
    return "consent-1"
