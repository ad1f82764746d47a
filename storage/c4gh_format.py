"""GA4GH Crypt4GH v1 building blocks, on the `cryptography` primitives.

A Crypt4GH file is a header followed by the data segments::

    "crypt4gh" | version=1 (u32 LE) | packet count (u32 LE) | packets...
    packet = length incl. itself (u32 LE) | method=0 (u32 LE)
             | writer public key (32) | nonce (12) | ChaCha20-Poly1305(payload) (+16)
    data segment = nonce (12) | ChaCha20-Poly1305(<= 64 KiB plaintext) (+16)

The header packet key is libsodium's ``crypto_kx`` session key: the first 32
bytes of BLAKE2b-512(X25519(sk, peer_pk) || reader_pk || writer_pk).  The
reference package (`crypt4gh`) uses libsodium; `cryptography` is used here
because its ChaCha20-Poly1305 is about twice as fast (see bench/storage.py).

Every data segment is authenticated, but the format does not authenticate the
order or the number of segments; callers check the recorded size and digest.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .errors import IntegrityError, KeyUnavailable

MAGIC = b"crypt4gh"
VERSION = 1
SEGMENT_SIZE = 65536
NONCE_SIZE = 12
TAG_SIZE = 16
CIPHER_DIFF = NONCE_SIZE + TAG_SIZE
CIPHER_SEGMENT_SIZE = SEGMENT_SIZE + CIPHER_DIFF
KEY_SIZE = 32

_METHOD_X25519_CHACHA20_POLY1305 = (0).to_bytes(4, "little")
_PACKET_DATA_ENC = (0).to_bytes(4, "little")
_PACKET_EDIT_LIST = (1).to_bytes(4, "little")
_DATA_METHOD_CHACHA20_POLY1305 = (0).to_bytes(4, "little")
_MAX_PACKETS = 1024
_MAX_PACKET_LENGTH = 1 << 16


def generate_keypair() -> tuple[bytes, bytes]:
    """Return a fresh raw X25519 (private, public) key pair."""
    private = X25519PrivateKey.generate()
    return private.private_bytes_raw(), private.public_key().public_bytes_raw()


def public_key_of(private_key: bytes) -> bytes:
    """Return the raw X25519 public key of a raw private key."""
    return X25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes_raw()


def _kx_key(private_key: bytes, peer_public: bytes, reader_pk: bytes, writer_pk: bytes) -> bytes:
    shared = X25519PrivateKey.from_private_bytes(private_key).exchange(
        X25519PublicKey.from_public_bytes(peer_public)
    )
    return hashlib.blake2b(shared + reader_pk + writer_pk, digest_size=64).digest()[:KEY_SIZE]


def _encrypt_packet(payload: bytes, recipient_pk: bytes) -> bytes:
    writer_sk, writer_pk = generate_keypair()
    key = _kx_key(writer_sk, recipient_pk, recipient_pk, writer_pk)
    nonce = os.urandom(NONCE_SIZE)
    sealed = ChaCha20Poly1305(key).encrypt(nonce, payload, None)
    return _METHOD_X25519_CHACHA20_POLY1305 + writer_pk + nonce + sealed


def _decrypt_packet(packet: bytes, reader_sk: bytes, reader_pk: bytes) -> bytes | None:
    if packet[:4] != _METHOD_X25519_CHACHA20_POLY1305 or len(packet) < 4 + 32 + CIPHER_DIFF:
        return None
    writer_pk = packet[4:36]
    nonce = packet[36:48]
    try:
        key = _kx_key(reader_sk, writer_pk, reader_pk, writer_pk)
        return ChaCha20Poly1305(key).decrypt(nonce, packet[48:], None)
    except (InvalidTag, ValueError):
        return None


def serialize_header(packets: Iterable[bytes]) -> bytes:
    """Serialise encrypted header packets into a Crypt4GH v1 header."""
    packets = list(packets)
    return (
        MAGIC
        + VERSION.to_bytes(4, "little")
        + len(packets).to_bytes(4, "little")
        + b"".join((len(p) + 4).to_bytes(4, "little") + p for p in packets)
    )


def make_header(session_key: bytes, recipient_pks: Iterable[bytes]) -> bytes:
    """Return a header giving each recipient the data session key."""
    payload = _PACKET_DATA_ENC + _DATA_METHOD_CHACHA20_POLY1305 + session_key
    return serialize_header(_encrypt_packet(payload, pk) for pk in recipient_pks)


def _read_exactly(stream: BinaryIO, n: int, object_id: str | None) -> bytes:
    data = read_full(stream, n)
    if len(data) != n:
        raise IntegrityError("truncated Crypt4GH header", object_id)
    return data


@dataclass(frozen=True)
class Header:
    """A parsed (still encrypted) header and its length in bytes."""

    packets: tuple[bytes, ...]
    length: int


def read_header(stream: BinaryIO, object_id: str | None = None) -> Header:
    """Read and parse the header at the stream's position, leaving it just after it."""
    start = _read_exactly(stream, 16, object_id)
    if start[:8] != MAGIC:
        raise IntegrityError("not a Crypt4GH file", object_id)
    if int.from_bytes(start[8:12], "little") != VERSION:
        raise IntegrityError("unsupported Crypt4GH version", object_id)
    count = int.from_bytes(start[12:16], "little")
    if not 0 < count <= _MAX_PACKETS:
        raise IntegrityError("invalid Crypt4GH header packet count", object_id)
    packets = []
    length = 16
    for _ in range(count):
        size = int.from_bytes(_read_exactly(stream, 4, object_id), "little") - 4
        if not 0 < size <= _MAX_PACKET_LENGTH:
            raise IntegrityError("invalid Crypt4GH header packet length", object_id)
        packets.append(_read_exactly(stream, size, object_id))
        length += 4 + size
    return Header(tuple(packets), length)


