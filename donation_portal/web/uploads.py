"""The plain upload form (no JavaScript): each file is encrypted as Werkzeug receives it.

Werkzeug normally spools large uploads to plaintext temporary files. Here each file goes into
an object encrypted to a quarantine key made for it in memory, so nothing touches the database
while the body is parsed; the keys are recorded afterwards, with the uploads, in one short
transaction (``workflows.uploads.submit_parts``). If the request fails before that, the
objects are deleted at teardown; if the process dies, they are unreadable (their keys never
left memory) and the reconciler removes them.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import IO

from flask import g

from donation_portal.adapters import services
from donation_portal.web.limits import LimitedRequest
from storage import (
    EncryptedSpool,
    MemoryKeyStore,
    ObjectInfo,
    ObjectStore,
    ObjectWriter,
    StorageError,
    WrappedKey,
    new_quarantine_scope,
)
from storage.scope_keys import new_scope_key


@dataclass
class Spooled:
    """One received file: its part, and the key it is encrypted to (private half wrapped)."""

    info: ObjectInfo
    key: WrappedKey


class QuarantineSpool(io.RawIOBase):
    """Write-only; the encrypted object is committed when the view takes the files.

    Until then it is a backend partial write, which the reconciler leaves alone for
    QUARANTINE_MAX_AGE: a committed but unrecorded object would count as an orphan after
    ORPHAN_GRACE, and a long form upload can take longer than that.
    """

    def __init__(self) -> None:
        super().__init__()
        scope = new_quarantine_scope()
        self.key = new_scope_key(services.keyring(), scope)
        self._writer: ObjectWriter | None = ObjectWriter(
            services.backend(), scope, self.key.public_key
        )
        self.info: ObjectInfo | None = None

    def writable(self) -> bool:
        return self._writer is not None

    def seekable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self._writer is None:
            raise io.UnsupportedOperation("the spool is committed")
        return self._writer.write(data)

    def tell(self) -> int:
        if self._writer is not None:
            return self._writer.bytes_written
        return 0

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.tell()  # Werkzeug rewinds a spool it has filled; nothing reads it here

    def read(self, size: int | None = -1) -> bytes:
        raise io.UnsupportedOperation("an encrypted spool is not read back in the web process")

    def commit(self) -> ObjectInfo:
        if self._writer is not None:
            self.info = self._writer.commit()
            self._writer = None
        assert self.info is not None
        return self.info

    def close(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        super().close()

    def spooled(self) -> Spooled:
        return Spooled(self.commit(), self.key)


DONATION_FORM = "donor.upload"


class EncryptingRequest(LimitedRequest):
    """Every uploaded file is encrypted as it arrives, never spooled to disk in plaintext.

    The donation form's files are handed to the ingest pipeline (:class:`QuarantineSpool`).
    Other forms (a receipt to verify, an ethics document) read their file back in the view:
    they get a spool encrypted to a key that lives only in this request's memory, deleted at
    teardown like the rest.
    """

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        spool: QuarantineSpool | EncryptedSpool
        if self.endpoint == DONATION_FORM:
            spool = QuarantineSpool()
            g.setdefault("quarantine_spools", []).append(spool)
        else:
            spool = _readable_spool()
            g.setdefault("readable_spools", []).append(spool)
        return spool  # type: ignore[return-value]


def _readable_spool() -> EncryptedSpool:
    store = ObjectStore(services.backend(), services.keyring(), MemoryKeyStore())
    scope = new_quarantine_scope()
    store.ensure_scope(scope)
    return store.spool(scope)


def take_spooled() -> list[Spooled]:
    """The request's files, now owned by the caller (teardown no longer deletes them)."""
    spools: list[QuarantineSpool] = g.pop("quarantine_spools", [])
    return [spool.spooled() for spool in spools]


def discard_unclaimed(_exc: BaseException | None) -> None:
    """At teardown: delete the objects of files nobody recorded (an error or a refusal)."""
    spools: list[QuarantineSpool | EncryptedSpool] = [
        *g.pop("quarantine_spools", []),
        *g.pop("readable_spools", []),
    ]
    for spool in spools:
        info = spool.info
        spool.close()
        if info is not None:
            # unreadable without its key, which never left memory; else the reconciler removes it
            with contextlib.suppress(StorageError):
                services.backend().delete(info.object_id)
