"""Consent library: templates, consent records, withdrawal, receipts, audit trail, FHIR export.

Plain Python (no Flask). The portal composes it; every function below takes the caller's
SQLAlchemy session and writes in the caller's transaction (the caller commits).

Templates
    load_template_file(path) -> spec, validate_template_spec(raw) -> spec,
    publish_template(session, spec, actor=...) -> ConsentTemplate (idempotent; a changed text
    under a published name/version/language raises TemplateConflict),
    current_template(session, language="en", name=None), templates(session, ...),
    default_template_spec() (English), default_template_specs() (every language),
    template_id(spec), template_is_intact(template), ensure_signable(session, template),
    duo_terms_table() -> {id: DuoTerm}.
Records (state is derived from append-only events; each event is audited as consent.<kind>)
    ``consent.signing``: sign_consent(...) -> SignedConsent(consent, event, withdrawal_code),
    reconsent(...) -> SignedConsent (the previous consent is superseded).
    ``consent.policy`` (pure): the state a consent's events and expiry mean; an unknown
    consent ID is UnknownConsent, never active.
    ``consent.queries``: get_consent, events, state/states/in_force, active_consent,
    excluded_ids, granted_modules, duo_terms, needs_review(session, subject_ref, language),
    expiring. ``consent.expiry``: expire_due.
    ``consent.withdrawal``: withdraw_consent(session, id, mode="stop_use"|"erase") -> Withdrawal,
    withdraw_modules(session, id, modules) -> [ConsentEvent], check_withdrawal_code, and
    with the receipt's code: withdraw_consent_with_code -> Withdrawal,
    withdraw_modules_with_code -> [ConsentEvent].
Receipts: ReceiptSigner (Ed25519 key), issue_receipt/build_receipt/sign_receipt,
    verify_receipt(document, keys) -> content (InvalidReceipt otherwise), public_keys(jwks).
FHIR R4: to_fhir_consent(session, id), to_fhir_questionnaire(template).
Audit trail: ``consent.audit`` (record, verify -> VerifyResult, query, head).
"""

from consent import audit
from consent.db import ConsentBase
from consent.duo import DUO_SYSTEM, DuoTerm
from consent.duo import duo_terms as duo_terms_table
from consent.errors import (
    AlreadyWithdrawn,
    ConsentError,
    InvalidModule,
    InvalidReceipt,
    InvalidSignature,
    InvalidTemplate,
    NotActive,
    NoTemplate,
    NotSignable,
    TemplateConflict,
    UnknownConsent,
    WrongWithdrawalCode,
)
from consent.expiry import expire_due
from consent.fhir import to_fhir_consent, to_fhir_questionnaire
from consent.models import AuditEntry, Consent, ConsentEvent, ConsentTemplate
from consent.policy import ACTIVE, EXPIRED, SUPERSEDED, WITHDRAWN
from consent.queries import (
    active_consent,
    duo_terms,
    events,
    excluded_ids,
    expiring,
    get_consent,
    granted_modules,
    in_force,
    needs_review,
    state,
    states,
)
from consent.receipts import (
    build_receipt,
    issue_receipt,
    public_keys,
    sign_receipt,
    verify_receipt,
)
from consent.sealing import Sealer
from consent.signing import SignedConsent, reconsent, sign_consent
from consent.signing_keys import ReceiptSigner
from consent.template_spec import load_template_file, validate_template_spec
from consent.templates import (
    current_template,
    default_template_spec,
    default_template_specs,
    ensure_signable,
    publish_template,
    template_id,
    template_is_intact,
    templates,
)
from consent.withdrawal import (
    ERASE,
    STOP_USE,
    Withdrawal,
    check_withdrawal_code,
    withdraw_consent,
    withdraw_consent_with_code,
    withdraw_modules,
    withdraw_modules_with_code,
)

__all__ = [
    "ACTIVE",
    "DUO_SYSTEM",
    "ERASE",
    "EXPIRED",
    "STOP_USE",
    "SUPERSEDED",
    "WITHDRAWN",
    "AlreadyWithdrawn",
    "AuditEntry",
    "Consent",
    "ConsentBase",
    "ConsentError",
    "ConsentEvent",
    "ConsentTemplate",
    "DuoTerm",
    "InvalidModule",
    "InvalidReceipt",
    "InvalidSignature",
    "InvalidTemplate",
    "NoTemplate",
    "NotActive",
    "NotSignable",
    "ReceiptSigner",
    "Sealer",
    "SignedConsent",
    "TemplateConflict",
    "UnknownConsent",
    "Withdrawal",
    "WrongWithdrawalCode",
    "active_consent",
    "audit",
    "build_receipt",
    "check_withdrawal_code",
    "current_template",
    "default_template_spec",
    "default_template_specs",
    "duo_terms",
    "duo_terms_table",
    "ensure_signable",
    "events",
    "excluded_ids",
    "expire_due",
    "expiring",
    "get_consent",
    "granted_modules",
    "in_force",
    "issue_receipt",
    "load_template_file",
    "needs_review",
    "public_keys",
    "publish_template",
    "reconsent",
    "sign_consent",
    "sign_receipt",
    "state",
    "states",
    "template_id",
    "template_is_intact",
    "templates",
    "to_fhir_consent",
    "to_fhir_questionnaire",
    "validate_template_spec",
    "verify_receipt",
    "withdraw_consent",
    "withdraw_consent_with_code",
    "withdraw_modules",
    "withdraw_modules_with_code",
]
