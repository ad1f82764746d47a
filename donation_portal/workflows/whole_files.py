"""Files that arrived whole: the plain form, and a tus creation carrying the whole file.

Each file was encrypted as it arrived to a key made for it in memory, so nothing touched the
database while the body was received; the keys, uploads and parts are recorded here in one
transaction, and the files are queued.
"""


from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

import consent
from donation_portal.adapters.db import begin_write
from donation_portal.adapters.jobs import JobQueue
from donation_portal.adapters.keystore import DatabaseKeyStore
from donation_portal.adapters.models import (
    Donation,
    Upload,
)
from donation_portal.workflows import uploads
from storage import (
    ObjectInfo,
    ObjectStore,
    WrappedKey,
)


def submit_parts(
    session: Session,
    store: ObjectStore,
    *,
    donor_id: int,
    active: consent.Consent,
    submission_key: str,
    parts: Sequence[tuple[ObjectInfo, WrappedKey]],
    queue: JobQueue,
    limits: uploads.UploadLimits,
    whole_form: bool,
) -> tuple[Donation, list[Upload]]:
    """Files that arrived whole, each encrypted to a key made for it in memory: the plain
    form, or a tus creation that carried the whole file. One transaction for all of them.

    ``parts`` holds each file's part and its quarantine key. Each file becomes a complete
    upload and is queued. ``whole_form``: the submission is one form, so a second submission
    of it is ignored (the first stands).
    """
    created: list[Upload] = []
    try:
        begin_write(session)
        uploads.check_active(session, active.id)
        donation = uploads.claim_donation(session, donor_id, active, submission_key)
        if whole_form and _donation_has_files(session, donation.id):
            uploads.delete_quietly(store, [info.object_id for info, _ in parts])
            session.commit()
            return donation, created
        keys = DatabaseKeyStore(session)
        for info, key in parts:
            if whole_form:  # a tus creation checked its limits before receiving the body
                uploads.check_limits(session, donor_id, 0, limits)
            keys.add(key)
            upload = uploads.new_upload(
                donor_id, donation, info.scope_id, info.size, info.size, limits
            )
            session.add(upload)
            session.add(uploads.part_row(upload.id, 0, info))
            uploads.hand_over(session, upload, queue)
            created.append(upload)
        session.commit()
    except BaseException:
        session.rollback()
        uploads.delete_quietly(store, [info.object_id for info, _ in parts])
        raise
    return donation, created


def _donation_has_files(session: Session, donation_id: str) -> bool:
    found = session.scalar(select(Upload.id).where(Upload.donation_id == donation_id).limit(1))
    return found is not None
