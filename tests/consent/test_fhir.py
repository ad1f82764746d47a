"""FHIR R4 export, validated by the fhir.resources models (R4B shares R4's Consent)."""

from __future__ import annotations

import json

from fhir.resources.R4B.consent import Consent as FhirConsent
from fhir.resources.R4B.questionnaire import Questionnaire
from sqlalchemy.orm import Session

import consent as consents


def _codes(provision: dict) -> set[str]:
    return {c["coding"][0]["code"] for c in provision.get("code", []) if "coding" in c}


def test_an_active_consent_exports_as_a_valid_fhir_consent(
    db_session: Session, template, sign, typed_name: str
) -> None:  # type: ignore[no-untyped-def]
    signed = sign(template)
    resource = consents.to_fhir_consent(db_session, signed.consent.id)
    parsed = FhirConsent.model_validate(resource)
    assert parsed.status == "active"
    assert parsed.patient.identifier.value == signed.consent.pseudonym
    assert resource["policy"][0]["uri"].endswith(template.id)
    permitted = [p for p in resource["provision"]["provision"] if p["type"] == "permit"]
    assert "DUO:0000042" in set().union(*map(_codes, permitted))
    assert typed_name not in json.dumps(resource)


def test_withdrawn_modules_and_consents_show_as_deny(
    db_session: Session, spec_with, sign
) -> None:  # type: ignore[no-untyped-def]
    spec = consents.default_template_spec()
    optional = [m for m in spec["modules"] if not m.get("required")]
    assert optional, "the default template has an optional module"
    template = consents.publish_template(db_session, spec)
    signed = sign(template, modules=tuple(m["id"] for m in spec["modules"]))
    consents.withdraw_modules(db_session, signed.consent.id, [optional[0]["id"]])
    resource = consents.to_fhir_consent(db_session, signed.consent.id)
    FhirConsent.model_validate(resource)
    kinds = [p["type"] for p in resource["provision"]["provision"]]
    assert "deny" in kinds and "permit" in kinds
    consents.withdraw_consent(db_session, signed.consent.id)
    withdrawn = consents.to_fhir_consent(db_session, signed.consent.id)
    assert FhirConsent.model_validate(withdrawn).status == "inactive"
    assert withdrawn["provision"]["type"] == "deny"


def test_the_template_exports_as_a_valid_questionnaire(template) -> None:  # type: ignore[no-untyped-def]
    resource = consents.to_fhir_questionnaire(template)
    parsed = Questionnaire.model_validate(resource)
    assert [item.linkId for item in parsed.item] == [m["id"] for m in template.modules]
    assert parsed.url.endswith(template.id)
