"""tus 1.0.0 resumable uploads: core, creation (with upload), termination, checksum, expiration.

Only HTTP lives here: headers in, statuses out. The use cases are in ``workflows.uploads``.
Every reply carries ``Tus-Resumable``; errors are ``application/problem+json`` with a message
a donor can read (Uppy shows it). Another donor's upload is answered as not found.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from email.utils import format_datetime

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from flask_login import current_user
from werkzeug.exceptions import ClientDisconnected

import consent
from consent.canonical import as_utc
from donation_portal.adapters import services
from donation_portal.adapters.models import Upload, user_ref
from donation_portal.adapters.request_session import get_session
from donation_portal.web.security import checked_in_hook, public
from donation_portal.workflows import resumable_uploads, uploads, whole_files
from donation_portal.workflows.uploads import BodyInterrupted, UploadLimits
from storage import new_quarantine_scope
from storage.scope_keys import new_scope_key

bp = Blueprint("tus", __name__, url_prefix="/uploads")
VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,termination,checksum,expiration"
OFFSET_TYPE = "application/offset+octet-stream"
_CHUNK = 1 << 20
_SUBMISSION = re.compile(r"[0-9a-f]{32}")
_STATUS = {
    uploads.UploadNotFound: 404,
    uploads.UploadGone: 410,
    uploads.OffsetMismatch: 409,
    uploads.ChecksumMismatch: 460,
    uploads.TooLarge: 413,
    uploads.LimitReached: 429,
    uploads.AlreadySubmitted: 409,
    uploads.SubmissionConflict: 409,
}


@bp.after_request
def _tus_headers(response: Response) -> Response:
    response.headers["Tus-Resumable"] = VERSION
    response.headers["Cache-Control"] = "no-store"
    return response


def problem(status: int, detail: str, **headers: str) -> Response:
    response = jsonify({"type": "about:blank", "status": status, "detail": detail})
    response.status_code = status
    response.content_type = "application/problem+json"
    response.headers.update(headers)
    return response


@bp.errorhandler(uploads.UploadError)
def _refused(error: uploads.UploadError) -> Response:
    status = next(code for kind, code in _STATUS.items() if isinstance(error, kind))
    if isinstance(error, uploads.LimitReached):
        return problem(status, str(error), **{"Retry-After": "3600"})
    return problem(status, str(error))


def _limits() -> UploadLimits:
    return UploadLimits.from_settings(current_app.config)


@bp.before_request
def _check_protocol() -> Response | None:
    if request.method == "OPTIONS":
        return None
    if request.headers.get("Tus-Resumable") != VERSION:
        response = problem(412, "This server speaks tus 1.0.0.")
        response.headers["Tus-Version"] = VERSION
        return response
    if not current_user.is_authenticated:
        return problem(401, "Please log in to donate images.")
    if current_user.role != "donor":
        return problem(403, "Only donors can upload images.")
    return None


@bp.route("/", methods=["OPTIONS"])
@bp.route("/<upload_id>", methods=["OPTIONS"])
@public
def options(upload_id: str | None = None) -> Response:
    response = Response(status=204)
    response.headers["Tus-Version"] = VERSION
    response.headers["Tus-Extension"] = EXTENSIONS
    largest = max(current_app.config["MAX_FILE_BYTES"], current_app.config["MAX_ARCHIVE_BYTES"])
    response.headers["Tus-Max-Size"] = str(largest)
    response.headers["Tus-Checksum-Algorithm"] = ",".join(uploads.CHECKSUM_ALGORITHMS)
    return response


@bp.post("/")
@checked_in_hook("donor")
def create() -> Response:
    """Creation: ``Upload-Length`` and ``Upload-Metadata`` (``submission``: the batch)."""
    length = _whole_number(request.headers.get("Upload-Length"))
    if length is None:
        if "Upload-Defer-Length" in request.headers:
            return problem(400, "Uploads of unknown length are not supported.")
        return problem(400, "Upload-Length is missing or not a whole number.")
    metadata = _metadata(request.headers.get("Upload-Metadata", ""))
    if metadata is None:
        return problem(400, "Upload-Metadata is not valid.")
    submission = metadata.get("submission", "")
    if not _SUBMISSION.fullmatch(submission):
        return problem(400, "This upload form has expired. Please reload the page.")
    session = get_session()
    active = consent.active_consent(session, user_ref(current_user.user.id))
    if active is None:
        return problem(403, "Please sign the consent before donating images.")
    content_type = request.headers.get("Content-Type")
    carries_body = bool(request.content_length) or content_type == OFFSET_TYPE
    if carries_body and content_type != OFFSET_TYPE:
        return problem(415, f"Content-Type must be {OFFSET_TYPE}.")
    limits = _limits().for_archive() if _declares_archive(metadata) else _limits()
    if carries_body and request.content_length == length:
        upload = _create_whole(active, submission, length, limits)
    else:
        upload = resumable_uploads.create_upload(
            session,
            services.object_store(session),
            donor_id=current_user.user.id,
            active=active,
            submission_key=submission,
            length=length,
            limits=limits,
        )
        if carries_body:
            upload = _append(upload.id, 0)
    response = Response(status=201)
    response.headers["Location"] = url_for("tus.resume", upload_id=upload.id)
    response.headers["Upload-Expires"] = _expires(upload)
    if carries_body:
        response.headers["Upload-Offset"] = str(upload.offset)
    return response


def _create_whole(
    active: consent.Consent, submission: str, length: int, limits: UploadLimits
) -> Upload:
    """creation-with-upload carrying the whole file: received first, then recorded (and
    queued) in one transaction, with its quarantine key made in memory meanwhile. A body
    that breaks off leaves nothing: the client never learnt the upload's URL."""
    session = get_session()
    donor_id = current_user.user.id
    uploads.check_new_file(session, donor_id, active, length, limits)
    store = services.object_store(session)
    key = new_scope_key(services.keyring(), new_quarantine_scope())
    ticket = resumable_uploads.AppendTicket("", active.id, key.scope_id, key.public_key, 0, length)
    checksum = _checksum(request.headers.get("Upload-Checksum"))
    info = resumable_uploads.write_part(store, ticket, _body(), checksum)
    if info is None or info.size != length:
        if info is not None:
            store.delete(info.object_id)
        raise uploads.OffsetMismatch("The file arrived incomplete. Please send it again.")
    _, created = whole_files.submit_parts(
        session,
        store,
        donor_id=donor_id,
        active=active,
        submission_key=submission,
        parts=[(info, key)],
        queue=services.job_queue(),
        limits=limits,
        whole_form=False,
    )
    return created[0]


