"""A full disk: StorageFull naming the object only, and nothing partial left behind.

The volume is a real, tiny tmpfs mounted for the test when that is possible
(root, and ``mount`` allowed); otherwise writes are refused with ENOSPC by a
stand-in for ``os.writev`` that counts the bytes under the volume's folder.
Tests that need the real file system (inode exhaustion) skip without it.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import storage.backend as backend_module
from storage import (
    KeyRing,
    LocalBackend,
    MemoryKeyStore,
    ObjectStore,
    StorageError,
    StorageFull,
    new_object_id,
)

MIB = 1 << 20
SCOPE = "consent-1"


class Volume:
    """A folder with a hard size limit: a tmpfs of its own, or a simulated one."""

    def __init__(self, path: Path, size: int, real: bool) -> None:
        self.path = path
        self.size = size
        self.real = real

    @property
    def root(self) -> Path:
        return self.path / "objects"

    def used(self) -> int:
        if self.real:
            return shutil.disk_usage(self.path).used
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    def files(self) -> list[Path]:
        return sorted(p for p in self.path.rglob("*") if p.is_file())

    def fill(self, leave: int) -> Path:
        """A file taking all but ``leave`` bytes of the volume."""
        blocker = self.path / "blocker"
        with open(blocker, "wb") as f:
            f.write(b"\0" * max(0, self.size - self.used() - leave))
        return blocker

    def grow(self, size: int, inodes: int | None = None) -> None:
        """More room (and inodes): the operator freed space."""
        options = f"remount,size={size}" + (f",nr_inodes={inodes}" if inodes else "")
        if self.real:
            subprocess.run(["mount", "-o", options, str(self.path)], check=True)
        self.size = size


def _mount_tmpfs(path: Path, size: int, inodes: int | None) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    options = f"size={size},mode=0700" + (f",nr_inodes={inodes}" if inodes else "")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def _unmount(path: Path) -> None:
    done = subprocess.run(["umount", str(path)], capture_output=True, check=False)
    if done.returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@pytest.fixture
def make_volume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Volume]]:
    mounted: list[Path] = []

    def make(size: int, inodes: int | None = None, *, need_real: bool = False) -> Volume:
        path = tmp_path / f"volume{len(mounted)}"
        path.mkdir()
        if _mount_tmpfs(path, size, inodes):
            mounted.append(path)
            return Volume(path, size, real=True)
        if need_real:
            pytest.skip("needs a real tiny file system (root and mount -t tmpfs)")
        volume = Volume(path, size, real=False)
        real_writev = os.writev

        def writev(fd: int, buffers) -> int:
            wanted = sum(memoryview(b).nbytes for b in buffers)
            if volume.used() + wanted > volume.size:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_writev(fd, buffers)

        monkeypatch.setattr(backend_module.os, "writev", writev)
        return volume

    yield make
    for path in mounted:
        _unmount(path)


def _store(root: Path) -> ObjectStore:
    store = ObjectStore(LocalBackend(root), KeyRing.generate(), MemoryKeyStore())
    store.ensure_scope(SCOPE)
    return store


def _assert_nothing_left(volume: Volume, store: ObjectStore, keep: tuple[Path, ...] = ()) -> None:
    assert list(store.backend.list()) == []
    assert list((volume.root / "tmp").iterdir()) == [], "a .part file was left behind"
    assert [p for p in volume.files() if p not in keep] == []


def _assert_names_only_the_object(err: StorageError, volume: Volume) -> None:
    assert err.object_id is not None and len(err.object_id) == 32
    assert str(err) == f"object {err.object_id}: {err.reason}"
    assert str(volume.path) not in str(err) and ".part" not in str(err)
    assert err.__cause__ is None and err.__suppress_context__  # no OSError with a filename


@pytest.mark.parametrize("size", [3 * MIB, 9 * MIB + 12345], ids=["in-line", "lanes"])
def test_put_larger_than_the_volume_raises_storage_full_and_leaves_nothing(
    make_volume: Callable[..., Volume], size: int
) -> None:
    """3 MiB fails in the caller's thread; 9 MiB in the background lanes (past 4 MiB)."""
    volume = make_volume(2 * MIB if size < 4 * MIB else 6 * MIB)
    store = _store(volume.root)
    used = volume.used()
    with pytest.raises(StorageFull) as err:
        store.put(SCOPE, io.BytesIO(os.urandom(size)))
    _assert_names_only_the_object(err.value, volume)
    _assert_nothing_left(volume, store)
    assert volume.used() == used  # every byte of the partial object was given back

    data = os.urandom(MIB)  # the space is free again: the store goes on working
    info = store.put(SCOPE, io.BytesIO(data))
    assert store.read_bytes(info) == data


