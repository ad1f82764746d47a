"""Consent receipts as the donor gets them: the signed JSON and a readable page of the same.

Both are handed over inline (as downloads) and never stored: the portal can issue a fresh
receipt for any event, and the withdrawal code must exist only in the donor's copy.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from flask import render_template
from sqlalchemy.orm import Session

import consent as consents
from donation_portal.adapters import services


@dataclass(frozen=True)
class Receipt:
    document: dict[str, Any]

    @property
    def consent_id(self) -> str:
        consent_id: str = self.document["receipt"]["consent_id"]
        return consent_id

    @property
    def json_text(self) -> str:
        return json.dumps(self.document, indent=2, sort_keys=True, ensure_ascii=False)

    @property
    def json_b64(self) -> str:
        return base64.b64encode(self.json_text.encode("utf-8")).decode("ascii")

    @property
    def html_b64(self) -> str:
        page = render_template("public/receipt_document.html", receipt=self.document["receipt"],
                               document=self.json_text)
        return base64.b64encode(page.encode("utf-8")).decode("ascii")


def issue(
    session: Session,
    consent: consents.Consent,
    event: consents.ConsentEvent,
    withdrawal_code: str | None = None,
) -> Receipt:
    """A signed receipt for ``event``; with the withdrawal code only when it was just issued."""
    signer = services.receipt_signer()
    return Receipt(consents.issue_receipt(session, consent, event, signer, withdrawal_code))


def verify(document: bytes | str) -> dict[str, Any]:
    """The receipt's content if the portal signed it; InvalidReceipt otherwise."""
    keys = consents.public_keys(services.receipt_signer().public_jwks())
    return consents.verify_receipt(document, keys)
