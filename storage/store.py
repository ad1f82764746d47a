"""ObjectStore: Crypt4GH objects, one X25519 key pair per scope, on a pluggable backend."""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import queue
import sys
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO

from . import c4gh_format as fmt
from . import scope_keys
from .backend import Backend, BackendWriter, new_object_id
from .errors import IntegrityError, KeyUnavailable, ObjectNotFound, StorageError, naming
from .keyring import KeyEncryptionProvider
from .keystore import KeyStore
from .lane import Lane
from .reader import DecryptingReader

if TYPE_CHECKING:
    from .spool import EncryptedSpool

_COPY_CHUNK = 1 << 20
_LANE_THRESHOLD = 4 << 20
_LANE_DEPTH = 4
_BATCH_SEGMENTS = 16  # 1 MiB of plaintext per hand-off to the lanes


@dataclass(frozen=True)
class ObjectInfo:
    """What the portal records per object (in its database) to read and check it."""

    object_id: str
    scope_id: str
    size: int
    sha256: str
    stored_size: int
    stored_sha256: str


@dataclass
class VerifyReport:
    """Outcome of :meth:`ObjectStore.verify`; lists object IDs only."""

    checked: int = 0
    missing: list[str] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)
    corrupted: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.orphaned or self.corrupted or self.unreadable)


