"""Errors of the consent library; messages are safe to show to the donor (they carry no PHI)."""


class ConsentError(Exception):
    """A consent operation was refused; str(error) explains why to the person who asked."""


class NoTemplate(ConsentError):
    """No template is published (and currently valid) for the language asked for."""


class InvalidTemplate(ConsentError, ValueError):
    """A template file or spec is malformed; the message lists every problem found."""


class TemplateConflict(InvalidTemplate):
    """A template with the same name, version and language but other content is published."""


class InvalidSignature(ConsentError):
    """A donor's signature was refused (missing required part, no typed name, ...)."""


class NotSignable(InvalidSignature):
    """The template is not published, not yet valid, or expired."""


class NotActive(ConsentError):
    """The consent is no longer active (withdrawn, expired or superseded) for this operation."""


class AlreadyWithdrawn(NotActive):
    """The consent was already withdrawn: a withdrawal code cannot be used twice."""


class UnknownConsent(ConsentError):
    """No consent has this ID. An unknown ID has no state: it is never taken for active."""

    def __init__(
        self, message: str = "No consent has this ID. Please check it against your receipt."
    ) -> None:
        super().__init__(message)


class WrongWithdrawalCode(ConsentError):
    """The withdrawal code does not belong to this consent."""


class InvalidModule(ConsentError):
    """A module cannot be withdrawn: unknown, not granted, already withdrawn, or required."""


class InvalidReceipt(ConsentError):
    """A receipt is malformed, was altered, or was not signed by the key it was checked with."""
