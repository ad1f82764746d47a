"""Access requests, steward decisions and releases: use cases over the caller's session.

Each use case that writes (a decision, a submission, an audited download) is one unit of work
and commits it; helpers used inside another unit of work (``downloadable``, ``open_member``,
``record_withdrawal_notices``) only flush. Every decision and download is audited in the same
transaction as what it records.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, BinaryIO

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

import consent as consents
from consent.canonical import as_utc
from consent.db import utcnow
from donation_portal.adapters.db import begin_write
from donation_portal.adapters.models import (
    REQUEST_APPROVED,
    REQUEST_REJECTED,
    REQUEST_SUBMITTED,
    AccessRequest,
    DonatedFile,
    Release,
    ReleaseItem,
    RequestApproval,
    ResearcherProfile,
    StoredObject,
    User,
    WithdrawalNotice,
    object_columns,
    stored_info,
    user_ref,
)
from donation_portal.workflows.eligibility import eligible_files, permitting, research_use
from donation_portal.workflows.listing import window
from donation_portal.workflows.maintenance import delete_objects
from storage import IntegrityError, KeyUnavailable, ObjectNotFound, ObjectStore, parse_public_key
from storage.c4gh_format import ciphertext_length

COHORT_FIELDS = ("body_part", "patient_sex", "patient_age_years", "study_year")


log = logging.getLogger(__name__)


class ResearchError(Exception):
    """A refused research action; the message is safe to show. ``status`` is the HTTP code."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def save_profile(session: Session, user: User, affiliation: str, key_text: str) -> None:
    try:
        key = parse_public_key(key_text)
    except Exception:  # noqa: BLE001 - any parse failure is the same bad input
        raise ResearchError(
            "This is not a Crypt4GH public key (the file crypt4gh-keygen writes).", 422
        ) from None
    begin_write(session)
    profile = session.get(ResearcherProfile, user.id)
    if profile is None:
        profile = ResearcherProfile(user_id=user.id, affiliation=affiliation, public_key=key)
        session.add(profile)
    profile.affiliation, profile.public_key, profile.updated_at = affiliation, key, utcnow()
    session.flush()
    _audit(session, "researcher.key_uploaded", user, "user", str(user.id), {})
    session.commit()


def submit_request(
    session: Session,
    researcher: User,
    *,
    title: str,
    abstract: str,
    use: Mapping[str, Any],
    filters: Mapping[str, Any],
    ethics: BinaryIO | None = None,
    store: ObjectStore | None = None,
) -> AccessRequest:
    """Submit a request; the ethics document, if any, is stored encrypted in its own key
    scope (so it can be shredded alone) and marks the use as ethics-approved. Commits.

    If the request cannot be recorded, the stored document is deleted again (or, should that
    fail too, removed by the reconciler as an object nothing records)."""
    begin_write(session)
    if session.get(ResearcherProfile, researcher.id) is None:
        raise ResearchError("Upload your Crypt4GH public key on your profile first.")
    if not eligible_files(session, use, filters):
        raise ResearchError("No donated data matches this use and these filters.", 422)
    use = {**use, "ethics_approved": ethics is not None}  # a steward reads it before approving
    request = AccessRequest(
        id=secrets.token_urlsafe(12),
        researcher_id=researcher.id,
        title=title,
        abstract=abstract,
        use=dict(use),
        filters=dict(filters),
        status=REQUEST_SUBMITTED,
    )
    stored: list[str] = []
    try:
        if ethics is not None and store is not None:
            if not ethics.read(1):
                raise ResearchError("The ethics approval document is empty.", 422)
            ethics.seek(0)
            scope = f"ethics-{request.id}"
            store.ensure_scope(scope)
            info = store.put(scope, ethics)
            stored.append(info.object_id)
            session.add(StoredObject(**object_columns(info)))
            session.flush()  # before the request row that refers to it
            request.ethics_object_id = info.object_id
        session.add(request)
        session.flush()
        _audit(session, "request.submitted", researcher, "access_request", request.id, {})
        session.commit()
    except BaseException:
        session.rollback()
        if store is not None:
            delete_objects(store, stored)
        raise
    return request


