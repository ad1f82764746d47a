"""Maintenance use cases, run by the workers' schedule and by ``flask storage ...``.

- :func:`reconcile_storage` (every few minutes) makes the backend hold what the database
  records: it removes objects no row records once they are older than a short grace (an
  upload whose recording rolled back, a worker killed between writing and committing),
  finishes deletions that failed after a commit (an erased or refused file, parts of a
  cancelled upload), and removes stale partial writes.
- :func:`sweep_quarantine` (hourly) crypto-shreds raw-upload quarantine keys nothing uses
  any more, with the unrecorded objects and partial writes older than the quarantine age.
- :func:`record_heartbeat` / :func:`latest_heartbeat`: workers prove they are alive;
  ``/healthz`` reads it.

Each commits its own unit of work and audits what it destroyed with counts only. Plain
Python: no Flask; the caller passes the session and the object store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

import consent as consents
from consent.canonical import as_utc
from consent.db import utcnow
from donation_portal.adapters.db import begin_write
from donation_portal.adapters.models import (
    UPLOAD_LIVE_STATES,
    AccessRequest,
    ReleaseItem,
    StoredObject,
    Upload,
    UploadPart,
    WorkerHeartbeat,
)
from storage import ObjectNotFound, ObjectStore, SweepReport, stale_quarantine_scopes

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "system:maintenance"
# A partial write (a temporary file, an S3 multipart upload) is only abandoned once nothing
# could still be writing it: a single request streaming a large file to a slow client can
# take an hour, so partials are left alone for at least this long, whatever the grace.
STALE_PARTIAL_SECONDS = 6 * 3600
_CHUNK = 500  # IDs per IN (...) query


@dataclass
class ReconcileReport:
    """What :func:`reconcile_storage` removed (or, in a dry run, would remove); IDs only."""

    orphans_deleted: list[str] = field(default_factory=list)
    deletions_finished: list[str] = field(default_factory=list)
    orphans_within_grace: int = 0
    partials_removed: int = 0
    failed: list[str] = field(default_factory=list)
    dry_run: bool = False

    def counts(self) -> dict[str, int]:
        return {
            "orphans_deleted": len(self.orphans_deleted),
            "deletions_finished": len(self.deletions_finished),
            "orphans_within_grace": self.orphans_within_grace,
            "partials_removed": self.partials_removed,
            "failed": len(self.failed),
        }


def recorded_object_ids(session: Session) -> set[str]:
    """Every object a row records: stored files and ethics documents, upload parts."""
    recorded = set(session.scalars(select(StoredObject.object_id)))
    recorded |= set(session.scalars(select(UploadPart.object_id)))
    recorded |= {
        object_id
        for object_id in session.scalars(
            select(AccessRequest.ethics_object_id).where(
                AccessRequest.ethics_object_id.is_not(None)
            )
        )
        if object_id
    }
    return recorded


def reconcile_storage(
    session: Session,
    store: ObjectStore,
    grace_seconds: float,
    *,
    dry_run: bool = False,
    now: float | None = None,
) -> ReconcileReport:
    """Remove backend objects nothing records; commits; see the module docstring.

    An unrecorded object a release manifest names was recorded once and its row removed
    (erased, refused): its deletion is finished at once. Any other unrecorded object is
    removed once older than ``grace_seconds`` (younger ones may belong to a transaction
    about to commit). The backend is listed before the rows are read, so an object recorded
    meanwhile is seen as recorded.
    """
    if grace_seconds < 0:
        raise ValueError("the grace period cannot be negative")
    now = time.time() if now is None else now
    report = ReconcileReport(dry_run=dry_run)
    listed = list(store.backend.list())
    recorded = recorded_object_ids(session)  # read after the listing
    unrecorded = [object_id for object_id in listed if object_id not in recorded]
    released = _released(session, unrecorded)
    for object_id in unrecorded:
        if object_id in released:
            target = report.deletions_finished
        else:
            try:
                if store.backend.modified(object_id) > now - grace_seconds:
                    report.orphans_within_grace += 1
                    continue
            except ObjectNotFound:
                continue  # deleted meanwhile
            target = report.orphans_deleted
        if dry_run or _delete(store, object_id, report.failed):
            target.append(object_id)
    remove_partials = getattr(store.backend, "remove_stale_partials", None)
    if remove_partials is not None and not dry_run:
        report.partials_removed = remove_partials(max(grace_seconds, STALE_PARTIAL_SECONDS))
    if not dry_run and (report.orphans_deleted or report.deletions_finished
                        or report.partials_removed):
        begin_write(session)
        consents.audit.record(
            session,
            "storage.reconciled",
            actor=SYSTEM_ACTOR,
            subject_type="storage",
            subject_id="objects",
            detail={**report.counts(), "grace_seconds": int(grace_seconds)},
        )
    session.commit()
    if report.failed:
        log.warning("reconcile: %d object(s) could not be deleted; next run retries",
                    len(report.failed))
    return report


def _released(session: Session, object_ids: list[str]) -> set[str]:
    """Those of ``object_ids`` a release manifest names (so they were recorded once)."""
    found: set[str] = set()
    for start in range(0, len(object_ids), _CHUNK):
        chunk = object_ids[start : start + _CHUNK]
        found |= set(
            session.scalars(select(ReleaseItem.object_id).where(ReleaseItem.object_id.in_(chunk)))
        )
    return found


def sweep_quarantine(
    session: Session,
    store: ObjectStore,
    older_than_seconds: float,
    *,
    dry_run: bool = False,
    now: float | None = None,
) -> SweepReport:
    """Destroy raw-upload quarantine keys older than ``older_than_seconds`` that no live
    upload uses, then unrecorded objects and partial writes older than that; commits.

    The keys go first, in this transaction: once it commits, every copy of their objects is
    unreadable, even where a deletion below fails. An upload still receiving, queued or
    being processed keeps its key, however old (a worker outage must not destroy a donor's
    upload); expired uploads lose theirs through ``uploads.expire_uploads``.
    """
    if older_than_seconds < 0:
        raise ValueError("the sweep age limit cannot be negative")
    now = time.time() if now is None else now
    report = SweepReport(dry_run=dry_run)
    if not dry_run:
        begin_write(session)
    live = set(session.scalars(select(Upload.scope_id).where(Upload.state.in_(UPLOAD_LIVE_STATES))))
    report.shredded_scopes = [
        scope_id
        for scope_id in stale_quarantine_scopes(store, older_than_seconds, now)
        if scope_id not in live
    ]
    if not dry_run:
        for scope_id in report.shredded_scopes:
            store.keystore.destroy(scope_id)
        session.commit()  # the keys are gone before any file is touched
    listed = list(store.backend.list())
    recorded = recorded_object_ids(session)
    failed: list[str] = []
    for object_id in listed:
        if object_id in recorded:
            continue
        try:
            if store.backend.modified(object_id) >= now - older_than_seconds:
                continue
        except ObjectNotFound:
            continue
        if dry_run or _delete(store, object_id, failed):
            report.deleted_objects.append(object_id)
    remove_partials = getattr(store.backend, "remove_stale_partials", None)
    if remove_partials is not None and not dry_run:
        report.removed_partials = remove_partials(older_than_seconds)
    if not dry_run and (report.shredded_scopes or report.deleted_objects
                        or report.removed_partials):
        begin_write(session)
        consents.audit.record(
            session,
            "storage.swept",
            actor=SYSTEM_ACTOR,
            subject_type="storage",
            subject_id="quarantine",
            detail={
                "shredded_scopes": len(report.shredded_scopes),
                "deleted_objects": len(report.deleted_objects),
                "removed_partials": report.removed_partials,
                "failed": len(failed),
                "older_than_seconds": int(older_than_seconds),
            },
        )
    session.commit()
    return report


def delete_objects(store: ObjectStore, object_ids: Iterable[str]) -> list[str]:
    """Delete objects whose rows are already gone, after the commit that removed them;
    returns those that could not be deleted.

    A failure is logged by object ID and left to :func:`reconcile_storage`: a committed
    change must never become an error because its clean-up failed. An object already gone
    is what was wanted.
    """
    failed: list[str] = []
    for object_id in object_ids:
        _delete(store, object_id, failed)
    return failed


def _delete(store: ObjectStore, object_id: str, failed: list[str]) -> bool:
    """Delete one object; False (and logged, and added to ``failed``) if that failed."""
    try:
        store.delete(object_id)
    except ObjectNotFound:
        return True
    except Exception:  # noqa: BLE001 - any storage failure; the next reconcile retries
        log.warning("could not delete object %s; the reconciler retries", object_id,
                    exc_info=True)
        failed.append(object_id)
        return False
    return True


def record_heartbeat(session: Session, worker_name: str) -> None:
    """Record that ``worker_name`` is alive now; commits."""
    begin_write(session)
    beat = session.get(WorkerHeartbeat, worker_name)
    if beat is None:
        session.add(WorkerHeartbeat(worker=worker_name, at=utcnow()))
    else:
        beat.at = utcnow()
    session.commit()


def latest_heartbeat(session: Session) -> datetime | None:
    """When any worker last recorded a heartbeat (UTC), or None if none ever did."""
    latest = session.scalar(select(func.max(WorkerHeartbeat.at)))
    return as_utc(latest) if latest is not None else None