def test_writer_used_directly_cleans_up_before_raising(make_volume: Callable[..., Volume]) -> None:
    volume = make_volume(6 * MIB)
    store = _store(volume.root)
    writer = store.writer(SCOPE)
    chunk = os.urandom(MIB)
    with pytest.raises(StorageFull) as err:
        for _ in range(12):
            writer.write(chunk)
        writer.commit()
    assert err.value.object_id == writer.object_id
    _assert_nothing_left(volume, store)  # without the caller calling abort()
    with pytest.raises(StorageError, match="aborted"):
        writer.write(b"more")
    writer.abort()  # still allowed, and harmless


def test_volume_filled_by_something_else_then_freed(make_volume: Callable[..., Volume]) -> None:
    volume = make_volume(4 * MIB)
    store = _store(volume.root)
    blocker = volume.fill(leave=256 << 10)
    data = os.urandom(MIB)
    with pytest.raises(StorageFull):
        store.put(SCOPE, io.BytesIO(data))
    _assert_nothing_left(volume, store, keep=(blocker,))
    blocker.unlink()
    info = store.put(SCOPE, io.BytesIO(data))
    assert store.read_bytes(info) == data


def test_backend_put_on_a_full_volume(make_volume: Callable[..., Volume]) -> None:
    volume = make_volume(2 * MIB)
    backend = LocalBackend(volume.root)
    object_id = new_object_id()
    with pytest.raises(StorageFull) as err:
        backend.put(object_id, (os.urandom(256 << 10) for _ in range(12)))
    assert err.value.object_id == object_id
    assert list(backend.list()) == []
    assert list((volume.root / "tmp").iterdir()) == []
    assert backend.put(object_id, [b"fits"]) == 4


def test_no_inode_for_the_shard_folders_fails_at_commit(
    make_volume: Callable[..., Volume],
) -> None:
    """tmpfs with 4 inodes: its root, tmp/ and the .part fit; the shard folders do not."""
    volume = make_volume(4 * MIB, inodes=4, need_real=True)
    backend = LocalBackend(volume.path)  # the volume's root is the store's root here
    store = ObjectStore(backend, KeyRing.generate(), MemoryKeyStore())
    store.ensure_scope(SCOPE)
    writer = store.writer(SCOPE)
    writer.write(os.urandom(100_000))
    with pytest.raises(StorageFull) as err:
        writer.commit()
    assert err.value.object_id == writer.object_id
    assert list(backend.list()) == []
    assert list((volume.path / "tmp").iterdir()) == []
    assert not backend.path_of(writer.object_id).exists()

    volume.grow(4 * MIB, inodes=64)
    info = store.put(SCOPE, io.BytesIO(b"after the operator made room"))
    assert store.read_bytes(info) == b"after the operator made room"


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
@pytest.mark.parametrize("call", ["fsync", "link"])
def test_full_at_commit_fsync_or_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str, code: int
) -> None:
    store = _store(tmp_path / "objects")
    real = getattr(os, call)
    failed = []

    def fail_once(*args):
        if not failed:
            failed.append(call)
            raise OSError(code, os.strerror(code), str(tmp_path))
        return real(*args)

    monkeypatch.setattr(backend_module.os, call, fail_once)
    writer = store.writer(SCOPE)
    writer.write(os.urandom(200_000))
    with pytest.raises(StorageFull) as err:
        writer.commit()
    assert err.value.object_id == writer.object_id
    assert str(tmp_path) not in str(err.value) and err.value.__cause__ is None
    assert list(store.backend.list()) == []
    assert list((tmp_path / "objects" / "tmp").iterdir()) == []
    info = store.put(SCOPE, io.BytesIO(b"next one"))
    assert store.read_bytes(info) == b"next one"


@pytest.mark.parametrize("call", ["writev", "fsync", "link"])
def test_other_os_errors_are_storage_errors_without_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    store = _store(tmp_path / "objects")

    def broken(*args):
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(tmp_path / "secret-name.dcm"))

    writer = store.writer(SCOPE)
    monkeypatch.setattr(backend_module.os, call, broken)
    with pytest.raises(StorageError) as err:
        writer.write(os.urandom(300_000))
        writer.commit()
    assert not isinstance(err.value, OSError | StorageFull)
    assert err.value.object_id == writer.object_id
    assert "EIO" in str(err.value)
    assert str(tmp_path) not in str(err.value) and "secret-name" not in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__
    monkeypatch.undo()
    assert list(store.backend.list()) == []
    assert list((tmp_path / "objects" / "tmp").iterdir()) == []