def approve(
    session: Session, request_id: str, steward: User, expires_at: datetime, approvals_needed: int
) -> Release | None:
    """Record ``steward``'s approval; once enough stewards agree, freeze the release.
    Commits."""
    begin_write(session)
    request = _pending(session, request_id)
    if as_utc(expires_at) <= utcnow():
        raise ResearchError("The expiry date must be in the future.", 422)
    done = session.scalars(
        select(RequestApproval.steward_id).where(RequestApproval.request_id == request.id)
    ).all()
    if steward.id in done:
        raise ResearchError("You have already approved this request; another steward must.")
    approval = RequestApproval(request_id=request.id, steward_id=steward.id, expires_at=expires_at)
    session.add(approval)
    session.flush()
    _audit(session, "request.approved_by", steward, "access_request", request.id, {})
    if len(done) + 1 < approvals_needed:
        session.commit()
        return None
    expiry = min(
        [as_utc(expires_at)]
        + [
            as_utc(moment)
            for moment in session.scalars(
                select(RequestApproval.expires_at).where(RequestApproval.request_id == request.id)
            )
        ]
    )
    release = _freeze(session, request, steward, expiry)
    session.commit()
    return release


def _freeze(session: Session, request: AccessRequest, steward: User, expiry: datetime) -> Release:
    files = eligible_files(session, request.use, request.filters)
    if not files:
        raise ResearchError("No donated data is eligible for this request any more.", 422)
    release = Release(
        id=secrets.token_urlsafe(12),
        request_id=request.id,
        researcher_id=request.researcher_id,
        expires_at=expiry,
    )
    session.add(release)
    for position, donated in enumerate(files, start=1):
        stored = session.get(StoredObject, donated.object_id)
        assert stored is not None  # noqa: S101 - the foreign key guarantees it
        session.add(
            ReleaseItem(
                release_id=release.id,
                position=position,
                donated_file_id=donated.id,
                consent_id=donated.consent_id,
                object_id=stored.object_id,
                modality=donated.modality,
                study_instance_uid=donated.study_instance_uid,
                series_instance_uid=donated.series_instance_uid,
                sop_instance_uid=donated.sop_instance_uid,
                **{field: getattr(donated, field) for field in COHORT_FIELDS},
                size=stored.size,
                sha256=stored.sha256,
            )
        )
    request.status, request.decided_at = REQUEST_APPROVED, utcnow()
    session.flush()
    detail = {"release_id": release.id, "files": len(files)}
    _audit(session, "release.created", steward, "access_request", request.id, detail)
    return release


def ethics_document(session: Session, store: ObjectStore, request_id: str, steward: User) -> bytes:
    """The ethics approval of a request, for the steward reviewing it (audited; commits)."""
    begin_write(session)
    request = session.get(AccessRequest, request_id)
    if request is None or request.ethics_object_id is None:
        raise ResearchError("This request has no ethics approval document.", 404)
    stored = session.get(StoredObject, request.ethics_object_id)
    assert stored is not None  # noqa: S101 - guaranteed by the foreign key
    with store.open(stored_info(stored)) as reader:
        data = reader.read()
    _audit(session, "request.ethics_viewed", steward, "access_request", request.id, {})
    session.commit()
    return data


def reject(session: Session, request_id: str, steward: User, reason: str) -> AccessRequest:
    """Reject a pending request with a reason. Commits."""
    begin_write(session)
    request = _pending(session, request_id)
    if not reason.strip():
        raise ResearchError("Please give a reason for the rejection.", 422)
    request.status, request.reason, request.decided_at = REQUEST_REJECTED, reason.strip(), utcnow()
    session.flush()
    _audit(session, "request.rejected", steward, "access_request", request.id, {})
    session.commit()
    return request


def _pending(session: Session, request_id: str) -> AccessRequest:
    request = session.get(AccessRequest, request_id, with_for_update=True)
    if request is None:
        raise ResearchError("This request does not exist.", 404)
    if request.status != REQUEST_SUBMITTED:
        raise ResearchError("This request has already been decided.")
    return request


def release_for(session: Session, release_id: str, user: User) -> Release:
    """The release if ``user`` may download from it now; ResearchError otherwise."""
    release = session.get(Release, release_id)
    if release is None or release.researcher_id != user.id:
        raise ResearchError("This release does not exist.", 404)
    if as_utc(release.expires_at) <= utcnow():
        raise ResearchError("This release has expired.", 410)
    return release


