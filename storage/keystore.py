"""Persistence of the wrapped per-scope private keys.

The portal implements :class:`KeyStore` on its database, inside the request's
transaction; :class:`MemoryKeyStore` is the dict-backed version for tests and
command-line tools.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .errors import KeyUnavailable, StorageError


@dataclass(frozen=True)
class WrappedKey:
    """A scope's X25519 key pair, the private half sealed under a KEK version."""

    scope_id: str
    public_key: bytes
    wrapped_private_key: bytes
    kek_version: int

    def __repr__(self) -> str:
        return f"WrappedKey(scope_id={self.scope_id!r}, kek_version={self.kek_version})"


@runtime_checkable
class KeyStore(Protocol):
    def get(self, scope_id: str) -> WrappedKey | None: ...

    def add(self, key: WrappedKey) -> None: ...

    def replace(self, key: WrappedKey) -> None:
        """Overwrite the scope's wrapped key (re-wrapping during KEK rotation)."""
        ...

    def destroy(self, scope_id: str) -> None:
        """Make the wrapped private key irrecoverable (a database deletes the row)."""
        ...

    def all(self) -> Iterable[WrappedKey]: ...


class MemoryKeyStore:
    """Dict-backed :class:`KeyStore`."""

    def __init__(self, keys: Iterable[WrappedKey] = ()) -> None:
        self._keys: dict[str, WrappedKey] = {k.scope_id: k for k in keys}

    def get(self, scope_id: str) -> WrappedKey | None:
        return self._keys.get(scope_id)

    def add(self, key: WrappedKey) -> None:
        if key.scope_id in self._keys:
            raise StorageError(f"scope {key.scope_id} already has a key")
        self._keys[key.scope_id] = key

    def replace(self, key: WrappedKey) -> None:
        if key.scope_id not in self._keys:
            raise KeyUnavailable(f"scope {key.scope_id} has no key to replace")
        self._keys[key.scope_id] = key

    def destroy(self, scope_id: str) -> None:
        self._keys.pop(scope_id, None)

    def all(self) -> list[WrappedKey]:
        return list(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)
