"""Issue 13 (points 5, 6, 8): the research pages in words a person reads.

The steward's access request shows the purpose, the DUO codes with their labels, the cohort
filters and the cohort's size, never the stored JSON; a release is listed by study and
series with sizes, a page at a time; counts say "1 donor", "2 studies".
"""

from __future__ import annotations

import io
import re

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from donation_portal.adapters.models import AccessRequest, Release, ReleaseItem
from donation_portal.web.pagination import DEFAULT_PER_PAGE

from ..conftest import Browser
from .test_cohort_filters import FORM, researcher  # noqa: F401 - the fixture
from .test_end_to_end import _login
from .test_tampered_release import release  # noqa: F401 - the fixture

NEW = "/researcher/requests/new"


def test_the_steward_reads_the_request_in_words_with_its_cohort_size(
    app: Flask,
    make_user,  # type: ignore[no-untyped-def]
    researcher: Browser,  # noqa: F811
) -> None:
    form = {**FORM, "modalities": "CT, MR", "sexes": "F", "action": "submit"}
    assert researcher.submit(NEW, form).status_code == 303
    steward = _login(app, make_user, "decider@example.org", "steward")
    page = steward.get("/steward/requests/")
    assert "Health, medical or biomedical research" in page
    assert "DUO:0000006" in page and "health or medical or biomedical research" in page
    assert "publication required" in page  # the DUO modifier the declaration answers
    assert "Modality: CT or MR" in page and "Sex: female" in page
    # MR_small is the only female donor's file
    assert re.search(r"<strong>1 file</strong> from\s+1 donor and\s+1 study", page), page
    assert "None was given." in page  # no ethics document
    assert "{'" not in page and "None," not in page and "'purpose'" not in page
    assert "Approve this request" in page and "Reject this request" in page
    assert 'class="secondary danger"' in page  # rejecting looks unlike approving
    # two forms: Enter in the reason field can only reject, never approve
    assert page.count('class="decide ') == 2


def test_a_request_with_an_ethics_document_links_to_it(
    app: Flask,
    make_user,  # type: ignore[no-untyped-def]
    researcher: Browser,  # noqa: F811
    db_session: Session,
) -> None:
    ethics = {"ethics": (io.BytesIO(b"%PDF approval"), "approval.pdf")}
    assert researcher.submit(NEW, {**FORM, "action": "submit", **ethics}).status_code == 303
    access = db_session.scalars(select(AccessRequest)).one()
    steward = _login(app, make_user, "decider@example.org", "steward")
    page = steward.get("/steward/requests/")
    assert f"/steward/requests/{access.id}/ethics" in page
    assert "An ethics approval document is attached: <strong>yes</strong>" in page
    assert "DUO:0000021" in page and "ethics approval required" in page
    assert re.search(r"<strong>2 files</strong> from\s+2 donors", page)


@pytest.mark.parametrize(
    ("filters", "words"),
    [
        ({}, "Currently matching: 2 donors, 2 studies, 2 files."),
        ({"modalities": "CT"}, "Currently matching: 1 donor, 1 study, 1 file."),
        ({"modalities": "US"}, "Currently matching: 0 donors, 0 studies, 0 files."),
    ],
)
def test_counts_are_singular_or_plural(
    researcher: Browser,  # noqa: F811
    filters: dict[str, str],
    words: str,
) -> None:
    page = researcher.submit(NEW, {**FORM, **filters, "action": "count"}).get_data(as_text=True)
    assert words in page
    assert "(s)" not in page and "(y/ies)" not in page


def test_counting_in_place_keeps_the_chosen_ethics_document(researcher: Browser) -> None:  # noqa: F811
    """The form's script asks for JSON: the page, and the file chosen in it, stay."""
    client = researcher.client
    page = researcher.get(NEW)
    assert "request-count.js" in page
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    json = {"Accept": "application/json"}
    data = {**FORM, "modalities": "CT", "action": "count", "csrf_token": token}
    counted = client.post(NEW, data=data, headers=json)
    assert counted.status_code == 200
    assert counted.get_json() == {"matched": "Currently matching: 1 donor, 1 study, 1 file."}
    bad = client.post(NEW, data={**data, "age_min": "-1"}, headers=json)
    assert bad.status_code == 422 and bad.get_json()["errors"]