def downloadable(
    session: Session, release: Release, items: list[ReleaseItem] | None = None
) -> list[ReleaseItem]:
    """The items still downloadable: their consent in force and still permitting the
    request's use, and their object not erased.

    The donated files are locked (``FOR UPDATE`` on PostgreSQL), so a withdrawal that erases
    them waits for this transaction, and one committed before is seen here. Withdrawal takes
    the same locks (``withdrawal.lock_files``), so a "stop future use" serialises the same way.
    """
    items = release.items if items is None else items
    current = dict(
        session.execute(
            select(DonatedFile.id, DonatedFile.object_id)
            .where(DonatedFile.id.in_([item.donated_file_id for item in items]))
            .with_for_update()
        ).all()
    )
    # read after the lock: sees the withdrawal it waited for
    allowed = _still_permitting(session, release, {item.consent_id for item in items})
    return [
        item
        for item in items
        if item.consent_id in allowed and current.get(item.donated_file_id) == item.object_id
    ]


def _still_permitting(session: Session, release: Release, consent_ids: set[str]) -> set[str]:
    access = session.get(AccessRequest, release.request_id)
    assert access is not None  # noqa: S101 - guaranteed by the foreign key
    return permitting(session, consent_ids, research_use(access.use))


@dataclass(frozen=True)
class Download:
    """One re-encrypted file: ``length`` is exact, so a download cut short by a failed
    integrity check (the stream stops before its last chunk) is seen as incomplete."""

    name: str
    length: int
    chunks: Iterator[bytes]


def download_item(
    session: Session, store: ObjectStore, release: Release, position: int, user: User
) -> Download:
    """One file, re-encrypted to ``user``'s key; the download is audited and committed
    before its bytes are sent (which releases the row locks ``downloadable`` took)."""
    begin_write(session)
    item = next((i for i in downloadable(session, release) if i.position == position), None)
    if item is None:
        raise ResearchError("This file is not, or no longer, part of the release.", 410)
    profile = session.get(ResearcherProfile, user.id)
    assert profile is not None  # noqa: S101 - a release needs a profile
    stored = session.get(StoredObject, item.object_id)
    assert stored is not None  # noqa: S101 - checked by downloadable()
    try:
        chunks = store.reencrypt_for(stored_info(stored), profile.public_key)
        header = next(chunks)  # key and header errors surface here, before a response starts
    except (IntegrityError, KeyUnavailable, ObjectNotFound):
        log.error("release %s item %s failed its integrity check", release.id, position)
        raise ResearchError(
            "This file failed its integrity check and was not sent. The data stewards have "
            "been told; please try again later.",
            500,
        ) from None
    _audit(
        session,
        "release.downloaded",
        user,
        "release",
        release.id,
        {"position": position},
    )
    session.commit()
    return Download(
        _file_name(item),
        len(header) + ciphertext_length(item.size),
        itertools.chain([header], chunks),
    )


def release_members(
    session: Session, store: ObjectStore, release: Release, user: User
) -> list[tuple[str, int, Callable[[], Iterator[bytes] | None]]]:
    """What the tar of the whole release holds: every item downloadable when it starts.

    Each member is checked again just before it is opened (``open_member``): a tar of
    thousands of files streams for a long time, and a withdrawal committed meanwhile must
    keep the files not yet sent out of it. The download is audited and committed here.
    """
    begin_write(session)
    profile = session.get(ResearcherProfile, user.id)
    assert profile is not None  # noqa: S101 - a release needs a profile
    key = profile.public_key
    members: list[tuple[str, int, Callable[[], Iterator[bytes] | None]]] = [
        (
            _file_name(item),
            item.size,
            partial(open_member, session, store, release, item, key),
        )
        for item in downloadable(session, release)
    ]
    _audit(session, "release.downloaded", user, "release", release.id, {"tar": len(members)})
    session.commit()
    return members


