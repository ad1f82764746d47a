"""Tamper-evident audit trail: append-only entries, each holding the hash of the previous one.

``record`` writes in the caller's transaction, so an entry exists exactly when the change it
describes was committed. Writers are serialised so the chain never forks: on PostgreSQL by a
transaction-scoped advisory lock, on SQLite by its single writer; the unique ``prev_hash``
column makes a fork impossible even without either. There is deliberately no update or delete
function; production should also ``REVOKE UPDATE, DELETE ON audit_entries`` from the app's
database role. Details must never hold PHI (names, e-mail addresses, typed signatures).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from consent.canonical import as_utc, canonical_json, iso_utc
from consent.db import utcnow
from consent.models import AuditEntry

GENESIS_HASH = "0" * 64
SYSTEM = "system"
_ADVISORY_LOCK_KEY = 0x636F6E73656E74  # "consent": one lock for the one chain
_ACTION = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
_COLUMNS = (
    AuditEntry.id,
    AuditEntry.at,
    AuditEntry.actor,
    AuditEntry.action,
    AuditEntry.subject_type,
    AuditEntry.subject_id,
    AuditEntry.detail,
    AuditEntry.prev_hash,
    AuditEntry.hash,
)


class _HashedColumns(TypedDict):
    """The columns an entry's hash covers (all but ``hash``), typed for ``entry_hash(**…)``."""

    id: int
    at: datetime
    actor: str
    action: str
    subject_type: str
    subject_id: str
    detail: Mapping[str, Any]
    prev_hash: str


def entry_hash(
    *,
    id: int,
    at: datetime,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str,
    detail: Mapping[str, Any],
    prev_hash: str,
) -> str:
    """SHA-256 over the canonical JSON of every column but ``hash`` itself."""
    content = {
        "id": id,
        "at": iso_utc(at),
        "actor": actor,
        "action": action,
        "subject_type": subject_type,
        "subject_id": subject_id,
        "detail": dict(detail),
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(content)).hexdigest()


def record(
    session: Session,
    action: str,
    *,
    actor: str,
    subject_type: str,
    subject_id: str,
    detail: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """Append an entry in the caller's transaction; it is committed or rolled back with it.

    ``actor`` is an opaque reference ("user:12", "system"), never a name or e-mail address.
    """
    if not _ACTION.match(action):
        raise ValueError("audit action must be lower-case letters, digits, '.', '_' or '-'")
    for label, value, limit in (
        ("actor", actor, 100),
        ("subject_type", subject_type, 40),
        ("subject_id", subject_id, 100),
    ):
        if not isinstance(value, str) or not value or len(value) > limit:
            raise ValueError(f"audit {label} must be text of 1-{limit} characters")
    payload = dict(detail or {})
    canonical_json(payload)  # refuses what cannot be stored and hashed reproducibly
    _lock_chain(session)
    last = session.execute(
        select(AuditEntry.id, AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)
    ).first()
    previous_id, previous_hash = (last[0], last[1]) if last else (0, GENESIS_HASH)
    fields = _HashedColumns(
        id=previous_id + 1,
        at=utcnow(),
        actor=actor,
        action=action,
        subject_type=subject_type,
        subject_id=subject_id,
        detail=payload,
        prev_hash=previous_hash,
    )
    entry = AuditEntry(**fields, hash=entry_hash(**fields))
    session.add(entry)
    session.flush()
    return entry


def _lock_chain(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of recomputing the chain; ``first_broken_id`` names the first bad entry."""

    ok: bool
    checked: int
    head_hash: str
    first_broken_id: int | None = None
    reason: str | None = None

    def __bool__(self) -> bool:
        return self.ok

    def message(self) -> str:
        if self.ok:
            return f"audit trail intact: {self.checked} entries, head {self.head_hash}"
        return f"audit trail broken at entry {self.first_broken_id}: {self.reason}"


def verify(session: Session, anchor: tuple[int, str] | None = None) -> VerifyResult:
    """Recompute every link from the stored rows (read fresh, not from the session's cache).

    A chain shows edits and gaps but not the loss of its newest entries. ``anchor`` is a
    ``head()`` published earlier (ID, hash): the chain must still hold that entry, unchanged.
    """
    result = _walk(session, anchor)
    if not result.ok or anchor is None or anchor[0] <= result.checked:
        return result
    return VerifyResult(
        False,
        result.checked,
        result.head_hash,
        first_broken_id=result.checked + 1,
        reason=f"entries {result.checked + 1}..{anchor[0]} are missing (the trail was cut short)",
    )


def _walk(session: Session, anchor: tuple[int, str] | None) -> VerifyResult:
    expected_id, expected_prev, checked = 1, GENESIS_HASH, 0
    rows = session.execute(
        select(*_COLUMNS).order_by(AuditEntry.id).execution_options(yield_per=1000)
    )
    for row in rows:
        reason = None
        if row.id != expected_id:
            reason = f"entries {expected_id}..{row.id - 1} are missing"
        elif row.prev_hash != expected_prev:
            reason = "prev_hash does not match the previous entry's hash"
        elif row.hash != _recompute(row):
            reason = "content does not match its hash (the entry was altered)"
        elif anchor is not None and row.id == anchor[0] and row.hash != anchor[1]:
            reason = "hash differs from the published anchor (the trail was rewritten)"
        if reason is not None:
            return VerifyResult(
                False, checked, expected_prev, first_broken_id=row.id, reason=reason
            )
        checked += 1
        expected_id, expected_prev = row.id + 1, row.hash
    return VerifyResult(True, checked, expected_prev)


def _recompute(row: Any) -> str:
    detail = row.detail if isinstance(row.detail, Mapping) else {}
    return entry_hash(
        id=row.id,
        at=row.at,
        actor=row.actor,
        action=row.action,
        subject_type=row.subject_type,
        subject_id=row.subject_id,
        detail=detail,
        prev_hash=row.prev_hash,
    )


def head(session: Session) -> tuple[int, str]:
    """(ID, hash) of the newest entry, (0, GENESIS_HASH) when empty: publish it as an anchor."""
    last = session.execute(
        select(AuditEntry.id, AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)
    ).first()
    return (last[0], last[1]) if last else (0, GENESIS_HASH)


def query(
    session: Session,
    *,
    action: str | None = None,
    actor: str | None = None,
    subject_type: str | None = None,
    subject_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Entries matching every filter given, newest first; page with ``before_id``.

    ``action`` ending in ``.`` matches a prefix (``"consent."`` for every consent event).
    """
    statement = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(max(1, min(limit, 1000)))
    if action is not None:
        if action.endswith("."):
            statement = statement.where(AuditEntry.action.startswith(action, autoescape=True))
        else:
            statement = statement.where(AuditEntry.action == action)
    if actor is not None:
        statement = statement.where(AuditEntry.actor == actor)
    if subject_type is not None:
        statement = statement.where(AuditEntry.subject_type == subject_type)
    if subject_id is not None:
        statement = statement.where(AuditEntry.subject_id == subject_id)
    if since is not None:
        statement = statement.where(AuditEntry.at >= as_utc(since))
    if until is not None:
        statement = statement.where(AuditEntry.at < as_utc(until))
    if before_id is not None:
        statement = statement.where(AuditEntry.id < before_id)
    return list(session.scalars(statement))
