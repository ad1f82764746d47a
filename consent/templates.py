"""Consent templates: canonical form, identity by hash, publishing, and which one is signable."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from importlib import resources
from typing import Any

import yaml
from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from consent import audit
from consent.canonical import as_utc, canonical_json, iso_utc
from consent.db import utcnow
from consent.errors import NoTemplate, NotSignable, TemplateConflict
from consent.models import ConsentTemplate
from consent.template_spec import OPTIONAL_FIELDS, REQUIRED_FIELDS, validate_template_spec

DEFAULT_TEMPLATE_FILES = ("imaging-donation.en.yaml", "imaging-donation.de.yaml")


def canonical_form(spec: Mapping[str, Any]) -> bytes:
    """The bytes a template version is identified by: its validated fields as canonical JSON.

    Optional fields that are unset are left out, so adding an optional field to the format
    does not change the identity of templates that do not use it.
    """
    valid = validate_template_spec(spec)
    content = {}
    for field in REQUIRED_FIELDS + OPTIONAL_FIELDS:
        value = valid.get(field)
        if value is None:
            continue
        content[field] = iso_utc(value) if isinstance(value, datetime) else value
    return canonical_json(content)


def template_id(spec: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_form(spec)).hexdigest()


def template_spec(template: ConsentTemplate) -> dict[str, Any]:
    """The spec a published template was made from (its hash recomputes to ``template.id``)."""
    spec = {field: getattr(template, field) for field in REQUIRED_FIELDS + OPTIONAL_FIELDS}
    return {field: value for field, value in spec.items() if value is not None}


def template_is_intact(template: ConsentTemplate) -> bool:
    """Whether the stored template still hashes to its ID (nobody edited the row)."""
    return template_id(template_spec(template)) == template.id


def _packaged_spec(file_name: str) -> dict[str, Any]:
    text = resources.files("consent").joinpath("data", file_name).read_text("utf-8")
    return validate_template_spec(yaml.safe_load(text))


def default_template_spec() -> dict[str, Any]:
    """The shipped default template in English."""
    return _packaged_spec(DEFAULT_TEMPLATE_FILES[0])


def default_template_specs() -> list[dict[str, Any]]:
    """The shipped default template in every language it is translated to."""
    return [_packaged_spec(name) for name in DEFAULT_TEMPLATE_FILES]


def publish_template(
    session: Session, spec: Mapping[str, Any], *, actor: str = audit.SYSTEM
) -> ConsentTemplate:
    """Publish a template version; publishing the same content twice returns the same row.

    A new version is audited as ``template.published`` by ``actor``.

    Raises InvalidTemplate for a malformed spec and TemplateConflict when the same name,
    version and language was published with other content: a changed text needs a new version.
    """
    valid = validate_template_spec(spec)
    identifier = template_id(valid)
    existing = session.get(ConsentTemplate, identifier)
    if existing is not None:
        return existing
    clash = session.scalars(
        select(ConsentTemplate).where(
            ConsentTemplate.name == valid["name"],
            ConsentTemplate.version == valid["version"],
            ConsentTemplate.language == valid["language"],
        )
    ).first()
    if clash is not None:
        raise TemplateConflict(
            f"{valid['name']} version {valid['version']} ({valid['language']}) is already "
            "published with different content; give the changed text a new version"
        )
    fields = {field: valid.get(field) for field in REQUIRED_FIELDS + OPTIONAL_FIELDS}
    template = ConsentTemplate(id=identifier, **fields)
    session.add(template)
    session.flush()
    audit.record(
        session,
        "template.published",
        actor=actor,
        subject_type="consent_template",
        subject_id=identifier,
        detail={key: valid[key] for key in ("name", "version", "language")},
    )
    return template


def is_valid_at(template: ConsentTemplate, moment: datetime | None = None) -> bool:
    """Whether ``moment`` (default: now) lies in the template's signing period."""
    moment = as_utc(moment or utcnow())
    if template.valid_from is not None and moment < as_utc(template.valid_from):
        return False
    return template.valid_until is None or moment < as_utc(template.valid_until)


def ensure_signable(
    session: Session, template: ConsentTemplate, at: datetime | None = None
) -> None:
    """Raise NotSignable unless ``template`` is published, unaltered and valid at ``at``."""
    state = inspect(template)
    published = state.persistent and session.get(ConsentTemplate, template.id) is template
    if not published:
        raise NotSignable("This consent text is not published, so it cannot be signed.")
    if not template_is_intact(template):
        raise NotSignable("This consent text does not match its published version.")
    moment = as_utc(at or utcnow())
    if template.valid_from is not None and moment < as_utc(template.valid_from):
        raise NotSignable("This consent text is not valid yet, so it cannot be signed.")
    if template.valid_until is not None and moment >= as_utc(template.valid_until):
        raise NotSignable("This consent text has expired; please sign the current one.")


def templates(
    session: Session, *, name: str | None = None, language: str | None = None
) -> list[ConsentTemplate]:
    """Published templates, newest first (for the steward pages)."""
    query = select(ConsentTemplate).order_by(ConsentTemplate.published_at.desc())
    if name is not None:
        query = query.where(ConsentTemplate.name == name)
    if language is not None:
        query = query.where(ConsentTemplate.language == language)
    return list(session.scalars(query))


def current_template(
    session: Session, language: str = "en", name: str | None = None
) -> ConsentTemplate:
    """The most recently published template in ``language`` that can be signed now."""
    for template in templates(session, name=name, language=language):
        if is_valid_at(template):
            return template
    raise NoTemplate("No consent text is currently published in this language.")