@bp.route("/<upload_id>", methods=["HEAD"])
@checked_in_hook("donor")
def resume(upload_id: str) -> Response:
    session = get_session()
    upload = uploads.find_upload(session, upload_id, current_user.user.id)
    uploads.check_open(upload)
    response = Response(status=200)
    response.headers["Upload-Offset"] = str(upload.offset)
    response.headers["Upload-Length"] = str(upload.length)
    response.headers["Upload-Expires"] = _expires(upload)
    return response


@bp.patch("/<upload_id>")
@checked_in_hook("donor")
def append(upload_id: str) -> Response:
    if request.headers.get("Content-Type") != OFFSET_TYPE:
        return problem(415, f"Content-Type must be {OFFSET_TYPE}.")
    offset = _whole_number(request.headers.get("Upload-Offset"))
    if offset is None:
        return problem(400, "Upload-Offset is missing or not a whole number.")
    upload = _append(upload_id, offset)
    response = Response(status=204)
    response.headers["Upload-Offset"] = str(upload.offset)
    response.headers["Upload-Expires"] = _expires(upload)
    return response


@bp.delete("/<upload_id>")
@checked_in_hook("donor")
def terminate(upload_id: str) -> Response:
    session = get_session()
    store = services.object_store(session)
    resumable_uploads.terminate(session, store, upload_id, current_user.user.id)
    return Response(status=204)


def _append(upload_id: str, offset: int) -> Upload:
    checksum = _checksum(request.headers.get("Upload-Checksum"))
    session = get_session()
    ticket = resumable_uploads.begin_append(session, upload_id, current_user.user.id, offset)
    declared = request.content_length
    if declared is not None and declared > ticket.length - ticket.offset:
        raise uploads.TooLarge("The request sends more bytes than the upload declared.")
    store = services.object_store(session)
    info = resumable_uploads.write_part(store, ticket, _body(), checksum)
    if info is None:
        return uploads.find_upload(session, upload_id, current_user.user.id)
    return resumable_uploads.record_part(session, store, ticket, info, services.job_queue())


def _body() -> Iterator[bytes]:
    stream = request.stream
    try:
        while chunk := stream.read(_CHUNK):
            yield chunk
    except (ClientDisconnected, OSError) as error:
        raise BodyInterrupted from error
    if request.content_length is not None and _received_short():
        raise BodyInterrupted


def _received_short() -> bool:
    limited = getattr(request.stream, "is_exhausted", True)
    return not limited


def _checksum(header: str | None) -> tuple[str, bytes] | None:
    if not header:
        return None
    algorithm, _, encoded = header.strip().partition(" ")
    if algorithm not in uploads.CHECKSUM_ALGORITHMS:
        raise _BadRequest("Upload-Checksum names an algorithm this server does not support.")
    try:
        return algorithm, base64.b64decode(encoded, validate=True)
    except binascii.Error as error:
        raise _BadRequest("Upload-Checksum is not valid base64.") from error


class _BadRequest(uploads.UploadError):
    pass


_STATUS[_BadRequest] = 400


def _whole_number(value: str | None) -> int | None:
    if value is None or not value.isdigit() or len(value) > 18:
        return None
    return int(value)


def _metadata(header: str) -> dict[str, str] | None:
    """``key base64value`` pairs, comma-separated (values may be absent)."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in header.split(","))):
        key, _, encoded = item.partition(" ")
        try:
            pairs[key] = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
    return pairs


_ARCHIVE_TYPES = frozenset({"application/zip", "application/x-zip-compressed"})


def _declares_archive(metadata: dict[str, str]) -> bool:
    """``filetype`` (as Uppy and the upload page send it) names a ZIP archive. Only the
    size limit depends on it; the ingest job looks at the bytes themselves."""
    return metadata.get("filetype", "").lower() in _ARCHIVE_TYPES


def _expires(upload: Upload) -> str:
    return format_datetime(as_utc(upload.expires_at), usegmt=True)
