"""Uploads are encrypted as they arrive: Werkzeug spools each file into an encrypted spool.

Werkzeug normally spools large uploads to plaintext temporary files. Here each uploaded file
is written into a quarantine object encrypted to a per-request key scope instead, and read
back through a decrypting stream. The quarantine objects and their key are destroyed when
the request ends, whatever its outcome; if the process dies first, `flask storage sweep`
destroys what it left behind once it is older than QUARANTINE_MAX_AGE.
"""

from __future__ import annotations

from typing import IO, Any

from flask import Request, Response, g

from donation_portal.adapters.request_session import get_session
from donation_portal.adapters.services import object_store
from storage import new_quarantine_scope


class EncryptingRequest(Request):
    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        store = object_store(get_session())
        if "quarantine_scope" not in g:
            g.quarantine_scope = new_quarantine_scope()
            g.quarantine_spools = []
            store.ensure_scope(g.quarantine_scope)
        spool = store.spool(g.quarantine_scope)
        g.quarantine_spools.append(spool)
        return spool  # type: ignore[return-value]


def discard_quarantine(response: Response) -> Response:
    """After the view: delete this request's quarantine objects and shred their key scope.

    Runs before the request's commit, so the quarantine key never outlives the request.
    """
    scope = g.pop("quarantine_scope", None)
    if scope is not None:
        object_store(get_session()).shred_scope(scope, _close_spools())
    return response


def discard_quarantine_on_error(_exc: BaseException | None) -> None:
    """On an unhandled error the transaction (and the key in it) is rolled back; delete data."""
    if g.pop("quarantine_scope", None) is not None:
        store = object_store(get_session())
        for object_id in _close_spools():
            store.delete(object_id)


def _close_spools() -> list[str]:
    object_ids = []
    spools: list[Any] = g.pop("quarantine_spools", [])
    for spool in spools:
        spool.close()
        info = getattr(spool, "info", None)
        if info is not None:
            object_ids.append(info.object_id)
    return object_ids