def open_member(
    session: Session, store: ObjectStore, release: Release, item: ReleaseItem, key: bytes
) -> Iterator[bytes] | None:
    """The re-encrypted chunks of one tar member, or None if it is no longer downloadable.

    Takes the item's row lock (see ``downloadable``); the caller commits once the member is
    open, so the lock is held only while that member is prepared.
    """
    if not downloadable(session, release, [item]):
        return None
    stored = session.get(StoredObject, item.object_id)
    assert stored is not None  # noqa: S101 - checked by downloadable()
    return store.reencrypt_for(stored_info(stored), key)


def _file_name(item: ReleaseItem) -> str:
    return f"{item.position:05d}-{item.sop_instance_uid or 'file'}.dcm.c4gh"


def read_manifest(session: Session, release: Release, user: User) -> list[dict[str, Any]]:
    """The manifest as ``user`` reads it; the reading is audited like a download (commits)."""
    begin_write(session)
    _audit(session, "release.manifest_read", user, "release", release.id, {})
    session.commit()
    return manifest(release)


def manifest(release: Release) -> list[dict[str, Any]]:
    return [
        {
            "position": item.position,
            "object_id": item.object_id,
            "consent_id": item.consent_id,
            "modality": item.modality,
            "study_instance_uid": item.study_instance_uid,
            "series_instance_uid": item.series_instance_uid,
            "sop_instance_uid": item.sop_instance_uid,
            **{field: getattr(item, field) for field in COHORT_FIELDS},
            "size": item.size,
            "sha256": item.sha256,
        }
        for item in release.items
    ]


def requests_of(
    session: Session, user: User, limit: int, offset: int
) -> tuple[list[AccessRequest], int]:
    """A page of ``user``'s access requests, the latest first, and how many they made."""
    query = select(AccessRequest).where(AccessRequest.researcher_id == user.id)
    ordered = query.order_by(AccessRequest.created_at.desc(), AccessRequest.id)
    return window(session, ordered, limit, offset)


def releases_of(session: Session, user: User, limit: int, offset: int) -> tuple[list[Release], int]:
    """A page of the releases made for ``user``, the latest first, and how many there are."""
    query = select(Release).where(Release.researcher_id == user.id)
    return window(session, query.order_by(Release.created_at.desc(), Release.id), limit, offset)


def pending_requests(session: Session, limit: int, offset: int) -> tuple[list[AccessRequest], int]:
    """A page of the requests awaiting a decision, the longest waiting first, and how many."""
    query = select(AccessRequest).where(AccessRequest.status == REQUEST_SUBMITTED)
    ordered = query.order_by(AccessRequest.created_at, AccessRequest.id)
    return window(session, ordered, limit, offset)


@dataclass(frozen=True)
class Series:
    """One series of a release, numbered within the release ("Study 1 / Series 2"): DICOM
    UIDs are too long to read or compare on a page, the numbers are not."""

    study_number: int
    series_number: int
    study_uid: str | None
    series_uid: str | None
    modality: str | None
    files: int
    size: int


@dataclass(frozen=True)
class ReleaseTotals:
    files: int
    studies: int
    size: int


def _series_order(release_id: str) -> Select[Any]:
    """Items by study, then series, then position; NULL UIDs sort alike on every database."""
    return (
        select(ReleaseItem)
        .where(ReleaseItem.release_id == release_id)
        .order_by(
            func.coalesce(ReleaseItem.study_instance_uid, ""),
            func.coalesce(ReleaseItem.series_instance_uid, ""),
            ReleaseItem.position,
        )
    )


def release_series(session: Session, release: Release) -> list[Series]:
    """Every series of the release with its file count and size, in the order of
    ``release_items_by_series``: one row a series, however many files it holds."""
    study = func.coalesce(ReleaseItem.study_instance_uid, "")
    series = func.coalesce(ReleaseItem.series_instance_uid, "")
    rows = session.execute(
        select(
            study, series, func.min(ReleaseItem.modality), func.count(), func.sum(ReleaseItem.size)
        )
        .where(ReleaseItem.release_id == release.id)
        .group_by(study, series)
        .order_by(study, series)
    ).all()
    found: list[Series] = []
    studies: dict[str, int] = {}
    series_in: dict[int, int] = {}
    for study_uid, series_uid, modality, files, size in rows:
        number = studies.setdefault(study_uid, len(studies) + 1)
        series_in[number] = series_in.get(number, 0) + 1
        uids = (study_uid or None, series_uid or None)
        found.append(Series(number, series_in[number], *uids, modality, files, size or 0))
    return found


