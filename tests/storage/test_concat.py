"""ConcatenatedReader reads an upload's parts as one file, like the joined bytes would read."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage import ObjectStore
from storage.concat import ConcatenatedReader

operations = st.lists(
    st.one_of(
        st.tuples(st.just("read"), st.integers(-1, 300)),
        st.tuples(st.just("seek"), st.integers(-400, 400), st.sampled_from([0, 1, 2])),
    ),
    max_size=30,
)


@given(parts=st.lists(st.binary(max_size=200), max_size=6), ops=operations)
def test_behaves_like_the_joined_bytes(parts: list[bytes], ops: list[tuple]) -> None:
    joined = io.BytesIO(b"".join(parts))
    reader = ConcatenatedReader([io.BytesIO(p) for p in parts], [len(p) for p in parts])
    for op in ops:
        if op[0] == "read":
            assert reader.read(op[1]) == joined.read(op[1])
        else:
            _, offset, whence = op
            if whence == 0 and offset < 0:
                with pytest.raises(ValueError):
                    reader.seek(offset, whence)
                continue
            assert reader.seek(offset, whence) == joined.seek(offset, whence)
        assert reader.tell() == joined.tell()


def test_joins_decrypting_readers_of_stored_parts(store: ObjectStore, scope: str) -> None:
    data = bytes(range(256)) * 1000
    pieces = [data[:70_000], data[70_000:70_001], data[70_001:]]
    infos = [store.put(scope, io.BytesIO(piece)) for piece in pieces]
    with ConcatenatedReader([store.open(i) for i in infos], [i.size for i in infos]) as reader:
        assert reader.read() == data
        reader.seek(69_999)
        assert reader.read(3) == data[69_999:70_002]


def test_a_part_shorter_than_recorded_is_an_error() -> None:
    reader = ConcatenatedReader([io.BytesIO(b"ab")], [5])
    with pytest.raises(OSError):
        reader.read()