def test_counting_by_reload_says_plainly_that_the_document_must_be_chosen_again(
    researcher: Browser,  # noqa: F811
) -> None:
    ethics = {"ethics": (io.BytesIO(b"%PDF approval"), "approval.pdf")}
    page = researcher.submit(NEW, {**FORM, "title": "Kept title", "action": "count", **ethics})
    text = page.get_data(as_text=True)
    assert "choose the ethics approval document (approval.pdf) again" in text
    assert 'value="Kept title"' in text  # every other field is kept


def _more_items(db_session: Session, release: Release, count: int) -> None:  # noqa: F811
    """``count`` more files in the release: three series of two studies."""
    first = release.items[0]
    columns = {c.key: getattr(first, c.key) for c in ReleaseItem.__table__.columns if c.key != "id"}
    for n in range(count):
        study, series = (
            ("1.2.3.study-b", f"1.2.3.series-b{n % 2}")
            if n % 3
            else ("1.2.3.study-a", "1.2.3.series-a")
        )
        db_session.add(
            ReleaseItem(
                **{
                    **columns,
                    "position": first.position + 1 + n,
                    "study_instance_uid": study,
                    "series_instance_uid": series,
                    "sop_instance_uid": f"1.2.3.sop.{n}",
                    "size": 2048,
                }
            )
        )
    db_session.commit()


def test_a_release_is_listed_by_study_and_series_with_sizes_a_page_at_a_time(
    researcher: Browser,  # noqa: F811
    release: Release,  # noqa: F811
    db_session: Session,
) -> None:
    _more_items(db_session, release, DEFAULT_PER_PAGE + 9)
    total = DEFAULT_PER_PAGE + 10
    home = researcher.get("/researcher/")
    url = f"/researcher/releases/{release.id}"
    assert f'href="{url}"' in home and f"Released {total} files" in home
    assert re.search(r"3\s+studies", home)
    first = researcher.get(url)
    assert f"{total} files" in first and "3 studies" in first and "4 series" in first
    assert "Study 1 / Series 1" in first and "Study 2 / Series 2" in first
    assert "kB" in first  # sizes in bytes a person reads (2048 bytes: 2.0 kB)
    assert first.count("<li>") == DEFAULT_PER_PAGE
    assert f'href="{url}?page=2"' in first
    second = researcher.get(f"{url}?page=2")
    assert second.count("<li>") == 10
    assert "Study 3 / Series 1" in second  # numbered across the whole release
    listed = re.findall(r"File (\d+) ·", first + second)
    assert sorted(map(int, listed)) == list(range(1, total + 1))


def test_another_researchers_release_page_is_hidden(
    app: Flask,
    make_user,  # type: ignore[no-untyped-def]
    release: Release,  # noqa: F811
) -> None:
    other = _login(app, make_user, "other@example.org", "researcher")
    assert other.client.get(f"/researcher/releases/{release.id}").status_code == 404


def test_summaries_tolerate_an_incomplete_stored_use(
    app: Flask,
    make_user,  # type: ignore[no-untyped-def]
    db_session: Session,
) -> None:
    owner = make_user("r@example.org", "researcher")
    db_session.add(
        AccessRequest(
            id="req-x",
            researcher_id=owner.id,
            title="Old request",
            abstract="Stored before purposes were checked.",
            use={},
            filters={},
            status="submitted",
        )
    )
    db_session.commit()
    page = _login(app, make_user, "decider@example.org", "steward").get("/steward/requests/")
    assert re.search(r"Purpose</dt>\s*<dd>Not stated", page)
    assert "Cannot be counted" in page and "No filters" in page
