"""Research pages: the researcher's profile, requests, downloads and API tokens; the steward's
decisions, and every researcher's live tokens for an admin to revoke."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, BinaryIO, cast

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from marshmallow import ValidationError, fields, post_load, validate
from sqlalchemy.orm import Session
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response as Redirect

from consent.duo import DuoTerm
from donation_portal.adapters import services
from donation_portal.adapters.models import AccessRequest, ApiToken, ResearcherProfile, User
from donation_portal.adapters.request_session import get_session
from donation_portal.web import api, errors
from donation_portal.web.mfa import step_up_required
from donation_portal.web.packaging import file_response, manifest_csv, tar_response
from donation_portal.web.pagination import paginate
from donation_portal.web.research_schemas import (
    ApprovalSchema,
    FormSchema,
    ProfileSchema,
    RequestSchema,
)
from donation_portal.web.schemas import first_errors, load_form
from donation_portal.web.security import role_required
from donation_portal.workflows import releases, tokens
from donation_portal.workflows.eligibility import (
    DECLARATION_TERMS,
    PURPOSE_TERMS,
    MatchCount,
    count,
    duo_term,
    eligible_files,
)

researcher_bp = Blueprint("research", __name__, url_prefix="/researcher")
steward_bp = Blueprint("research_steward", __name__, url_prefix="/steward/requests")
STAFF = ("steward", "admin")


def refused(error: releases.ResearchError) -> Response:
    """A refused research action: its message, as a page or as problem JSON for the API."""
    if error.status >= 500:
        current_app.logger.error(
            "research action failed on %s %s [correlation %s]",
            request.method,
            request.url_rule,
            errors.correlation_id(),
        )
    return errors.page(error.status, str(error))


@researcher_bp.get("/profile")
@role_required("researcher")
def profile() -> str:
    return render_template(
        "researcher/profile.html",
        profile=get_session().get(ResearcherProfile, current_user.user.id),
    )


@researcher_bp.post("/profile")
@role_required("researcher")
@step_up_required  # the public key decides who can read the next releases: a key operation
def save_profile() -> Any:
    try:
        data = ProfileSchema().load(request.form.to_dict())
    except ValidationError as error:
        return render_template("researcher/profile.html", errors=first_errors(error)), 422
    releases.save_profile(get_session(), current_user.user, data["affiliation"], data["public_key"])
    flash("Your profile and public key were saved.")
    return redirect(url_for("researcher.home"), 303)


class TokenSchema(FormSchema):
    """A new API token. With no scope ticked it gets the default scopes, which the form
    shows ticked; the name only helps its owner tell their tokens apart."""

    name = fields.String(
        load_default=tokens.DEFAULT_NAME,
        validate=[
            validate.Length(max=100, error="Name the token in at most 100 characters."),
            validate.Regexp(r"\s*\S", error="Name the token."),
        ],
    )
    days = fields.Integer(
        load_default=tokens.DEFAULT_LIFETIME_DAYS,
        validate=validate.Range(
            min=1,
            max=tokens.MAX_LIFETIME_DAYS,
            error=f"A token lasts 1 to {tokens.MAX_LIFETIME_DAYS} days.",
        ),
    )
    scopes = fields.List(
        fields.String(validate=validate.OneOf(tokens.SCOPES, error="Unknown scope."))
    )

    @post_load
    def _default_scopes(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {**data, "scopes": data.get("scopes") or list(tokens.DEFAULT_SCOPES)}


def _tokens_page(errors: list[str] | None = None) -> str:
    now, session, user = api.now(), get_session(), current_user.user
    mine = paginate(
        lambda limit, offset: tokens.tokens_of(session, user, limit, offset),
        endpoint="research.api_tokens",
    )
    return render_template(
        "researcher/tokens.html",
        tokens=mine,
        states={t.id: tokens.state(t, now) for t in mine.items},
        scopes=tokens.SCOPES,
        default_scopes=tokens.DEFAULT_SCOPES,
        default_days=tokens.DEFAULT_LIFETIME_DAYS,
        max_days=tokens.MAX_LIFETIME_DAYS,
        errors=errors,
    )


@researcher_bp.get("/tokens")
@role_required("researcher")
def api_tokens() -> str:
    """The researcher's API tokens (never their values) and the form to make one."""
    return _tokens_page()


