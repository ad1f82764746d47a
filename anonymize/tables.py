"""The confidentiality profile and the private tag knowledge base, as shipped data.

The files in ``data/`` are produced by ``scripts/build_deid_tables.py`` from the standard's
table; nothing here is typed by hand except how compound actions are resolved.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

# Attributes that are Type 1 in some common IOD (Enhanced multi-frame, SR, equipment modules):
# their compound X/Z/D or Z/D action resolves to D (dummy) rather than Z (empty).
TYPE1_SOMEWHERE = frozenset(
    {
        0x0008002A,  # Acquisition DateTime
        0x00080023,  # Content Date
        0x00080033,  # Content Time
        0x00181000,  # Device Serial Number
        0x00189919,  # Instruction Performed DateTime
        0x00700084,  # Content Creator's Name
    }
)


@dataclass(frozen=True)
class Rule:
    """One row of Table E.1-1."""

    name: str
    basic: str
    options: dict[str, str]


def resolve_compound(tag: int, action: str) -> str:
    """Resolve X/Z, X/D, X/Z/D, Z/D and X/Z/U* to one action that keeps the object valid.

    Without knowing the IOD we keep what a Type 2 attribute needs (Z) and what a Type 1
    attribute needs (D) where the attribute is Type 1 somewhere; X/Z/U* keeps the sequence and
    remaps the UIDs it contains ('R').
    """
    if action == "X/Z/U*":
        return "R"
    if action == "X/Z":
        return "Z"
    if action == "X/D":
        return "D"
    if action in ("X/Z/D", "Z/D"):
        return "D" if tag in TYPE1_SOMEWHERE else "Z"
    return action


def _read(name: str) -> dict[str, Any]:
    text = resources.files("anonymize").joinpath(f"data/{name}").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@lru_cache(maxsize=1)
def profile_rules() -> dict[int, Rule]:
    """Table E.1-1 keyed by integer tag."""
    data = _read("confidentiality_profile.json")
    return {
        int(tag, 16): Rule(row["name"], row["basic"], dict(row["options"]))
        for tag, row in data["attributes"].items()
    }


@lru_cache(maxsize=1)
def pattern_rules() -> dict[str, Rule]:
    """The masked rows: '50XXXXXX' (curves), '60XX3000', '60XX4000' (overlays), 'private'."""
    data = _read("confidentiality_profile.json")
    return {row["mask"]: Rule(row["name"], row["basic"], dict(row["options"])) for row in
            data["patterns"]}


@lru_cache(maxsize=1)
def safe_private() -> dict[str, str]:
    """Private signature -> 'k' (keep), 'h' (remap UID) or 'o' (shift date)."""
    return dict(_read("safe_private_tags.json")["signatures"])


def effective_action(tag: int, rule: Rule, options: frozenset[str]) -> str:
    """The single action for ``rule`` under ``options``.

    A selected option's entry overrides the Basic Profile; when several selected options have
    an entry, C (clean) wins over K (keep) because it is the more conservative.
    """
    chosen = [action for option, action in rule.options.items() if option in options]
    if chosen:
        return "C" if "C" in chosen else chosen[0]
    return resolve_compound(tag, rule.basic)
