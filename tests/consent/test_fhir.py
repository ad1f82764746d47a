"""FHIR R4 export, validated by the fhir.resources models and the R4 rules they leave out.

fhir.resources 8 holds R5 at its root and no R4 package; its ``R4B`` package is used, since
R4B left the Consent resource as R4 defined it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from typing import Any

import pytest
from fhir.resources.R4B.consent import Consent as FhirConsent
from fhir.resources.R4B.questionnaire import Questionnaire
from sqlalchemy.orm import Session

import consent as consents
from consent.canonical import as_utc
from consent.fhir import WITHDRAWAL_MODE_EXTENSION

HMB, GRU, NCU, PUB = "DUO:0000006", "DUO:0000042", "DUO:0000046", "DUO:0000019"
R4_SOURCE_TYPES = ("Consent", "DocumentReference", "Contract", "QuestionnaireResponse")


def _valid_r4(resource: dict[str, Any]) -> FhirConsent:
    """The parsed resource, after the R4 rules a server checks and the models do not."""
    parsed = FhirConsent.model_validate(resource)
    assert parsed.policy or parsed.policyRule, "ppc-1: a policy or a policy rule"
    assert parsed.patient is not None, "ppc-3: a research consent names its patient"
    if parsed.sourceReference is not None:
        assert parsed.sourceReference.reference.split("/")[0] in R4_SOURCE_TYPES
    for extension in parsed.extension or []:
        assert extension.url.startswith(("http://", "https://", "urn:"))
    rules = list(parsed.provision.provision or [])
    while rules:
        rule = rules.pop()
        assert rule.type in ("permit", "deny"), "R4: every nested rule permits or denies"
        rules += rule.provision or []
    return parsed


def _codes(provision: dict[str, Any]) -> set[str]:
    return {c["coding"][0]["code"] for c in provision.get("code", []) if "coding" in c}


def _permit(resource: dict[str, Any], term: str) -> dict[str, Any]:
    (found,) = [p for p in resource["provision"]["provision"] if term in _codes(p)]
    assert found["type"] == "permit"
    return found


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _ms(moment: datetime) -> datetime:
    """The moment as a FHIR instant holds it: UTC, to the millisecond."""
    moment = as_utc(moment)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def test_an_active_consent_exports_as_a_valid_fhir_consent(
    db_session: Session, template, sign, typed_name: str
) -> None:  # type: ignore[no-untyped-def]
    signed = sign(template)
    resource = consents.to_fhir_consent(db_session, signed.consent.id)
    parsed = _valid_r4(resource)
    assert parsed.status == "active" and "extension" not in resource
    assert parsed.patient.identifier.value == signed.consent.pseudonym
    assert parsed.dateTime == parsed.provision.period.start == _ms(signed.consent.signed_at)
    assert parsed.provision.period.end is None
    assert parsed.provision.type == "deny"  # nothing beyond the modules the donor agreed to
    assert "end" not in _permit(resource, HMB)["period"]
    assert "end" not in _permit(resource, GRU)["period"]
    assert typed_name not in json.dumps(resource)


def test_the_source_is_the_signed_template_version_checkable_against_the_policy(
    db_session: Session, template, sign
) -> None:  # type: ignore[no-untyped-def]
    resource = consents.to_fhir_consent(db_session, sign(template).consent.id)
    source = _valid_r4(resource).sourceAttachment
    assert source is not None and source.language == template.language
    text = base64.b64decode(resource["sourceAttachment"]["data"])
    assert hashlib.sha256(text).hexdigest() == template.id
    assert resource["policy"][0]["uri"].endswith(f"sha256:{template.id}")
    assert json.loads(text)["body"] == template.body


def test_a_module_withdrawn_alone_ends_its_permit_and_the_consent_stays_active(
    db_session: Session, template, sign
) -> None:  # type: ignore[no-untyped-def]
    signed = sign(template)
    (event,) = consents.withdraw_modules(db_session, signed.consent.id, ["general_research"])
    resource = consents.to_fhir_consent(db_session, signed.consent.id)
    parsed = _valid_r4(resource)
    assert parsed.status == "active" and "extension" not in resource
    assert parsed.provision.period.end is None
    assert _at(_permit(resource, GRU)["period"]["end"]) == _ms(event.at)
    assert "end" not in _permit(resource, HMB)["period"]


@pytest.mark.parametrize("mode", [consents.STOP_USE, consents.ERASE])
def test_a_full_withdrawal_ends_the_consent_and_records_the_donors_choice(
    db_session: Session, template, sign, mode: str
) -> None:  # type: ignore[no-untyped-def]
    signed = sign(template)
    withdrawn_at = _ms(consents.withdraw_consent(db_session, signed.consent.id, mode=mode).event.at)
    resource = consents.to_fhir_consent(db_session, signed.consent.id)
    parsed = _valid_r4(resource)
    assert parsed.status == "inactive"
    assert resource["extension"] == [{"url": WITHDRAWAL_MODE_EXTENSION, "valueCode": mode}]
    assert parsed.dateTime == _ms(signed.consent.signed_at)
    assert parsed.provision.type == "deny"
    assert parsed.provision.period.end == withdrawn_at
    for term in (HMB, GRU):
        assert _at(_permit(resource, term)["period"]["end"]) == withdrawn_at


def test_duo_modifiers_are_nested_denials_in_every_permit_not_codes_beside_it(
    db_session: Session, template, sign
) -> None:  # type: ignore[no-untyped-def]
    resource = consents.to_fhir_consent(db_session, sign(template).consent.id)
    _valid_r4(resource)
    for term in (HMB, GRU):
        permit = _permit(resource, term)
        assert _codes(permit) == {term}
        nested = sorted((rule["type"], *_codes(rule)) for rule in permit["provision"])
        assert nested == [("deny", PUB), ("deny", NCU)]


def test_the_modifiers_of_a_module_withdrawn_alone_stop_restricting_the_others(
    db_session: Session, spec_with, sign
) -> None:  # type: ignore[no-untyped-def]
    modules = [
        {"id": "research", "title": "Health research", "required": True, "duo": [HMB]},
        {"id": "other", "title": "Other research", "required": False, "duo": [GRU, NCU]},
    ]
    template = consents.publish_template(db_session, spec_with(version="fhir", modules=modules))
    signed = sign(template, modules=("research", "other"))
    before = consents.to_fhir_consent(db_session, signed.consent.id)
    assert [_codes(rule) for rule in _permit(before, HMB)["provision"]] == [{NCU}]
    consents.withdraw_modules(db_session, signed.consent.id, ["other"])
    resource = consents.to_fhir_consent(db_session, signed.consent.id)
    _valid_r4(resource)
    assert "provision" not in _permit(resource, HMB)
    assert [_codes(rule) for rule in _permit(resource, GRU)["provision"]] == [{NCU}]


def test_the_template_exports_as_a_valid_questionnaire(template) -> None:  # type: ignore[no-untyped-def]
    resource = consents.to_fhir_questionnaire(template)
    parsed = Questionnaire.model_validate(resource)
    assert [item.linkId for item in parsed.item] == [m["id"] for m in template.modules]
    assert parsed.url.endswith(template.id)