@researcher_bp.post("/tokens")
@role_required("researcher")
@step_up_required
def new_token() -> Response | tuple[str, int]:
    """Make a token and show it, once: only its digest is stored, and no cache keeps the
    page."""
    try:
        data = load_form(TokenSchema(), request.form, lists=("scopes",))
    except ValidationError as error:
        return _tokens_page(first_errors(error)), 422
    token, row = tokens.issue(
        get_session(), current_user.user, data["name"], data["scopes"], data["days"], api.now()
    )
    response = make_response(render_template("researcher/token.html", token=token, row=row))
    response.headers["Cache-Control"] = "no-store"
    return response


@researcher_bp.post("/tokens/<int:token_id>/revoke")
@role_required("researcher")
def revoke_token(token_id: int) -> Redirect:
    _say_revoked(tokens.revoke(get_session(), token_id, current_user.user, api.now()))
    return redirect(url_for("research.api_tokens"), 303)


def _say_revoked(token: ApiToken) -> None:
    flash(f'The API token "{token.name}" is revoked: the API refuses it from now on.')


def _request_data() -> dict[str, Any]:
    form = request.form
    return {
        "title": form.get("title", ""),
        "abstract": form.get("abstract", ""),
        "use": {
            "purpose": form.get("purpose", ""),
            "disease": form.get("disease") or None,
            **{
                flag: form.get(flag) == "yes"
                for flag in ("commercial", "publishes", "not_for_profit", "methods_development")
            },
        },
        "filters": {
            **{name: _codes(form, name) for name in ("modalities", "body_parts")},
            "sexes": [s for s in form.getlist("sexes") if s],
            **{
                bound: form.get(bound) or None
                for bound in ("age_min", "age_max", "study_year_min", "study_year_max")
            },
        },
    }


def _codes(form: Any, name: str) -> list[str]:
    """Code strings from a text field ("CT, MR") or repeated fields, upper-cased as DICOM has
    them."""
    found = []
    for value in form.getlist(name):
        found += [part.strip().upper() for part in value.replace(";", ",").split(",")]
    return [code for code in found if code]


def wants_json() -> bool:
    """The request form's script counts in place (``request-count.js``), so the chosen ethics
    document stays chosen: a browser cannot put a file back into a reloaded form."""
    return request.accept_mimetypes.best == "application/json"


def matched_words(matched: MatchCount) -> str:
    """ "Currently matching: 1 donor, 2 studies, 3 files", singular and plural as spoken."""
    parts = [
        plural(matched.donors, "donor", "donors"),
        plural(matched.studies, "study", "studies"),
        plural(matched.files, "file", "files"),
    ]
    return "Currently matching: " + ", ".join(parts) + "."


def plural(number: int, one: str, many: str) -> str:
    """ "1 study", "2 studies": pages count in words, not "stud(y/ies)"."""
    return f"{number} {one if number == 1 else many}"


@researcher_bp.route("/requests/new", methods=["GET", "POST"])
@role_required("researcher")
def new_request() -> Any:
    if request.method == "GET":
        return render_template("researcher/request.html", form=MultiDict())
    counting = request.form.get("action") == "count"
    try:
        data = RequestSchema().load(_request_data())
    except ValidationError as error:
        if counting and wants_json():
            return jsonify(errors=first_errors(error)), 422
        page = render_template(
            "researcher/request.html", errors=first_errors(error), form=request.form
        )
        return page, 422
    session = get_session()
    if counting:
        matched = matched_words(count(eligible_files(session, data["use"], data["filters"])))
        if wants_json():
            return jsonify(matched=matched)
        ethics = request.files.get("ethics")
        dropped = ethics.filename if ethics is not None and ethics.filename else None
        return render_template(
            "researcher/request.html", matched=matched, dropped=dropped, form=request.form
        )
    ethics = request.files.get("ethics")
    # FileStorage.stream is typed IO[bytes]: a binary file, but typeshed's BinaryIO is nominal
    stream = cast(BinaryIO, ethics.stream) if ethics is not None and ethics.filename else None
    releases.submit_request(
        session, current_user.user, **data, ethics=stream, store=services.object_store(session)
    )
    flash("Your request was submitted to the data stewards.")
    return redirect(url_for("researcher.home"), 303)


