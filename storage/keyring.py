"""Versioned master key-encryption keys (KEK) that wrap the per-scope private keys.

The key file is JSON::

    {"format": "storage-kek-v1", "current": 2, "keys": {"1": "<base64>", "2": "<base64>"}}

It must be a regular file with mode 0600 or stricter: :meth:`KeyRing.load`
*refuses* (raises KeyUnavailable) a file readable or writable by group or
others, rather than warning, because a KEK that others could read protects
nothing.  The same text, or the compact form ``"1:<base64>,2:<base64>"``
(current = highest version), can be given through an environment variable.

Any object with ``current_version``, ``wrap`` and ``unwrap`` (the
:class:`KeyEncryptionProvider` protocol) can replace the key ring, e.g. a KMS
or HSM client.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .errors import KeyUnavailable, StorageError

_FORMAT = "storage-kek-v1"
_KEY_SIZE = 32
_NONCE_SIZE = 12


@runtime_checkable
class KeyEncryptionProvider(Protocol):
    """Wraps and unwraps small secrets under a versioned key (KeyRing, or a KMS/HSM)."""

    @property
    def current_version(self) -> int: ...

    def wrap(self, version: int, plaintext: bytes, associated_data: bytes) -> bytes: ...

    def unwrap(self, version: int, wrapped: bytes, associated_data: bytes) -> bytes:
        """Raise KeyUnavailable if the version is gone or the data do not authenticate."""
        ...


class KeyRing:
    """In-memory set of KEK versions; one of them is current (used for new wraps)."""

    def __init__(self, keys: dict[int, bytes], current_version: int) -> None:
        if current_version not in keys:
            raise KeyUnavailable("the current KEK version is not in the key ring")
        if any(len(k) != _KEY_SIZE for k in keys.values()):
            raise KeyUnavailable("a KEK has the wrong length")
        self._keys = dict(keys)
        self.current_version = current_version

    # -- loading and saving ---------------------------------------------------------

    @classmethod
    def generate(cls) -> KeyRing:
        """Return a new key ring holding one fresh version (1)."""
        return cls({1: os.urandom(_KEY_SIZE)}, 1)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KeyRing:
        """Load a key file; refuse one that is missing, malformed or not mode 0600."""
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            raise KeyUnavailable(f"cannot open the KEK file ({exc.strerror})") from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise KeyUnavailable("the KEK file is not a regular file")
            if info.st_mode & 0o077:
                raise KeyUnavailable(
                    f"the KEK file has mode {stat.S_IMODE(info.st_mode):04o}; "
                    "refusing anything looser than 0600"
                )
            text = handle.read().decode("utf-8", errors="replace")
        return cls._parse(text)

    @classmethod
    def from_env(cls, value: str) -> KeyRing:
        """Parse the key-file JSON, or the compact ``"1:<b64>,2:<b64>"`` form."""
        return cls._parse(value)

    @classmethod
    def _parse(cls, text: str) -> KeyRing:
        text = text.strip()
        try:
            if text.startswith("{"):
                data = json.loads(text)
                if data.get("format") != _FORMAT:
                    raise ValueError
                keys = {int(v): _b64(k) for v, k in data["keys"].items()}
                current = int(data["current"])
            else:
                pairs = (item.split(":", 1) for item in text.split(",") if item.strip())
                keys = {int(v): _b64(k) for v, k in pairs}
                current = max(keys)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise KeyUnavailable("the KEK file or variable is malformed") from None
        return cls(keys, current)

    def to_json(self) -> str:
        """Serialise (contains the keys: write it only to a 0600 file)."""
        keys = {str(v): base64.b64encode(k).decode("ascii") for v, k in sorted(self._keys.items())}
        return json.dumps({"format": _FORMAT, "current": self.current_version, "keys": keys})

    @staticmethod
    def create_file(path: str | os.PathLike[str]) -> bool:
        """Create a key file with a fresh version 1 and mode 0600; False if it exists."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, KeyRing.generate().to_json().encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_directory(Path(path).parent)
        return True

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key ring atomically (temporary 0600 file, fsync, rename)."""
        target = Path(path)
        tmp = target.with_name(f".{target.name}.{os.urandom(8).hex()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, self.to_json().encode("ascii"))
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(tmp, target)
        _fsync_directory(target.parent)

    # -- versions -------------------------------------------------------------------

    def versions(self) -> list[int]:
        return sorted(self._keys)

    def add_version(self) -> int:
        """Add a fresh KEK version in memory and make it current; returns it."""
        version = max(self._keys) + 1
        self._keys[version] = os.urandom(_KEY_SIZE)
        self.current_version = version
        return version

    def retire(self, version: int) -> None:
        """Forget a version. Keys still wrapped under it become unreadable:
        use :func:`storage.retire_kek_version` to check the key store first."""
        if version == self.current_version:
            raise StorageError("the current KEK version cannot be retired")
        if version not in self._keys:
            raise KeyUnavailable(f"KEK version {version} does not exist")
        del self._keys[version]

    # -- KeyEncryptionProvider --------------------------------------------------------

    def _key(self, version: int) -> bytes:
        try:
            return self._keys[version]
        except KeyError:
            raise KeyUnavailable(f"KEK version {version} is not available") from None

    def wrap(self, version: int, plaintext: bytes, associated_data: bytes) -> bytes:
        nonce = os.urandom(_NONCE_SIZE)
        return nonce + ChaCha20Poly1305(self._key(version)).encrypt(
            nonce, plaintext, associated_data
        )

    def unwrap(self, version: int, wrapped: bytes, associated_data: bytes) -> bytes:
        aead = ChaCha20Poly1305(self._key(version))
        try:
            return aead.decrypt(wrapped[:_NONCE_SIZE], wrapped[_NONCE_SIZE:], associated_data)
        except (InvalidTag, ValueError):
            raise KeyUnavailable(
                f"a wrapped key does not open with KEK version {version} (wrong KEK or tampered)"
            ) from None

    def __repr__(self) -> str:
        return f"KeyRing(versions={self.versions()}, current_version={self.current_version})"


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("bad base64") from None


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
