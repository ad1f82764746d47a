"""Interoperability with the GA4GH reference implementation (the `crypt4gh` package)."""

import io
import os
from pathlib import Path

import pytest
from crypt4gh.keys import c4gh as reference_keys

from storage import (
    SEGMENT_SIZE,
    KeyUnavailable,
    ObjectStore,
    export_private_key_file,
    load_private_key_file,
    load_public_key_file,
    parse_public_key,
    public_key_file_text,
    write_public_key_file,
)
from storage.c4gh_format import public_key_of


@pytest.mark.local_only  # reads or writes the stored file directly
@pytest.mark.parametrize("size", [0, 1, SEGMENT_SIZE, 2 * SEGMENT_SIZE + 123])
def test_reference_tool_decrypts_a_stored_object(
    store: ObjectStore, scope: str, reference, tmp_path: Path, size: int
) -> None:
    data = os.urandom(size)
    info = store.put(scope, io.BytesIO(data))
    sk = tmp_path / "scope.sec"
    export_private_key_file(store.export_private_key(scope), sk)
    stored = store.backend.path_of(info.object_id).read_bytes()
    done = reference.decrypt(sk, stored)
    assert done.returncode == 0, done.stderr
    assert done.stdout == data


@pytest.mark.local_only  # reads or writes the stored file directly
def test_reference_tool_reads_a_passphrase_protected_exported_key(
    store: ObjectStore, scope: str, reference, tmp_path: Path
) -> None:
    info = store.put(scope, io.BytesIO(b"protected"))
    sk = tmp_path / "scope.sec"
    export_private_key_file(store.export_private_key(scope), sk, passphrase=b"correct horse")
    stored = store.backend.path_of(info.object_id).read_bytes()
    assert reference.decrypt(sk, stored, passphrase="correct horse").stdout == b"protected"
    assert reference.decrypt(sk, stored, passphrase="wrong").returncode != 0
    assert load_private_key_file(sk, b"correct horse") == store.export_private_key(scope)
    with pytest.raises(KeyUnavailable):
        load_private_key_file(sk, b"wrong")


@pytest.mark.local_only  # reads or writes the stored file directly
@pytest.mark.parametrize("size", [0, 5, SEGMENT_SIZE, 3 * SEGMENT_SIZE - 1])
def test_store_reads_a_file_the_reference_tool_encrypted(
    store: ObjectStore, scope: str, reference, tmp_path: Path, size: int
) -> None:
    data = os.urandom(size)
    pk = tmp_path / "scope.pub"
    write_public_key_file(store.public_key(scope), pk)
    encrypted = reference.encrypt(pk, data)
    info = store.put_encrypted(scope, io.BytesIO(encrypted))
    assert store.backend.path_of(info.object_id).read_bytes() == encrypted
    assert info.size == size
    assert store.read_bytes(info) == data
    with store.open(info) as reader:
        reader.seek(size // 3)
        assert reader.read(100) == data[size // 3 : size // 3 + 100]


def test_put_encrypted_refuses_a_file_for_another_key(
    store: ObjectStore, scope: str, reference
) -> None:
    _, other_pk = reference.keygen("other")
    encrypted = reference.encrypt(other_pk, b"not for this scope")
    with pytest.raises(KeyUnavailable):
        store.put_encrypted(scope, io.BytesIO(encrypted))
    assert list(store.backend.list()) == []


def test_keygen_key_files_load(reference) -> None:
    sk, pk = reference.keygen("researcher")
    private = load_private_key_file(sk)
    public = load_public_key_file(pk)
    assert public_key_of(private) == public
    assert parse_public_key(public_key_file_text(public)) == public
    assert parse_public_key(pk.read_bytes()) == public


def test_reference_passphrase_protected_key_loads(tmp_path: Path) -> None:
    sk, pk = tmp_path / "r.sec", tmp_path / "r.pub"
    reference_keys.generate(str(sk), str(pk), b"s3cret phrase", b"comment")
    private = load_private_key_file(sk, b"s3cret phrase")
    assert public_key_of(private) == load_public_key_file(pk)
    with pytest.raises(KeyUnavailable):
        load_private_key_file(sk, b"not it")
    with pytest.raises(KeyUnavailable):
        load_private_key_file(sk)
