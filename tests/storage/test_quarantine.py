"""Quarantine left behind by processing that never ended is destroyed after a set time."""

import io
import os
import shutil
import time
from pathlib import Path

import pytest

from storage import (
    KeyUnavailable,
    LocalBackend,
    ObjectStore,
    StorageError,
    export_private_key_file,
    is_quarantine_scope,
    new_quarantine_scope,
    quarantine_created_at,
    stale_quarantine_scopes,
    sweep_quarantine,
)

HOUR = 3600.0


def _age(backend: LocalBackend, object_id: str, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(backend.path_of(object_id), (past, past))


def test_quarantine_scope_ids_carry_their_creation_time() -> None:
    scope = new_quarantine_scope(now=1_700_000_000.7)
    assert is_quarantine_scope(scope) and len(scope) <= 64
    assert quarantine_created_at(scope) == 1_700_000_000
    assert new_quarantine_scope() != new_quarantine_scope()
    assert abs(quarantine_created_at(new_quarantine_scope()) - time.time()) < 5
    assert quarantine_created_at("quarantine-" + "ab" * 16) is None
    assert quarantine_created_at("consent-1") is None
    assert not is_quarantine_scope("consent-1")


@pytest.mark.local_only  # reads or writes the stored file directly
def test_sweep_destroys_abandoned_quarantine_and_leaves_the_rest(
    store: ObjectStore, backend: LocalBackend, reference, tmp_path: Path
) -> None:
    now = time.time()
    abandoned = new_quarantine_scope(now=now - 2 * HOUR)
    in_flight = new_quarantine_scope(now=now - 60)
    undated = "quarantine-" + "cd" * 16
    for scope in (abandoned, in_flight, undated, "consent-1"):
        store.ensure_scope(scope)
    raw = b"DICM" + b"Doe^Abandoned" * 1000
    left = store.put(abandoned, io.BytesIO(raw))
    _age(backend, left.object_id, 2 * HOUR)
    backup = tmp_path / "backup.c4gh"
    shutil.copyfile(backend.path_of(left.object_id), backup)
    fresh = store.put(in_flight, io.BytesIO(b"being processed"))
    kept = store.put("consent-1", io.BytesIO(b"de-identified"))
    _age(backend, kept.object_id, 30 * 24 * HOUR)  # old but recorded: never touched
    writer = backend.create("ab" * 16)
    writer.write(b"crashed write")
    partial = next((backend.root / "tmp").iterdir())
    os.utime(partial, (now - 2 * HOUR, now - 2 * HOUR))

    dry = sweep_quarantine(store, [kept.object_id], HOUR, dry_run=True)
    assert dry.dry_run and dry.shredded_scopes == sorted([abandoned, undated])
    assert dry.deleted_objects == [left.object_id]
    assert store.read_bytes(left) == raw and partial.exists()

    report = sweep_quarantine(store, [kept.object_id], HOUR)

    assert report.shredded_scopes == sorted([abandoned, undated])
    assert report.deleted_objects == [left.object_id]
    assert report.removed_partials == 1 and not partial.exists()
    assert store.keystore.get(abandoned) is None and store.keystore.get(undated) is None
    assert sorted(backend.list()) == sorted([fresh.object_id, kept.object_id])
    assert store.read_bytes(fresh) == b"being processed"
    assert store.read_bytes(kept) == b"de-identified"
    restored = backend.path_of(left.object_id)
    restored.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(backup, restored)
    with pytest.raises(KeyUnavailable) as err:
        store.read_bytes(left)
    assert err.value.object_id == left.object_id
    for wrapped in store.keystore.all():  # no remaining key opens the backup copy
        sk = tmp_path / f"{wrapped.scope_id}.sec"
        export_private_key_file(store.export_private_key(wrapped.scope_id), sk)
        done = reference.decrypt(sk, backup.read_bytes())
        assert done.returncode != 0 and b"Doe^Abandoned" not in done.stdout


def test_an_abandoned_key_is_shredded_even_when_its_objects_are_fresh(
    store: ObjectStore, backend: LocalBackend
) -> None:
    scope = new_quarantine_scope(now=time.time() - 2 * HOUR)
    store.ensure_scope(scope)
    info = store.put(scope, io.BytesIO(b"raw"))
    report = sweep_quarantine(store, [], HOUR)
    assert report.shredded_scopes == [scope] and report.deleted_objects == []
    with pytest.raises(KeyUnavailable):
        store.read_bytes(info)


def test_stale_scopes_follow_the_limit(store: ObjectStore) -> None:
    now = time.time()
    scopes = [new_quarantine_scope(now=now - age) for age in (10, 100, 1000)]
    for scope in scopes:
        store.ensure_scope(scope)
    assert stale_quarantine_scopes(store, 50, now=now) == sorted(scopes[1:])
    assert stale_quarantine_scopes(store, 5000, now=now) == []


def test_negative_limit_is_refused(store: ObjectStore) -> None:
    with pytest.raises(StorageError):
        sweep_quarantine(store, [], -1)
