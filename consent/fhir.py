"""HL7 FHIR R4 export: a consent as a ``Consent`` resource, its template as a ``Questionnaire``.

The donor appears only by pseudonym. Each granted module is a nested ``permit`` provision
coded with its GA4GH DUO terms; withdrawn optional modules are ``deny`` provisions, so the
resource says both what is allowed and what was taken back.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.orm import Session

from consent.canonical import iso_utc
from consent.duo import DUO_SYSTEM
from consent.duo import duo_terms as duo_table
from consent.models import ConsentTemplate
from consent.policy import IN_FORCE
from consent.queries import get_consent, granted_modules, state

PSEUDONYM_SYSTEM = "urn:donation-portal:pseudonym"
TEMPLATE_SYSTEM = "urn:donation-portal:consent-template"
_SCOPE = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/consentscope",
            "code": "research",
            "display": "Research",
        }
    ]
}
_CATEGORY = {
    "coding": [
        {
            "system": "http://loinc.org",
            "code": "57016-8",
            "display": "Privacy policy acknowledgement Document",
        }
    ]
}


def _fhir_time(moment: Any) -> str:
    return iso_utc(moment)[:-4] + "Z"  # FHIR instants: milliseconds at most


def _duo_concepts(terms: list[str], language: str) -> list[dict[str, Any]]:
    table = duo_table()
    return [
        {"coding": [{"system": DUO_SYSTEM, "code": term, "display": table[term].label(language)}]}
        for term in terms
        if term in table
    ]


def to_fhir_consent(session: Session, consent_id: str) -> dict[str, Any]:
    """The consent as a FHIR R4 Consent resource (JSON-ready); UnknownConsent if none."""
    consent = get_consent(session, consent_id)
    template = session.get(ConsentTemplate, consent.template_id)
    assert template is not None  # noqa: S101 - guaranteed by the foreign key
    current = state(session, consent.id)
    granted = set(granted_modules(session, consent.id))
    provisions = []
    for module in template.modules:
        if module["id"] not in consent.modules:
            continue
        provisions.append(
            {
                "type": "permit" if module["id"] in granted else "deny",
                "code": _duo_concepts(module.get("duo", []), template.language)
                or [{"text": module["title"]}],
            }
        )
    period = {"start": _fhir_time(consent.signed_at)}
    if consent.expires_at is not None:
        period["end"] = _fhir_time(consent.expires_at)
    return {
        "resourceType": "Consent",
        "id": consent.id,
        "status": "active" if current in IN_FORCE else "inactive",
        "scope": _SCOPE,
        "category": [_CATEGORY],
        "patient": {
            "identifier": {"system": PSEUDONYM_SYSTEM, "value": consent.pseudonym},
            "display": consent.pseudonym,
        },
        "dateTime": _fhir_time(consent.signed_at),
        "policy": [{"uri": f"{TEMPLATE_SYSTEM}:sha256:{template.id}"}],
        "sourceReference": {"reference": f"Questionnaire/{template.id}"},
        "provision": {
            "type": "permit" if current in IN_FORCE else "deny",
            "period": period,
            "provision": provisions,
        },
    }


def to_fhir_questionnaire(template: ConsentTemplate) -> dict[str, Any]:
    """The template as a FHIR R4 Questionnaire: one yes/no item per module."""
    return {
        "resourceType": "Questionnaire",
        "id": template.id,
        "url": f"{TEMPLATE_SYSTEM}:sha256:{template.id}",
        "version": template.version,
        "name": "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", template.name)),
        "title": template.title,
        "status": "active",
        "language": template.language,
        "date": _fhir_time(template.published_at),
        "description": template.summary,
        "item": [
            {
                "linkId": module["id"],
                "text": module["title"],
                "type": "boolean",
                "required": bool(module.get("required")),
                "code": [
                    concept["coding"][0]
                    for concept in _duo_concepts(module.get("duo", []), template.language)
                ],
            }
            for module in template.modules
        ],
    }