def session_keys(header: Header, reader_sk: bytes, object_id: str | None = None) -> list[bytes]:
    """Decrypt the header packets addressed to ``reader_sk``; return the data keys.

    Raises KeyUnavailable if no packet opens with this key (wrong key or a
    tampered header: both are indistinguishable by design), and IntegrityError
    for files using features this library does not read (edit lists, other
    data ciphers).
    """
    reader_pk = public_key_of(reader_sk)
    keys = []
    opened = 0
    for packet in header.packets:
        payload = _decrypt_packet(packet, reader_sk, reader_pk)
        if payload is None:
            continue
        opened += 1
        if payload[:4] == _PACKET_EDIT_LIST:
            raise IntegrityError("Crypt4GH edit lists are not supported", object_id)
        if (
            payload[:4] != _PACKET_DATA_ENC
            or payload[4:8] != _DATA_METHOD_CHACHA20_POLY1305
            or len(payload) != 8 + KEY_SIZE
        ):
            raise IntegrityError("unsupported Crypt4GH header packet", object_id)
        keys.append(payload[8:])
    if not opened:
        raise KeyUnavailable("no header packet opens with the scope key", object_id)
    return keys


def reencrypt_header(
    header: Header, reader_sk: bytes, recipient_pks: Iterable[bytes], object_id: str | None = None
) -> bytes:
    """Return a new header giving the recipients the same data keys (no data change)."""
    keys = session_keys(header, reader_sk, object_id)
    payloads = [_PACKET_DATA_ENC + _DATA_METHOD_CHACHA20_POLY1305 + key for key in keys]
    return serialize_header(
        _encrypt_packet(payload, pk) for pk in recipient_pks for payload in payloads
    )


def ciphertext_length(plaintext_size: int) -> int:
    """Length of the data part for a plaintext of this size (no empty final segment)."""
    segments = -(-plaintext_size // SEGMENT_SIZE)
    return plaintext_size + segments * CIPHER_DIFF


class SegmentSealer:
    """Encrypts plaintext segments with one session key.

    ``ChaCha20Poly1305.encrypt`` releases the GIL while it works (its
    ``encrypt_into`` does not), so hashing and writing in other threads run
    beside it: the sealers below use ``encrypt`` and hand out the nonce and the
    ciphertext as two pieces rather than copying them into one buffer.
    """

    def __init__(self, session_key: bytes) -> None:
        self._aead = ChaCha20Poly1305(session_key)

    def seal_parts(self, segment: bytes | bytearray | memoryview) -> tuple[bytes, bytes]:
        """The sealed segment as (nonce, ciphertext with tag): stored one after the other."""
        nonce = os.urandom(NONCE_SIZE)
        return nonce, self._aead.encrypt(nonce, segment, None)

    def seal(self, segment: bytes | memoryview) -> bytes:
        nonce, sealed = self.seal_parts(segment)
        return nonce + sealed


class SegmentOpener:
    """Decrypts and authenticates data segments with the header's session keys."""

    def __init__(self, keys: Iterable[bytes]) -> None:
        self._aeads = [ChaCha20Poly1305(k) for k in keys]

    def open(self, segment: bytes | memoryview, object_id: str | None = None) -> bytes:
        if len(segment) <= CIPHER_DIFF:
            raise IntegrityError("truncated data segment", object_id)
        view = memoryview(segment)
        nonce = bytes(view[:NONCE_SIZE])
        for aead in self._aeads:
            try:
                return aead.decrypt(nonce, view[NONCE_SIZE:], None)
            except InvalidTag:
                continue
        raise IntegrityError("data segment fails authentication", object_id)


def read_full(stream: BinaryIO, size: int) -> bytes:
    """Read ``size`` bytes, or fewer only at end of stream (short reads are retried)."""
    data = stream.read(size) or b""
    while len(data) < size:
        more = stream.read(size - len(data))
        if not more:
            break
        data += more
    return data


def iter_segments(stream: BinaryIO) -> Iterator[bytes]:
    """Yield the ciphertext data segments from the stream's position to its end."""
    while segment := read_full(stream, CIPHER_SEGMENT_SIZE):
        yield segment
