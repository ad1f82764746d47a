"""The researcher's landing page: profile, requests with their decisions, and releases."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from donation_portal.adapters.models import ResearcherProfile
from donation_portal.adapters.request_session import get_session
from donation_portal.web.pagination import paginate
from donation_portal.web.security import role_required
from donation_portal.workflows import releases

bp = Blueprint("researcher", __name__, url_prefix="/researcher")


@bp.get("/")
@role_required("researcher", "admin")
def home() -> str:
    session = get_session()
    user = current_user.user
    requests = paginate(lambda limit, offset: releases.requests_of(session, user, limit, offset))
    notices = paginate(
        lambda limit, offset: releases.notices_for(session, user, limit, offset), "notices_"
    )
    released = {r.id: releases.release_of(session, r.id) for r in requests.items}
    # a summary per release: its files are listed, a page at a time, on the release's page
    totals = {
        rel.id: releases.release_totals(session, rel)
        for rel in released.values()
        if rel is not None
    }
    return render_template(
        "researcher/home.html",
        profile=session.get(ResearcherProfile, user.id),
        requests=requests,
        released=released,
        totals=totals,
        notices=notices,
    )


@bp.post("/notices/<int:notice_id>/acknowledge")
@role_required("researcher")
def acknowledge_notice(notice_id: int) -> Response:
    releases.acknowledge_notice(get_session(), notice_id, current_user.user)
    flash("Thank you: the withdrawal notice is acknowledged.")
    return redirect(url_for("researcher.home"), 303)
