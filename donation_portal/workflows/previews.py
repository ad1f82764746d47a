"""A steward's preview of a held file: the de-identified image, decrypted and rendered in
memory, every view audited.

A steward clears or refuses a held file on what the image shows, so they must see it; only
stewards and admins, and only files that are or were under review (held, or cleared on
review), not every donated file. The plaintext and the PNG live in memory for the request
and are never written anywhere; the audit entry names the steward and the file, nothing of
its content.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from sqlalchemy.orm import Session

import consent as consents
from donation_portal.adapters import previews
from donation_portal.adapters.db import begin_write
from donation_portal.adapters.models import (
    FILE_NEEDS_REVIEW,
    DonatedFile,
    StoredObject,
    User,
    stored_info,
    user_ref,
)
from storage import IntegrityError, KeyUnavailable, ObjectNotFound, ObjectStore

STAFF_ROLES = ("steward", "admin")
PNG = "image/png"
SVG = "image/svg+xml"
UNREADABLE = "The stored file could not be read."

log = logging.getLogger(__name__)


class PreviewError(Exception):
    """A refused preview; the message is safe to show. ``status`` is the HTTP code."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class FilePreview:
    """The image (a PNG, or an SVG saying why there is none) and the file's context."""

    body: bytes
    media_type: str
    modality: str | None
    body_part: str | None
    held_because: str | None
    frames: int | None = None  # None (as rows and columns) when the pixels could not be read
    rows: int | None = None
    columns: int | None = None


def preview_file(session: Session, store: ObjectStore, file_id: int, steward: User) -> FilePreview:
    """The preview of held (or reviewed and cleared) file ``file_id`` for ``steward``.
    Audited as ``file.previewed``, placeholder or not. Commits."""
    if steward.role not in STAFF_ROLES:
        raise PreviewError("Only data stewards see previews.", 403)
    donated = session.get(DonatedFile, file_id)
    if donated is None:
        raise PreviewError("This file does not exist.", 404)
    reviewable = donated.status == FILE_NEEDS_REVIEW or donated.reviewed_by is not None
    if not reviewable or donated.object_id is None:
        raise PreviewError("Only files held for review, and still stored, have a preview.", 409)
    stored = session.get(StoredObject, donated.object_id)
    assert stored is not None  # noqa: S101 - guaranteed by the foreign key
    preview = FilePreview(b"", PNG, donated.modality, donated.body_part, donated.reason_code)
    subject, detail = str(donated.id), {"donation_id": donated.donation_id}
    try:
        with store.open(stored_info(stored)) as reader:
            rendered = previews.render(reader.read())
        preview = replace(
            preview,
            body=rendered.png,
            frames=rendered.frames,
            rows=rendered.rows,
            columns=rendered.columns,
        )
    except (IntegrityError, KeyUnavailable, ObjectNotFound) as error:
        log.error(
            "held file %s could not be read for its preview: %s", file_id, type(error).__name__
        )
        preview = replace(preview, body=previews.placeholder_svg(UNREADABLE), media_type=SVG)
    except previews.Unrenderable as error:
        preview = replace(preview, body=previews.placeholder_svg(str(error)), media_type=SVG)
    # audited once rendered: SQLite's write lock is not held while pixels are decoded
    begin_write(session)
    consents.audit.record(
        session,
        "file.previewed",
        actor=user_ref(steward.id),
        subject_type="donated_file",
        subject_id=subject,
        detail={**detail, "rendered": preview.media_type == PNG},
    )
    session.commit()
    return preview
