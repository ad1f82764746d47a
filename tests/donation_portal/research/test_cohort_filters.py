"""Cohort filters on de-identified metadata: modality, body part, sex, age range, study year."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pydicom
import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from donation_portal.adapters.models import AccessRequest, DonatedFile, Donation

from ..conftest import Browser
from .test_end_to_end import CT, MR, _donate, _keygen, _login

FORM = {"title": "Lung nodules", "abstract": "A study of lung imaging data.",
        "purpose": "health", "publishes": "yes"}


@pytest.fixture
def researcher(app: Flask, make_user, db_session: Session, tmp_path: Path,  # type: ignore[no-untyped-def]
               published: None) -> Browser:
    """Two approved donations: CT_small (sex O, age 0) and MR_small (sex F, no age)."""
    _donate(app, "ct@example.org", CT)
    _donate(app, "mr@example.org", MR)
    steward = _login(app, make_user, "steward@example.org", "steward")
    for donation in db_session.scalars(select(Donation)).all():
        action = f"/steward/donations/{donation.id}/decision"
        assert steward.submit("/steward/donations", {"decision": "approve"},
                              action=action).status_code == 303
    browser = _login(app, make_user, "researcher@example.org", "researcher")
    _, public = _keygen(tmp_path, "researcher")
    profile = {"affiliation": "Lab", "public_key": public.read_text()}
    assert browser.submit("/researcher/profile", profile).status_code == 303
    return browser


def _donors(researcher: Browser, **filters: str) -> int:
    page = researcher.submit("/researcher/requests/new", {**FORM, **filters, "action": "count"})
    assert page.status_code == 200, page.get_data(as_text=True)
    return int(re.search(r"(\d+) donors?,", page.get_data(as_text=True)).group(1))


def test_the_ingest_records_the_deidentified_metadata(researcher: Browser,
                                                      db_session: Session) -> None:
    rows = {f.modality: f for f in db_session.scalars(select(DonatedFile))}
    assert (rows["CT"].patient_sex, rows["CT"].patient_age_years) == ("O", 0)
    assert (rows["MR"].patient_sex, rows["MR"].patient_age_years) == ("F", None)
    for row, source in ((rows["CT"], CT), (rows["MR"], MR)):
        original = int(pydicom.dcmread(io.BytesIO(source)).StudyDate[:4])
        assert original - 10 <= row.study_year < original  # shifted back by 1 to 10 years


# one donation setup for the whole table: each row is (filters, donors matched)
COHORTS = [
    ({}, 2),
    ({"modalities": "ct"}, 1),
    ({"modalities": "CT, MR"}, 2),
    ({"modalities": "US"}, 0),
    ({"sexes": "F"}, 1),
    ({"age_min": "0", "age_max": "5"}, 1),  # MR_small has no age: not in an age range
    ({"age_min": "18"}, 0),
    ({"body_parts": "CHEST"}, 0),  # neither file names a body part
    ({"study_year_min": "1990", "study_year_max": "2004"}, 2),
    ({"study_year_min": "2004"}, 0),  # shifted dates are all before the original 2004
]
BAD_FILTERS = [
    {"age_min": "40", "age_max": "20"},
    {"age_min": "-1"},
    {"study_year_max": "year"},
    {"sexes": "X"},
    {"modalities": "C<T"},
]


def test_filters_select_the_cohort(researcher: Browser) -> None:
    found = [(filters, _donors(researcher, **filters)) for filters, _ in COHORTS]
    assert found == COHORTS


def test_a_request_whose_filters_match_nothing_is_refused(researcher: Browser) -> None:
    page = researcher.submit("/researcher/requests/new",
                             {**FORM, "modalities": "US", "action": "submit"})
    assert page.status_code == 422
    assert "No donated data matches" in page.get_data(as_text=True)


def test_bad_filters_are_clear_errors(researcher: Browser) -> None:
    for filters in BAD_FILTERS:
        page = researcher.submit("/researcher/requests/new",
                                 {**FORM, **filters, "action": "count"})
        assert page.status_code == 422, filters
        assert 'role="alert"' in page.get_data(as_text=True), filters


def test_an_empty_ethics_document_is_refused(researcher: Browser) -> None:
    empty = {"ethics": (io.BytesIO(b""), "approval.pdf")}
    page = researcher.submit("/researcher/requests/new", {**FORM, "action": "submit", **empty})
    assert page.status_code == 422
    assert "ethics approval document is empty" in page.get_data(as_text=True)


def test_methods_development_is_declared_on_the_form(researcher: Browser,
                                                     db_session: Session) -> None:
    form = {**FORM, "methods_development": "yes", "action": "submit"}
    assert researcher.submit("/researcher/requests/new", form).status_code == 303
    assert db_session.scalars(select(AccessRequest)).one().use["methods_development"] is True
