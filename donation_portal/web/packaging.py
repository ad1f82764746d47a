"""Streaming forms of a release: a tar of re-encrypted files, and the manifest as CSV.

The tar is written as it is sent: each member's size is known once its new header exists
(header + unchanged data segments), so nothing is buffered beyond one chunk. If an object
fails authentication mid-way, the stream stops without the end-of-archive blocks, so tar
reports a truncated archive instead of a complete-looking one.
"""

from __future__ import annotations

import csv
import io
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Response, stream_with_context
from sqlalchemy.orm import Session

from donation_portal.adapters.models import Release, User
from donation_portal.workflows import releases
from storage import ObjectStore
from storage.c4gh_format import ciphertext_length

BLOCK = 512
MANIFEST_FIELDS = (
    "position",
    "object_id",
    "consent_id",
    "modality",
    "study_instance_uid",
    "series_instance_uid",
    "sop_instance_uid",
    "body_part",
    "patient_sex",
    "patient_age_years",
    "study_year",
    "size",
    "sha256",
)


def manifest_csv(rows: Iterable[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({field: row[field] for field in MANIFEST_FIELDS})
    return out.getvalue()


def tar_stream(
    members: Iterable[tuple[str, int, Callable[[], Iterator[bytes] | None]]],
) -> Iterator[bytes]:
    """A tar of ``(name, plaintext size, open re-encrypted chunks)`` members, streamed.

    A member whose opener returns None (withdrawn since the tar started) is left out.
    """
    now = int(time.time())
    for name, plain_size, open_chunks in members:
        chunks = open_chunks()
        if chunks is None:
            continue
        header = next(chunks)
        size = len(header) + ciphertext_length(plain_size)
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, now, 0o600
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        yield header
        sent = len(header)
        for chunk in chunks:
            sent += len(chunk)
            yield chunk
        if sent != size:
            raise RuntimeError("re-encrypted member has an unexpected size")
        if padding := -size % BLOCK:
            yield b"\0" * padding
    yield b"\0" * (2 * BLOCK)


def committing_each(
    session: Session, members: list[tuple[str, int, Callable[[], Iterator[bytes] | None]]]
) -> Iterator[tuple[str, int, Callable[[], Iterator[bytes] | None]]]:
    """Tar members whose opening is its own transaction: the member's row lock is released
    as soon as it is open, and the next member sees withdrawals committed since."""
    for name, size, open_member in members:

        def opened(open_member: Callable[[], Iterator[bytes] | None] = open_member) -> Any:
            try:
                return open_member()
            finally:
                session.commit()

        yield name, size, opened


def file_response(
    session: Session, store: ObjectStore, release: Release, position: int, user: User
) -> Response:
    """One re-encrypted file as a streamed attachment of exact length (web and API alike)."""
    found = releases.download_item(session, store, release, position, user)
    response = Response(stream_with_context(found.chunks), mimetype="application/octet-stream")
    response.headers["Content-Disposition"] = f'attachment; filename="{found.name}"'
    response.headers["Content-Length"] = str(found.length)
    return response


def tar_response(session: Session, store: ObjectStore, release: Release, user: User) -> Response:
    """The whole release as a streamed tar, each member checked again as it starts."""
    members = releases.release_members(session, store, release, user)
    body = stream_with_context(tar_stream(committing_each(session, members)))
    response = Response(body, mimetype="application/x-tar")
    response.headers["Content-Disposition"] = f'attachment; filename="{release.id}.tar"'
    return response
