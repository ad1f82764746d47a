import io
import os

import pytest

from storage import SEGMENT_SIZE, ObjectStore, new_object_id
from storage.c4gh_format import CIPHER_SEGMENT_SIZE


def test_clean_store_verifies(store: ObjectStore, scope: str) -> None:
    infos = [store.put(scope, io.BytesIO(os.urandom(n))) for n in (0, 10, 2 * SEGMENT_SIZE)]
    report = store.verify(infos)
    assert report.ok and report.checked == 3


@pytest.mark.local_only  # reads or writes the stored file directly
def test_missing_orphaned_corrupted_and_unreadable_are_reported(store: ObjectStore) -> None:
    store.ensure_scope("a")
    store.ensure_scope("b")
    good = store.put("a", io.BytesIO(os.urandom(100)))
    missing = store.put("a", io.BytesIO(os.urandom(100)))
    corrupted = store.put("a", io.BytesIO(os.urandom(3 * SEGMENT_SIZE)))
    unreadable = store.put("b", io.BytesIO(os.urandom(100)))
    orphan = new_object_id()
    store.backend.put(orphan, [b"left over"])
    store.backend.delete(missing.object_id)
    path = store.backend.path_of(corrupted.object_id)
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 1
    path.write_bytes(content)
    store.keystore.destroy("b")

    report = store.verify([good, missing, corrupted, unreadable])

    assert not report.ok
    assert report.checked == 4
    assert report.missing == [missing.object_id]
    assert report.orphaned == [orphan]
    assert report.corrupted == [corrupted.object_id]
    assert report.unreadable == [unreadable.object_id]


@pytest.mark.local_only  # reads or writes the stored file directly
def test_reordered_segments_are_corrupted(store: ObjectStore, scope: str) -> None:
    info = store.put(scope, io.BytesIO(os.urandom(2 * SEGMENT_SIZE)))
    path = store.backend.path_of(info.object_id)
    content = path.read_bytes()
    header = len(content) - 2 * CIPHER_SEGMENT_SIZE
    first = content[header : header + CIPHER_SEGMENT_SIZE]
    second = content[header + CIPHER_SEGMENT_SIZE :]
    path.write_bytes(content[:header] + second + first)
    assert store.verify([info]).corrupted == [info.object_id]
