"""De-identification profiles: the Basic Profile plus the PS3.15 E.3 options.

Option names (used by the API, the CLI's ``--option`` and the JSON report):

=============================  ==========================================================
``retain_long_full_dates``     Retain Longitudinal Temporal Information, Full Dates
``retain_long_modified_dates`` Retain Longitudinal Temporal Information, Modified Dates
``retain_patient_chars``       Retain Patient Characteristics
``retain_device_id``           Retain Device Identity
``retain_institution_id``      Retain Institution Identity
``retain_uids``                Retain UIDs
``retain_safe_private``        Retain Safe Private (TCIA's private tag knowledge base)
``clean_descriptors``          Clean Descriptors (allow-list of imaging vocabulary)
``clean_structured_content``   Clean Structured Content (SR trees are cleaned, then reviewed)
``clean_graphics``             Clean Graphics (overlays/curves kept, output reviewed)
=============================  ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from anonymize.outcome import DeidentificationError

OPTIONS: tuple[str, ...] = (
    "retain_long_full_dates",
    "retain_long_modified_dates",
    "retain_patient_chars",
    "retain_device_id",
    "retain_institution_id",
    "retain_uids",
    "retain_safe_private",
    "clean_descriptors",
    "clean_structured_content",
    "clean_graphics",
)

# CID 7050 "De-identification Method" codes (scheme DCM).
BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
OPTION_CODES: dict[str, tuple[str, str]] = {
    "clean_graphics": ("113103", "Clean Graphics Option"),
    "clean_structured_content": ("113104", "Clean Structured Content Option"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "retain_long_full_dates": (
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
    ),
    "retain_long_modified_dates": (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    "retain_patient_chars": ("113108", "Retain Patient Characteristics Option"),
    "retain_device_id": ("113109", "Retain Device Identity Option"),
    "retain_uids": ("113110", "Retain UIDs Option"),
    "retain_safe_private": ("113111", "Retain Safe Private Option"),
    "retain_institution_id": ("113112", "Retain Institution Identity Option"),
}

_DEFAULT = frozenset(
    {
        "retain_long_modified_dates",
        "retain_patient_chars",
        "clean_descriptors",
        "retain_safe_private",
    }
)
_NAMED: dict[str, frozenset[str]] = {
    "basic": frozenset(),
    "default": _DEFAULT,
    "tcia": _DEFAULT,
}


@dataclass(frozen=True)
class Profile:
    """A set of PS3.15 options applied on top of the Basic Profile."""

    options: frozenset[str]

    def __post_init__(self) -> None:
        options = frozenset(self.options)
        object.__setattr__(self, "options", options)
        unknown = options - set(OPTIONS)
        if unknown:
            raise DeidentificationError(f"unknown option(s): {', '.join(sorted(unknown))}")
        if {"retain_long_full_dates", "retain_long_modified_dates"} <= options:
            raise DeidentificationError("full and modified dates options are exclusive")

    @classmethod
    def default(cls) -> Profile:
        """Basic + Retain Longitudinal (modified dates) + Retain Patient Characteristics +
        Clean Descriptors + Retain Safe Private: the profile TCIA publishes with."""
        return cls(_DEFAULT)

    @classmethod
    def named(cls, name: str) -> Profile:
        """``basic``, ``default`` or its alias ``tcia``."""
        try:
            return cls(_NAMED[name.strip().lower()])
        except KeyError:
            raise DeidentificationError(f"unknown profile name: {name}") from None

    def with_options(self, *names: str) -> Profile:
        """This profile plus more options."""
        return Profile(self.options | frozenset(names))

    def ordered(self) -> tuple[str, ...]:
        """Option names in canonical order (for the output and the report)."""
        return tuple(name for name in OPTIONS if name in self.options)

    def __contains__(self, name: object) -> bool:
        return name in self.options
