"""The Backend contract, run against every backend (ids ``local`` and ``s3``), and
LocalBackend's file layout.  S3-only behaviour is in test_s3.py."""

import os
import threading
import time

import pytest

from storage import Backend, LocalBackend, ObjectNotFound, StorageError, new_object_id


def test_put_open_stat_list_delete(backend: Backend) -> None:
    object_id = new_object_id()
    assert backend.put(object_id, [b"abc", b"", b"defg"]) == 7
    assert backend.stat(object_id) == 7
    with backend.open(object_id) as f:
        assert f.read() == b"abcdefg"
    assert list(backend.list()) == [object_id]
    backend.delete(object_id)
    assert list(backend.list()) == []
    for call in (backend.open, backend.stat, backend.delete, backend.modified):
        with pytest.raises(ObjectNotFound) as err:
            call(object_id)
        assert err.value.object_id == object_id


def test_empty_object(backend: Backend) -> None:
    object_id = new_object_id()
    assert backend.put(object_id, []) == 0
    assert backend.stat(object_id) == 0
    with backend.open(object_id) as f:
        assert f.read() == b"" and f.seek(0, os.SEEK_END) == 0


def test_open_is_readable_and_seekable(backend: Backend) -> None:
    data = os.urandom(200_000)
    object_id = new_object_id()
    backend.put(object_id, [data])
    with backend.open(object_id) as f:
        assert f.readable() and f.seekable()
        assert f.read(10) == data[:10] and f.tell() == 10
        assert f.seek(-5, os.SEEK_END) == len(data) - 5
        assert f.read() == data[-5:]
        assert f.read(10) == b""
        assert f.seek(100_000) == 100_000
        assert f.read(3) == data[100_000:100_003]
        assert f.seek(10, os.SEEK_CUR) == 100_013
        assert f.read(1) == data[100_013:100_014]
        assert f.seek(0) == 0 and f.read() == data


def test_list_and_modified(backend: Backend) -> None:
    ids = sorted(new_object_id() for _ in range(5))
    for object_id in ids:
        backend.put(object_id, [object_id.encode()])
    assert sorted(backend.list()) == ids
    for object_id in ids:
        assert abs(backend.modified(object_id) - time.time()) < 60


@pytest.mark.parametrize("bad", ["../../etc/passwd", "ABCDEF0123456789", "a" * 8, "", "0" * 65])
def test_rejects_object_ids_that_could_escape_or_carry_text(backend: Backend, bad: str) -> None:
    with pytest.raises(StorageError):
        backend.put(bad, [b"x"])
    for call in (backend.open, backend.stat, backend.delete, backend.modified, backend.create):
        with pytest.raises(StorageError):
            call(bad)


def test_failed_put_leaves_nothing_behind(backend: Backend) -> None:
    def chunks():
        yield b"partial"
        raise RuntimeError("client went away")

    object_id = new_object_id()
    with pytest.raises(RuntimeError):
        backend.put(object_id, chunks())
    assert list(backend.list()) == []
    with pytest.raises(ObjectNotFound):
        backend.stat(object_id)


def test_partial_write_is_invisible_until_commit(backend: Backend) -> None:
    object_id = new_object_id()
    writer = backend.create(object_id)
    writer.write(b"half")
    assert list(backend.list()) == []
    with pytest.raises(ObjectNotFound):
        backend.stat(object_id)
    assert writer.commit() == 4
    assert list(backend.list()) == [object_id]


def test_abort_leaves_nothing_and_the_writer_refuses_more(backend: Backend) -> None:
    object_id = new_object_id()
    writer = backend.create(object_id)
    writer.write(b"never visible")
    writer.abort()
    assert list(backend.list()) == []
    with pytest.raises(StorageError):
        writer.write(b"more")
    with pytest.raises(StorageError):
        writer.commit()


def test_commit_never_replaces_an_existing_object(backend: Backend) -> None:
    object_id = new_object_id()
    backend.put(object_id, [b"first"])
    with pytest.raises(StorageError, match="already exists") as err:
        backend.put(object_id, [b"second"])
    assert err.value.object_id == object_id
    with backend.open(object_id) as f:
        assert f.read() == b"first"


def test_concurrent_writers_of_one_id_exactly_one_wins(backend: Backend) -> None:
    object_id = new_object_id()
    writers = [backend.create(object_id) for _ in range(4)]
    for n, writer in enumerate(writers):
        writer.write(f"writer {n}".encode())
    outcomes: list[object] = [None] * len(writers)

    def commit(n: int) -> None:
        try:
            outcomes[n] = writers[n].commit()
        except StorageError as exc:
            outcomes[n] = exc

    threads = [threading.Thread(target=commit, args=(n,)) for n in range(len(writers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [n for n, outcome in enumerate(outcomes) if outcome == 8]
    assert len(winners) == 1
    assert all(isinstance(o, StorageError) for n, o in enumerate(outcomes) if n != winners[0])
    with backend.open(object_id) as f:
        assert f.read() == f"writer {winners[0]}".encode()


# -- LocalBackend's file layout -----------------------------------------------------------


def test_paths_are_sharded_and_made_of_the_random_id_only(local_backend: LocalBackend) -> None:
    object_id = new_object_id()
    local_backend.put(object_id, [b"x"])
    path = local_backend.path_of(object_id)
    assert path.relative_to(local_backend.root).parts == (
        object_id[:2],
        object_id[2:4],
        f"{object_id}.c4gh",
    )
    assert new_object_id() != object_id


def test_failed_put_leaves_no_temporary_file(local_backend: LocalBackend) -> None:
    def chunks():
        yield b"partial"
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        local_backend.put(new_object_id(), chunks())
    assert list((local_backend.root / "tmp").iterdir()) == []


def test_list_ignores_foreign_files(local_backend: LocalBackend) -> None:
    object_id = new_object_id()
    local_backend.put(object_id, [b"x"])
    (local_backend.root / "README").write_text("not an object")
    (local_backend.path_of(object_id).parent / "notes.txt").write_text("x")
    assert list(local_backend.list()) == [object_id]


def test_stale_partials_are_removed(local_backend: LocalBackend) -> None:
    writer = local_backend.create(new_object_id())
    writer.write(b"crash here")
    partial = next((local_backend.root / "tmp").iterdir())
    os.utime(partial, (0, 0))
    assert local_backend.remove_stale_partials(older_than_seconds=3600) == 1
    assert list((local_backend.root / "tmp").iterdir()) == []
