"""Sending e-mail: over SMTP as configured, or into a folder when developing.

``mailer_from_settings`` picks the way: SMTP when ``SMTP_HOST`` is set; otherwise, outside
production, each message is written as a ``.eml`` file to ``MAIL_DIR`` (inside the instance
folder), where a developer (``/dev/mail``) or a test reads it. Production without SMTP sends
nothing and says so: a reset link must never land on the server's disk.

Messages carry links that log their reader in, so neither a message nor its recipient is
ever logged; a failure is logged with its exception type only.
"""

from __future__ import annotations

import email.policy
import secrets
import smtplib
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, Protocol

SMTP_TIMEOUT_SECONDS = 15


class MailError(Exception):
    """A message could not be sent (not configured, or the server refused it)."""


@dataclass(frozen=True)
class Message:
    to: str
    subject: str
    body: str  # plain text


class Mailer(Protocol):
    def send(self, message: Message) -> None: ...


def _compose(message: Message, sender: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = message.to
    mail["Subject"] = message.subject
    mail.set_content(message.body)
    return mail


@dataclass(frozen=True)
class SmtpMailer:
    host: str
    port: int
    sender: str
    user: str = ""
    password: str = ""
    starttls: bool = True

    def send(self, message: Message) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=SMTP_TIMEOUT_SECONDS) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.user:
                    smtp.login(self.user, self.password)
                smtp.send_message(_compose(message, self.sender))
        except (OSError, smtplib.SMTPException) as exc:
            reason = type(exc).__name__
            raise MailError(f"the SMTP server did not take the message ({reason})") from exc


@dataclass(frozen=True)
class FolderMailer:
    """Development and tests: each message becomes a file in ``directory``."""

    directory: Path
    sender: str

    def send(self, message: Message) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{secrets.token_hex(4)}.eml"
        mail = _compose(message, self.sender)
        (self.directory / name).write_bytes(mail.as_bytes(policy=email.policy.SMTP))


@dataclass(frozen=True)
class Unconfigured:
    """Production without SMTP: refuse, rather than keep reset links on disk."""

    def send(self, message: Message) -> None:
        raise MailError("no SMTP server is configured (PORTAL_SMTP_HOST)")


def mailer_from_settings(settings: Mapping[str, Any]) -> Mailer:
    sender = str(settings["MAIL_FROM"])
    if settings["SMTP_HOST"]:
        return SmtpMailer(
            host=str(settings["SMTP_HOST"]),
            port=int(settings["SMTP_PORT"]),
            sender=sender,
            user=str(settings["SMTP_USER"]),
            password=str(settings["SMTP_PASSWORD"]),
            starttls=bool(settings["SMTP_STARTTLS"]),
        )
    if settings["ENV"] == "production":
        return Unconfigured()
    return FolderMailer(Path(settings["MAIL_DIR"]), sender)


@dataclass(frozen=True)
class StoredMessage:
    name: str  # the file's name: sorts by the time it was written
    to: str
    subject: str
    body: str


def read_folder(directory: Path) -> list[StoredMessage]:
    """The messages a FolderMailer wrote to ``directory``, newest first."""
    if not directory.is_dir():
        return []
    parser = BytesParser(policy=email.policy.default)
    messages = []
    for path in sorted(directory.glob("*.eml"), reverse=True):
        mail = parser.parsebytes(path.read_bytes())
        body = mail.get_body(("plain",))
        text = body.get_content() if body is not None else ""
        messages.append(StoredMessage(path.name, str(mail["To"]), str(mail["Subject"]), text))
    return messages
