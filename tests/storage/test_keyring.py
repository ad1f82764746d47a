import os
import stat
from pathlib import Path

import pytest

from storage import KeyRing, KeyUnavailable, StorageError


def test_create_file_is_0600_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    assert KeyRing.create_file(path) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()
    assert KeyRing.create_file(path) is False
    assert path.read_bytes() == before
    ring = KeyRing.load(path)
    assert ring.versions() == [1] and ring.current_version == 1


def test_load_refuses_a_file_readable_by_others(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    KeyRing.create_file(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyUnavailable, match="0644"):
        KeyRing.load(path)


@pytest.mark.parametrize("content", ["", "{}", "not json", '{"format": "other"}', "1:%%%"])
def test_load_refuses_malformed_files(tmp_path: Path, content: str) -> None:
    path = tmp_path / "kek.json"
    path.write_text(content)
    os.chmod(path, 0o600)
    with pytest.raises(KeyUnavailable):
        KeyRing.load(path)


def test_missing_key_file_is_key_unavailable(tmp_path: Path) -> None:
    with pytest.raises(KeyUnavailable):
        KeyRing.load(tmp_path / "absent.json")


def test_save_and_load_keep_every_version(tmp_path: Path) -> None:
    ring = KeyRing.generate()
    ring.add_version()
    ring.add_version()
    path = tmp_path / "kek.json"
    ring.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = KeyRing.load(path)
    assert loaded.versions() == [1, 2, 3] and loaded.current_version == 3
    wrapped = ring.wrap(2, b"secret", b"ad")
    assert loaded.unwrap(2, wrapped, b"ad") == b"secret"


def test_from_env_accepts_json_and_compact_form() -> None:
    ring = KeyRing.generate()
    ring.add_version()
    from_json = KeyRing.from_env(ring.to_json())
    wrapped = ring.wrap(1, b"k", b"ad")
    assert from_json.unwrap(1, wrapped, b"ad") == b"k"
    compact = ",".join(
        f"{v}:{k}" for v, k in __import__("json").loads(ring.to_json())["keys"].items()
    )
    from_compact = KeyRing.from_env(compact)
    assert from_compact.current_version == 2
    assert from_compact.unwrap(1, wrapped, b"ad") == b"k"


def test_unwrap_checks_associated_data_and_version() -> None:
    ring = KeyRing.generate()
    ring.add_version()
    wrapped = ring.wrap(1, b"secret", b"scope-a")
    with pytest.raises(KeyUnavailable):
        ring.unwrap(1, wrapped, b"scope-b")
    with pytest.raises(KeyUnavailable):
        ring.unwrap(2, wrapped, b"scope-a")
    with pytest.raises(KeyUnavailable, match="version 7"):
        ring.unwrap(7, wrapped, b"scope-a")


def test_retire_forgets_a_version_but_not_the_current_one() -> None:
    ring = KeyRing.generate()
    wrapped = ring.wrap(1, b"secret", b"ad")
    ring.add_version()
    with pytest.raises(StorageError):
        ring.retire(2)
    ring.retire(1)
    assert ring.versions() == [2]
    with pytest.raises(KeyUnavailable):
        ring.unwrap(1, wrapped, b"ad")


def test_repr_shows_no_key_material() -> None:
    ring = KeyRing.generate()
    assert "versions=[1]" in repr(ring)
    assert ring.to_json().split('"1": "')[1][:20] not in repr(ring)
