"""HL7 FHIR R4 export: a consent as a ``Consent`` resource, its template as a ``Questionnaire``.

How a consent maps to R4 (4.0.1), so that a FHIR server accepts it and any reader gets its
meaning from standard elements:

* The donor appears only by pseudonym, as a logical reference (an identifier: nothing a
  server has to resolve).
* ``sourceAttachment`` carries the template version the donor signed, as its canonical JSON;
  the SHA-256 of those bytes is the template ID that ``policy.uri`` names, so anyone can check
  the text. A reference (``sourceReference``) would need a resource the portal serves.
* ``dateTime`` is the signing; ``provision.period`` runs from it to the withdrawal or the
  expiry, whichever comes first.
* The root provision denies; each module the donor agreed to is a nested ``permit`` coded
  with its DUO permission terms, its period ending with the consent or with the module's own
  withdrawal. DUO modifiers (e.g. NCU, PUB) are conditions on the whole consent (as
  ``consent.duo_matching`` applies them), so each one is a ``deny`` nested in every permit,
  read as "denied unless this condition is met": no reader can take it for a permission.
* A withdrawn or expired consent is ``inactive`` (R4: terminated; ``rejected`` would say that
  a party refused it before it took effect). A withdrawal records the donor's choice for the
  files in the extension ``WITHDRAWAL_MODE_EXTENSION``: ``valueCode`` ``stop_use`` (kept,
  never used again) or ``erase`` (destroyed).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from consent.canonical import as_utc, iso_utc
from consent.duo import DUO_SYSTEM, MODIFIER, PERMISSION
from consent.duo import duo_terms as duo_table
from consent.models import Consent, ConsentTemplate
from consent.policy import IN_FORCE, MODULE_WITHDRAWN, WITHDRAWN
from consent.queries import events, get_consent, state, template_of
from consent.templates import canonical_form, template_spec

PSEUDONYM_SYSTEM = "urn:donation-portal:pseudonym"
TEMPLATE_SYSTEM = "urn:donation-portal:consent-template"
WITHDRAWAL_MODE_EXTENSION = "urn:donation-portal:withdrawal-mode"
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


@dataclass(frozen=True)
class _Ending:
    """What the consent's events say about its end: the withdrawal, and modules withdrawn."""

    withdrawn_at: datetime | None = None
    mode: str | None = None
    modules: dict[str, datetime] = field(default_factory=dict)


def _ending(session: Session, consent_id: str) -> _Ending:
    withdrawal = None
    modules: dict[str, datetime] = {}
    for event in events(session, consent_id):
        if event.kind == WITHDRAWN and withdrawal is None:
            withdrawal = event
        elif event.kind == MODULE_WITHDRAWN:
            modules.setdefault(event.detail["module"], event.at)
    if withdrawal is None:
        return _Ending(modules=modules)
    return _Ending(withdrawal.at, withdrawal.detail["mode"], modules)


def _fhir_time(moment: datetime) -> str:
    return iso_utc(moment)[:-4] + "Z"  # FHIR instants: milliseconds at most


def _period(start: datetime, end: datetime | None) -> dict[str, str]:
    period = {"start": _fhir_time(start)}
    if end is not None:
        period["end"] = _fhir_time(end)
    return period


def _duo_concepts(terms: Iterable[str], language: str) -> list[dict[str, Any]]:
    table = duo_table()
    return [
        {"coding": [{"system": DUO_SYSTEM, "code": term, "display": table[term].label(language)}]}
        for term in terms
        if term in table
    ]


def _terms(module: dict[str, Any], kind: str) -> list[str]:
    table = duo_table()
    return [term for term in module.get("duo", []) if term in table and table[term].kind == kind]


def _module_provisions(
    template: ConsentTemplate, consent: Consent, ending: _Ending, end: datetime | None
) -> list[dict[str, Any]]:
    """A permit per module signed; each holds, as denies, the modifiers in force with it."""
    signed = [module for module in template.modules if module["id"] in consent.modules]
    kept = [module for module in signed if module["id"] not in ending.modules]
    modifiers_in_force = [term for module in kept for term in _terms(module, MODIFIER)]
    provisions = []
    for module in signed:
        modifiers = dict.fromkeys(modifiers_in_force + _terms(module, MODIFIER))
        provision: dict[str, Any] = {
            "type": "permit",
            "period": _period(consent.signed_at, ending.modules.get(module["id"], end)),
            "code": _duo_concepts(_terms(module, PERMISSION), template.language)
            or [{"text": module["title"]}],
        }
        if modifiers:
            provision["provision"] = [
                {"type": "deny", "code": [concept]}
                for concept in _duo_concepts(modifiers, template.language)
            ]
        provisions.append(provision)
    return provisions


def _source(template: ConsentTemplate) -> dict[str, Any]:
    """The signed template version itself; its SHA-256 is the ID in ``policy.uri``."""
    return {
        "contentType": "application/json",
        "language": template.language,
        "data": base64.b64encode(canonical_form(template_spec(template))).decode("ascii"),
        "title": f"{template.title} (version {template.version})",
        "creation": _fhir_time(template.published_at),
    }


def to_fhir_consent(session: Session, consent_id: str) -> dict[str, Any]:
    """The consent as a FHIR R4 Consent resource (JSON-ready); UnknownConsent if none."""
    consent = get_consent(session, consent_id)
    template = template_of(session, consent)
    ending = _ending(session, consent.id)
    ends = [as_utc(m) for m in (ending.withdrawn_at, consent.expires_at) if m is not None]
    end = min(ends, default=None)
    resource: dict[str, Any] = {"resourceType": "Consent", "id": consent.id}
    if ending.mode is not None:
        resource["extension"] = [{"url": WITHDRAWAL_MODE_EXTENSION, "valueCode": ending.mode}]
    return resource | {
        "status": "active" if state(session, consent.id) in IN_FORCE else "inactive",
        "scope": _SCOPE,
        "category": [_CATEGORY],
        "patient": {
            "identifier": {"system": PSEUDONYM_SYSTEM, "value": consent.pseudonym},
            "display": consent.pseudonym,
        },
        "dateTime": _fhir_time(consent.signed_at),
        "sourceAttachment": _source(template),
        "policy": [{"uri": f"{TEMPLATE_SYSTEM}:sha256:{template.id}"}],
        "provision": {
            "type": "deny",
            "period": _period(consent.signed_at, end),
            "provision": _module_provisions(template, consent, ending, end),
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
