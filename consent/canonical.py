"""Canonical bytes for hashing and signing: sorted, compact JSON; times as UTC ISO 8601."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any


def canonical_json(value: Any) -> bytes:
    """The one byte form of a JSON value: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def as_utc(moment: datetime) -> datetime:
    """An aware UTC datetime; naive values (SQLite returns those) are taken as UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def iso_utc(moment: datetime) -> str:
    """UTC time with microseconds, e.g. 2026-01-01T00:00:00.000000Z; stable across databases."""
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
