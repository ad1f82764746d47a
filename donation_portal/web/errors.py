"""Error pages: a clear message and the right status, never a stack trace.

Every error reply shows the request's ID (``adapters.logs``: random, or the caller's safe
``X-Request-ID``), in the page or the problem JSON and in the ``X-Request-ID`` header; every
log line of the request carries it, so a person's report finds the log entries without
either holding anything personal. A server-side error (5xx) also names it as its correlation
ID (``X-Correlation-ID``, the problem's ``correlation_id``, ``[correlation ...]`` in its log
line). Its page is rendered without the database: no current user, no context processors
(the database may be the very thing that failed); the ID needs no database either.

- the database unavailable (down, unreachable, a connection killed): 503 + ``Retry-After``
- the storage backend full: 507; unreachable: 503 + ``Retry-After``
- anything else unexpected: 500

The API (``/api/``), the tus endpoints (``/uploads/``) and ``/healthz`` answer
``application/problem+json`` (RFC 9457) instead of a page.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, cast

from flask import Flask, Response, current_app, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

import storage
from consent import NoTemplate
from donation_portal.adapters.logs import request_id
from donation_portal.adapters.request_session import DATABASE_UNAVAILABLE, committed

RETRY_AFTER_SECONDS = 30
JSON_PATHS = ("/api/", "/uploads/", "/healthz")
NOTHING_STORED = "Nothing you sent was stored."
SERVER_ERROR = ("Something went wrong on our side.", "Please try again later.")
UNAVAILABLE = ("The service is briefly unavailable.", "Please try again in a minute.")

MESSAGES = {
    400: "The request could not be understood.",
    401: "Please log in.",
    403: "You do not have access to this page.",
    404: "This page does not exist.",
    405: "This action is not allowed here.",
    413: (
        "What you sent is too large. If you are uploading images, please send fewer or "
        "smaller files at a time."
    ),
    429: "Too many attempts. Please wait a minute and try again.",
    500: "Something went wrong on our side. Please try again later.",
    503: "The service is briefly unavailable. Please try again in a minute.",
    507: (
        "Our storage is full at the moment, so what you sent could not be stored. The team "
        "has been alerted; please try again later."
    ),
}


def init_app(app: Flask) -> None:
    app.register_error_handler(CSRFError, _csrf_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(NoTemplate, _no_template)
    for kind in DATABASE_UNAVAILABLE:
        app.register_error_handler(kind, _database_unavailable)
    app.register_error_handler(storage.StorageFull, _storage_full)
    app.register_error_handler(storage.StorageUnavailable, _storage_unavailable)
    app.register_error_handler(Exception, _unexpected)


def wants_json() -> bool:
    return request.path.startswith(JSON_PATHS) or request.path == "/uploads"


def problem(status: int, detail: str, errors: Any = None, **extra: Any) -> Response:
    """An ``application/problem+json`` reply (``status`` and ``detail`` as before, plus
    ``type``, ``title`` and ``request_id``; ``errors`` per field for a 422)."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": _phrase(status),
        "status": status,
        "detail": detail,
        "request_id": request_id(),
        **extra,
    }
    if errors is not None:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = status
    response.content_type = "application/problem+json"
    return response


def page(status: int, message: str, *, retry_after: int | None = None) -> Response:
    """The error reply for ``status``: problem JSON or a page, with the request ID; a 5xx
    names it as its correlation ID and gets the database-free page."""
    correlation = correlation_id() if status >= 500 else None
    extra = {"correlation_id": correlation} if correlation else {}
    if wants_json():
        response = problem(status, message, **extra)
    elif correlation:
        response = Response(_plain_page(status, message), status, mimetype="text/html")
    else:
        html = render_template(
            "error.html", status=status, message=message, request_id=request_id()
        )
        response = Response(html, status)
    if correlation:
        response.headers["X-Correlation-ID"] = correlation
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def correlation_id() -> str:
    """The ID a server-side error is reported under: the request's ID, so the error's log
    line and every other line of its request are found by the one reference."""
    return request_id()


def _plain_page(status: int, message: str) -> str:
    """The error page without ``render_template``: its context processors would load the
    logged-in user from the database."""
    template = current_app.jinja_env.get_template("error_plain.html")
    return template.render(
        status=status, title=_phrase(status), message=message, request_id=request_id()
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _where() -> str:
    """The method and route pattern (``/withdraw``, ``/api/releases/<release_id>``): never
    the values in the URL, which can name a consent."""
    return f"{request.method} {request.url_rule or '(no route)'}"


def _csrf_error(_error: CSRFError) -> Response:
    return page(400, "This form has expired. Please go back, reload the page and try again.")


def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    if status >= 500:
        current_app.logger.error(
            "HTTP %s on %s [correlation %s]", status, _where(), correlation_id()
        )
    return page(status, MESSAGES.get(status, error.description or "Error."))


def _no_template(_error: NoTemplate) -> Response:
    current_app.logger.error("no consent template published [correlation %s]", correlation_id())
    return page(503, "No consent text has been published yet. Please come back later.")


def _database_unavailable(error: Exception) -> Response:
    current_app.logger.error(
        "database unavailable on %s [correlation %s]: %s",
        _where(),
        correlation_id(),
        type(error).__name__,
        exc_info=error,
    )
    return page(503, _honest(*UNAVAILABLE), retry_after=RETRY_AFTER_SECONDS)


def _storage_full(error: storage.StorageFull) -> Response:
    current_app.logger.critical(
        "storage full on %s [correlation %s]: %s", _where(), correlation_id(), error
    )
    return page(507, MESSAGES[507])


def _storage_unavailable(error: storage.StorageUnavailable) -> Response:
    current_app.logger.error(
        "storage unavailable on %s [correlation %s]: %s", _where(), correlation_id(), error
    )
    return page(503, _honest(*UNAVAILABLE), retry_after=RETRY_AFTER_SECONDS)


def _unexpected(error: Exception) -> Response:
    if isinstance(error, HTTPException):
        return _http_error(error)
    cause = _underlying(error)
    if cause is not None:
        # e.g. a commit in a ``finally`` raising PendingRollbackError after the connection
        # died: the database's unavailability is what happened, not a bug
        if isinstance(cause, DATABASE_UNAVAILABLE):
            return _database_unavailable(cause)
        if isinstance(cause, storage.StorageFull):
            return _storage_full(cause)
        # _underlying returns only the outage kinds: the one left is StorageUnavailable
        return _storage_unavailable(cast(storage.StorageUnavailable, cause))
    current_app.logger.error(
        "unhandled error on %s [correlation %s]", _where(), correlation_id(), exc_info=error
    )
    return page(500, _honest(*SERVER_ERROR))


def _underlying(error: BaseException) -> BaseException | None:
    """The database or storage outage behind ``error`` (its cause or context chain), if any."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(
            current, (*DATABASE_UNAVAILABLE, storage.StorageFull, storage.StorageUnavailable)
        ):
            return current
        current = current.__cause__ or current.__context__
    return None


def _honest(what: str, advice: str) -> str:
    """Say that nothing was stored only when it is true: a use case that committed before
    the error did store what it was asked to."""
    return " ".join([what, advice] if committed() else [what, NOTHING_STORED, advice])
