"""The researcher JSON API (token or login), and its OpenAPI 3 document from the schemas."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Response, abort, g, jsonify, request, stream_with_context
from flask_login import current_user
from marshmallow import Schema, fields

from donation_portal import services
from donation_portal.db import get_session
from donation_portal.models import User
from donation_portal.research import releases, tokens
from donation_portal.research.schemas import RequestSchema
from donation_portal.security import csrf

bp = Blueprint("research_api", __name__, url_prefix="/api")
csrf.exempt(bp)


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
    status = fields.Integer()
    detail = fields.String()


def _researcher() -> User:
    return g.api_user  # type: ignore[no-any-return]


def token_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """A researcher's bearer token, or a logged-in researcher's session."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        header = request.headers.get("Authorization", "")
        user = None
        if header.startswith("Bearer "):
            user = tokens.user_for(get_session(), header.removeprefix("Bearer ").strip())
        elif current_user.is_authenticated:
            user = current_user.user
        if user is None:
            abort(401)
        if user.role != "researcher":
            abort(403)
        g.api_user = user
        return view(*args, **kwargs)

    return wrapped


@bp.get("/releases")
@token_required
def list_releases() -> Response:
    session = get_session()
    found = [
        releases.release_of(session, r.id) for r in releases.requests_of(session, _researcher())
    ]
    return jsonify(ReleaseSchema(many=True).dump([r for r in found if r is not None]))


@bp.get("/releases/<release_id>/manifest")
@token_required
def manifest(release_id: str) -> Response:
    release = releases.release_for(get_session(), release_id, _researcher())
    return jsonify(
        ManifestSchema().dump({"release_id": release.id, "items": releases.manifest(release)})
    )


@bp.get("/releases/<release_id>/files/<int:position>")
@token_required
def download(release_id: str, position: int) -> Response:
    session = get_session()
    release = releases.release_for(session, release_id, _researcher())
    found = releases.download_item(
        session, services.object_store(session), release, position, _researcher()
    )
    response = Response(stream_with_context(found.chunks), mimetype="application/octet-stream")
    response.headers["Content-Disposition"] = f'attachment; filename="{found.name}"'
    return response


@bp.get("/notices")
@token_required
def notices() -> Response:
    return jsonify(NoticeSchema(many=True).dump(releases.notices_for(get_session(), _researcher())))


@bp.post("/notices/<int:notice_id>/acknowledge")
@token_required
def acknowledge(notice_id: int) -> tuple[str, int]:
    releases.acknowledge_notice(get_session(), notice_id, _researcher())
    return "", 204


def _operation(summary: str, schema: str | None, content: str = "application/json") -> dict:
    ok: dict[str, Any] = {"description": "OK"}
    if schema is not None:
        ok["content"] = {content: {"schema": schema}}
    problem = {"content": {"application/json": {"schema": "Problem"}}}
    return {
        "summary": summary,
        "security": [{"token": []}],
        "responses": {
            "200": ok,
            "401": {"description": "No or unknown token", **problem},
            "404": {"description": "Not yours or not found", **problem},
            "410": {"description": "Expired or withdrawn", **problem},
        },
    }


def openapi_document() -> dict[str, Any]:
    spec = APISpec(
        title="Donation portal researcher API",
        version="1",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
    )
    spec.components.security_scheme("token", {"type": "http", "scheme": "bearer"})
    for name, schema in (
        ("Release", ReleaseSchema),
        ("Manifest", ManifestSchema),
        ("Notice", NoticeSchema),
        ("Problem", ProblemSchema),
        ("AccessRequest", RequestSchema),
    ):
        spec.components.schema(name, schema=schema)
    spec.path("/api/releases", operations={"get": _operation("Your releases", "Release")})
    spec.path(
        "/api/releases/{release_id}/manifest",
        operations={"get": _operation("A release's frozen manifest", "Manifest")},
    )
    binary = {"type": "string", "format": "binary"}
    spec.path(
        "/api/releases/{release_id}/files/{position}",
        operations={
            "get": {
                **_operation("One file, Crypt4GH-encrypted to your key", None),
                "responses": {
                    "200": {
                        "content": {"application/octet-stream": {"schema": binary}},
                        "description": "Crypt4GH stream",
                    }
                },
            }
        },
    )
    spec.path("/api/notices", operations={"get": _operation("Withdrawal notices", "Notice")})
    spec.path(
        "/api/notices/{notice_id}/acknowledge",
        operations={"post": _operation("Acknowledge a withdrawal notice", None)},
    )
    return spec.to_dict()


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document())
