import io
import os
from pathlib import Path

import pytest

from storage import (
    SEGMENT_SIZE,
    IntegrityError,
    KeyUnavailable,
    ObjectStore,
    StorageError,
    export_private_key_file,
    load_public_key_file,
)
from storage.c4gh_format import read_header


@pytest.mark.local_only  # reads or writes the stored file directly
@pytest.mark.parametrize("size", [0, 10, 2 * SEGMENT_SIZE + 1])
def test_recipient_decrypts_with_the_reference_tool(
    store: ObjectStore, scope: str, reference, tmp_path: Path, size: int
) -> None:
    data = os.urandom(size)
    info = store.put(scope, io.BytesIO(data))
    recipient_sk, recipient_pk = reference.keygen("researcher")

    released = b"".join(store.reencrypt_for(info, load_public_key_file(recipient_pk)))

    done = reference.decrypt(recipient_sk, released)
    assert done.returncode == 0, done.stderr
    assert done.stdout == data
    stored = store.backend.path_of(info.object_id).read_bytes()
    old_header = read_header(io.BytesIO(stored)).length
    new_header = read_header(io.BytesIO(released)).length
    assert released[new_header:] == stored[old_header:]
    assert released[:new_header] != stored[:old_header]
    scope_sk = tmp_path / "scope.sec"
    export_private_key_file(store.export_private_key(scope), scope_sk)
    assert reference.decrypt(scope_sk, released).returncode != 0


def test_header_work_happens_before_iteration(store: ObjectStore, scope: str) -> None:
    info = store.put(scope, io.BytesIO(b"data"))
    store.keystore.destroy(scope)
    with pytest.raises(KeyUnavailable):
        store.reencrypt_for(info, os.urandom(32))


def test_bad_recipient_key_is_refused(store: ObjectStore, scope: str) -> None:
    info = store.put(scope, io.BytesIO(b"data"))
    for bad in (b"", os.urandom(31), "x" * 32):
        with pytest.raises(StorageError):
            store.reencrypt_for(info, bad)


@pytest.mark.local_only  # reads or writes the stored file directly
def test_tampered_data_segment_is_not_released_silently(
    store: ObjectStore, scope: str, reference
) -> None:
    info = store.put(scope, io.BytesIO(os.urandom(5 * SEGMENT_SIZE)))
    path = store.backend.path_of(info.object_id)
    tampered = bytearray(path.read_bytes())
    tampered[-100] ^= 0x40
    path.write_bytes(tampered)
    _, recipient_pk = reference.keygen("researcher")
    chunks = store.reencrypt_for(info, load_public_key_file(recipient_pk))
    with pytest.raises(IntegrityError) as err:
        for _ in chunks:
            pass
    assert err.value.object_id == info.object_id
