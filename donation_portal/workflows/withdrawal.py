"""Withdrawal: of the whole consent ("stop future use" or "erase"), or of optional modules.

One unit of work, committed here: the consent library records the withdrawal, releases get
their notices, uploads not yet stored are cancelled and, for "erase", each affected consent's
scope key is destroyed, so the data is unreadable the moment the withdrawal commits. Only
then are the ciphertext files (and cancelled upload parts) deleted; a deletion that fails
(an object already gone, a storage hiccup) is logged and left to the reconciler, and never
turns the committed withdrawal into an error. "stop future use" keeps the files, which every
release and download then leaves out.

Every page that states how many files a withdrawal touched (the donor's confirmation, the
steward's list) takes the number from ``erased_files`` or ``kept_files`` below, over the
consents ``withdrawn_together`` names: counting every file row instead (rejected, duplicate
and cancelled ones were never stored) or one consent of a chain made the numbers disagree.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import Session

import consent as consents
from consent import Consent, ConsentEvent
from consent.queries import superseded_chain
from donation_portal.adapters.db import begin_write
from donation_portal.adapters.models import FILE_ERASED, DonatedFile, StoredObject
from donation_portal.workflows import uploads
from donation_portal.workflows.maintenance import delete_objects
from donation_portal.workflows.releases import record_withdrawal_notices
from storage import ObjectStore


@dataclass(frozen=True)
class WithdrawalResult:
    consent_id: str
    mode: str | None  # None for a module withdrawal
    modules: tuple[str, ...]
    erased_files: int  # see ``erased_files``
    kept_files: int  # see ``kept_files``


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
    to do so without a login. Commits. Raises consent errors (nothing changes then).

    Releases holding the consent's files get a withdrawal notice for their researcher.
    """
    begin_write(session)
    try:
        result, doomed = _record(session, consent_id, store, mode, modules, code, actor)
        session.commit()
    except BaseException:
        session.rollback()  # the write lock goes now, not when the request ends
        raise
    delete_objects(store, doomed)
    return result


def _record(
    session: Session,
    consent_id: str,
    store: ObjectStore,
    mode: str,
    modules: Collection[str],
    code: str | None,
    actor: str | None,
) -> tuple[WithdrawalResult, list[str]]:
    """The withdrawal's changes, in the caller's transaction; returns the result and the
    objects to delete once it commits."""
    lock_consents(session, [consent_id])
    lock_files(session, [consent_id])
    if modules:
        return _record_module_withdrawal(session, consent_id, modules, code, actor), []
    return _record_full_withdrawal(session, consent_id, store, mode, code, actor)


def _record_module_withdrawal(
    session: Session,
    consent_id: str,
    modules: Collection[str],
    code: str | None,
    actor: str | None,
) -> WithdrawalResult:
    """Files stay; releases holding files of the affected consents get a withdrawal notice."""
    if code is not None:
        events = consents.withdraw_modules_with_code(session, consent_id, code, modules)
    else:
        events = consents.withdraw_modules(session, consent_id, modules, actor=actor)
    affected = sorted({event.consent_id for event in events})
    record_withdrawal_notices(session, events[0].id, affected)
    kept = kept_files(session, affected)
    return WithdrawalResult(consent_id, None, tuple(sorted(modules)), 0, kept)


def _record_full_withdrawal(
    session: Session,
    consent_id: str,
    store: ObjectStore,
    mode: str,
    code: str | None,
    actor: str | None,
) -> tuple[WithdrawalResult, list[str]]:
    """The consent and those it superseded end: their uploads, and for "erase" their files."""
    if code is not None:
        outcome = consents.withdraw_consent_with_code(session, consent_id, code, mode=mode)
    else:
        outcome = consents.withdraw_consent(session, consent_id, mode=mode, actor=actor)
    lock_consents(session, outcome.consent_ids)  # the superseded consents it withdrew too
    lock_files(session, outcome.consent_ids)
    # uploads not yet stored end here; their parts' keys are destroyed in this transaction
    doomed = uploads.cancel_for_consents(session, outcome.consent_ids)
    record_withdrawal_notices(session, outcome.event.id, outcome.consent_ids)
    ended = [event.consent_id for event in outcome.events]
    if outcome.mode == consents.ERASE:
        for ended_id in ended:
            doomed += _erase_files(session, ended_id, store)
    counts = erased_files(session, ended), kept_files(session, ended)
    return WithdrawalResult(consent_id, outcome.mode, (), *counts), doomed


def erased_files(session: Session, consent_ids: Collection[str]) -> int:
    """Files erased: the consents' donated files whose stored data an "erase" destroyed.

    Files rejected, found duplicate or cancelled were never stored, so are never counted; a
    consent is erased once, so the number stays what it was when the withdrawal committed.
    """
    return _count(session, consent_ids, DonatedFile.status == FILE_ERASED)


def kept_files(session: Session, consent_ids: Collection[str]) -> int:
    """Files kept: the consents' donated files with data stored (accepted, or held for
    review), which "stop future use" keeps but leaves out of every release."""
    return _count(session, consent_ids, DonatedFile.object_id.is_not(None))


def _count(session: Session, consent_ids: Collection[str], condition: ColumnElement[bool]) -> int:
    query = select(func.count()).select_from(DonatedFile)
    query = query.where(DonatedFile.consent_id.in_(list(consent_ids)), condition)
    return session.scalar(query) or 0


def withdrawn_together(session: Session, event: ConsentEvent) -> list[str]:
    """The consents a withdrawal event ended: its own and, for a whole consent, the earlier
    ones it superseded that were withdrawn with it (their events name it as ``via``).
    The donor was told about all of them at once, so their files are counted together."""
    if event.kind != consents.WITHDRAWN:
        return [event.consent_id]
    chain = superseded_chain(session, consents.get_consent(session, event.consent_id))
    via = session.scalars(
        select(ConsentEvent).where(
            ConsentEvent.kind == consents.WITHDRAWN,
            ConsentEvent.consent_id.in_([c.id for c in chain[1:]]),
        )
    )
    return [
        event.consent_id,
        *(e.consent_id for e in via if e.detail.get("via") == event.consent_id),
    ]


def lock_consents(session: Session, consent_ids: Iterable[str]) -> None:
    """Lock the consent rows (PostgreSQL ``FOR UPDATE``): an ingest job recording files under
    one of them (it takes the same lock) either finishes first, and its files are withdrawn
    too, or sees the withdrawal and stores nothing."""
    session.execute(
        select(Consent.id).where(Consent.id.in_(list(consent_ids))).with_for_update()
    ).all()


def lock_files(session: Session, consent_ids: Iterable[str]) -> None:
    """Lock the consents' file rows (PostgreSQL ``FOR UPDATE``): a download being prepared
    finishes first, and one prepared after this commits sees the withdrawal."""
    session.execute(
        select(DonatedFile.id)
        .where(DonatedFile.consent_id.in_(list(consent_ids)))
        .with_for_update()
    ).all()


def _erase_files(session: Session, consent_id: str, store: ObjectStore) -> list[str]:
    """Crypto-shred the consent's files in this transaction; returns the objects to delete
    once it commits."""
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
        donated.status = FILE_ERASED
    session.flush()
    session.execute(delete(StoredObject).where(StoredObject.scope_id == consent_id))
    store.shred_scope(consent_id, [])
    return object_ids
