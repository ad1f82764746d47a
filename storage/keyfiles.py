"""Key files in the formats of the reference ``crypt4gh-keygen`` tool.

Researchers upload their public key as a ``crypt4gh-keygen`` public key file;
private keys can be exported in the same tool's format (plain, or protected by
a passphrase with scrypt + ChaCha20-Poly1305), e.g. for interoperability tests
or an offline escrow.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from . import c4gh_format
from .errors import KeyUnavailable, StorageError

_PUBLIC_BEGIN = "-----BEGIN CRYPT4GH PUBLIC KEY-----"
_PUBLIC_END = "-----END CRYPT4GH PUBLIC KEY-----"
_PRIVATE_BEGIN = "-----BEGIN CRYPT4GH PRIVATE KEY-----"
_PRIVATE_END = "-----END CRYPT4GH PRIVATE KEY-----"
_MAGIC = b"c4gh-v1"
_SCRYPT = {"n": 1 << 14, "r": 8, "p": 1, "dklen": 32}


def _encode_string(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


def _decode_string(stream: io.BytesIO) -> bytes:
    length = int.from_bytes(stream.read(2), "big")
    value = stream.read(length)
    if len(value) != length:
        raise ValueError("truncated key")
    return value


def _pem_body(text: str, begin: str, end: str) -> bytes:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if len(lines) < 3 or lines[0] != begin or lines[-1] != end:
        raise ValueError("not a Crypt4GH key file")
    return base64.b64decode("".join(lines[1:-1]), validate=True)


def public_key_file_text(public_key: bytes) -> str:
    """The ``crypt4gh-keygen`` public key file content for a raw X25519 key."""
    encoded = base64.b64encode(public_key).decode("ascii")
    return f"{_PUBLIC_BEGIN}\n{encoded}\n{_PUBLIC_END}\n"


def parse_public_key(text: str | bytes) -> bytes:
    """Raw 32-byte X25519 key from a ``crypt4gh-keygen`` public key file's content."""
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="replace")
    try:
        key = _pem_body(text, _PUBLIC_BEGIN, _PUBLIC_END)
    except (ValueError, binascii.Error):
        raise StorageError("not a Crypt4GH public key file") from None
    if len(key) != 32:
        raise StorageError("a Crypt4GH public key has 32 bytes")
    return key


def load_public_key_file(path: str | os.PathLike[str]) -> bytes:
    return parse_public_key(Path(path).read_bytes())


def write_public_key_file(public_key: bytes, path: str | os.PathLike[str]) -> None:
    Path(path).write_text(public_key_file_text(public_key), encoding="ascii")


def export_private_key_file(
    private_key: bytes,
    path: str | os.PathLike[str],
    passphrase: bytes | None = None,
    comment: bytes | None = None,
) -> None:
    """Write a private key as ``crypt4gh-keygen`` does (new file, mode 0600).

    Without a passphrase the key is stored in clear, as the reference tool
    does when asked to; pass one for anything that leaves a test.
    """
    if passphrase:
        salt = os.urandom(16)
        derived = hashlib.scrypt(passphrase, salt=salt, **_SCRYPT)
        nonce = os.urandom(12)
        sealed = ChaCha20Poly1305(derived).encrypt(nonce, private_key, None)
        body = (
            _MAGIC
            + _encode_string(b"scrypt")
            + _encode_string((0).to_bytes(4, "big") + salt)
            + _encode_string(b"chacha20_poly1305")
            + _encode_string(nonce + sealed)
        )
    else:
        body = _MAGIC + _encode_string(b"none") + _encode_string(b"none")
        body += _encode_string(private_key)
    if comment is not None:
        body += _encode_string(comment)
    text = f"{_PRIVATE_BEGIN}\n{base64.b64encode(body).decode('ascii')}\n{_PRIVATE_END}\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(text)


def load_private_key_file(path: str | os.PathLike[str], passphrase: bytes | None = None) -> bytes:
    """Raw X25519 private key from a ``crypt4gh-keygen`` private key file.

    Supports unprotected keys and keys protected with scrypt or
    pbkdf2_hmac_sha256 (bcrypt-protected keys need the ``bcrypt`` package and
    are refused).
    """
    try:
        body = _pem_body(Path(path).read_text("ascii"), _PRIVATE_BEGIN, _PRIVATE_END)
        stream = io.BytesIO(body)
        if stream.read(len(_MAGIC)) != _MAGIC:
            raise ValueError("not a Crypt4GH private key")
        kdf = _decode_string(stream)
        options = _decode_string(stream) if kdf != b"none" else b""
        cipher = _decode_string(stream)
        data = _decode_string(stream)
    except (OSError, UnicodeDecodeError, ValueError, binascii.Error):
        raise KeyUnavailable("cannot read the private key file") from None
    if cipher == b"none":
        key = data
    elif cipher == b"chacha20_poly1305" and passphrase:
        rounds, salt = int.from_bytes(options[:4], "big"), options[4:]
        if kdf == b"scrypt":
            derived = hashlib.scrypt(passphrase, salt=salt, **_SCRYPT)
        elif kdf == b"pbkdf2_hmac_sha256":
            derived = hashlib.pbkdf2_hmac("sha256", passphrase, salt, rounds, dklen=32)
        else:
            raise KeyUnavailable("unsupported key derivation in the private key file")
        try:
            key = ChaCha20Poly1305(derived).decrypt(data[:12], data[12:], None)
        except InvalidTag:
            raise KeyUnavailable("wrong passphrase for the private key file") from None
    else:
        raise KeyUnavailable("the private key file needs a passphrase or is unsupported")
    if len(key) != 32:
        raise KeyUnavailable("the private key file does not hold an X25519 key")
    c4gh_format.public_key_of(key)
    return key