def test_unreadable_object_is_a_storage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    backend = LocalBackend(tmp_path / "objects")
    object_id = new_object_id()
    backend.put(object_id, [b"x"])

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(backend.path_of(object_id)))

    monkeypatch.setattr("builtins.open", denied)
    with pytest.raises(StorageError) as err:
        backend.open(object_id)
    assert not isinstance(err.value, OSError)
    assert str(tmp_path) not in str(err.value) and "EACCES" in str(err.value)


# -- the write path the speed target relies on: every byte written once, one fsync -----------


class _ShortReads(io.RawIOBase):
    """A raw stream whose readinto returns odd, short counts (as sockets and pipes do)."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._step = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self._step += 1
        want = min(len(buffer), 1 + (self._step * 40_009) % 300_000)
        piece = self._data[self._pos : self._pos + want]
        memoryview(buffer)[: len(piece)] = piece
        self._pos += len(piece)
        return len(piece)


@pytest.mark.parametrize("size", [0, 100_000, 9 * MIB + 12345], ids=["empty", "small", "lanes"])
def test_a_put_writes_every_stored_byte_once_and_fsyncs_the_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    store = _store(tmp_path / "objects")
    written: dict[int, int] = {}
    file_fsyncs: list[int] = []
    folder_fsyncs: list[int] = []
    real_writev, real_write, real_fsync = os.writev, os.write, os.fsync

    def writev(fd: int, buffers) -> int:
        count = real_writev(fd, buffers)
        written[fd] = written.get(fd, 0) + count
        return count

    def write(fd: int, data) -> int:
        count = real_write(fd, data)
        written[fd] = written.get(fd, 0) + count
        return count

    def fsync(fd: int) -> None:
        (folder_fsyncs if stat.S_ISDIR(os.fstat(fd).st_mode) else file_fsyncs).append(fd)
        real_fsync(fd)

    monkeypatch.setattr(backend_module.os, "writev", writev)
    monkeypatch.setattr(backend_module.os, "write", write)
    monkeypatch.setattr(backend_module.os, "fsync", fsync)
    data = os.urandom(size)
    info = store.put(SCOPE, io.BytesIO(data))
    monkeypatch.undo()

    assert list(written.values()) == [info.stored_size]  # one file, each byte once
    assert len(file_fsyncs) == 1
    assert 1 <= len(folder_fsyncs) <= 3  # the object's folder, and new shard folders' parents
    assert [p.name for p in (tmp_path / "objects").rglob("*") if p.is_file()] == [
        f"{info.object_id}.c4gh"
    ]
    assert store.read_bytes(info) == data


def test_put_from_a_stream_of_short_reads(tmp_path: Path) -> None:
    """put() reuses its read buffers; short reads and the lanes must not mix them up."""
    store = _store(tmp_path / "objects")
    data = os.urandom(9 * MIB + 777)
    info = store.put(SCOPE, _ShortReads(data))
    assert info.size == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert store.read_bytes(info) == data


def test_put_from_a_stream_without_readinto(tmp_path: Path) -> None:
    class ReadOnly:
        def __init__(self, data: bytes) -> None:
            self._source = io.BytesIO(data)

        def read(self, n: int = -1) -> bytes:
            return self._source.read(n)

    store = _store(tmp_path / "objects")
    data = os.urandom(5 * MIB + 3)
    info = store.put(SCOPE, ReadOnly(data))  # type: ignore[arg-type]
    assert store.read_bytes(info) == data


def test_put_from_a_bytesio_reads_from_its_position_and_leaves_it_usable(tmp_path: Path) -> None:
    store = _store(tmp_path / "objects")
    data = os.urandom(5 * MIB + 99)
    stream = io.BytesIO()
    stream.write(data)
    stream.seek(1000)
    info = store.put(SCOPE, stream)
    assert store.read_bytes(info) == data[1000:]
    assert stream.tell() == len(data)
    stream.seek(0)
    stream.write(b"changed afterwards")  # the stream is the caller's again, and
    assert store.read_bytes(info) == data[1000:]  # the object does not change with it
