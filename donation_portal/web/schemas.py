"""Validation of what arrives over HTTP. Schemas check shape only; they never touch the database."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, pre_load, validate, validates_schema

from donation_portal.web.limits import MAX_SQL_INTEGER
from donation_portal.workflows.accounts import MAX_PASSWORD_LENGTH, password_problem

MAX_MODULES = 50  # a consent template has a few optional modules; more is not a choice
_MODULES = validate.Length(max=MAX_MODULES, error=f"Choose at most {MAX_MODULES} modules.")

_EMAIL = fields.Email(
    required=True,
    validate=validate.Length(max=254),
    error_messages={"invalid": "Enter a valid e-mail address."},
)


class CappedListsSchema(Schema):
    """A schema whose lists' lengths (their ``validate.Length``) are checked before their
    items: a list of 100,000 bad items gets one message, not a reply of 100,000."""

    @pre_load
    def _lists_within_caps(self, data: Any, **_: Any) -> Any:
        if not isinstance(data, dict):
            return data
        errors: dict[str, Any] = {}
        for name, field in self.load_fields.items():
            key = field.data_key or name
            if not isinstance(field, fields.List) or not isinstance(data.get(key), list):
                continue
            for rule in field.validators:
                if isinstance(rule, validate.Length):
                    try:
                        rule(data[key])
                    except ValidationError as error:
                        errors[key] = error.messages
        if errors:
            raise ValidationError(errors)
        return data


class _NewPasswordSchema(Schema):
    """``password`` typed twice, and good enough (OWASP ASVS 2.1: ``accounts``)."""

    # its rules are accounts.password_problem's; the bound only stops huge input early
    password = fields.String(required=True, validate=validate.Length(max=4 * MAX_PASSWORD_LENGTH))
    password_confirm = fields.String(required=True)

    @validates_schema
    def _password_good(self, data: dict[str, Any], **_: Any) -> None:
        # the e-mail address where the form has it; the use cases check again with the
        # account's own address
        problem = password_problem(data.get("password", ""), data.get("email") or "")
        if problem is not None:
            raise ValidationError(problem, "password")

    @validates_schema
    def passwords_match(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("password") != data.get("password_confirm"):
            raise ValidationError("The two passwords differ.", "password_confirm")


class RegisterSchema(_NewPasswordSchema):
    email = _EMAIL


class ChangePasswordSchema(_NewPasswordSchema):
    current_password = fields.String(
        required=True,
        validate=validate.Length(min=1, max=200, error="Please type your current password."),
    )


class ResetRequestSchema(Schema):
    email = _EMAIL


class ResetPasswordSchema(_NewPasswordSchema):
    """The link's token, and the new password."""

    token = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z0-9_-]{40,64}$"))


class LoginSchema(Schema):
    email = fields.String(required=True, validate=validate.Length(min=3, max=254))
    password = fields.String(required=True, validate=validate.Length(min=1, max=200))


class SignConsentSchema(CappedListsSchema):
    template_id = fields.String(required=True, validate=validate.Regexp(r"^[0-9a-f]{64}$"))
    modules = fields.List(
        fields.String(validate=validate.Length(max=64)), load_default=list, validate=_MODULES
    )
    full_name = fields.String(
        required=True,
        validate=validate.Length(min=2, max=200, error="Please type your full name to sign."),
    )


class UploadSchema(Schema):
    submission_key = fields.String(required=True, validate=validate.Regexp(r"^[0-9a-f]{32}$"))


_CHOOSE_MODE = "Choose whether your files are erased or kept but no longer used."
_MODE = validate.OneOf(("stop_use", "erase"), error=_CHOOSE_MODE)


class WithdrawSchema(CappedListsSchema):
    """Withdraw the whole consent (no modules ticked) or only the optional modules ticked."""

    confirm = fields.String(
        required=True,
        validate=validate.Equal("yes", error="Tick the box to confirm that you want to withdraw."),
    )
    scope = fields.String(
        required=True,
        validate=validate.OneOf(("all", "modules"), error="Choose what to withdraw."),
    )
    # Chosen by the donor for a whole withdrawal, never assumed; None for modules (files stay).
    mode = fields.String(load_default=None, validate=_MODE)
    modules = fields.List(
        fields.String(validate=validate.Length(max=64)), load_default=list, validate=_MODULES
    )

    @validates_schema
    def _parts_chosen(self, data: dict[str, Any], **_: Any) -> None:
        """ "Only some parts" with none ticked must not withdraw the whole consent."""
        if data.get("scope") == "modules" and not data.get("modules"):
            raise ValidationError("Tick the part(s) you want to withdraw.", "modules")

    @validates_schema(skip_on_field_errors=False)
    def _mode_chosen(self, data: dict[str, Any], **_: Any) -> None:
        """What happens to the files of a whole withdrawal is the donor's explicit choice."""
        if data.get("scope") == "all" and data.get("mode") is None:
            raise ValidationError(_CHOOSE_MODE, "mode")


class CodeWithdrawSchema(WithdrawSchema):
    consent_id = fields.String(
        required=True,
        validate=validate.Length(min=10, max=64, error="Enter the consent ID from your receipt."),
    )
    code = fields.String(
        required=True,
        validate=validate.Length(
            min=8, max=64, error="Enter the withdrawal code from your receipt."
        ),
    )


def load_form(schema: Schema, form: Any, lists: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a Werkzeug form into ``schema``: single values, except the fields named in ``lists``."""
    data: dict[str, Any] = {key: form.get(key) for key in form if key != "csrf_token"}
    for key in lists:
        data[key] = form.getlist(key)
    loaded: dict[str, Any] = schema.load(data, unknown="exclude")  # many=False: one dict
    return loaded


def first_errors(error: ValidationError) -> list[str]:
    """Flatten marshmallow's messages into sentences for the page, labelled by field."""
    messages: list[str] = []

    def walk(value: Any, label: str) -> None:
        if isinstance(value, str):
            generic = value.startswith(("Missing data", "Field may not", "Not a valid"))
            messages.append(f"{label}: {value}" if label and generic else value)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, label or str(key).replace("_", " ").capitalize())
        elif isinstance(value, list):
            for item in value:
                walk(item, label)

    walk(error.messages, "")
    return messages


class DecisionSchema(Schema):
    decision = fields.String(
        required=True,
        validate=validate.OneOf(("approve", "reject"), error="Choose approve or reject."),
    )
    reason = fields.String(load_default="", validate=validate.Length(max=500))


class AuditFilterSchema(Schema):
    action = fields.String(load_default=None, validate=validate.Length(max=80))
    actor = fields.String(load_default=None, validate=validate.Length(max=100))
    subject_id = fields.String(load_default=None, validate=validate.Length(max=100))
    since = fields.Date(load_default=None)
    until = fields.Date(load_default=None)
    before_id = fields.Integer(
        load_default=None,
        validate=validate.Range(
            min=1, max=MAX_SQL_INTEGER, error="There is no audit entry with that number."
        ),
    )