class ObjectWriter:
    """Encrypts bytes as they are written, straight into a backend temporary object.

    ``commit()`` makes the object visible and returns its :class:`ObjectInfo`;
    ``abort()`` (or an exception inside ``with``) leaves nothing behind, and so
    does a failing ``write()`` or ``commit()`` (a full disk raises StorageFull):
    the writer aborts itself before raising.  A ``with`` block left normally
    commits.

    Each segment is sealed once and its bytes reach the backend once.  Past
    ``_LANE_THRESHOLD`` bytes the work is split over three threads: the
    caller's encrypts, one lane hashes the plaintext and another hashes the
    sealed bytes and hands them to the backend, all three outside the GIL most
    of the time (see :mod:`storage.lane`).  Work goes to the lanes in batches
    of ``_BATCH_SEGMENTS`` segments: few thread hand-offs, small queues.
    """

    def __init__(self, backend: Backend, scope_id: str, public_key: bytes) -> None:
        self.object_id = new_object_id()
        self.scope_id = scope_id
        self.info: ObjectInfo | None = None
        session_key = os.urandom(fmt.KEY_SIZE)
        self._sealer = fmt.SegmentSealer(session_key)
        header = fmt.make_header(session_key, [public_key])
        del session_key
        self._buffer = bytearray()
        self._plain_hash = hashlib.sha256()
        self._stored_hash = hashlib.sha256()
        self._size = 0
        self._stored_size = len(header)
        self._lanes: tuple[Lane, Lane] | None = None
        self._out: BackendWriter | None = backend.create(self.object_id)
        try:
            self._store([header])
        except BaseException:
            self.abort()
            raise

    @property
    def bytes_written(self) -> int:
        return self._size

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Encrypt and store the bytes; the caller may reuse its buffer once this returns."""
        return self._write(data, isinstance(data, bytes), None)

    def write_from(self, stream: BinaryIO) -> int:
        """Copy a readable stream in until its end; returns the number of bytes.

        An ``io.BytesIO`` is encrypted where its bytes lie, without a copy (on
        CPython).  Other streams are read into a few reusable buffers
        (``readinto``), which the plaintext hashing lane hands back when done,
        rather than into a fresh 1 MiB ``bytes`` per read: on long objects that
        allocation churn costs about as much as a cipher pass.  The lanes'
        bounded queues bound how many buffers are in use.
        """
        if isinstance(stream, io.BytesIO) and sys.implementation.name == "cpython":
            return self._write_in_place(stream)
        readinto = getattr(stream, "readinto", None)
        total = 0
        if readinto is None:
            while chunk := stream.read(_COPY_CHUNK):
                total += self.write(chunk)
            return total
        free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        while True:
            try:
                buffer = free.get_nowait()
            except queue.Empty:
                buffer = bytearray(_COPY_CHUNK)
            count = readinto(buffer)
            if not count:
                return total
            total += self._write(memoryview(buffer)[:count], True, partial(free.put, buffer))

    def _write_in_place(self, stream: io.BytesIO) -> int:
        """CPython's ``BytesIO.getvalue()`` hands out the buffer itself as ``bytes``
        (copy-on-write, so it cannot change under the lanes): nothing is copied."""
        start = stream.tell()
        data = memoryview(stream.getvalue())[start:]
        for offset in range(0, len(data), _COPY_CHUNK):
            self._write(data[offset : offset + _COPY_CHUNK], True, None)
        stream.seek(start + len(data))
        return len(data)

    def _write(
        self,
        data: bytes | bytearray | memoryview,
        stable: bool,
        release: Callable[[], None] | None,
    ) -> int:
        """``stable``: the data stays unchanged until ``release`` is called (or,
        without one, until the lanes are done), so they may read it in place."""
        if self._out is None:
            raise StorageError("write to a committed or aborted object", self.object_id)
        view = memoryview(data).cast("B")
        count = len(view)
        try:
            self._size += count
            segments: list[bytes | bytearray | memoryview] = []
            if self._buffer:
                take = fmt.SEGMENT_SIZE - len(self._buffer)
                self._buffer += view[:take]
                view = view[take:]
                if len(self._buffer) == fmt.SEGMENT_SIZE:
                    segments.append(self._buffer)  # no longer ours to change
                    self._buffer = bytearray()
            while len(view) >= fmt.SEGMENT_SIZE:
                segment_view = view[: fmt.SEGMENT_SIZE]
                segments.append(segment_view if stable else bytes(segment_view))
                view = view[fmt.SEGMENT_SIZE :]
                if len(segments) == _BATCH_SEGMENTS and len(view):
                    self._seal(segments, None)
                    segments = []
            if len(view):
                self._buffer += view
            if segments:
                self._seal(segments, release)
            elif release is not None:
                if self._lanes is None:
                    release()
                else:
                    self._lanes[0].submit(release)
        except BaseException:
            self.abort()
            raise
        return count

    def commit(self) -> ObjectInfo:
        if self._out is None:
            raise StorageError("commit of a committed or aborted object", self.object_id)
        try:
            if self._buffer:
                segment, self._buffer = self._buffer, bytearray()
                self._seal([segment], None)
            if self._lanes is not None:
                for lane in self._lanes:
                    lane.finish()
            out, self._out = self._out, None
            stored = out.commit()
        except BaseException:
            self.abort()
            raise
        if stored != self._stored_size:
            raise StorageError("backend stored an unexpected number of bytes", self.object_id)
        self.info = ObjectInfo(
            object_id=self.object_id,
            scope_id=self.scope_id,
            size=self._size,
            sha256=self._plain_hash.hexdigest(),
            stored_size=self._stored_size,
            stored_sha256=self._stored_hash.hexdigest(),
        )
        return self.info

    def abort(self) -> None:
        self._buffer = bytearray()
        if self._lanes is not None:
            for lane in self._lanes:
                lane.cancel()  # waits for a running call: the backend writer is free after
        if self._out is not None:
            out, self._out = self._out, None
            out.abort()

    def __enter__(self) -> ObjectWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif self._out is not None:
            self.commit()

    def _seal(
        self,
        segments: list[bytes | bytearray | memoryview],
        release: Callable[[], None] | None,
    ) -> None:
        """Encrypt whole segments, which must not change until ``release`` (lanes
        read them); ``release`` runs once they are hashed, after earlier batches."""
        sealed: list[bytes] = []
        for segment in segments:
            sealed.extend(self._sealer.seal_parts(segment))
        self._stored_size += sum(len(part) for part in sealed)
        if self._lanes is None and self._size > _LANE_THRESHOLD:
            self._lanes = (Lane(depth=_LANE_DEPTH), Lane(depth=_LANE_DEPTH))
            for lane in self._lanes:
                weakref.finalize(self, lane.stop)  # an abandoned writer ends its threads
        if self._lanes is None:
            _hash_all(self._plain_hash, segments, release)
            self._store(sealed)
        else:
            self._lanes[0].submit(_hash_all, self._plain_hash, segments, release)
            self._lanes[1].submit(self._store, sealed)

    def _store(self, chunks: list[bytes]) -> None:
        """Hash and write the sealed bytes, in order (in the second lane once it exists)."""
        out = self._out
        assert out is not None
        _hash_all(self._stored_hash, chunks, None)
        writelines = getattr(out, "writelines", None)
        if writelines is not None:
            writelines(chunks)
        else:
            for chunk in chunks:
                out.write(chunk)


def _hash_all(
    digest: Any,
    pieces: Sequence[bytes | bytearray | memoryview],
    release: Callable[[], None] | None = None,
) -> None:
    for piece in pieces:
        digest.update(piece)
    if release is not None:
        release()


class ObjectStore:
    """Encrypted object storage; see the package docstring for the design."""

    def __init__(
        self, backend: Backend, keyring: KeyEncryptionProvider, keystore: KeyStore
    ) -> None:
        self.backend = backend
        self.keyring = keyring
        self.keystore = keystore

    # -- scopes -----------------------------------------------------------------------

    def ensure_scope(self, scope_id: str) -> bytes:
        """Create the scope's key pair if it has none; return its public key."""
        existing = self.keystore.get(scope_id)
        if existing is not None:
            return existing.public_key
        key = scope_keys.new_scope_key(self.keyring, scope_id)
        self.keystore.add(key)
        return key.public_key

    def public_key(self, scope_id: str) -> bytes:
        key = self.keystore.get(scope_id)
        if key is None:
            raise KeyUnavailable(f"scope {scope_id} has no key (never created, or shredded)")
        return key.public_key

    def export_private_key(self, scope_id: str) -> bytes:
        """The scope's raw private key (for key-file export and tests; handle with care)."""
        return self._private_key(scope_id, None)

    def shred_scope(self, scope_id: str, object_ids: Iterable[str]) -> None:
        """Crypto-shredding: destroy the scope's key, then delete its objects.

        The key goes first: once the key store's transaction commits, every
        copy of these objects anywhere (backups included) is undecryptable,
        even if deleting a file below fails.
        """
        self.keystore.destroy(scope_id)
        for object_id in object_ids:
            try:
                self.backend.delete(object_id)
            except ObjectNotFound:
                continue

    # -- writing ------------------------------------------------------------------------

    def writer(self, scope_id: str) -> ObjectWriter:
        """Streaming encryption to the scope's public key (the scope must exist:
        a shredded scope is never silently given a new key)."""
        return ObjectWriter(self.backend, scope_id, self.public_key(scope_id))

    def put(self, scope_id: str, stream: BinaryIO) -> ObjectInfo:
        with self.writer(scope_id) as writer:
            writer.write_from(stream)
            return writer.commit()

    def put_encrypted(self, scope_id: str, stream: BinaryIO) -> ObjectInfo:
        """Store an existing Crypt4GH file encrypted to the scope's public key, unchanged.

        Every segment is authenticated (and the plaintext size and digest
        computed) before the object becomes visible.
        """
        object_id = new_object_id()
        private = self._private_key(scope_id, object_id)
        plain_hash, stored_hash = hashlib.sha256(), hashlib.sha256()
        size = stored_size = 0
        out = self.backend.create(object_id)
        try:
            header = fmt.read_header(stream, object_id)
            opener = fmt.SegmentOpener(fmt.session_keys(header, private, object_id))
            header_bytes = fmt.serialize_header(header.packets)
            stored_hash.update(header_bytes)
            out.write(header_bytes)
            stored_size = len(header_bytes)
            for sealed, plain in _checked_segments(stream, opener, object_id):
                plain_hash.update(plain)
                size += len(plain)
                stored_hash.update(sealed)
                out.write(sealed)
                stored_size += len(sealed)
            out.commit()
        except BaseException:
            out.abort()
            raise
        return ObjectInfo(
            object_id,
            scope_id,
            size,
            plain_hash.hexdigest(),
            stored_size,
            stored_hash.hexdigest(),
        )

    def spool(self, scope_id: str) -> EncryptedSpool:
        from .spool import EncryptedSpool

        return EncryptedSpool(self, scope_id)

    # -- reading ------------------------------------------------------------------------

    def open(self, info: ObjectInfo, *, authenticate_first: bool = True) -> DecryptingReader:
        """Decrypting, readable and seekable stream; see :class:`DecryptingReader`.

        By default the whole stored file is first checked against the recorded
        SHA-256 (one extra sequential read, constant memory), so a tampered,
        truncated, extended, reordered or duplicated object raises
        IntegrityError naming it before a single plaintext byte exists.

        ``authenticate_first=False`` skips that pass.  The reader still
        authenticates each segment as it decrypts it and raises the moment
        something is wrong, and the read reaching the end withholds its bytes
        if the size or plaintext SHA-256 differ; but what it returned before
        has been handed out.  Crypt4GH does not bind a segment to its position,
        so a segment moved or duplicated by someone with write access to the
        backend is returned (authentic, misplaced) and only detected at the
        end.  Use it only where the consumer discards everything on an error.
        """
        raw, header, private = self._open_stored(info)
        try:
            if authenticate_first:
                position = raw.tell()
                raw.seek(0)
                digest = _sha256_of(raw)
                if not hmac.compare_digest(digest, info.stored_sha256):
                    raise IntegrityError(
                        "stored SHA-256 differs from the recorded one", info.object_id
                    )
                raw.seek(position)
            keys = self._header_keys(info, raw, header, private)
            return DecryptingReader(
                raw, fmt.SegmentOpener(keys), header.length, info.size, info.sha256, info.object_id
            )
        except BaseException:
            raw.close()
            raise

    def read_bytes(self, info: ObjectInfo) -> bytes:
        """The whole plaintext, or a typed error and nothing (checked before decrypting)."""
        with self.open(info, authenticate_first=True) as reader:
            return reader.read()

    def delete(self, object_id: str) -> None:
        self.backend.delete(object_id)

    def reencrypt_for(self, info: ObjectInfo, recipient_public_key: bytes) -> Iterator[bytes]:
        """A Crypt4GH stream of the object for the recipient: new header, same data segments.

        The key and header work happens now (errors are raised by this call);
        the returned iterator then copies the data segments, checks the stored
        SHA-256 on the way and raises IntegrityError instead of yielding the
        last chunk if it differs.
        """
        if not isinstance(recipient_public_key, bytes) or len(recipient_public_key) != 32:
            raise StorageError("recipient public key must be 32 raw bytes", info.object_id)
        raw, header, private = self._open_stored(info)
        try:
            self._header_keys(info, raw, header, private)
            new_header = fmt.reencrypt_header(
                header, private, [recipient_public_key], info.object_id
            )
        except BaseException:
            raw.close()
            raise
        return _reencrypted(raw, new_header, info)

    def verify(self, infos: Iterable[ObjectInfo]) -> VerifyReport:
        """Authenticate every segment of each object and reconcile with the backend.

        Objects committed to the backend but not (yet) recorded by the caller
        show up as orphaned, so run it when no upload is in flight.
        """
        report = VerifyReport()
        stored = set(self.backend.list())
        seen = set()
        for info in infos:
            seen.add(info.object_id)
            report.checked += 1
            if info.object_id not in stored:
                report.missing.append(info.object_id)
                continue
            try:
                self._authenticate(info)
            except ObjectNotFound:
                report.missing.append(info.object_id)
            except KeyUnavailable:
                report.unreadable.append(info.object_id)
            except IntegrityError:
                report.corrupted.append(info.object_id)
        report.orphaned = sorted(stored - seen)
        return report

    # -- internals ------------------------------------------------------------------------

    def _private_key(self, scope_id: str, object_id: str | None) -> bytes:
        key = self.keystore.get(scope_id)
        if key is None:
            raise KeyUnavailable("scope key destroyed or missing", object_id)
        try:
            return scope_keys.unwrap(self.keyring, key)
        except KeyUnavailable as exc:
            if object_id is None:
                raise
            raise naming(exc, object_id) from None

    def _open_stored(self, info: ObjectInfo) -> tuple[BinaryIO, fmt.Header, bytes]:
        stored_size = self.backend.stat(info.object_id)
        if stored_size != info.stored_size:
            raise IntegrityError(
                "stored size differs from the recorded one (truncated or extended)", info.object_id
            )
        private = self._private_key(info.scope_id, info.object_id)
        raw = self.backend.open(info.object_id)
        try:
            header = fmt.read_header(raw, info.object_id)
            if header.length + fmt.ciphertext_length(info.size) != info.stored_size:
                raise IntegrityError("layout does not match the recorded sizes", info.object_id)
        except BaseException:
            raw.close()
            raise
        return raw, header, private

    def _header_keys(
        self, info: ObjectInfo, raw: BinaryIO, header: fmt.Header, private: bytes
    ) -> list[bytes]:
        """Session keys; a header that does not open is told apart by the stored digest:
        bytes as recorded means a wrong key, different bytes mean tampering."""
        try:
            return fmt.session_keys(header, private, info.object_id)
        except KeyUnavailable:
            position = raw.tell()
            raw.seek(0)
            digest = _sha256_of(raw)
            raw.seek(position)
            if not hmac.compare_digest(digest, info.stored_sha256):
                raise IntegrityError("header fails authentication", info.object_id) from None
            raise

    def _authenticate(self, info: ObjectInfo) -> None:
        with self.open(info, authenticate_first=True) as reader:
            while reader.read(_COPY_CHUNK):
                pass


def _checked_segments(
    stream: BinaryIO, opener: fmt.SegmentOpener, object_id: str
) -> Iterator[tuple[bytes, bytes]]:
    for sealed in fmt.iter_segments(stream):
        plain = opener.open(sealed, object_id)
        if not plain:
            raise IntegrityError("empty data segment", object_id)
        yield sealed, plain


def _sha256_of(raw: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := raw.read(_COPY_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _reencrypted(raw: BinaryIO, new_header: bytes, info: ObjectInfo) -> Iterator[bytes]:
    with raw:
        yield new_header
        stored_hash = hashlib.sha256()
        raw.seek(0)
        header_length = info.stored_size - fmt.ciphertext_length(info.size)
        stored_hash.update(fmt.read_full(raw, header_length))
        pending = b""
        while chunk := raw.read(_COPY_CHUNK):
            stored_hash.update(chunk)
            if pending:
                yield pending
            pending = chunk
        if not hmac.compare_digest(stored_hash.hexdigest(), info.stored_sha256):
            raise IntegrityError("stored SHA-256 differs from the recorded one", info.object_id)
        if pending:
            yield pending
