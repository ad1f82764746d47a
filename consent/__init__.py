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
    sign_consent(...) -> SignedConsent(consent, event, withdrawal_code),
    give_consent(...) -> Consent, state/states/in_force, active_consent, withdrawn_ids,
    excluded_ids, events, get_consent, granted_modules, duo_terms,
    withdraw_consent(session, id, mode="stop_use"|"erase") -> Withdrawal,
    withdraw(session, consent, erase=...), withdraw_modules/withdraw_module,
    check_withdrawal_code, withdraw_with_code(session, id, code, mode=..., modules=None),
    needs_review(session, subject_ref, language), reconsent(...), expiring, expire_due.
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
from consent.fhir import to_fhir_consent, to_fhir_questionnaire
from consent.models import AuditEntry, Consent, ConsentEvent, ConsentTemplate
from consent.receipts import (
    build_receipt,
    issue_receipt,
    public_keys,
    sign_receipt,
    verify_receipt,
)
from consent.records import (
    ACTIVE,
    ERASE,
    EXPIRED,
    STOP_USE,
    SUPERSEDED,
    WITHDRAWN,
    SignedConsent,
    Withdrawal,
    active_consent,
    check_withdrawal_code,
    duo_terms,
    events,
    excluded_ids,
    expire_due,
    expiring,
    get_consent,
    give_consent,
    granted_modules,
    in_force,
    needs_review,
    reconsent,
    sign_consent,
    state,
    states,
    withdraw,
    withdraw_consent,
    withdraw_module,
    withdraw_modules,
    withdraw_with_code,
    withdrawn_ids,
)
from consent.sealing import Sealer
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
    "give_consent",
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
    "withdraw",
    "withdraw_consent",
    "withdraw_module",
    "withdraw_modules",
    "withdraw_with_code",
    "withdrawn_ids",
]
