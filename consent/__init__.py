"""Consent library: templates, consent records and their events. Plain Python, no Flask."""

from consent.db import ConsentBase
from consent.errors import ConsentError, InvalidSignature, NotActive, NoTemplate
from consent.models import Consent, ConsentEvent, ConsentTemplate
from consent.records import (
    ACTIVE,
    WITHDRAWN,
    active_consent,
    give_consent,
    state,
    states,
    withdraw,
    withdrawn_ids,
)
from consent.sealing import Sealer
from consent.templates import current_template, default_template_spec, publish_template

__all__ = [
    "ACTIVE",
    "WITHDRAWN",
    "Consent",
    "ConsentBase",
    "ConsentError",
    "ConsentEvent",
    "ConsentTemplate",
    "InvalidSignature",
    "NoTemplate",
    "NotActive",
    "Sealer",
    "active_consent",
    "current_template",
    "default_template_spec",
    "give_consent",
    "publish_template",
    "state",
    "states",
    "withdraw",
    "withdrawn_ids",
]
