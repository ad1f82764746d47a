"""Request limits: how much a request may send, and which numbers a URL may carry.

- Every request body is held to MAX_BODY_BYTES (1 MiB), except on the endpoints that
  legitimately receive files: the donation form and the tus uploads (MAX_REQUEST_BYTES) and
  an access request with its ethics approval (ETHICS_MAX_BYTES more). Werkzeug refuses a
  larger ``Content-Length`` with 413 before reading anything, and stops a body without one
  at the limit.
- A form's text fields are held to MAX_FORM_MEMORY_SIZE and its fields to MAX_FORM_PARTS.
  Werkzeug applies both to multipart forms only; a urlencoded form it reads whole (up to the
  body limit, 2 GiB on the upload endpoints) and splits into as many fields as it has ``&``,
  so :class:`BoundedFormParser` holds it to the same two limits.
- ``<int:...>`` in a URL is at most the largest SQL INTEGER: a larger number is "not found"
  (404), not an overflow in the database driver (500).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import IO, Any

from flask import Request, current_app
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser
from werkzeug.routing import IntegerConverter, ValidationError

MAX_SQL_INTEGER = 2**31 - 1  # INTEGER columns (PostgreSQL's int4) hold every ID in the portal
ETHICS_MAX_BYTES = 10 * 2**20
ETHICS_MAX_BASE64 = 4 * ETHICS_MAX_BYTES // 3 + 4  # the same document, base64-encoded (API)
UPLOAD_ENDPOINTS = frozenset({"donor.upload", "tus.create", "tus.append"})
ETHICS_ENDPOINTS = {  # an access request with its document: the web form, the API (JSON)
    "research.new_request": ETHICS_MAX_BYTES,
    "research_api.create_request": ETHICS_MAX_BASE64,
}
URLENCODED = "application/x-www-form-urlencoded"

FormParseResult = tuple[IO[bytes], MultiDict[str, Any], MultiDict[str, Any]]


def body_limit(endpoint: str | None, config: Mapping[str, Any]) -> int:
    """The most bytes a request to ``endpoint`` may send."""
    if endpoint in UPLOAD_ENDPOINTS:
        return int(config["MAX_REQUEST_BYTES"])
    return ETHICS_ENDPOINTS.get(endpoint or "", 0) + int(config["MAX_BODY_BYTES"])


class BoundedFormParser(FormDataParser):
    """A urlencoded form held to the limits Werkzeug applies to multipart forms only."""

    def parse(
        self,
        stream: IO[bytes],
        mimetype: str,
        content_length: int | None,
        options: dict[str, str] | None = None,
    ) -> FormParseResult:
        if mimetype == URLENCODED:
            stream = self._bounded(stream, content_length)
        return super().parse(stream, mimetype, content_length, options)

    def _bounded(self, stream: IO[bytes], content_length: int | None) -> IO[bytes]:
        """The body, read only once it is known to fit (413 otherwise)."""
        limit = self.max_form_memory_size
        if limit is not None and content_length is not None and content_length > limit:
            raise RequestEntityTooLarge()
        body = stream.read() if limit is None else stream.read(limit + 1)
        if limit is not None and len(body) > limit:
            raise RequestEntityTooLarge()
        if self.max_form_parts is not None and body.count(b"&") >= self.max_form_parts:
            raise RequestEntityTooLarge()
        return io.BytesIO(body)


class LimitedRequest(Request):
    """A request whose body limit depends on its endpoint (matched before any body is read),
    so the limit holds whichever hook or view reads the body first (CSRF reads the form)."""

    form_data_parser_class = BoundedFormParser

    @property
    def max_content_length(self) -> int | None:
        if self._max_content_length is not None or not current_app:
            return super().max_content_length
        return body_limit(self.endpoint, current_app.config)

    @max_content_length.setter
    def max_content_length(self, value: int | None) -> None:
        self._max_content_length = value


class SqlInteger(IntegerConverter):
    """``<int:...>``: a whole number an INTEGER column can hold; any other is not found."""

    def to_python(self, value: str) -> int:
        number: int = super().to_python(value)
        if number > MAX_SQL_INTEGER:
            raise ValidationError()
        return number
