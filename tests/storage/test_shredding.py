"""Crypto-shredding: a backup copy taken before erasure is undecryptable afterwards."""

import io
import os
import shutil
from pathlib import Path

import pytest

from storage import (
    KeyUnavailable,
    ObjectStore,
    export_private_key_file,
)
from storage.scope_keys import unwrap


def _every_key_the_operator_still_has(store: ObjectStore, directory: Path) -> list[Path]:
    """Every scope private key recoverable with the current KEK (all versions)."""
    directory.mkdir(exist_ok=True)
    paths = []
    for n, wrapped in enumerate(store.keystore.all()):
        path = directory / f"key{n}.sec"
        if not path.exists():
            export_private_key_file(unwrap(store.keyring, wrapped), path)
        paths.append(path)
    return paths


@pytest.mark.local_only  # reads or writes the stored file directly
def test_backup_copy_is_undecryptable_after_shredding(
    store: ObjectStore, reference, tmp_path: Path
) -> None:
    store.ensure_scope("withdrawn")
    store.ensure_scope("other-donor")
    data = os.urandom(200_000)
    info = store.put("withdrawn", io.BytesIO(data))
    store.put("other-donor", io.BytesIO(os.urandom(1000)))
    backup = tmp_path / "backup.c4gh"
    shutil.copyfile(store.backend.path_of(info.object_id), backup)

    before = _every_key_the_operator_still_has(store, tmp_path / "before")
    assert any(reference.decrypt(sk, backup.read_bytes()).stdout == data for sk in before)

    store.shred_scope("withdrawn", [info.object_id])

    assert not store.backend.path_of(info.object_id).exists()
    after = _every_key_the_operator_still_has(store, tmp_path / "after")
    assert len(after) == 1
    for sk in after:
        done = reference.decrypt(sk, backup.read_bytes())
        assert done.returncode != 0 and data not in done.stdout
    restored = store.backend.path_of(info.object_id)
    restored.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(backup, restored)
    with pytest.raises(KeyUnavailable) as err:
        store.read_bytes(info)
    assert err.value.object_id == info.object_id
    store.keyring.add_version()
    with pytest.raises(KeyUnavailable):
        store.read_bytes(info)
