"""Errors of the consent library; messages are safe to show to the donor."""


class ConsentError(Exception):
    """A consent operation was refused; str(error) explains why to the person who asked."""


class NoTemplate(ConsentError):
    pass


class InvalidSignature(ConsentError):
    pass


class NotActive(ConsentError):
    pass
