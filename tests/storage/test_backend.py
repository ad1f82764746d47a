import os
from pathlib import Path

import pytest

from storage import LocalBackend, ObjectNotFound, StorageError, new_object_id


def test_put_open_stat_list_delete(backend: LocalBackend) -> None:
    object_id = new_object_id()
    assert backend.put(object_id, [b"abc", b"", b"defg"]) == 7
    assert backend.stat(object_id) == 7
    with backend.open(object_id) as f:
        assert f.read() == b"abcdefg"
    assert list(backend.list()) == [object_id]
    backend.delete(object_id)
    assert list(backend.list()) == []
    for call in (backend.open, backend.stat, backend.delete):
        with pytest.raises(ObjectNotFound) as err:
            call(object_id)
        assert err.value.object_id == object_id


def test_paths_are_sharded_and_made_of_the_random_id_only(backend: LocalBackend) -> None:
    object_id = new_object_id()
    backend.put(object_id, [b"x"])
    path = backend.path_of(object_id)
    assert path.relative_to(backend.root).parts == (
        object_id[:2],
        object_id[2:4],
        f"{object_id}.c4gh",
    )
    assert new_object_id() != object_id


@pytest.mark.parametrize("bad", ["../../etc/passwd", "ABCDEF0123456789", "a" * 8, "", "0" * 65])
def test_rejects_object_ids_that_could_escape_or_carry_text(
    backend: LocalBackend, bad: str
) -> None:
    with pytest.raises(StorageError):
        backend.put(bad, [b"x"])


def test_failed_put_leaves_nothing_behind(backend: LocalBackend) -> None:
    def chunks():
        yield b"partial"
        raise RuntimeError("client went away")

    object_id = new_object_id()
    with pytest.raises(RuntimeError):
        backend.put(object_id, chunks())
    assert list(backend.list()) == []
    assert list((backend.root / "tmp").iterdir()) == []


def test_partial_write_is_invisible_until_commit(backend: LocalBackend) -> None:
    object_id = new_object_id()
    writer = backend.create(object_id)
    writer.write(b"half")
    assert list(backend.list()) == []
    with pytest.raises(ObjectNotFound):
        backend.stat(object_id)
    assert writer.commit() == 4
    assert list(backend.list()) == [object_id]


def test_commit_never_replaces_an_existing_object(backend: LocalBackend) -> None:
    object_id = new_object_id()
    backend.put(object_id, [b"first"])
    with pytest.raises(StorageError):
        backend.put(object_id, [b"second"])
    with backend.open(object_id) as f:
        assert f.read() == b"first"


def test_list_ignores_foreign_files(backend: LocalBackend, tmp_path: Path) -> None:
    object_id = new_object_id()
    backend.put(object_id, [b"x"])
    (backend.root / "README").write_text("not an object")
    (backend.path_of(object_id).parent / "notes.txt").write_text("x")
    assert list(backend.list()) == [object_id]


def test_stale_partials_are_removed(backend: LocalBackend) -> None:
    writer = backend.create(new_object_id())
    writer.write(b"crash here")
    partial = next((backend.root / "tmp").iterdir())
    os.utime(partial, (0, 0))
    assert backend.remove_stale_partials(older_than_seconds=3600) == 1
    assert list((backend.root / "tmp").iterdir()) == []
