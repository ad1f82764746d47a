"""The researcher JSON API (API tokens only), and its OpenAPI 3 document from the schemas.

Every call needs a bearer token granting the scope its operation names; a login cookie is not
taken here. A browser sends its cookie along with any site's request, so a cookie-taking API
would need CSRF tokens and Origin checks on every state-changing call; its callers are
scripts, which hold a token, and a browser user has the same actions on the research pages.
The API is CSRF-exempt for that reason: nothing in a cross-site request can authenticate it.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Response, abort, current_app, g, jsonify, request
from marshmallow import Schema, ValidationError, fields, validate

from consent.db import utcnow
from donation_portal.adapters import services
from donation_portal.adapters.models import AccessRequest, User
from donation_portal.adapters.request_session import get_session
from donation_portal.web.errors import problem
from donation_portal.web.limits import ETHICS_MAX_BASE64
from donation_portal.web.packaging import file_response, manifest_csv, tar_response
from donation_portal.web.pagination import documented, json_page, paginate
from donation_portal.web.research_schemas import FilterSchema, RequestSchema, UseSchema
from donation_portal.web.security import api_scope, csrf, public
from donation_portal.workflows import releases, tokens
from donation_portal.workflows.eligibility import count, eligible_files

bp = Blueprint("research_api", __name__, url_prefix="/api")
csrf.exempt(bp)

CLOCK = "portal_clock"  # app.extensions key of a clock replacing the real one (tests)
BEARER_ONLY = (
    "This API takes an API token only, sent as Authorization: Bearer TOKEN; a login session "
    "is not accepted. Create a token on your research page."
)


class ManifestItemSchema(Schema):
    position = fields.Integer()
    object_id = fields.String()
    consent_id = fields.String()
    modality = fields.String(allow_none=True)
    study_instance_uid = fields.String(allow_none=True)
    series_instance_uid = fields.String(allow_none=True)
    sop_instance_uid = fields.String(allow_none=True)
    body_part = fields.String(allow_none=True)
    patient_sex = fields.String(allow_none=True)
    patient_age_years = fields.Integer(allow_none=True)
    study_year = fields.Integer(
        allow_none=True,
        metadata={
            "description": "Year of the de-identified study date (shifted by the donor's offset)"
        },
    )
    size = fields.Integer()
    sha256 = fields.String()


class ReleaseSchema(Schema):
    id = fields.String()
    request_id = fields.String()
    expires_at = fields.DateTime()


class ManifestSchema(Schema):
    release_id = fields.String()
    items = fields.List(fields.Nested(ManifestItemSchema))


class NoticeSchema(Schema):
    id = fields.Integer()
    release_id = fields.String()
    sop_instance_uids = fields.List(fields.String())
    created_at = fields.DateTime()
    acknowledged_at = fields.DateTime(allow_none=True)


class ProblemSchema(Schema):
    type = fields.String()
    title = fields.String()
    status = fields.Integer()
    detail = fields.String()
    errors = fields.Dict(metadata={"description": "Per-field messages of a 422"})
    correlation_id = fields.String(
        metadata={"description": "Server errors (5xx): quote it when reporting the problem"}
    )


class ApiRequestSchema(RequestSchema):
    """An access request as the API takes it: the ethics approval document travels base64."""

    ethics_document = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=ETHICS_MAX_BASE64),
        metadata={"description": "The ethics approval (e.g. a PDF), base64, up to 10 MiB"},
    )


class PreviewSchema(Schema):
    use = fields.Nested(UseSchema, required=True)
    filters = fields.Nested(FilterSchema, load_default=dict)


class MatchCountSchema(Schema):
    donors = fields.Integer()
    studies = fields.Integer()
    files = fields.Integer()


class AccessRequestOutSchema(Schema):
    id = fields.String()
    title = fields.String()
    status = fields.String()
    reason = fields.String(allow_none=True)
    use = fields.Dict()
    filters = fields.Dict()
    ethics_document = fields.Boolean(attribute="has_ethics")
    created_at = fields.DateTime()
    decided_at = fields.DateTime(allow_none=True)
    release_id = fields.String(allow_none=True)


def _researcher() -> User:
    return g.api_user  # type: ignore[no-any-return]


def now() -> datetime:
    """The time tokens are checked at: the real time, unless a test installed a clock of its
    own as ``app.extensions[CLOCK]`` to step past an expiry."""
    clock: Callable[[], datetime] = current_app.extensions.get(CLOCK, utcnow)
    return clock()


def requires(scope: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Only a researcher's bearer token granting ``scope`` may call the view (RFC 6750):
    401 without a token or with one refused (unknown, expired, revoked), 403 without the
    scope. A login cookie is ignored. The view is declared as taking that token alone."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                abort(_refused(401, BEARER_ONLY, "Bearer"))
            try:
                grant = tokens.authenticate(get_session(), token.strip(), now())
            except tokens.TokenRefused as refused:
                abort(_refused(401, str(refused), 'Bearer error="invalid_token"'))
            if grant.owner.role != "researcher":
                abort(_problem(403, "Only a researcher's token may use this API."))
            if scope not in grant.scopes:
                detail = (
                    f"This API token lacks the scope {scope} this call needs. Create a token "
                    "with it on your research page."
                )
                challenge = f'Bearer error="insufficient_scope", scope="{scope}"'
                abort(_refused(403, detail, challenge))
            g.api_user = grant.owner
            return view(*args, **kwargs)

        return api_scope(scope)(wrapped)

    return decorator


def _refused(status: int, detail: str, challenge: str) -> Response:
    """A problem reply telling the client, as RFC 6750 does, what token it needs."""
    response = _problem(status, detail)
    response.headers["WWW-Authenticate"] = challenge
    return response


def _load(schema: Schema) -> dict[str, Any]:
    """The JSON body validated by ``schema``; a 415 problem for a body that is not JSON, a
    422 problem naming each bad field otherwise."""
    if not request.is_json:
        abort(_problem(415, "Send the body as JSON, with Content-Type: application/json."))
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(_problem(422, "The body must be a JSON object."))
    try:
        return schema.load(body)  # type: ignore[no-any-return]
    except ValidationError as error:
        abort(_problem(422, "The request is not valid.", error.messages))


def _problem(status: int, detail: str, errors: Any = None) -> Response:
    return problem(status, detail, errors)


def _request_out(access: AccessRequest) -> dict[str, Any]:
    release = releases.release_of(get_session(), access.id)
    shown = {
        "id": access.id,
        "title": access.title,
        "status": access.status,
        "reason": access.reason,
        "use": access.use,
        "filters": access.filters,
        "has_ethics": access.ethics_object_id is not None,
        "created_at": access.created_at,
        "decided_at": access.decided_at,
        "release_id": release.id if release is not None else None,
    }
    return AccessRequestOutSchema().dump(shown)  # type: ignore[no-any-return]


@bp.get("/requests")
@requires(tokens.READ_REQUESTS)
def list_requests() -> Response:
    session, user = get_session(), _researcher()
    page = paginate(
        lambda limit, offset: releases.requests_of(session, user, limit, offset), nearest=False
    )
    return json_page(page, [_request_out(r) for r in page.items])


@bp.post("/requests")
@requires(tokens.CREATE_REQUESTS)
def create_request() -> tuple[Response, int]:
    data = _load(ApiRequestSchema())
    encoded = data.pop("ethics_document")
    ethics = None
    if encoded is not None:
        try:
            ethics = io.BytesIO(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            abort(_problem(422, "The ethics document is not valid base64."))
    session = get_session()
    access = releases.submit_request(
        session, _researcher(), **data, ethics=ethics, store=services.object_store(session)
    )
    return jsonify(_request_out(access)), 201


@bp.post("/requests/preview")
@requires(tokens.CREATE_REQUESTS)
def preview_request() -> Response:
    """How many donors, studies and files a use and filters match now, before submitting."""
    data = _load(PreviewSchema())
    matched = count(eligible_files(get_session(), data["use"], data["filters"]))
    return jsonify(MatchCountSchema().dump(matched))


@bp.get("/releases")
@requires(tokens.READ_RELEASES)
def list_releases() -> Response:
    session, user = get_session(), _researcher()
    page = paginate(
        lambda limit, offset: releases.releases_of(session, user, limit, offset), nearest=False
    )
    return json_page(page, ReleaseSchema(many=True).dump(page.items))


@bp.get("/releases/<release_id>/manifest")
@requires(tokens.READ_RELEASES)
def manifest(release_id: str) -> Response:
    session = get_session()
    release = releases.release_for(session, release_id, _researcher())
    items = releases.read_manifest(session, release, _researcher())
    return jsonify(ManifestSchema().dump({"release_id": release.id, "items": items}))


@bp.get("/releases/<release_id>/files/<int:position>")
@requires(tokens.READ_RELEASES)
def download(release_id: str, position: int) -> Response:
    session = get_session()
    release = releases.release_for(session, release_id, _researcher())
    return file_response(session, services.object_store(session), release, position, _researcher())


@bp.get("/releases/<release_id>/release.tar")
@requires(tokens.READ_RELEASES)
def download_tar(release_id: str) -> Response:
    session = get_session()
    release = releases.release_for(session, release_id, _researcher())
    return tar_response(session, services.object_store(session), release, _researcher())


@bp.get("/releases/<release_id>/manifest.csv")
@requires(tokens.READ_RELEASES)
def manifest_csv_view(release_id: str) -> Response:
    session = get_session()
    release = releases.release_for(session, release_id, _researcher())
    items = releases.read_manifest(session, release, _researcher())
    return Response(manifest_csv(items), mimetype="text/csv")


@bp.get("/notices")
@requires(tokens.READ_RELEASES)
def notices() -> Response:
    session, user = get_session(), _researcher()
    page = paginate(
        lambda limit, offset: releases.notices_for(session, user, limit, offset), nearest=False
    )
    return json_page(page, NoticeSchema(many=True).dump(page.items))


@bp.post("/notices/<int:notice_id>/acknowledge")
@requires(tokens.ACKNOWLEDGE_NOTICES)
def acknowledge(notice_id: int) -> tuple[str, int]:
    releases.acknowledge_notice(get_session(), notice_id, _researcher())
    return "", 204


def _taking(schema: str, operation: dict[str, Any]) -> dict[str, Any]:
    """``operation`` with a JSON request body of ``schema``, and the replies to a body that
    is too large or not JSON."""
    problem_reply = {"content": {"application/problem+json": {"schema": "Problem"}}}
    responses = {
        **operation["responses"],
        "413": {"description": "The body is too large", **problem_reply},
        "415": {"description": "The body is not JSON", **problem_reply},
    }
    body = {"required": True, "content": {"application/json": {"schema": schema}}}
    return {**operation, "requestBody": body, "responses": responses}


def _operation(
    summary: str,
    schema: str | dict[str, Any] | None,
    scope: str,
    *,
    content: str = "application/json",
    status: str = "200",
    many: bool = False,
    params: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One operation: the token ``scope`` it needs, its success response (``many``: an array
    of ``schema``), the problem responses every endpoint can give, and its path parameters.

    OpenAPI 3.0 lets only OAuth2 schemes name scopes in ``security``; a bearer token's scope
    is named in the description, and in ``x-scope`` for programs."""
    ok: dict[str, Any] = {"description": "No content" if status == "204" else "OK"}
    if schema is not None:
        body = {"type": "array", "items": schema} if many else schema
        ok["content"] = {content: {"schema": body}}
    problem_reply = {"content": {"application/problem+json": {"schema": "Problem"}}}
    return {
        "summary": summary,
        "description": f"Needs an API token with the scope `{scope}`.",
        "x-scope": scope,
        "security": [{"token": []}],
        "parameters": [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "integer" if name in INTEGER_PARAMS else "string"},
            }
            for name in params
        ],
        "responses": {
            status: ok,
            "401": {
                "description": "No token (a login cookie is not taken), or an unknown, expired "
                "or revoked one",
                **problem_reply,
            },
            "403": {
                "description": f"The token lacks the scope `{scope}`, or is not a researcher's",
                **problem_reply,
            },
            "404": {"description": "Not yours or not found", **problem_reply},
            "409": {"description": "Already done (e.g. acknowledged)", **problem_reply},
            "410": {"description": "Expired or withdrawn", **problem_reply},
            "422": {"description": "Invalid body, or no data matches", **problem_reply},
            "500": {"description": "A stored file failed its integrity check", **problem_reply},
            "503": {
                "description": "Database or storage briefly unavailable (see Retry-After)",
                **problem_reply,
            },
            "507": {"description": "The portal's storage is full", **problem_reply},
        },
    }