def release_items_by_series(
    session: Session, release: Release, limit: int, offset: int
) -> tuple[list[ReleaseItem], int]:
    """A page of the release's files grouped by study and series, and how many there are."""
    return window(session, _series_order(release.id), limit, offset)


def release_totals(session: Session, release: Release) -> ReleaseTotals:
    """Files, studies and bytes of a release, counted by the database (a release can hold
    thousands of files; a page summarising it needs none of them)."""
    files, studies, size = session.execute(
        select(
            func.count(),
            func.count(func.distinct(ReleaseItem.study_instance_uid)),
            func.sum(ReleaseItem.size),
        ).where(ReleaseItem.release_id == release.id)
    ).one()
    return ReleaseTotals(files, studies, size or 0)


def release_of(session: Session, request_id: str) -> Release | None:
    return session.scalars(select(Release).where(Release.request_id == request_id)).first()


def approvals_count(session: Session, request_id: str) -> int:
    query = select(func.count()).where(RequestApproval.request_id == request_id)
    return session.scalar(query) or 0


def _audit(
    session: Session,
    action: str,
    user: User,
    subject_type: str,
    subject_id: str,
    detail: dict[str, Any],
) -> None:
    consents.audit.record(
        session,
        action,
        actor=user_ref(user.id),
        subject_type=subject_type,
        subject_id=subject_id,
        detail=detail,
    )


def record_withdrawal_notices(session: Session, event_id: int, consent_ids: list[str]) -> int:
    """After a withdrawal (of a consent, or of one of its modules): one notice per release
    holding files of ``consent_ids`` that the release's use is no longer permitted, listing
    those files; returns how many notices were made."""
    items = list(
        session.scalars(select(ReleaseItem).where(ReleaseItem.consent_id.in_(consent_ids)))
    )
    by_release: dict[str, list[ReleaseItem]] = {}
    for item in items:
        by_release.setdefault(item.release_id, []).append(item)
    made = 0
    for release_id, held in by_release.items():
        release = session.get(Release, release_id)
        assert release is not None  # noqa: S101 - guaranteed by the foreign key
        allowed = _still_permitting(session, release, {item.consent_id for item in held})
        lost = [item.sop_instance_uid or "" for item in held if item.consent_id not in allowed]
        if lost:
            session.add(
                WithdrawalNotice(release_id=release_id, event_id=event_id, sop_instance_uids=lost)
            )
            made += 1
    session.flush()
    return made


def notices_for(
    session: Session, user: User, limit: int, offset: int
) -> tuple[list[WithdrawalNotice], int]:
    """A page of the withdrawal notices on ``user``'s releases, the latest first, and how
    many there are."""
    query = (
        select(WithdrawalNotice)
        .join(Release, Release.id == WithdrawalNotice.release_id)
        .where(Release.researcher_id == user.id)
        .order_by(WithdrawalNotice.created_at.desc(), WithdrawalNotice.id.desc())
    )
    return window(session, query, limit, offset)


def acknowledge_notice(session: Session, notice_id: int, user: User) -> None:
    """The researcher confirms a withdrawal notice. Commits."""
    begin_write(session)
    notice = session.get(WithdrawalNotice, notice_id, with_for_update=True)
    release = session.get(Release, notice.release_id) if notice is not None else None
    if notice is None or release is None or release.researcher_id != user.id:
        raise ResearchError("This notice does not exist.", 404)
    if notice.acknowledged_at is not None:
        raise ResearchError("This notice has already been acknowledged.")
    notice.acknowledged_at = utcnow()
    session.flush()
    _audit(session, "withdrawal_notice.acknowledged", user, "release", release.id, {})
    session.commit()


def releases_touched(session: Session, event_ids: list[int]) -> dict[int, list[str]]:
    """For the steward: which releases each withdrawal event touched."""
    rows = session.execute(
        select(WithdrawalNotice.event_id, WithdrawalNotice.release_id).where(
            WithdrawalNotice.event_id.in_(event_ids)
        )
    ).all()
    touched: dict[int, list[str]] = {}
    for event_id, release_id in rows:
        touched.setdefault(event_id, []).append(release_id)
    return touched