@researcher_bp.get("/releases/<release_id>")
@role_required("researcher")
def release_page(release_id: str) -> str:
    """One release's files, a page at a time, grouped by study and series with their sizes:
    a flat list of thousands of UIDs could neither be read nor be sent at once."""
    session = get_session()
    release = releases.release_for(session, release_id, current_user.user)
    files = paginate(
        lambda limit, offset: releases.release_items_by_series(session, release, limit, offset)
    )
    series = {(s.study_uid, s.series_uid): s for s in releases.release_series(session, release)}
    groups: list[tuple[releases.Series, list[Any]]] = []
    for item in files.items:
        found = series[(item.study_instance_uid or None, item.series_instance_uid or None)]
        if not groups or groups[-1][0] is not found:
            groups.append((found, []))
        groups[-1][1].append(item)
    available = {item.position for item in releases.downloadable(session, release, files.items)}
    return render_template(
        "researcher/release.html",
        release=release,
        files=files,
        groups=groups,
        studies=len({s.study_number for s in series.values()}),
        series_count=len(series),
        totals=releases.release_totals(session, release),
        available=available,
    )


@researcher_bp.get("/releases/<release_id>/files/<int:position>")
@role_required("researcher")
@step_up_required
def download(release_id: str, position: int) -> Response:
    session = get_session()
    release = releases.release_for(session, release_id, current_user.user)
    return file_response(
        session, services.object_store(session), release, position, current_user.user
    )


@researcher_bp.get("/releases/<release_id>/release.tar")
@role_required("researcher")
@step_up_required
def download_tar(release_id: str) -> Response:
    session = get_session()
    release = releases.release_for(session, release_id, current_user.user)
    return tar_response(session, services.object_store(session), release, current_user.user)


@researcher_bp.get("/releases/<release_id>/manifest.csv")
@role_required("researcher")
@step_up_required
def manifest_csv_view(release_id: str) -> Response:
    session = get_session()
    release = releases.release_for(session, release_id, current_user.user)
    items = releases.read_manifest(session, release, current_user.user)
    return Response(manifest_csv(items), mimetype="text/csv")


@researcher_bp.get("/releases/<release_id>/manifest.json")
@role_required("researcher")
@step_up_required
def manifest_json(release_id: str) -> Response:
    session = get_session()
    release = releases.release_for(session, release_id, current_user.user)
    items = releases.read_manifest(session, release, current_user.user)
    return jsonify({"release_id": release.id, "items": items})


@dataclass(frozen=True)
class Declaration:
    """One thing the researcher declared about the use, and the DUO term it answers."""

    question: str
    answer: bool
    term: DuoTerm | None


@dataclass(frozen=True)
class RequestSummary:
    """An access request as a steward reads it: in words, with the DUO codes and the cohort
    it would receive now (not the stored JSON, which a steward cannot be asked to decode)."""

    purpose: str
    purpose_term: DuoTerm | None
    disease: str | None
    declarations: list[Declaration]
    filters: list[str]
    matched: MatchCount | None  # None: the stored use cannot be matched (say, incomplete)


PURPOSE_WORDS = {
    "health": "Health, medical or biomedical research",
    "disease": "Research on one disease",
    "general": "Other research, e.g. methods or AI not about health",
    "ancestry": "Population origins or ancestry research",
}
DECLARATION_WORDS = {
    "commercial": "Commercial use",
    "not_for_profit": "By a not-for-profit organisation",
    "publishes": "The results will be published",
    "methods_development": "Develops methods or software",
    "ethics_approved": "An ethics approval document is attached",
}
SEX_WORDS = {"F": "female", "M": "male", "O": "other"}


def _either(values: list[str]) -> str:
    return ", ".join(values[:-1]) + (" or " if len(values) > 1 else "") + values[-1]


def _range(low: Any, high: Any) -> str | None:
    if low is not None and high is not None:
        return f"{low} to {high}"
    if low is not None:
        return f"from {low}"
    return f"up to {high}" if high is not None else None


