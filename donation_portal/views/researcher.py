"""The researcher's landing page; requests and releases come with the releases issue."""

from __future__ import annotations

from flask import Blueprint, render_template
from sqlalchemy import func, select

from donation_portal.db import get_session
from donation_portal.ingest import ACCEPTED
from donation_portal.models import DonatedFile
from donation_portal.security import role_required

bp = Blueprint("researcher", __name__, url_prefix="/researcher")


@bp.get("/")
@role_required("researcher", "admin")
def home() -> str:
    available = get_session().scalar(
        select(func.count()).select_from(DonatedFile).where(DonatedFile.status == ACCEPTED)
    )
    return render_template("researcher/home.html", available=available or 0)
