"""Validation of research forms and API bodies: shape only, never the database."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from consent import duo_matching
from donation_portal.web.schemas import CappedListsSchema

_CODE = validate.Regexp(r"^[A-Za-z][A-Za-z0-9_]*:[A-Za-z0-9_.-]+$", error="Not a disease code.")


class FormSchema(Schema):
    """Forms also carry the CSRF token and button names: those are not ours to check."""

    class Meta:
        unknown = EXCLUDE


class ProfileSchema(FormSchema):
    affiliation = fields.String(required=True, validate=validate.Length(min=2, max=200))
    public_key = fields.String(required=True, validate=validate.Length(min=10, max=2000))


class UseSchema(Schema):
    purpose = fields.String(
        required=True,
        validate=validate.OneOf(duo_matching.PURPOSES, error="Unknown research purpose."),
    )
    disease = fields.String(load_default=None, validate=_CODE, allow_none=True)
    commercial = fields.Boolean(load_default=False)
    not_for_profit = fields.Boolean(load_default=False)
    publishes = fields.Boolean(load_default=False)
    methods_development = fields.Boolean(load_default=False)

    @validates_schema
    def _disease_only_for_disease_research(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("disease") and data.get("purpose") != "disease":
            raise ValidationError(
                "A disease is named only for disease-specific research (DUO:0000007).", "disease"
            )


_CS = validate.Regexp(r"^[A-Z0-9_ ]{1,16}$", error="Not a DICOM code string.")
# DICOM defines about 40 modalities and a few hundred body parts; a cohort names a handful
MAX_MODALITIES = 50
MAX_BODY_PARTS = 100
_AGE = validate.Range(min=0, max=150)
_YEAR = validate.Range(min=1800, max=2200)


class FilterSchema(CappedListsSchema):
    """Cohort filters on de-identified metadata; an empty filter selects everything."""

    modalities = fields.List(
        fields.String(validate=_CS),
        load_default=list,
        validate=validate.Length(
            max=MAX_MODALITIES, error=f"Name at most {MAX_MODALITIES} modalities."
        ),
    )
    body_parts = fields.List(
        fields.String(validate=_CS),
        load_default=list,
        validate=validate.Length(
            max=MAX_BODY_PARTS, error=f"Name at most {MAX_BODY_PARTS} body parts."
        ),
    )
    sexes = fields.List(
        fields.String(validate=validate.OneOf(("F", "M", "O"), error="Sex is F, M or O.")),
        load_default=list,
        validate=validate.Length(max=3, error="Name each sex at most once."),
    )
    age_min = fields.Integer(load_default=None, allow_none=True, validate=_AGE)
    age_max = fields.Integer(load_default=None, allow_none=True, validate=_AGE)
    study_year_min = fields.Integer(load_default=None, allow_none=True, validate=_YEAR)
    study_year_max = fields.Integer(load_default=None, allow_none=True, validate=_YEAR)

    @validates_schema
    def _ranges(self, data: dict[str, Any], **_: Any) -> None:
        for low, high in (("age_min", "age_max"), ("study_year_min", "study_year_max")):
            if data.get(low) is not None and data.get(high) is not None and data[low] > data[high]:
                raise ValidationError("The lower bound is above the upper bound.", high)


class RequestSchema(Schema):
    title = fields.String(required=True, validate=validate.Length(min=3, max=200))
    abstract = fields.String(required=True, validate=validate.Length(min=10, max=20000))
    use = fields.Nested(UseSchema, required=True)
    filters = fields.Nested(FilterSchema, load_default=dict)


class ApprovalSchema(FormSchema):
    decision = fields.String(required=True, validate=validate.OneOf(("approve", "reject")))
    expires = fields.Date(load_default=None)
    reason = fields.String(load_default="", validate=validate.Length(max=500))
