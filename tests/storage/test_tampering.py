"""Tampering at every position of header and segments, and truncation at every segment
boundary: always a typed error naming the object, never silent success, and (by default,
and in ``read_bytes``) not one plaintext byte.  With ``authenticate_first=False`` a
streaming read still raises, having returned at most what preceded the damage."""

import dataclasses
import hashlib
import io
import os
from pathlib import Path

import pytest

from storage import SEGMENT_SIZE, IntegrityError, ObjectInfo, ObjectStore, StorageError
from storage.c4gh_format import CIPHER_SEGMENT_SIZE, NONCE_SIZE, read_header

pytestmark = pytest.mark.local_only  # every test rewrites the stored file directly

SIZE = 3 * SEGMENT_SIZE + 1000  # three whole segments and a partial one
SEGMENTS = 4


@pytest.fixture
def stored(store: ObjectStore, scope: str) -> tuple[ObjectInfo, bytes, Path, bytes, int]:
    data = os.urandom(SIZE)
    info = store.put(scope, io.BytesIO(data))
    path = store.backend.path_of(info.object_id)
    content = path.read_bytes()
    return info, data, path, content, read_header(io.BytesIO(content)).length


def _stream(store: ObjectStore, info: ObjectInfo, **options) -> tuple[bytes, StorageError | None]:
    """Read as a streaming consumer does; what it got before the error, and the error."""
    got = bytearray()
    try:
        with store.open(info, **options) as reader:
            while chunk := reader.read(10_000):
                got += chunk
    except StorageError as error:
        return bytes(got), error
    return bytes(got), None


def _assert_refused_everywhere(store: ObjectStore, info: ObjectInfo, data: bytes) -> bytes:
    """No plaintext by default, no silent success anywhere; returns what a reader that
    opted out of ``authenticate_first`` was given before its error."""
    with pytest.raises(IntegrityError) as err:
        store.read_bytes(info)
    assert err.value.object_id == info.object_id and info.object_id in str(err.value)
    got, error = _stream(store, info)
    assert isinstance(error, IntegrityError) and error.object_id == info.object_id
    assert got == b"", "plaintext returned from a tampered object"
    got, error = _stream(store, info, authenticate_first=False)
    assert isinstance(error, IntegrityError) and error.object_id == info.object_id
    assert len(got) < len(data)
    return got


def _segment_start(header_length: int, index: int) -> int:
    return header_length + index * CIPHER_SEGMENT_SIZE


def _segment_end(header_length: int, index: int) -> int:
    return min(_segment_start(header_length, index + 1), header_length + SIZE + SEGMENTS * 28)


@pytest.mark.parametrize("index", range(SEGMENTS))
@pytest.mark.parametrize("where", ["nonce", "first-byte", "middle", "tag"])
def test_a_flip_in_any_part_of_any_segment(
    store: ObjectStore, stored, index: int, where: str
) -> None:
    info, data, path, content, header = stored
    start, end = _segment_start(header, index), _segment_end(header, index)
    position = {
        "nonce": start + 3,
        "first-byte": start + NONCE_SIZE,
        "middle": (start + end) // 2,
        "tag": end - 1,
    }[where]
    tampered = bytearray(content)
    tampered[position] ^= 0x80
    path.write_bytes(tampered)
    given = _assert_refused_everywhere(store, info, data)
    assert given == data[: len(given)] and len(given) <= index * SEGMENT_SIZE


def test_a_flip_in_every_header_byte_is_an_integrity_error_before_any_plaintext(
    store: ObjectStore, stored
) -> None:
    info, data, path, content, header = stored
    for position in range(header):
        tampered = bytearray(content)
        tampered[position] ^= 0x01
        path.write_bytes(tampered)
        with pytest.raises(IntegrityError) as err:
            store.open(info)
        assert err.value.object_id == info.object_id
        with pytest.raises(IntegrityError):
            store.read_bytes(info)


@pytest.mark.parametrize("dropped", range(1, SEGMENTS + 1))
def test_whole_segments_dropped_at_the_end(store: ObjectStore, stored, dropped: int) -> None:
    """Dropping whole final segments leaves a valid Crypt4GH file of fewer segments."""
    info, data, path, content, header = stored
    shorter = content[: _segment_start(header, SEGMENTS - dropped)]
    path.write_bytes(shorter)
    kept = (SEGMENTS - dropped) * SEGMENT_SIZE
    # records intact: the stored size differs, refused at open in every mode
    for authenticate_first in (True, False):
        with pytest.raises(IntegrityError):
            store.open(info, authenticate_first=authenticate_first)
    _assert_refused_everywhere(store, info, data)
    # sizes forged to match the shorter file: the stored digest tells
    forged = dataclasses.replace(info, size=kept, stored_size=len(shorter))
    given = _assert_refused_everywhere(store, forged, data)
    assert given == data[: len(given)]
    # every record forged except the plaintext digest (that needs the plaintext):
    # the read reaching the end raises instead of returning its bytes
    forged = dataclasses.replace(forged, stored_sha256=hashlib.sha256(shorter).hexdigest())
    with pytest.raises(IntegrityError):
        store.read_bytes(forged)
    got, error = _stream(store, forged)
    assert isinstance(error, IntegrityError) and got == data[: len(got)]
    assert len(got) < kept or kept == 0


@pytest.mark.parametrize("cut", [1, 27, 28, CIPHER_SEGMENT_SIZE - 1, CIPHER_SEGMENT_SIZE + 1])
def test_truncation_inside_a_segment(store: ObjectStore, stored, cut: int) -> None:
    info, data, path, content, _ = stored
    path.write_bytes(content[:-cut])
    assert _assert_refused_everywhere(store, info, data) == b""  # size checked at open


def test_appended_or_duplicated_segments(store: ObjectStore, stored) -> None:
    info, data, path, content, header = stored
    first = content[_segment_start(header, 0) : _segment_start(header, 1)]
    path.write_bytes(content + first)
    assert _assert_refused_everywhere(store, info, data) == b""  # size checked at open
    duplicated = content[: _segment_start(header, 1)] + first + content[_segment_start(header, 2) :]
    path.write_bytes(duplicated)
    _assert_refused_everywhere(store, info, data)


def test_swapped_segments(store: ObjectStore, stored) -> None:
    info, data, path, content, header = stored
    a, b, c = (_segment_start(header, i) for i in range(3))
    path.write_bytes(content[:a] + content[b:c] + content[a:b] + content[c:])
    _assert_refused_everywhere(store, info, data)


def test_intact_object_reads_fully_both_ways(store: ObjectStore, stored) -> None:
    info, data, *_ = stored
    assert _stream(store, info) == (data, None)
    assert _stream(store, info, authenticate_first=False) == (data, None)
    assert store.read_bytes(info) == data
