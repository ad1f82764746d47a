"""The portal's Ed25519 receipt-signing key: generate, load and save it; publish its public half.

The key ID is the RFC 7638 JWK thumbprint of the public key, so anyone holding the published
JWK can recompute it. The private key is written with mode 0600 and never logged.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from consent.canonical import canonical_json

DEFAULT_ISSUER = "Medical image donation portal"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    """The public key as an OKP JWK (RFC 8037) with its thumbprint as ``kid``."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    members = {"crv": "Ed25519", "kty": "OKP", "x": b64url(raw)}
    kid = b64url(hashlib.sha256(canonical_json(members)).digest())
    return {**members, "kid": kid, "alg": "EdDSA", "use": "sig"}


def key_id(public_key: Ed25519PublicKey) -> str:
    return public_jwk(public_key)["kid"]


class ReceiptSigner:
    """Holds the private key; signs receipts in the name of ``issuer`` (the portal's name)."""

    def __init__(self, private_key: Ed25519PrivateKey, issuer: str = DEFAULT_ISSUER) -> None:
        self._private_key = private_key
        self.issuer = issuer

    def __repr__(self) -> str:
        return f"ReceiptSigner(key_id={self.key_id!r}, issuer={self.issuer!r})"

    @classmethod
    def generate(cls, issuer: str = DEFAULT_ISSUER) -> ReceiptSigner:
        return cls(Ed25519PrivateKey.generate(), issuer)

    @classmethod
    def load(
        cls,
        path: str | Path,
        issuer: str = DEFAULT_ISSUER,
        password: bytes | None = None,
    ) -> ReceiptSigner:
        """Load a PKCS#8 PEM private key file (encrypted when ``password`` is given)."""
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=password)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the receipt key file does not hold an Ed25519 private key")
        return cls(key, issuer)

    @classmethod
    def load_or_create(
        cls, path: str | Path, issuer: str = DEFAULT_ISSUER
    ) -> ReceiptSigner:
        """Load the key at ``path``, creating it (mode 0600) on first use."""
        path = Path(path)
        if path.exists():
            return cls.load(path, issuer)
        signer = cls.generate(issuer)
        signer.save(path)
        return signer

    def save(self, path: str | Path, password: bytes | None = None) -> None:
        """Write the private key as PEM with mode 0600; refuses to overwrite an existing file."""
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        pem = self._private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        descriptor = os.open(Path(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(pem)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._private_key.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def public_jwk(self) -> dict[str, Any]:
        return public_jwk(self.public_key)

    def public_jwks(self) -> dict[str, Any]:
        """A JWK Set to publish (e.g. at /.well-known/receipt-keys.json)."""
        return {"keys": [self.public_jwk()]}

    def sign(self, payload: bytes) -> bytes:
        return self._private_key.sign(payload)
