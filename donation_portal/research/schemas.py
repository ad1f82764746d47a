"""Validation of research forms and API bodies: shape only, never the database."""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields, validate

from consent import duo_matching

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


class FilterSchema(Schema):
    modalities = fields.List(fields.String(validate=validate.Length(max=16)), load_default=list)


class RequestSchema(Schema):
    title = fields.String(required=True, validate=validate.Length(min=3, max=200))
    abstract = fields.String(required=True, validate=validate.Length(min=10, max=20000))
    use = fields.Nested(UseSchema, required=True)
    filters = fields.Nested(FilterSchema, load_default=dict)


class ApprovalSchema(FormSchema):
    decision = fields.String(required=True, validate=validate.OneOf(("approve", "reject")))
    expires = fields.Date(load_default=None)
    reason = fields.String(load_default="", validate=validate.Length(max=500))