def filter_words(filters: dict[str, Any]) -> list[str]:
    """A request's cohort filters as sentences a steward reads; none is said in words too."""
    words = []
    for key, name in (("modalities", "Modality"), ("body_parts", "Body part examined")):
        if values := filters.get(key):
            words.append(f"{name}: {_either([str(v) for v in values])}")
    if sexes := filters.get("sexes"):
        words.append(f"Sex: {_either([SEX_WORDS.get(s, str(s)) for s in sexes])}")
    if ages := _range(filters.get("age_min"), filters.get("age_max")):
        words.append(f"Age in years: {ages}")
    if years := _range(filters.get("study_year_min"), filters.get("study_year_max")):
        words.append(f"Study year (shifted, approximate): {years}")
    return words or ["No filters: all the donated data this use may receive"]


def summarise(session: Session, access: AccessRequest) -> RequestSummary:
    """What a steward needs to decide on ``access``, including the size of the cohort the
    release would hold if approved now."""
    use, filters = access.use or {}, access.filters or {}
    purpose = str(use.get("purpose", ""))
    term_id = PURPOSE_TERMS.get(purpose)
    try:
        matched: MatchCount | None = count(eligible_files(session, use, filters))
    except (KeyError, ValueError):
        matched = None
    declarations = [
        Declaration(words, bool(use.get(flag)), duo_term(DECLARATION_TERMS[flag]))
        for flag, words in DECLARATION_WORDS.items()
    ]
    return RequestSummary(
        purpose=PURPOSE_WORDS.get(purpose, "Not stated"),
        purpose_term=duo_term(term_id) if term_id else None,
        disease=use.get("disease") or None,
        declarations=declarations,
        filters=filter_words(filters),
        matched=matched,
    )


@steward_bp.get("/")
@role_required(*STAFF)
def queue() -> str:
    session = get_session()
    pending = paginate(lambda limit, offset: releases.pending_requests(session, limit, offset))
    approvals = {r.id: releases.approvals_count(session, r.id) for r in pending.items}
    people = {
        r.id: (session.get(User, r.researcher_id), session.get(ResearcherProfile, r.researcher_id))
        for r in pending.items
    }
    return render_template(
        "steward/requests.html",
        requests=pending,
        approvals=approvals,
        needed=2 if current_app.config["RESEARCH_FOUR_EYES"] else 1,
        people=people,
        summaries={r.id: summarise(session, r) for r in pending.items},
    )


@steward_bp.get("/tokens")
@role_required("admin")
def all_tokens() -> str:
    """Every researcher's API token the API still takes, for an admin to revoke."""
    session, now = get_session(), api.now()
    live = paginate(lambda limit, offset: tokens.live_tokens(session, now, limit, offset))
    return render_template("admin/tokens.html", tokens=live)


@steward_bp.post("/tokens/<int:token_id>/revoke")
@role_required("admin")
def revoke_any_token(token_id: int) -> Redirect:
    session, admin = get_session(), current_user.user
    _say_revoked(tokens.revoke(session, token_id, admin, api.now(), any_owner=True))
    return redirect(url_for("research_steward.all_tokens"), 303)


@steward_bp.get("/<request_id>/ethics")
@role_required(*STAFF)
@step_up_required
def ethics_document(request_id: str) -> Response:
    """The request's ethics approval, decrypted for the steward deciding on it (audited)."""
    session = get_session()
    data = releases.ethics_document(
        session, services.object_store(session), request_id, current_user.user
    )
    response = Response(data, mimetype="application/octet-stream")
    response.headers["Content-Disposition"] = f'attachment; filename="ethics-{request_id}"'
    return response


@steward_bp.post("/<request_id>/decision")
@role_required(*STAFF)
@step_up_required
def decide(request_id: str) -> Any:
    try:
        data = ApprovalSchema().load(request.form.to_dict())
    except ValidationError as error:
        abort(422, "; ".join(first_errors(error)))
    session = get_session()
    if data["decision"] == "reject":
        releases.reject(session, request_id, current_user.user, data["reason"])
        flash("The request was rejected.")
        return redirect(url_for("research_steward.queue"), 303)
    if data["expires"] is None:
        raise releases.ResearchError("Please give the date the access expires.", 422)
    # "access until" a day includes that day: it ends at the next midnight (UTC)
    expires = datetime.combine(data["expires"] + timedelta(days=1), time(), tzinfo=UTC)
    needed = 2 if current_app.config["RESEARCH_FOUR_EYES"] else 1
    release = releases.approve(session, request_id, current_user.user, expires, needed)
    flash("Release created." if release else "Approved; a second steward must approve too.")
    return redirect(url_for("research_steward.queue"), 303)
