"""Withdrawal: of the whole consent ("stop future use" or "erase"), or of optional modules.

Recorded by the consent library in the caller's transaction. "Erase" also shreds: each
affected consent's scope key is destroyed inside the transaction, so the data is unreadable
the moment the withdrawal commits; the ciphertext files are deleted only after the commit.
"stop future use" keeps the files, which every release and download then leaves out.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

import consent as consents
from donation_portal.adapters.db import on_commit
from donation_portal.adapters.models import DonatedFile, StoredObject
from donation_portal.workflows.ingest import ERASED
from donation_portal.workflows.releases import record_withdrawal_notices
from storage import ObjectStore


@dataclass(frozen=True)
class WithdrawalResult:
    consent_id: str
    mode: str | None  # None for a module withdrawal
    modules: tuple[str, ...]
    erased_files: int


def withdraw(
    session: Session,
    consent_id: str,
    store: ObjectStore,
    *,
    mode: str = consents.STOP_USE,
    modules: Collection[str] = (),
    code: str | None = None,
    actor: str | None = None,
) -> WithdrawalResult:
    """Withdraw ``modules`` of a consent, or all of it in ``mode``; ``code`` proves the right
    to do so without a login. Raises consent errors (nothing changes then).

    Releases holding the consent's files get a withdrawal notice for their researcher.
    """
    lock_files(session, [consent_id])
    if code is not None:
        outcome = consents.withdraw_with_code(
            session, consent_id, code, mode=mode, modules=list(modules) or None
        )
    elif modules:
        outcome = consents.withdraw_modules(session, consent_id, modules, actor=actor)
    else:
        outcome = consents.withdraw_consent(session, consent_id, mode=mode, actor=actor)
    if isinstance(outcome, list):
        if outcome:
            affected = sorted({event.consent_id for event in outcome})
            record_withdrawal_notices(session, outcome[0].id, affected)
        return WithdrawalResult(consent_id, None, tuple(sorted(modules)), 0)
    lock_files(session, outcome.consent_ids)  # the superseded consents it withdrew too
    record_withdrawal_notices(session, outcome.event.id, outcome.consent_ids)
    erased = 0
    if outcome.mode == consents.ERASE:
        for event in outcome.events:
            erased += erase_files(session, event.consent_id, store)
    return WithdrawalResult(consent_id, outcome.mode, (), erased)


def lock_files(session: Session, consent_ids: list[str]) -> None:
    """Lock the consents' file rows (PostgreSQL ``FOR UPDATE``): a download being prepared
    finishes first, and one prepared after this commits sees the withdrawal."""
    session.execute(
        select(DonatedFile.id).where(DonatedFile.consent_id.in_(consent_ids)).with_for_update()
    ).all()


def erase_files(session: Session, consent_id: str, store: ObjectStore) -> int:
    """Crypto-shred the consent's files; returns how many donated files lost their data."""
    files = list(
        session.scalars(
            select(DonatedFile).where(
                DonatedFile.consent_id == consent_id, DonatedFile.object_id.is_not(None)
            )
        )
    )
    object_ids = [f.object_id for f in files if f.object_id]
    for donated in files:
        donated.object_id = None
        donated.status = ERASED
    session.flush()
    session.execute(delete(StoredObject).where(StoredObject.scope_id == consent_id))
    store.shred_scope(consent_id, [])
    on_commit(session, lambda: _delete_objects(store, object_ids))
    return len(files)


def withdraw_and_erase(session: Session, consent: consents.Consent, store: ObjectStore) -> int:
    """Withdraw the whole consent and erase its data; returns how many files were erased."""
    return withdraw(session, consent.id, store, mode=consents.ERASE).erased_files


def _delete_objects(store: ObjectStore, object_ids: list[str]) -> None:
    for object_id in object_ids:
        store.delete(object_id)
