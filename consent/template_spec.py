"""Template files (YAML or JSON): strict validation into the normalised spec that is hashed.

A spec holds name, version, language, title, summary, body (Markdown), modules and an optional
validity period (``valid_from``/``valid_until``: when the template may be signed) and
``consent_valid_days`` (how long a consent given to it lasts; absent means until withdrawn).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import yaml

from consent.canonical import as_utc
from consent.duo import PERMISSION, duo_terms
from consent.errors import InvalidTemplate

REQUIRED_FIELDS = ("name", "version", "language", "title", "summary", "body", "modules")
OPTIONAL_FIELDS = ("valid_from", "valid_until", "consent_valid_days")
MODULE_FIELDS = ("id", "title", "description", "required", "duo", "diseases")
_DISEASE_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*:[A-Za-z0-9_.-]+$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Z]{2})?$")
_MODULE_ID = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_LIMITS = {"title": 200, "summary": 2000, "body": 100_000}


def load_template_file(path: str | Path) -> dict[str, Any]:
    """Read and validate a template file (``.yaml``/``.yml`` or ``.json``) into a spec."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidTemplate(f"cannot read template file {path.name}: {exc}") from exc
    try:
        raw = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise InvalidTemplate(f"{path.name} is not valid YAML/JSON: {exc}") from exc
    return validate_template_spec(raw)


def validate_template_spec(raw: Any) -> dict[str, Any]:
    """The normalised spec, or InvalidTemplate listing every problem found."""
    if not isinstance(raw, Mapping):
        raise InvalidTemplate("a template must be a mapping of fields")
    problems: list[str] = []
    spec: dict[str, Any] = {}
    if unknown := sorted(set(map(str, raw)) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS)):
        problems.append(f"unknown field(s): {', '.join(unknown)}")
    if missing := [field for field in REQUIRED_FIELDS if raw.get(field) in (None, "")]:
        problems.append(f"missing field(s): {', '.join(missing)}")
    for field, pattern in (("name", _NAME), ("version", _VERSION), ("language", _LANGUAGE)):
        if field in missing:
            continue
        value = raw[field]
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(text, str) or not pattern.match(text):
            problems.append(f"{field} {value!r} is not valid")
        else:
            spec[field] = text
    for field, limit in _LIMITS.items():
        if field not in missing:
            spec[field] = _text(raw[field], field, limit, problems)
    if "modules" not in missing:
        spec["modules"] = _modules(raw["modules"], problems)
    spec.update(_validity(raw, problems))
    if problems:
        raise InvalidTemplate("invalid consent template: " + "; ".join(problems))
    return spec


def _text(value: Any, field: str, limit: int, problems: list[str]) -> str:
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{field} must be non-empty text")
        return ""
    if len(value) > limit:
        problems.append(f"{field} is longer than {limit} characters")
    return value.strip()


def _modules(value: Any, problems: list[str]) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        problems.append("modules must be a non-empty list")
        return []
    modules = []
    seen: set[str] = set()
    for position, raw in enumerate(value, start=1):
        where = f"module {position}"
        if not isinstance(raw, Mapping):
            problems.append(f"{where} must be a mapping")
            continue
        if unknown := sorted(set(map(str, raw)) - set(MODULE_FIELDS)):
            problems.append(f"{where}: unknown field(s): {', '.join(unknown)}")
        module_id = raw.get("id")
        if not isinstance(module_id, str) or not _MODULE_ID.match(module_id):
            problems.append(f"{where}: id {module_id!r} is not valid (a-z, 0-9, _)")
            module_id = f"#{position}"
        elif module_id in seen:
            problems.append(f"{where}: id {module_id!r} is used twice")
        seen.add(module_id)
        where = f"module {module_id}"
        required = raw.get("required", False)
        if not isinstance(required, bool):
            problems.append(f"{where}: required must be true or false")
        module: dict[str, Any] = {
            "id": module_id,
            "title": _text(raw.get("title"), f"{where}: title", 300, problems),
            "required": required is True,
            "duo": _duo(raw.get("duo", []), where, problems),
        }
        if raw.get("description") is not None:
            module["description"] = _text(
                raw["description"], f"{where}: description", 2000, problems
            )
        if raw.get("diseases") is not None:
            module["diseases"] = _diseases(raw["diseases"], where, problems)
        if not module["required"] and module["duo"] and not _grants_permission(module):
            problems.append(
                f"{where}: an optional module with only DUO modifiers would widen use when "
                "withdrawn; put the modifiers on the module whose use they limit"
            )
        modules.append(module)
    granted = {term for module in modules for term in module["duo"]}
    if modules and not any(duo_terms()[term].kind == PERMISSION for term in granted):
        problems.append("no module grants a DUO permission term (e.g. DUO:0000042, DUO:0000006)")
    return modules


def _grants_permission(module: Mapping[str, Any]) -> bool:
    return any(duo_terms()[term].kind == PERMISSION for term in module["duo"])


def _diseases(value: Any, where: str, problems: list[str]) -> list[str]:
    """The diseases a DS (DUO:0000007) module is limited to, as MONDO or other codes."""
    if not isinstance(value, list) or not all(
        isinstance(code, str) and _DISEASE_CODE.match(code) for code in value
    ):
        problems.append(f"{where}: diseases must be a list of codes such as MONDO:0005015")
        return []
    return sorted(set(value))


def _duo(value: Any, where: str, problems: list[str]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(term, str) for term in value):
        problems.append(f"{where}: duo must be a list of DUO term IDs")
        return []
    table = duo_terms()
    if unknown := [term for term in value if term not in table]:
        problems.append(f"{where}: unknown DUO term(s): {', '.join(unknown)}")
    return sorted({term for term in value if term in table})


def _validity(raw: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for field in ("valid_from", "valid_until"):
        if raw.get(field) is None:
            continue
        try:
            result[field] = parse_moment(raw[field])
        except ValueError:
            problems.append(f"{field} {raw[field]!r} is not a date or ISO 8601 time")
    start, end = result.get("valid_from"), result.get("valid_until")
    if start is not None and end is not None and end <= start:
        problems.append("valid_until must be after valid_from")
    days = raw.get("consent_valid_days")
    if days is not None:
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 36_500:
            problems.append("consent_valid_days must be a whole number of days (1-36500)")
        else:
            result["consent_valid_days"] = days
    return result


def parse_moment(value: Any) -> datetime:
    """A date (midnight UTC), datetime (naive = UTC) or ISO 8601 string as an aware UTC time."""
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=UTC)
    if isinstance(value, str):
        text = value.strip()
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
        return as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    raise ValueError("not a date")
