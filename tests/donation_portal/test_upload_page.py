"""The upload page's Uppy bundle (built from frontend/ by `make assets`) and the no-JS form.

The bundle is not committed: `make test` builds it first. File names never reach the server:
the bundle sends only the submission key and the type, and the donation page joins the
donor's own names (kept in their browser) by upload id.
"""

from __future__ import annotations

import re
from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from donation_portal.adapters.models import DonatedFile

from .conftest import Browser
from .phi import real_file

BUILD = Path(__file__).parents[2] / "donation_portal" / "web" / "static" / "build"
CT = real_file("CT_small.dcm").content


def test_make_assets_built_the_uploader() -> None:
    bundle = (BUILD / "upload.js").read_text(encoding="utf-8")
    assert (BUILD / "upload.css").stat().st_size > 0
    # Uppy's tus plugin sends only these metadata fields: never "filename"
    assert 'allowedMetaFields:["submission","filetype"]' in bundle
    assert "cdn." not in bundle.lower() and "//releases.transloadit.com" not in bundle


def test_the_bundle_is_served_from_the_portal(client: FlaskClient) -> None:
    for name in ("build/upload.js", "build/upload.css"):
        reply = client.get(f"/static/{name}")
        assert reply.status_code == 200, name
        assert reply.headers["X-Content-Type-Options"] == "nosniff"


def test_the_upload_page_loads_uppy_and_keeps_the_plain_form(donor: Browser) -> None:
    page = donor.get("/donations/new")
    assert re.search(r'<script src="/static/build/upload\.js[^"]*" defer>', page)
    assert re.search(r'<link rel="stylesheet" href="/static/build/upload\.css', page)
    # the no-JavaScript path: a multipart form posting the files, hidden only by the script
    assert re.search(r'<form id="upload-form" method="post" action="/donations/new"', page)
    assert 'enctype="multipart/form-data"' in page
    assert '<input id="files" name="files" type="file" multiple>' in page
    assert 'data-tus-endpoint="/uploads/"' in page
    assert '<div id="uploader" hidden>' in page


def test_the_donation_page_offers_the_upload_id_not_a_name(
    donor: Browser, db_session: Session
) -> None:
    reply = donor.upload([CT])  # the form sends the name "IM000000"
    assert reply.status_code == 303
    page = donor.get(reply.headers["Location"])
    row = db_session.scalars(select(DonatedFile)).one()
    assert row.upload_id
    assert f'data-upload="{row.upload_id}"' in page
    assert "donation-status.js" in page and 'class="file-name"' in page
    assert "IM000000" not in page
