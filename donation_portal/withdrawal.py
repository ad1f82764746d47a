"""Withdrawal of a consent: recorded, and the consent's files crypto-shredded.

The scope key is destroyed inside the transaction, so the data is unreadable the moment the
withdrawal commits; the ciphertext files are deleted only after the commit succeeds.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

import consent as consents
from consent import Consent
from donation_portal.db import on_commit
from donation_portal.ingest import ERASED
from donation_portal.models import DonatedFile, StoredObject
from storage import ObjectStore


def withdraw_and_erase(session: Session, consent: Consent, store: ObjectStore) -> int:
    """Withdraw ``consent`` and shred its files; returns how many files were erased."""
    consents.withdraw(session, consent, erase=True)
    files = list(
        session.scalars(
            select(DonatedFile).where(
                DonatedFile.consent_id == consent.id, DonatedFile.object_id.is_not(None)
            )
        )
    )
    object_ids = [f.object_id for f in files if f.object_id]
    for donated in files:
        donated.object_id = None
        donated.status = ERASED
    session.flush()
    session.execute(delete(StoredObject).where(StoredObject.scope_id == consent.id))
    store.shred_scope(consent.id, [])
    on_commit(session, lambda: _delete_objects(store, object_ids))
    return len(files)


def _delete_objects(store: ObjectStore, object_ids: list[str]) -> None:
    for object_id in object_ids:
        store.delete(object_id)
