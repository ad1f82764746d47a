"""Creating, unwrapping and re-wrapping the per-scope X25519 key pairs."""

from __future__ import annotations

from . import c4gh_format
from .errors import KeyUnavailable
from .keyring import KeyEncryptionProvider
from .keystore import WrappedKey

_AD_LABEL = b"storage/scope-private-key/v1\x00"


def associated_data(scope_id: str, kek_version: int) -> bytes:
    """AEAD associated data binding a wrapped key to its scope and KEK version."""
    return _AD_LABEL + scope_id.encode("utf-8") + b"\x00" + kek_version.to_bytes(8, "big")


def new_scope_key(provider: KeyEncryptionProvider, scope_id: str) -> WrappedKey:
    """Generate a key pair for the scope, private half wrapped under the current KEK."""
    private, public = c4gh_format.generate_keypair()
    version = provider.current_version
    wrapped = provider.wrap(version, private, associated_data(scope_id, version))
    return WrappedKey(scope_id, public, wrapped, version)


def unwrap(provider: KeyEncryptionProvider, key: WrappedKey) -> bytes:
    """Return the raw private key; KeyUnavailable if the KEK is gone or wrong."""
    private = provider.unwrap(
        key.kek_version, key.wrapped_private_key, associated_data(key.scope_id, key.kek_version)
    )
    if c4gh_format.public_key_of(private) != key.public_key:
        raise KeyUnavailable(f"scope {key.scope_id}: private and public keys do not match")
    return private


def rewrap(provider: KeyEncryptionProvider, key: WrappedKey, version: int) -> WrappedKey:
    """Return the same key pair wrapped under another KEK version."""
    private = unwrap(provider, key)
    wrapped = provider.wrap(version, private, associated_data(key.scope_id, version))
    return WrappedKey(key.scope_id, key.public_key, wrapped, version)