INTEGER_PARAMS = frozenset({"position", "notice_id"})
BINARY = {"type": "string", "format": "binary"}
SCHEMAS = (
    ("Release", ReleaseSchema),
    ("Manifest", ManifestSchema),
    ("Notice", NoticeSchema),
    ("Problem", ProblemSchema),
    ("NewAccessRequest", ApiRequestSchema),
    ("AccessRequest", AccessRequestOutSchema),
    ("Preview", PreviewSchema),
    ("MatchCount", MatchCountSchema),
)


TOKEN_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": (
        "An API token made on the research page, sent as `Authorization: Bearer TOKEN` (the "
        "only way in: a login cookie is not taken). It expires after the days chosen when it "
        f"was made ({tokens.DEFAULT_LIFETIME_DAYS} by default, at most "
        f"{tokens.MAX_LIFETIME_DAYS}), can be revoked, and grants only its scopes: "
        + "; ".join(f"`{name}`: {what}" for name, what in tokens.SCOPES.items())
        + "."
    ),
}


def openapi_document() -> dict[str, Any]:
    spec = APISpec(
        title="Donation portal researcher API",
        version="1",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
    )
    spec.components.security_scheme("token", TOKEN_SCHEME)
    for name, schema in SCHEMAS:
        spec.components.schema(name, schema=schema)
    release = ("release_id",)
    paths: dict[str, dict[str, Any]] = {
        "/api/requests": {
            "get": documented(
                _operation("Your access requests", "AccessRequest", tokens.READ_REQUESTS, many=True)
            ),
            "post": _taking(
                "NewAccessRequest",
                _operation(
                    "Submit an access request",
                    "AccessRequest",
                    tokens.CREATE_REQUESTS,
                    status="201",
                ),
            ),
        },
        "/api/requests/preview": {
            "post": _taking(
                "Preview",
                _operation(
                    "Count the donors, studies and files a use matches",
                    "MatchCount",
                    tokens.CREATE_REQUESTS,
                ),
            )
        },
        "/api/releases": {
            "get": documented(
                _operation("Your releases", "Release", tokens.READ_RELEASES, many=True)
            )
        },
        "/api/releases/{release_id}/manifest": {
            "get": _operation(
                "A release's frozen manifest", "Manifest", tokens.READ_RELEASES, params=release
            )
        },
        "/api/releases/{release_id}/manifest.csv": {
            "get": _operation(
                "The manifest as CSV",
                {"type": "string"},
                tokens.READ_RELEASES,
                content="text/csv",
                params=release,
            )
        },
        "/api/releases/{release_id}/files/{position}": {
            "get": _operation(
                "One file, Crypt4GH-encrypted to your key (exact Content-Length)",
                BINARY,
                tokens.READ_RELEASES,
                content="application/octet-stream",
                params=("release_id", "position"),
            )
        },
        "/api/releases/{release_id}/release.tar": {
            "get": _operation(
                "Every file still available, as a streamed tar of Crypt4GH files",
                BINARY,
                tokens.READ_RELEASES,
                content="application/x-tar",
                params=release,
            )
        },
        "/api/notices": {
            "get": documented(
                _operation("Withdrawal notices", "Notice", tokens.READ_RELEASES, many=True)
            )
        },
        "/api/notices/{notice_id}/acknowledge": {
            "post": _operation(
                "Acknowledge a withdrawal notice",
                None,
                tokens.ACKNOWLEDGE_NOTICES,
                status="204",
                params=("notice_id",),
            )
        },
    }
    for path, operations in paths.items():
        spec.path(path, operations=operations)
    return spec.to_dict()


@bp.get("/openapi.json")
@public
def openapi() -> Response:
    return jsonify(openapi_document())
