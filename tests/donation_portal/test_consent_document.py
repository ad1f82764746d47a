"""The consent text reads like a document: Markdown shown as safe HTML, the controller named,
the typed name kept after an error, and a receipt page made for printing."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from consent import default_template_spec, publish_template, template_id
from donation_portal.web.markdown import render_markdown

from .conftest import TEMPLATE, TOKEN, Browser

SAFE_TAGS = {"h2", "p", "ul", "li", "strong", "a"}

HOSTILE = """## Heading

<script>alert("x")</script>

<div style="position:fixed" onclick="steal()">raw block</div>

An [evil link](javascript:alert(1)), a [data link](data:text/html;base64,PHNjcmlwdD4=),
an <img src="https://tracker.example/x.png" onerror="steal()"> and ![pixel](https://tracker.example/p.png).

[Fine link](https://example.org/privacy)
"""


class _Elements(HTMLParser):
    """The elements and attributes a browser would build: text that merely looks like HTML
    (escaped) is not one, so it cannot run or load anything."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))


def assert_harmless(html: str) -> None:
    parser = _Elements()
    parser.feed(html)
    for tag, attrs in parser.found:
        assert tag in SAFE_TAGS, tag
        assert set(attrs) <= {"href", "rel"}, attrs
        assert str(attrs.get("href", "https:")).startswith("https:"), attrs


def test_headings_lists_and_soft_breaks_render_as_a_document() -> None:
    html = render_markdown("## What\n\nOne sentence\nbroken mid-line.\n\n- first\n- **second**\n")
    assert "<h2>What</h2>" in html
    assert "<p>One sentence\nbroken mid-line.</p>" in html  # one paragraph, the break is a space
    assert "<ul>" in html and "<li><strong>second</strong></li>" in html


@pytest.mark.parametrize(
    "markdown",
    [
        "<script>alert(1)</script>",
        "<div onclick=x>raw</div>",
        "[x](javascript:alert(1))",
        "[x](JaVaScRiPt:alert(1))",
        "[x](data:text/html;base64,PHNjcmlwdD4=)",
        "![x](https://tracker.example/p.png)",
        '<img src="x" onerror="alert(1)">',
        "<style>body{display:none}</style>",
        "<a href='https://e.org' style='color:red'>styled</a>",
    ],
)
def test_hostile_markdown_is_neutralised(markdown: str) -> None:
    assert_harmless(render_markdown(markdown))


def test_links_keep_a_safe_href_and_leave_without_a_referrer() -> None:
    html = render_markdown("[privacy](https://example.org/privacy)")
    assert 'href="https://example.org/privacy"' in html
    assert 'rel="noopener noreferrer nofollow"' in html


def test_the_consent_page_shows_the_text_as_html_and_names_the_controller(
    app: Flask, browser: Browser
) -> None:
    browser.register("reader@example.org")
    page = browser.get("/consent")
    assert "<h2>What you are agreeing to</h2>" in page
    assert "## What you are agreeing to" not in page
    assert "<li>Every file is de-identified" in page
    for key in ("CONTROLLER_NAME", "CONTROLLER_ADDRESS", "CONTROLLER_CONTACT"):
        assert str(app.config[key]) in page


def test_what_is_signed_stays_the_stored_markdown(browser: Browser) -> None:
    browser.register("hash@example.org")
    page = browser.get("/consent")
    assert TEMPLATE.search(page).group(1) == template_id(default_template_spec())


def test_hostile_markdown_in_a_published_text_is_neutralised_on_the_page(
    browser: Browser, db_session: Session
) -> None:
    spec = {**default_template_spec(), "language": "de", "body": HOSTILE}
    publish_template(db_session, spec)
    db_session.commit()
    browser.register("hostile@example.org")
    browser.client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "de"
    page = browser.get("/consent")
    text = page.split('class="consent-document">', 1)[1].split("</div>\n</details>", 1)[0]
    assert "<h2>Heading</h2>" in text
    assert '<a href="https://example.org/privacy" rel="noopener noreferrer nofollow">' in text
    assert_harmless(text)


def test_a_consent_error_keeps_the_typed_name(browser: Browser) -> None:
    browser.register("typist@example.org")
    page = browser.get("/consent")
    response = browser.client.post(
        "/consent",
        data={
            "csrf_token": TOKEN.search(page).group(1),
            "template_id": TEMPLATE.search(page).group(1),
            "modules": [],  # the required part is not ticked
            "full_name": "Zoë Müller-Lüdenscheidt <b>",
        },
    )
    assert response.status_code == 422
    again = response.get_data(as_text=True)
    assert 'value="Zoë Müller-Lüdenscheidt &lt;b&gt;"' in again


def test_the_receipt_buttons_sit_in_one_row_and_print_without_inline_script(
    donor: Browser,
) -> None:
    page = donor.get("/consent/receipt")
    assert '<div class="actions no-print">' in page
    assert "print.css" in page and "print.js" in page
    assert "<script>" not in page and "onclick" not in page
    assert donor.get("/static/print.css").count("@media print") == 1


def test_the_printable_receipt_has_the_consent_facts_and_no_more(
    app: Flask, donor: Browser
) -> None:
    page = donor.get("/consent/receipt")
    assert "Donating my medical images for research" in page
    assert "version 1" in page
    assert "Use of my de-identified images" in page
    assert "withdrawal code is not printed here" in page
    assert str(app.config["CONTROLLER_NAME"]) in page
    assert "donor@example.org" not in page and "Ada Donor" not in page
    match = re.search(r'href="data:text/html;base64,([A-Za-z0-9+/=]+)"', page)
    document = base64.b64decode(match.group(1)).decode()
    assert str(app.config["CONTROLLER_ADDRESS"]) in document


def test_the_signed_page_prints_as_the_receipt_with_its_withdrawal_code(
    browser: Browser,
) -> None:
    browser.register("printer@example.org")
    page = browser.sign_consent(name="Paula Printer").get_data(as_text=True)
    code = re.search(r'<code class="secret">([^<]+)</code>', page).group(1)
    receipt = page.split('<section class="receipt">', 1)[1].split("</section>\n<div", 1)[0]
    assert f"<dd><code>{code}</code>" in receipt  # in the part that goes on paper
    assert "Who is responsible for your data" in receipt
    assert "print.css" in page and "data-print" in page
    assert "Paula Printer" not in page
    assert "print your receipt" in browser.get("/consent")


def test_without_a_consent_the_receipt_page_sends_the_donor_to_sign(browser: Browser) -> None:
    browser.register("unsigned@example.org")
    response = browser.client.get("/consent/receipt")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/consent")
