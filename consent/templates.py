"""Consent templates: canonical form, identity by hash, publishing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent.errors import NoTemplate
from consent.models import ConsentTemplate

_FIELDS = ("name", "version", "language", "title", "summary", "body", "modules")


def canonical_form(spec: Mapping[str, Any]) -> bytes:
    """The bytes a template version is identified by: its fields as sorted, compact JSON."""
    missing = [field for field in _FIELDS if field not in spec]
    if missing:
        raise ValueError(f"template lacks {', '.join(missing)}")
    content = {field: spec[field] for field in _FIELDS}
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def template_id(spec: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_form(spec)).hexdigest()


def default_template_spec() -> dict[str, Any]:
    text = resources.files("consent").joinpath("data/default_template.json").read_text("utf-8")
    return json.loads(text)


def publish_template(session: Session, spec: Mapping[str, Any]) -> ConsentTemplate:
    """Publish a template version; publishing the same content twice returns the same row."""
    identifier = template_id(spec)
    existing = session.get(ConsentTemplate, identifier)
    if existing is not None:
        return existing
    template = ConsentTemplate(id=identifier, **{field: spec[field] for field in _FIELDS})
    session.add(template)
    session.flush()
    return template


def current_template(session: Session, language: str = "en") -> ConsentTemplate:
    """The most recently published template in ``language``."""
    query = (
        select(ConsentTemplate)
        .where(ConsentTemplate.language == language)
        .order_by(ConsentTemplate.published_at.desc())
        .limit(1)
    )
    template = session.scalars(query).first()
    if template is None:
        raise NoTemplate("No consent text has been published yet.")
    return template
